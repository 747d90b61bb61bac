"""Usage the provider did not report, counted from the call itself with LiteLLM's tokenizer (offline: LiteLLM ships
its tiktoken files). Such rows are flagged ``usage_estimated`` and priced with ``cost_source`` ``estimated:...``;
reports count them apart (``Summary.estimated_calls``)."""

from __future__ import annotations

import logging
from typing import Any

from ..capture import TokenCounts

log = logging.getLogger("dspy_tokens")
PREFIX = "estimated:"


def _count(model: str, **what: Any) -> int:
    import litellm  # already imported by DSPy's engines; kept off the import of dspy_tokens

    return int(litellm.token_counter(model=model, **what))


def estimate(model: str, entry: dict) -> TokenCounts | None:
    """Prompt and completion tokens of a chat/completion history entry, or None when it holds no text to count."""
    messages, prompt = entry.get("messages"), entry.get("prompt")
    outputs = entry.get("outputs") or []
    try:
        if isinstance(messages, list) and messages:
            prompt_tokens = _count(model, messages=messages)
        elif isinstance(prompt, str) and prompt:
            prompt_tokens = _count(model, text=prompt)
        else:
            return None
        texts = [o if isinstance(o, str) else str(o.get("text", "")) if isinstance(o, dict) else str(o)
                 for o in outputs]
        completion = sum(_count(model, text=text) for text in texts if text)
    except Exception:  # a tokenizer failure leaves the usage unknown, as reported
        log.warning("dspy-tokens: could not estimate the tokens of a call to %s; stored as unreported", model,
                    exc_info=True)
        return None
    return TokenCounts(prompt_tokens, completion, prompt_tokens + completion, 0, 0, reported=True)
