"""Turn what DSPy recorded for one LM call into token counts we can trust.

Conventions (OpenAI's, which DSPy normalises every provider to): cached, cache-write, audio and image prompt tokens
are *inside* ``prompt_tokens``; reasoning and audio output tokens are *inside* ``completion_tokens``. Missing usage
is "unreported" (``None`` counts), never a silent zero.

An OpenAI-compatible gateway may add Anthropic's top-level ``cache_read_input_tokens`` /
``cache_creation_input_tokens`` to a ``prompt_tokens`` that excludes them (Anthropic's own convention): when the
cache counts exceed the prompt they cannot be inside it, so they are added to it rather than cut down to it.
"""

from __future__ import annotations

import math
from collections import abc
from dataclasses import dataclass
from typing import Any, Mapping, TypeGuard

# Beyond any real context window (100x the largest): larger values are corrupt, not usage. Also keeps the
# BIGINT hourly cost counters (picodollars) from overflowing on a burst of such values: at 10**12 tokens,
# 62 priced calls in one hour overflowed them on PostgreSQL/MariaDB and the rows were rejected.
MAX_TOKENS_PER_CALL = 10**9


@dataclass(frozen=True)
class TokenCounts:
    prompt: int | None = None
    completion: int | None = None
    total: int | None = None
    cached: int | None = None
    reasoning: int | None = None
    reported: bool = False
    problem: str | None = None  # why some reported numbers were not usable
    cache_write: int | None = None  # prompt tokens written to the provider's cache (all lifetimes)
    cache_write_1h: int | None = None  # of which with the 1-hour lifetime (the rest: 5 minutes)
    audio_input: int | None = None
    audio_output: int | None = None
    image_input: int | None = None
    service_tier: str | None = None  # the tier the provider says it served ("priority", "flex", "default"...)

    @property
    def audio(self) -> int | None:
        """Audio tokens in and out (the ``audio_tokens`` column)."""
        if self.audio_input is None and self.audio_output is None:
            return None
        return (self.audio_input or 0) + (self.audio_output or 0)

    @classmethod
    def zero(cls) -> "TokenCounts":
        return cls(0, 0, 0, 0, 0, reported=True)


def _is_mapping(value: Any) -> TypeGuard[Mapping]:
    # typing.Mapping's isinstance goes through typing's hooks: ~10x slower than this for the usual dict
    return type(value) is dict or isinstance(value, abc.Mapping)


def _count(value: Any) -> int | None:
    """A usable token count, or None. Accepts ints, integral floats and digit strings."""
    if type(value) is int:
        return value if 0 <= value <= MAX_TOKENS_PER_CALL else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        # isdigit() alone accepts "²" and 5000-digit strings, which int() then refuses
        if not (value.isascii() and value.isdigit()) or len(value) > 13:
            return None
        value = int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > MAX_TOKENS_PER_CALL:
        return None
    return value


def _detail(usage: Mapping, section: str, key: str) -> Any:
    details = usage.get(section)
    if _is_mapping(details):
        return details.get(key)
    return getattr(details, key, None)  # LiteLLM may hand over objects instead of dicts


def _consistent_total(prompt: int | None, completion: int | None, total: int | None, problems: list[str]) -> int:
    """The total a limit may count. With both parts it is their sum: a reported total that disagrees (a proxy's
    999,999,999 on a 15-token call) is named in ``problems``, never charged. With one part it is the reported
    total when that covers the part, else the part itself: a call without prompt_tokens still counts."""
    if prompt is not None and completion is not None:
        parts = prompt + completion
        if total not in (None, 0, parts):  # 0/None: LiteLLM's filler for partial usage, not a claim
            problems.append(f"total_tokens {total} is not prompt_tokens + completion_tokens ({parts}); "
                            f"counted {parts}")
        return parts
    known, missing = (prompt, "completion_tokens") if prompt is not None else (completion, "prompt_tokens")
    assert known is not None  # not both parts are missing: the caller counts no usage then
    problems.append(f"{missing} missing")
    if total is None or total < known:
        return known
    return total


#: The Responses API (``model_type="responses"`` on the LiteLLM engine; TypeSafe) names the same counts otherwise.
RESPONSES_NAMES = {"input_tokens": "prompt_tokens", "output_tokens": "completion_tokens",
                   "input_tokens_details": "prompt_tokens_details",
                   "output_tokens_details": "completion_tokens_details"}


def chat_names(usage: Mapping) -> Mapping:
    """``usage`` with Responses API names as chat-completions names, when it has no chat-completions counts."""
    if "prompt_tokens" in usage or "completion_tokens" in usage or not any(k in usage for k in RESPONSES_NAMES):
        return usage
    return {RESPONSES_NAMES.get(key, key): value for key, value in usage.items()}


def _first_count(*values: Any) -> int | None:
    return next((count for count in map(_count, values) if count), None)


def _prompt_parts(usage: Mapping, prompt: int) -> tuple[int, dict[str, int]]:
    """(prompt tokens, the parts of them: cached, cache_write, cache_write_1h, audio_input, image_input)."""
    section = "prompt_tokens_details"
    cached = _first_count(_detail(usage, section, "cached_tokens"), usage.get("cache_read_input_tokens"))
    written = _first_count(_detail(usage, section, "cache_creation_tokens"),
                           _detail(usage, section, "cache_write_tokens"), usage.get("cache_creation_input_tokens"))
    lifetimes = _detail(usage, section, "cache_creation_token_details") or usage.get("cache_creation")
    hour = _first_count(lifetimes.get("ephemeral_1h_input_tokens") if _is_mapping(lifetimes)
                        else getattr(lifetimes, "ephemeral_1h_input_tokens", None))
    top_level = any(_count(usage.get(k)) for k in ("cache_read_input_tokens", "cache_creation_input_tokens"))
    if top_level and (cached or 0) + (written or 0) > prompt:
        prompt += (cached or 0) + (written or 0)  # Anthropic's convention: input_tokens excludes the cache
    parts = {"cached": cached or 0, "cache_write": written or 0, "cache_write_1h": min(hour or 0, written or 0),
             "audio_input": _count(_detail(usage, section, "audio_tokens")) or 0,
             "image_input": _count(_detail(usage, section, "image_tokens")) or 0}
    return prompt, parts


def normalize_usage(usage: Any, service_tier: str | None = None) -> TokenCounts:
    """Counts from an OpenAI-style usage mapping (chat-completions or Responses API names), tolerant of missing,
    partial and malformed fields. ``service_tier`` is the response's, carried along for pricing."""
    if not _is_mapping(usage):  # never truth-test an unknown object: that may raise
        return TokenCounts(problem=None if usage is None else f"usage is a {type(usage).__name__}, not a mapping")
    usage = chat_names(usage)
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    total = _count(usage.get("total_tokens"))
    problems = [k for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                if k in usage and usage[k] is not None and _count(usage[k]) is None]
    if not (prompt or completion or total):
        # Nothing usable. Zeros count as nothing: LiteLLM fills a missing usage with zeros, and a real call always
        # has prompt tokens.
        if problems:
            return TokenCounts(problem=f"unusable usage fields: {', '.join(problems)}")
        zeros = any(count == 0 for count in (prompt, completion, total))
        return TokenCounts(problem="provider reported all-zero usage" if zeros else None)
    if prompt is None and completion is None:
        # Only a total: keep it, the split is unknown.
        return TokenCounts(total=total, reported=True, problem="only total_tokens was reported")
    if prompt is not None:
        grown, parts = _prompt_parts(usage, prompt)
        if total is not None and grown != prompt and total == prompt + (completion or 0):
            total = grown + (completion or 0)
        prompt = grown
    else:  # the parts are still what the provider said, though nothing bounds them
        _, parts = _prompt_parts(usage, 0)
    total = _consistent_total(prompt, completion, total, problems)
    if prompt is not None and sum(parts[k] for k in ("cached", "cache_write", "audio_input", "image_input")) > prompt:
        problems.append("cached_tokens > prompt_tokens" if parts["cached"] > prompt
                        else "cached, cache-write, audio and image tokens exceed prompt_tokens")
        room = prompt
        for key in ("cached", "cache_write", "audio_input", "image_input"):
            parts[key] = min(parts[key], room)
            room -= parts[key]
        parts["cache_write_1h"] = min(parts["cache_write_1h"], parts["cache_write"])
    reasoning = _count(_detail(usage, "completion_tokens_details", "reasoning_tokens")) or 0
    audio_out = _count(_detail(usage, "completion_tokens_details", "audio_tokens")) or 0
    if completion is not None and reasoning + audio_out > completion:
        problems.append("reasoning_tokens > completion_tokens" if reasoning > completion
                        else "reasoning and audio tokens exceed completion_tokens")
        reasoning = min(reasoning, completion)
        audio_out = min(audio_out, completion - reasoning)
    tier = service_tier if isinstance(service_tier, str) and service_tier else None
    return TokenCounts(prompt, completion, total, parts["cached"], reasoning, reported=True,
                       problem="; ".join(problems) or None, cache_write=parts["cache_write"],
                       cache_write_1h=parts["cache_write_1h"], audio_input=parts["audio_input"],
                       audio_output=audio_out, image_input=parts["image_input"], service_tier=tier)


def is_cache_hit(entry: Mapping) -> bool:
    """DSPy puts no hit flag in history entries: a hit has empty usage but a response carrying usage or a flag."""
    if entry.get("usage"):
        return False
    if entry.get("cache_hit") is True:  # decision clients (TypeSafe) say so in the entry
        return True
    response = entry.get("response")
    # n>1 on the native engine: a tuple of Responses, one per candidate, each keeping its original usage.
    responses = response if isinstance(response, (tuple, list)) else (response,)
    for response in responses:
        if getattr(response, "cache_hit", False) is True:  # LiteLLM engine
            return True
        usage = getattr(response, "usage", None)  # native engine: the cached Response keeps the original usage
        if getattr(usage, "input_tokens", None) is not None:
            return True
    return False
