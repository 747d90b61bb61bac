"""What a call cost, in exact ``Decimal`` dollars, and where the price came from.

Price sources, in order: a price in ``models.json`` for the configured or the reported model; the price map that
ships with the installed DSPy (LiteLLM's map, read offline when ``LITELLM_LOCAL_MODEL_COST_MAP=True``), looked up
by the provider's reported model first, then the configured one; otherwise the cost is unknown (``None``), never 0.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from decimal import Decimal

from .capture.dspy_internals import price_map_entry, price_map_info, price_map_version
from .capture.usage import TokenCounts
from .config import Config, ModelPrice

log = logging.getLogger("dspy_tokens")

SOURCE_CONFIG = "models.json"
SOURCE_PRICE_MAP = "price_map"
SOURCE_UNKNOWN = "unknown"
SOURCE_CACHE_HIT = "cache_hit"
ZERO = Decimal(0)


@dataclass(frozen=True)
class Cost:
    usd: Decimal | None
    source: str
    priced_model: str | None = None


def _rate(value) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return None
    return Decimal(repr(value))  # repr keeps the shortest exact decimal form of the float (1.5e-07)


def _split_model(model: str) -> tuple[str | None, str]:
    provider, _, name = model.partition("/")
    return (provider, name) if name else (None, model)


def price_map_rates(model: str | None) -> tuple[ModelPrice, str] | None:
    """Rates for ``model`` from DSPy's bundled copy of LiteLLM's price map, or None if it has none."""
    if not model:
        return None
    provider, name = _split_model(model)
    info = price_map_info(provider, name) if provider else {}
    if not info and provider is None:
        entry = price_map_entry(name)  # bare names ("gpt-4o-mini") carry their provider inside
        if entry is not None and entry.get("litellm_provider"):
            info = price_map_info(entry["litellm_provider"], name)
    price = ModelPrice(
        input=_rate(info.get("input_cost_per_token")),
        output=_rate(info.get("output_cost_per_token")),
        cache_read=_rate(info.get("cache_read_input_token_cost")),
        reasoning=_rate(info.get("output_cost_per_reasoning_token")),
    )
    return (price, name) if price.is_complete else None


def compute_cost(counts: TokenCounts, price: ModelPrice) -> Decimal | None:
    """Disjoint buckets: uncached input, cache read, visible output, reasoning. Nothing is counted twice."""
    if counts.prompt is None or counts.completion is None or price.input is None or price.output is None:
        return None
    cached, reasoning = counts.cached or 0, counts.reasoning or 0
    cache_rate = price.cache_read if price.cache_read is not None else price.input
    reasoning_rate = price.reasoning if price.reasoning is not None else price.output
    return ((counts.prompt - cached) * price.input + cached * cache_rate
            + (counts.completion - reasoning) * price.output + reasoning * reasoning_rate)


__all__ = ["Cost", "PriceBook", "compute_cost", "price_map_rates", "price_map_version", "SOURCE_CACHE_HIT",
           "SOURCE_CONFIG", "SOURCE_PRICE_MAP", "SOURCE_UNKNOWN"]


class PriceBook:
    """Prices calls; caches lookups per model and warns once per model without a price."""

    def __init__(self, config: Config):
        self.config = config
        self._cache: dict[tuple[str | None, str | None], tuple[ModelPrice, str, str] | None] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def rates(self, model: str | None, response_model: str | None = None) -> tuple[ModelPrice, str, str] | None:
        """(rates, source, priced model) for a call, or None when no source knows the model."""
        key = (model, response_model)
        if key not in self._cache:
            self._cache[key] = self._lookup(model, response_model)
        return self._cache[key]

    def _lookup(self, model, response_model):
        entry = self.config.model_entry(model, response_model)
        if entry is not None and entry.price is not None and entry.price.is_complete:
            return entry.price, SOURCE_CONFIG, entry.model_id
        provider = _split_model(model)[0] if model else None
        candidates = []
        if response_model:
            candidates.append(f"{provider}/{response_model}" if provider and "/" not in response_model else response_model)
        if model:
            candidates.append(model)
        for candidate in candidates:
            found = price_map_rates(candidate)
            if found:
                return found[0], SOURCE_PRICE_MAP, found[1]
        return None

    def cost(self, counts: TokenCounts, model: str | None, response_model: str | None = None,
             cache_hit: bool = False) -> Cost:
        if cache_hit:
            return Cost(ZERO, SOURCE_CACHE_HIT)
        found = self.rates(model, response_model)
        if found is None:
            self._warn_once(model or response_model or "<no model>")
            return Cost(None, SOURCE_UNKNOWN)
        price, source, priced_model = found
        amount = compute_cost(counts, price)
        return Cost(amount, source if amount is not None else SOURCE_UNKNOWN, priced_model)

    def _warn_once(self, model: str) -> None:
        with self._lock:
            if model in self._warned:
                return
            self._warned.add(model)
        log.warning("dspy-tokens: no price known for model %r; its calls are stored with cost_usd NULL "
                    "(unknown). Add input_cost_per_token/output_cost_per_token to its models.json entry.", model)
