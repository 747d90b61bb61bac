"""Prices: which source prices a call (models.json first, then the LiteLLM price map bundled with DSPy) and the
exact Decimal cost it gives. End-to-end pricing of real calls is in tests/e2e/test_accounting.py."""

from __future__ import annotations

from pathlib import Path

from dspy_tokens import load_config
from dspy_tokens.capture import TokenCounts
from dspy_tokens.pricing import SOURCE_CONFIG, SOURCE_PRICE_MAP, PriceBook

EXAMPLE = Path(__file__).resolve().parent.parent / "models.json"


def test_the_example_prices_come_from_models_json_or_the_price_map():
    """Example entries with prices are priced from models.json; entries without fall back to the price map."""
    config = load_config(EXAMPLE)
    book = PriceBook(config)
    counts = TokenCounts(prompt=1000, completion=100, total=1100, cached=0, reasoning=0, reported=True)
    for entry in config.models:
        cost = book.cost(counts, entry.model_id)
        if entry.price is not None:
            assert cost.source == SOURCE_CONFIG
            assert cost.usd == 1000 * entry.price.input + 100 * entry.price.output
        else:
            assert cost.source == SOURCE_PRICE_MAP and cost.usd > 0
