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


def _counts(prompt=1000, completion=100, **parts):
    return TokenCounts(prompt=prompt, completion=completion, total=prompt + completion, cached=parts.pop("cached", 0),
                       reasoning=0, reported=True, **parts)


def test_lookups_resolve_what_a_provider_prefix_misses():
    """Claude on Bedrock, Gemini on Vertex, Cohere chat and OpenAI fine-tunes are priced from the map."""
    from dspy_tokens import Config
    book = PriceBook(Config())
    for model in ("bedrock/anthropic.claude-sonnet-4-5-20250929-v1:0", "vertex_ai/gemini-2.5-pro",
                  "cohere/command-a-03-2025", "openai/ft:gpt-4o-mini-2024-07-18:acme::abc123"):
        cost = book.cost(_counts(), model)
        assert cost.source == SOURCE_PRICE_MAP and cost.usd > 0, model


def test_a_resellers_echoed_model_never_moves_the_call_to_another_vendors_price():
    """openrouter/... answered as ``deepseek/deepseek-v4-flash`` is never priced at DeepSeek's own entry."""
    from dspy_tokens import Config
    book = PriceBook(Config())
    direct = book.cost(_counts(), "deepseek/deepseek-v4-flash")
    resold = book.cost(_counts(), "openrouter/acme-unknown-route", "deepseek/deepseek-v4-flash")
    assert direct.usd is not None and resold.usd is None and resold.source == "unknown"


def test_long_context_cache_writes_and_tiers_use_their_own_rates():
    """Above 200k the whole call is at the tier rate; 1-hour writes at their own rate; flex at flex rates."""
    from dspy_tokens import Config
    from dspy_tokens.pricing import price_map_rates
    book = PriceBook(Config())
    short = price_map_rates("vertex_ai/gemini-2.5-pro", 1000)
    long = price_map_rates("vertex_ai/gemini-2.5-pro", 300_000)
    assert long.input > short.input and long.tier == "200k"
    assert book.cost(_counts(300_000, 100), "vertex_ai/gemini-2.5-pro").usd == 300_000 * long.input + 100 * long.output
    claude = price_map_rates("anthropic/claude-sonnet-4-5")
    hour = book.cost(_counts(cache_write=400, cache_write_1h=400), "anthropic/claude-sonnet-4-5").usd
    assert hour == 600 * claude.input + 400 * claude.cache_write_1h + 100 * claude.output
    assert claude.cache_write_1h > claude.cache_write > claude.input


def test_models_json_overrides_only_the_rates_it_names(tmp_path):
    """An entry giving input/output for a map model keeps the map's cache-read rate (cached tokens are not billed
    at the full input rate)."""
    import json
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"models": [{"label": "mini", "name": "gpt-4o-mini", "provider": "openai",
                                            "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}]}))
    book = PriceBook(load_config(path))
    cost = book.cost(_counts(cached=600), "openai/gpt-4o-mini")
    from decimal import Decimal
    assert cost.source == SOURCE_CONFIG
    assert cost.usd == 400 * Decimal("1e-06") + 600 * Decimal("7.5e-08") + 100 * Decimal("2e-06")


def test_a_rate_card_gives_rates_for_answer_on_each_side_of_every_threshold_and_tier():
    """The rate card (resolved once per model, reported model and tier) prices every prompt size as ``rates_for``
    does: below, at and above each long-context threshold, per service tier."""
    from dspy_tokens.pricing.rates import RateCard, rates_for

    entry = {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
             "input_cost_per_token_above_128k_tokens": 1.5e-06, "output_cost_per_token_above_128k_tokens": 3e-06,
             "input_cost_per_token_above_200k_tokens": 2e-06, "output_cost_per_token_above_200k_tokens": 4e-06,
             "input_cost_per_token_priority": 5e-06, "output_cost_per_token_priority": 6e-06,
             "input_cost_per_token_above_200k_tokens_priority": 7e-06, "cache_read_input_token_cost": 1e-07}
    for tier in (None, "priority", "flex", "fast"):
        card = RateCard(entry, tier)
        for prompt in (0, 128_000, 128_001, 200_000, 200_001, 5_000_000, 100):
            assert card.rates(prompt) == rates_for(entry, prompt, tier), (tier, prompt)
    assert RateCard(entry, "priority").rates(200_001).input != RateCard(entry, None).rates(200_001).input
