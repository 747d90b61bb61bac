"""Finding a model's entry in LiteLLM's bundled price map, as LiteLLM's own lookup does, within one vendor.

LiteLLM's ``get_model_info`` resolves what DSPy's prefix lookup misses (Claude on Bedrock under
``bedrock_converse``, ``vertex_ai/gemini-2.5-pro`` under ``vertex_ai-language-models``, ``cohere/...`` under
``cohere_chat``, bare keys); fine-tunes ``ft:<base>:<org>::<id>`` are priced from their ``ft:<base>`` entry, as
LiteLLM's cost calculator does. The numbers are then read from the map's raw entry (its own decimal literals), never
from LiteLLM's arithmetic. LiteLLM is imported on the first lookup, and reads its map offline when
``LITELLM_LOCAL_MODEL_COST_MAP=True``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from functools import lru_cache
from typing import Any, Mapping

#: A configured provider prefix and the map's ``litellm_provider`` values that are the same vendor.
SAME_VENDOR = {"bedrock": ("bedrock", "bedrock_converse"), "cohere": ("cohere", "cohere_chat"),
               "vertex_ai": ("vertex_ai",), "text-completion-openai": ("text-completion-openai", "openai")}
_lock = threading.Lock()


def litellm_map() -> Mapping[str, Any]:
    import litellm  # noqa: PLC0415 - slow import, on first pricing only
    return litellm.model_cost


def _vendor_matches(provider: str | None, litellm_provider: str | None) -> bool:
    if provider is None or litellm_provider is None:
        return True
    names = SAME_VENDOR.get(provider, (provider,))
    return any(litellm_provider == name or litellm_provider.startswith(f"{name}-") for name in names)


def _candidates(model: str) -> list[str]:
    """``model`` and, for a fine-tune, its base entries (``ft:gpt-4o-mini-2024-07-18``, ``gpt-4o-mini-...``)."""
    provider, _, name = model.rpartition("/") if model.startswith(("openai/", "azure/")) else ("", "", model)
    found = [model]
    if name.startswith("ft:") and name.count(":") >= 2:
        base = name.split(":")[1]
        prefix = f"{provider}/" if provider else ""
        found += [f"{prefix}ft:{base}", f"{prefix}{base}"]
    return found


@lru_cache(maxsize=4096)
def find_entry(model: str, provider: str | None = None) -> tuple[str, dict[str, Any]] | None:
    """(map key, raw entry) LiteLLM resolves ``model`` to, when it is ``provider``'s own entry; else None."""
    import litellm  # noqa: PLC0415

    for candidate in _candidates(model):
        try:
            with _lock:  # LiteLLM's lookup keeps module-level caches
                info = litellm.get_model_info(model=candidate)
        except Exception:  # LiteLLM raises for a model its map does not know
            continue
        key = info.get("key") or candidate
        entry = litellm_map().get(key)
        if not isinstance(entry, dict) or entry.get("litellm_provider") != info.get("litellm_provider"):
            entry = {k: v for k, v in dict(info).items() if v is not None}
        if _vendor_matches(provider, entry.get("litellm_provider")):
            return str(key), entry
    return None


@lru_cache(maxsize=1)
def map_digest() -> str:
    """A short hash of the whole price map (changes when LiteLLM ships other prices)."""
    text = json.dumps(litellm_map(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def map_version() -> str:
    """``litellm-<version>`` of the map read."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415
    try:
        return f"litellm-{version('litellm')}"
    except PackageNotFoundError:
        return "litellm-unknown"
