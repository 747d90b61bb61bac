"""What a call cost, in exact ``Decimal`` dollars, and where the price came from (see :mod:`.book`)."""

from __future__ import annotations

from .book import (SOURCE_CACHE_HIT, SOURCE_CONFIG, SOURCE_PRICE_MAP, SOURCE_UNKNOWN, Cost, PriceBook,
                   PriceEntry)
from .cost import compute_cost
from .price_map import map_version as price_map_version
from .rates import Rates, rates_for

__all__ = ["Cost", "PriceBook", "PriceEntry", "Rates", "compute_cost", "price_map_rates", "price_map_version",
           "rates_for", "SOURCE_CACHE_HIT", "SOURCE_CONFIG", "SOURCE_PRICE_MAP", "SOURCE_UNKNOWN"]


def price_map_rates(model: str | None, prompt_tokens: int = 0, service_tier: str | None = None) -> Rates | None:
    """The price map's rates for ``model`` (no models.json), or None if the map does not know it."""
    from .price_map import find_entry
    if not model:
        return None
    found = find_entry(model, model.split("/", 1)[0] if "/" in model else None)
    return None if found is None else rates_for(found[1], prompt_tokens, service_tier)
