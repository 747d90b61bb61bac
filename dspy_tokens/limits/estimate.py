"""How many tokens a request may use, before it runs: the real prompt counted with LiteLLM's ``token_counter``
plus the output cap, else the model's ``max_tokens``, else ``default_estimate_tokens``."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("dspy_tokens")


def prompt_tokens(model: str | None, messages: Any) -> int | None:
    """The prompt's tokens as the provider will count them (LiteLLM's tokenizer for the model; its default
    tokenizer for a model it does not know). ``messages``: chat messages or a prompt string."""
    if messages is None:
        return None
    import litellm  # already imported by DSPy; kept off the import of dspy_tokens

    try:
        if isinstance(messages, str):
            return int(litellm.token_counter(model=model or "", text=messages))
        return int(litellm.token_counter(model=model or "", messages=list(messages)))
    except Exception:  # a tokenizer failure must not decide a limit: fall back to the configured estimate
        log.warning("dspy-tokens: could not count the prompt's tokens for %s; using the configured estimate",
                    model, exc_info=True)
        return None


def prompt_bound(messages: Any) -> int | None:
    """A cheap upper bound of the prompt's tokens (None when it cannot be had cheaply): a token is at least one
    byte of text, plus each chat message's few framing tokens. Lets a call that fits anyway skip the tokenizer."""
    if isinstance(messages, str):
        return len(messages.encode()) + 8
    if not isinstance(messages, (list, tuple)):
        return None
    size = 8
    for message in messages:
        if not isinstance(message, dict):
            return None
        for value in message.values():
            if not isinstance(value, str):
                return None  # images, tool calls...: only the tokenizer knows
            size += len(value.encode()) + 1
        size += 8
    return size


def output_cap(lm: Any, fallback: int) -> int:
    """The most tokens the LM may answer with: its ``max_tokens`` (DSPy keeps it in ``lm.kwargs``)."""
    kwargs = getattr(lm, "kwargs", None) or {}
    for key in ("max_completion_tokens", "max_tokens"):
        value = kwargs.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return fallback
