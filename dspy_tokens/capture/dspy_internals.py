"""The one module that imports DSPy's internals (anything beyond the public ``dspy`` names), so a DSPy upgrade
is checked here. Verified against DSPy 3.4; see the README's "How calls are attributed"."""

from __future__ import annotations

from typing import Any

from dspy.clients import base_lm, model_metadata
from dspy.dsp.utils.settings import settings, thread_local_overrides
from dspy.utils.callback import BaseCallback
from dspy.utils.callback_context import ACTIVE_CALL_ID

__all__ = ["ACTIVE_CALL_ID", "BaseCallback", "configured_callbacks", "configured_model", "global_history", "history_disabled",
           "overrides", "price_map_entry", "price_map_info", "price_map_version", "reset_overrides",
           "set_overrides"]


def global_history() -> list:
    """DSPy's process-wide history (every LM call's entry, capped at 10,000), read when an LM's own is empty."""
    return base_lm.GLOBAL_HISTORY


def history_disabled() -> bool:
    return bool(settings.disable_history)


def overrides() -> dict:
    """The ``dspy.context`` overrides bound here (DSPy copies them into Parallel/Evaluate worker threads)."""
    return thread_local_overrides.get()


def set_overrides(new: dict):
    return thread_local_overrides.set(new)


def reset_overrides(token) -> None:
    thread_local_overrides.reset(token)


def configured_lm():
    """The LM configured here (``dspy.configure``/``dspy.context``), if any."""
    try:
        return settings.get("lm")
    except Exception:
        return None


def configured_callbacks() -> list:
    """The DSPy callbacks in force here (``dspy.configure``/``dspy.context``)."""
    try:
        return list(settings.get("callbacks") or [])
    except Exception:
        return []


def configured_model() -> str | None:
    """The model string of the LM configured here (``dspy.configure``/``dspy.context``), if any."""
    try:
        return getattr(settings.get("lm"), "model", None)
    except Exception:
        return None


def price_map_info(provider: str, name: str) -> dict[str, Any]:
    """The bundled LiteLLM price map's entry for ``provider/name`` (DSPy's lookup), or ``{}``."""
    return model_metadata.model_info(provider, name) or {}


def price_map_entry(name: str) -> dict[str, Any] | None:
    """The raw price-map entry keyed ``name`` (bare names such as ``gpt-4o-mini`` carry their provider inside)."""
    entry = model_metadata._load().get(name)
    return entry if isinstance(entry, dict) else None


def price_map_version() -> str | None:
    try:
        return model_metadata.source_info().get("snapshot_version")
    except Exception:  # informational only
        return None
