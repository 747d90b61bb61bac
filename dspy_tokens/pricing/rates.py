"""The rate card of one call, in exact ``Decimal``: which of an entry's prices apply to a prompt of this size
under this service tier.

The map's conventions (LiteLLM's): a service tier reads ``<key>_<tier>`` (``priority``; ``fast`` means
``priority``; ``flex``, ``balanced``, ``ultrafast``) and falls back to ``<key>``; once the prompt exceeds a
long-context threshold (``input_cost_per_token_above_200k_tokens``), the *whole* call is priced at that tier's
rates, each falling back to the rate below it; a cache, reasoning, audio or image rate the entry does not give is
the text rate it refines (cache reads and writes: input; 1-hour writes: the 5-minute write rate).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

TIER_SUFFIX = {"priority": "priority", "fast": "priority", "flex": "flex", "balanced": "balanced",
               "ultrafast": "ultrafast"}
TIER_SUFFIXES = ("_priority", "_flex", "_balanced", "_ultrafast", "_batches")
THRESHOLD_PREFIXES = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
                      "cache_creation_input_token_cost")
_THRESHOLD = re.compile(r"_above_(\d+)(k?)_tokens")
WRITE_1H = "cache_creation_input_token_cost_above_1hr"


def rate_value(value: Any) -> Decimal | None:
    """A map price as the exact decimal it was written as (``repr`` of the float: ``1.5e-07``), or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        return None
    try:
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


@dataclass(frozen=True)
class Rates:
    """USD per token (``per_request``: per call) for each kind of token of one call."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal
    audio_input: Decimal
    audio_output: Decimal
    image_input: Decimal
    image_output: Decimal
    per_request: Decimal = Decimal(0)
    tier: str | None = None  # the long-context threshold applied ("200k"), if any


def _threshold_tokens(text: str) -> int:
    match = _THRESHOLD.search(text)
    assert match is not None
    return int(match.group(1)) * (1000 if match.group(2) else 1)


def thresholds(entry: Mapping[str, Any], tier_suffix: str) -> list[tuple[int, str]]:
    """The long-context thresholds of an entry under a tier suffix: (tokens, ``"200k"``), lowest first."""
    found: dict[int, str] = {}
    for key, value in entry.items():
        if not key.startswith(THRESHOLD_PREFIXES) or value is None or "_above_1hr" in key:
            continue
        match = _THRESHOLD.search(key)
        if match is None:
            continue
        rest = key[match.end():]
        if rest and rest != tier_suffix:
            continue
        found.setdefault(_threshold_tokens(key), match.group(1) + match.group(2))
    return sorted(found.items())


def crossed_threshold(entry: Mapping[str, Any], prompt_tokens: int, tier_suffix: str) -> str | None:
    """The highest long-context threshold (``"200k"``) a prompt of ``prompt_tokens`` exceeds, if the entry has any."""
    return _crossed(thresholds(entry, tier_suffix), prompt_tokens)


def _crossed(levels: list[tuple[int, str]], prompt_tokens: int) -> str | None:
    crossed = None
    for tokens, label in levels:
        if prompt_tokens > tokens:
            crossed = label
    return crossed


class _Reader:
    def __init__(self, entry: Mapping[str, Any], service_tier: str | None):
        self.entry = entry
        self.suffix = f"_{TIER_SUFFIX[service_tier.lower()]}" if service_tier and \
            service_tier.lower() in TIER_SUFFIX else ""

    def get(self, key: str) -> Decimal | None:
        """``key`` under the service tier, else the standard ``key``."""
        for name in ((key + self.suffix, key) if self.suffix else (key,)):
            found = rate_value(self.entry.get(name))
            if found is not None:
                return found
        return None

    def tiered(self, key: str, threshold: str | None, below: Decimal | None) -> Decimal | None:
        if threshold is not None:
            found = self.get(f"{key}_above_{threshold}_tokens")
            if found is not None:
                return found
        return below


def rates_for(entry: Mapping[str, Any], prompt_tokens: int, service_tier: str | None = None) -> Rates | None:
    """The rates for one call of ``entry``'s model, or None when the entry prices no tokens."""
    read = _Reader(entry, service_tier)
    threshold = crossed_threshold(entry, prompt_tokens, read.suffix)
    base_input, base_output = read.get("input_cost_per_token"), read.get("output_cost_per_token")
    if base_input is None or base_output is None:
        return None
    text_in = read.tiered("input_cost_per_token", threshold, base_input)
    text_out = read.tiered("output_cost_per_token", threshold, base_output)
    assert text_in is not None and text_out is not None
    cache_read = read.tiered("cache_read_input_token_cost", threshold, read.get("cache_read_input_token_cost"))
    write = read.tiered("cache_creation_input_token_cost", threshold, read.get("cache_creation_input_token_cost"))
    write = text_in if write is None else write
    write_1h = read.tiered(WRITE_1H, threshold, read.get(WRITE_1H))
    audio_in = read.tiered("input_cost_per_audio_token", threshold, read.get("input_cost_per_audio_token"))
    reasoning = read.get("output_cost_per_reasoning_token")
    return Rates(
        input=text_in, output=text_out,
        cache_read=text_in if cache_read is None else cache_read,
        cache_write=write, cache_write_1h=write if write_1h is None else write_1h,
        reasoning=text_out if reasoning is None else reasoning,
        audio_input=text_in if audio_in is None else audio_in,
        audio_output=_or(rate_value(entry.get("output_cost_per_audio_token")), text_out),  # no tier rates
        image_input=_or(read.get("input_cost_per_image_token"), text_in),
        image_output=_or(read.get("output_cost_per_image_token"), text_out),
        per_request=_or(read.get("input_cost_per_request"), Decimal(0)),
        tier=threshold)


class RateCard:
    """The rates of one entry under one service tier, resolved once per long-context threshold: pricing a call
    then reads no map key (``rates_for`` per call walks the whole entry)."""

    def __init__(self, entry: Mapping[str, Any], service_tier: str | None):
        self.entry, self.service_tier = entry, service_tier
        self.levels = thresholds(entry, _Reader(entry, service_tier).suffix)
        self._rates: dict[str | None, Rates | None] = {}

    def rates(self, prompt_tokens: int) -> Rates | None:
        threshold = _crossed(self.levels, prompt_tokens) if self.levels else None
        try:
            return self._rates[threshold]
        except KeyError:
            found = self._rates[threshold] = rates_for(self.entry, prompt_tokens, self.service_tier)
            return found


def _or(value: Decimal | None, default: Decimal) -> Decimal:
    return default if value is None else value
