"""``PriceBook``: which price applies to a call, and what the call cost.

Sources: LiteLLM's bundled price map (looked up as LiteLLM does, by the provider's reported model first, then the
configured one, never outside the configured provider's own entries), with a ``models.json`` entry's prices laid
over it key by key: an entry overrides only the rates it names. A model the map does not know is priced from its
``models.json`` entry alone, which must then give both ``input_cost_per_token`` and ``output_cost_per_token``
(checked when the book is made: :class:`ConfigurationError` naming the entry). Otherwise the cost is unknown
(``None``), never 0.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ..capture.usage import TokenCounts
from ..config import Config, ModelEntry
from ..errors import ConfigurationError
from . import price_map
from .cost import compute_cost
from .rates import RateCard, Rates

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
    price_version: str | None = None  # which prices were used (see PriceBook.price_version)


@dataclass(frozen=True)
class PriceEntry:
    """A model's prices as resolved once: the map's entry with the models.json overrides laid over it."""

    prices: dict[str, Any]
    source: str
    priced_model: str
    in_map: bool


def _provider(model: str | None) -> str | None:
    if not model or "/" not in model:
        return None
    return model.split("/", 1)[0]


def _map_candidates(model: str | None, response_model: str | None) -> list[str]:
    """The reported model first, always under the configured provider: a reseller echoing another vendor's name
    (``deepseek/deepseek-v4-flash`` from ``openrouter/...``) is looked up as ``openrouter/deepseek/...``."""
    provider = _provider(model)
    found = []
    if response_model:
        if provider and not response_model.startswith(f"{provider}/"):
            found.append(f"{provider}/{response_model}")
        else:
            found.append(response_model)
    if model:
        found.append(model)
    return list(dict.fromkeys(found))


class PriceBook:
    """Prices calls; resolves each model's prices once and warns once per model without a price."""

    def __init__(self, config: Config):
        self.config = config
        self._cache: dict[tuple[str | None, str | None], PriceEntry | None] = {}
        # (model, reported model, service tier) -> (entry, its rate card), or None: what pricing a call reads
        self._cards: dict[tuple[str | None, str | None, str | None], tuple[PriceEntry, RateCard] | None] = {}
        self._warned: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._version: str | None = None
        for index, entry in enumerate(config.models):
            self._check(index, entry)

    def _check(self, index: int, entry: ModelEntry) -> None:
        if entry.price is None or entry.price.is_complete:
            return
        if price_map.find_entry(entry.model_id, _provider(entry.model_id)) is None:
            named = ", ".join(entry.price.as_map_keys())
            raise ConfigurationError(
                self.config.source, f"models[{index}]", {"name": entry.name, "provider": entry.provider},
                f"gives {named} but the price map has no entry for {entry.model_id!r} to take the other rates "
                "from; add input_cost_per_token and output_cost_per_token")

    @property
    def price_version(self) -> str:
        """``litellm-<version>:<map hash>`` plus ``+models.json:<hash>`` when models.json gives prices."""
        if self._version is None:
            version = f"{price_map.map_version()}:{price_map.map_digest()}"
            priced = sorted((e.model_id, {k: str(v) for k, v in e.price.as_map_keys().items()})
                            for e in self.config.models if e.price is not None)
            if priced:
                version += "+models.json:" + hashlib.sha256(json.dumps(priced).encode()).hexdigest()[:8]
            self._version = version
        return self._version

    def entry(self, model: str | None, response_model: str | None = None) -> PriceEntry | None:
        """The prices that apply to calls of ``model`` answered as ``response_model``, or None."""
        key = (model, response_model)
        if key not in self._cache:
            found = self._lookup(model, response_model)
            with self._lock:
                self._cache[key] = found
        return self._cache[key]

    def _lookup(self, model: str | None, response_model: str | None) -> PriceEntry | None:
        configured = self.config.model_entry(model, response_model)
        overrides = configured.price.as_map_keys() if configured is not None and configured.price else {}
        names = _map_candidates(model, response_model)
        if configured is not None and configured.model_id not in names:
            names.append(configured.model_id)
        provider = _provider(model) or (_provider(configured.model_id) if configured else None)
        for name in names:
            found = price_map.find_entry(name, provider)
            if found is not None:
                key, prices = found
                return PriceEntry({**prices, **overrides}, SOURCE_CONFIG if overrides else SOURCE_PRICE_MAP,
                                  key, True)
        if configured is not None and configured.price is not None and configured.price.is_complete:
            return PriceEntry(dict(overrides), SOURCE_CONFIG, configured.model_id, False)
        return None

    def rates(self, model: str | None, response_model: str | None = None, prompt_tokens: int = 0,
              service_tier: str | None = None) -> tuple[Rates, str, str] | None:
        """(rates, source, priced model) for a call with ``prompt_tokens`` served at ``service_tier``, or None."""
        card = self._card(model, response_model, service_tier)
        if card is None:
            return None
        found, rate_card = card
        rates = rate_card.rates(prompt_tokens)
        return None if rates is None else (rates, found.source, found.priced_model)

    def _card(self, model: str | None, response_model: str | None,
              service_tier: str | None) -> tuple[PriceEntry, RateCard] | None:
        key = (model, response_model, service_tier)
        try:
            return self._cards[key]
        except KeyError:
            found = self.entry(model, response_model)
            card = None if found is None else (found, RateCard(found.prices, service_tier))
            self._cards[key] = card
            return card

    def warm(self) -> None:
        """Import LiteLLM and hash its map now (~2 s the first time in a process), so the first call priced
        does not wait for it. Never raises: pricing reports its own failures when it runs."""
        try:
            self.price_version  # noqa: B018 - computed and kept
        except Exception:  # noqa: BLE001
            log.debug("dspy-tokens: warming the price map failed", exc_info=True)

    def cost(self, counts: TokenCounts, model: str | None, response_model: str | None = None,
             cache_hit: bool = False) -> Cost:
        if cache_hit:
            return Cost(ZERO, SOURCE_CACHE_HIT)
        version = self.price_version
        card = self._card(model, response_model, counts.service_tier)
        found, rates = (None, None) if card is None else (card[0], card[1].rates(counts.prompt or 0))
        if found is None or rates is None:
            self._warn_once(model or response_model or "<no model>", "unpriced")
            return Cost(None, SOURCE_UNKNOWN, price_version=version)
        if counts.cached and not found.in_map and "cache_read_input_token_cost" not in found.prices:
            self._warn_once(found.priced_model, "cache")
        amount = compute_cost(counts, rates)
        return Cost(amount, found.source if amount is not None else SOURCE_UNKNOWN, found.priced_model, version)

    def _warn_once(self, model: str, kind: str) -> None:
        with self._lock:
            if (model, kind) in self._warned:
                return
            self._warned.add((model, kind))
        if kind == "cache":
            log.warning("dspy-tokens: model %r has no cache-read rate (models.json gives none and the price map does "
                        "not know it): its cached prompt tokens are billed at its input rate. Add "
                        "cache_read_input_token_cost to its models.json entry.", model)
            return
        log.warning("dspy-tokens: no price known for model %r; its calls are stored with cost_usd NULL "
                    "(unknown). Add input_cost_per_token/output_cost_per_token to its models.json entry.", model)
