"""The documented classes of disagreement between dspy-tokens' pricing and ``litellm.cost_per_token`` (see
tests/support/pricing_oracle.py). Each is a place where LiteLLM adds what the price map does not say, cannot be
asked offline, or prices what the map gives no token price for; dspy-tokens keeps to the map's own numbers and
stores an honest "unknown" rather than a guess.
"""

from __future__ import annotations

from decimal import Decimal

CACHE_SHAPES = {"cache_read", "long_ctx_cached"}
CLASSES = {
    "needs_login": "github_copilot/chatgpt: LiteLLM starts an interactive device-code login to price them; "
                   "not askable offline",
    "invented_cache_discount": "fireworks_ai: LiteLLM invents a 50% cache-read rate "
                               "(FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO) the map does not contain",
    "zero_for_no_price": "the map gives no token price (subscription, commitment, container or preset entries): "
                         "LiteLLM says $0, dspy-tokens stores unknown (never $0)",
    "tiered_pricing_list": "the entry prices by a tiered_pricing range list: not priced by dspy-tokens yet, "
                           "stored as unknown",
    "off_peak_pricing": "off_peak_pricing: LiteLLM applies a time-of-day discount depending on the clock when "
                        "the oracle runs",
    "litellm_cannot_route": "LiteLLM no longer routes the provider (anyscale) and raises; the map prices it",
    "litellm_reresolves_model": "perplexity/opencode_go: LiteLLM re-resolves the model name to another entry "
                                "of the map (perplexity/perplexity/sonar -> perplexity/sonar)",
    "litellm_ignores_tier": "fireworks_ai: LiteLLM's Fireworks calculator drops the service tier and bills the "
                            "standard rate although the map gives *_priority rates",
    "no_token_input_rate": "the entry has no input_cost_per_token (priced per second of video): LiteLLM bills "
                           "the prompt at $0, dspy-tokens stores unknown",
}


def classify(key: str, model: str, entry: dict, shape: str, ours, theirs) -> str | None:
    provider = str(entry.get("litellm_provider") or "")
    if isinstance(theirs, str):
        return "needs_login"
    if ours is None and theirs == Decimal(0):
        return "zero_for_no_price"
    if ours is None and entry.get("input_cost_per_token") is None and entry.get("output_cost_per_token") is not None:
        return "no_token_input_rate"
    if provider == "fireworks_ai" and shape in ("priority", "flex") and ours is not None and theirs is not None:
        return "litellm_ignores_tier"
    if ours is None and entry.get("tiered_pricing"):
        return "tiered_pricing_list"
    if entry.get("off_peak_pricing"):
        return "off_peak_pricing"
    if theirs is None and provider == "anyscale":
        return "litellm_cannot_route"
    if provider == "fireworks_ai" and shape in CACHE_SHAPES and "cache_read_input_token_cost" not in entry:
        return "invented_cache_discount"
    if provider in ("perplexity", "opencode_go") and ours is not None and theirs is not None:
        return "litellm_reresolves_model"
    return None
