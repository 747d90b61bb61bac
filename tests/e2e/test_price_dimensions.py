"""Price dimensions through real ``dspy.LM`` calls against the local server: a gateway's Anthropic-style top-level
cache fields, the service tier the provider reports, cache writes and audio tokens recorded per row."""

from __future__ import annotations

from decimal import Decimal

import dspy
import pytest

from dspy_tokens.testing import Reply
from tests.support.db import only_row

MINI = {"input": Decimal("1.5e-07"), "output": Decimal("6e-07"), "cache_read": Decimal("7.5e-08")}
MINI_PRIORITY = {"input": Decimal("2.5e-07"), "output": Decimal("1e-06"), "cache_read": Decimal("1.25e-07")}


def ask(tracker, lm) -> dict:
    with dspy.context(lm=lm, callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="which price")
    return only_row(tracker)


def test_a_gateways_top_level_cache_fields_grow_the_prompt_instead_of_being_clamped(sqlite_tracker, server):
    """prompt_tokens 1,234 + cache_read_input_tokens 6,144 (Anthropic's convention, outside the prompt) is a
    7,378-token prompt with 6,144 cached, priced at the cache-read rate, on the LiteLLM engine."""
    server.enqueue(Reply(usage={"prompt_tokens": 1234, "completion_tokens": 10, "total_tokens": 1244,
                                "cache_read_input_tokens": 6144, "cache_creation_input_tokens": 0}))
    row = ask(sqlite_tracker, server.lm(engine="litellm"))
    assert (row["prompt_tokens"], row["cached_tokens"], row["total_tokens"]) == (7378, 6144, 7388)
    assert row["cost_usd"] == 1234 * MINI["input"] + 6144 * MINI["cache_read"] + 10 * MINI["output"]


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_the_reported_service_tier_is_stored_and_priced(sqlite_tracker, server, engine):
    """An answer served at ``priority`` is priced at the map's ``*_priority`` rates, and its tier stored."""
    server.enqueue(Reply(service_tier="priority", usage={
        "prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050,
        "prompt_tokens_details": {"cached_tokens": 200}, "completion_tokens_details": {"reasoning_tokens": 0}}))
    row = ask(sqlite_tracker, server.lm(engine=engine))
    assert row["service_tier"] == "priority"
    rates = MINI_PRIORITY
    assert row["cost_usd"] == 800 * rates["input"] + 200 * rates["cache_read"] + 50 * rates["output"]
    assert row["price_version"].startswith("litellm-")


def test_a_default_tier_is_priced_at_standard_rates(sqlite_tracker, server):
    """``service_tier: default`` (what OpenAI usually answers) is the standard price."""
    server.enqueue(Reply(usage={"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}))
    row = ask(sqlite_tracker, server.lm())
    assert row["service_tier"] == "default"
    assert row["cost_usd"] == 1000 * MINI["input"] + 50 * MINI["output"]


def test_cache_writes_and_audio_tokens_are_recorded(sqlite_tracker, server):
    """Cache-write tokens (inside the prompt) and audio tokens in and out are stored in their columns."""
    server.enqueue(Reply(usage={
        "prompt_tokens": 1000, "completion_tokens": 60, "total_tokens": 1060,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 30, "cache_creation_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 20}}))
    row = ask(sqlite_tracker, server.lm(engine="litellm"))
    assert (row["cache_write_tokens"], row["audio_tokens"]) == (400, 50)
