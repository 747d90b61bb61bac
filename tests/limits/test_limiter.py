"""The limiter: every token and cost rule by user, guild and everyone, enforcement modes and the soft threshold,
bypasses, what counts (cache hits, unpriced calls), reservations that expire, and configuration reloads. Usage is
seeded through the write path; decisions are asked of ``tracker.check(..., now=...)``."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import dspy
import pytest

from dspy_tokens import ConfigurationError
from dspy_tokens.limits import Limiter
from dspy_tokens.pricing import PriceBook
from tests.support.db import store_of, stored_rows
from tests.support.limits import GUILD, NOW, OTHER_USER, USER, config, seed


def test_no_limits_by_default(make_tracker, sqlite_url):
    """Without limits in models.json every request is allowed and nothing is reserved."""
    tracker = make_tracker(sqlite_url)
    decision = tracker.check(USER, GUILD)
    assert decision.allowed and decision.scope is None and decision.limit is None and decision.remaining is None
    with tracker.guard(USER, GUILD) as held:
        assert held.reservation_id is None


def test_user_limit_counts_only_that_user_in_the_window(make_tracker, database_url):
    """user_limit sums the user's tokens over the rolling window; other users and older rows do not count."""
    tracker = make_tracker(database_url, config(user_limit=10_000, time_window_days=30))
    seed(tracker,
         dict(user_id=USER, prompt_tokens=3_000, completion_tokens=1_000, created_at=NOW - timedelta(days=2)),
         dict(user_id=USER, prompt_tokens=2_000, completion_tokens=0, created_at=NOW - timedelta(hours=1)),
         dict(user_id=USER, prompt_tokens=9_000, completion_tokens=0, created_at=NOW - timedelta(days=31, hours=2)),
         dict(user_id=OTHER_USER, prompt_tokens=9_000, completion_tokens=0, created_at=NOW))
    decision = tracker.check(USER, GUILD, estimate=4_000, now=NOW)
    assert (decision.allowed, decision.scope, decision.rule, decision.used, decision.limit) == \
        (True, "user", "user_limit", 6_000, 10_000)
    assert decision.remaining == 4_000
    refused = tracker.check(USER, GUILD, estimate=4_001, now=NOW)
    assert not refused.allowed and refused.exceeded and refused.scope == "user"
    assert "6,000 of 10,000 tokens in the last 30 days" in refused.message


def test_guild_and_global_limits(make_tracker, database_url):
    """guild_limit sums every member of the guild; global_limit sums everyone; the refusing rule is named."""
    tracker = make_tracker(database_url, config(guild_limit=5_000, global_limit=8_000))
    seed(tracker, dict(user_id=1, guild_id=GUILD, prompt_tokens=2_000, completion_tokens=0, created_at=NOW),
         dict(user_id=2, guild_id=GUILD, prompt_tokens=2_000, completion_tokens=0, created_at=NOW),
         dict(user_id=3, guild_id=99, prompt_tokens=3_000, completion_tokens=0, created_at=NOW))
    in_guild = tracker.check(USER, GUILD, estimate=1_500, now=NOW)
    assert not in_guild.allowed and in_guild.scope == "guild" and in_guild.used == 4_000
    assert in_guild.message.startswith("This server has used 4,000 of 5,000 tokens")
    elsewhere = tracker.check(USER, 99, estimate=1_500, now=NOW)
    assert not elsewhere.allowed and elsewhere.scope == "global" and elsewhere.used == 7_000
    assert tracker.check(USER, 99, estimate=1_000, now=NOW).allowed


def test_cost_limits_use_exact_decimal_dollars(make_tracker, database_url):
    """user_cost_limit/guild_cost_limit/global_cost_limit compare exact dollars, estimating at the model's rate."""
    tracker = make_tracker(database_url, config(user_cost_limit=1, guild_cost_limit=2, global_cost_limit=3))
    seed(tracker, dict(user_id=USER, guild_id=GUILD, cost_usd=Decimal("0.999"), created_at=NOW),
         dict(user_id=OTHER_USER, guild_id=GUILD, cost_usd=Decimal("0.9"), created_at=NOW),
         dict(user_id=OTHER_USER, guild_id=8, cost_usd=Decimal("1.0"), created_at=NOW))
    # gpt-4o-mini's dearer rate is output, 6e-07 $/token: 1,000 tokens hold $0.0006.
    allowed = tracker.check(USER, GUILD, model="openai/gpt-4o-mini", estimate=1_000, now=NOW)
    assert allowed.allowed and allowed.metric == "cost" and allowed.used == Decimal("0.999")
    assert allowed.requested == Decimal("0.0006")
    refused = tracker.check(USER, GUILD, model="openai/gpt-4o-mini", estimate=2_000, now=NOW)
    assert not refused.allowed and refused.rule == "user_cost_limit" and refused.limit == Decimal(1)
    other = tracker.check(44, 8, model="openai/gpt-4o-mini", estimate=1_000_000, now=NOW)
    assert not other.allowed and other.rule == "global_cost_limit" and other.used == Decimal("2.899")


def test_enforcement_modes_and_soft_threshold(make_tracker, sqlite_url, caplog):
    """enforce refuses; warn allows, flags and logs; off allows; the soft threshold flags a warning early."""
    rows = [dict(user_id=USER, prompt_tokens=8_500, completion_tokens=0, created_at=NOW)]
    enforce = make_tracker(sqlite_url, config(user_limit=10_000, soft_limit_ratio=0.8))
    seed(enforce, *rows)
    soft = enforce.check(USER, None, estimate=100, now=NOW)
    assert soft.allowed and soft.warning and not soft.exceeded
    assert not enforce.check(USER, None, estimate=2_000, now=NOW).allowed

    warn = make_tracker(sqlite_url, config(user_limit=10_000, enforcement="warn"))
    with caplog.at_level("WARNING", logger="dspy_tokens"):
        decision = warn.check(USER, None, estimate=2_000, now=NOW)
    assert decision.allowed and decision.exceeded and decision.warning
    assert any("warn mode" in r.getMessage() for r in caplog.records)
    with warn.guard(USER, estimate=2_000) as held:  # warn mode never blocks and reserves nothing
        assert held.reservation_id is None

    off = make_tracker(sqlite_url, config(user_limit=10_000, enforcement="off"))
    assert off.check(USER, None, estimate=2_000, now=NOW).allowed


def test_bypass_by_user_guild_and_role(make_tracker, sqlite_url, tmp_path, server):
    """token_bypasses.json users/guilds/roles are never refused, and their calls are still recorded."""
    bypass_file = tmp_path / "token_bypasses.json"
    bypass_file.write_text(json.dumps({"users": [USER], "guilds": [str(GUILD)], "roles": [555]}))
    tracker = make_tracker(sqlite_url, config(user_limit=1), bypasses=bypass_file)
    seed(tracker, dict(user_id=USER, created_at=NOW), dict(user_id=OTHER_USER, created_at=NOW))
    assert tracker.check(USER, None, estimate=10).bypassed
    assert tracker.check(OTHER_USER, GUILD, estimate=10).bypassed
    assert tracker.check(OTHER_USER, 8, estimate=10, role_ids=[1, 555]).bypassed
    assert not tracker.check(OTHER_USER, 8, estimate=10, role_ids=[1]).allowed
    with dspy.context(lm=server.lm(), callbacks=[tracker]), tracker.guard(USER, estimate=1_000):
        dspy.Predict("question -> answer")(question="still recorded?")
    recorded = [r for r in stored_rows(tracker) if r["session_id"] != "seed"]
    assert len(recorded) == 1 and recorded[0]["user_id"] == USER
    assert recorded[0]["total_tokens"] == server.usage_totals()["total_tokens"]


def test_cache_hits_count_nothing_and_unpriced_tokens_still_count(make_tracker, sqlite_url):
    """Cache hits add 0 tokens; a model without a price counts its tokens but reports its dollars as unknown."""
    tracker = make_tracker(sqlite_url, config(user_limit=1_000, user_cost_limit=1))
    seed(tracker,
         dict(user_id=USER, prompt_tokens=0, completion_tokens=0, cache_hit=True, cost_usd=Decimal(0),
              cost_source="cache_hit", created_at=NOW),
         dict(user_id=USER, model="openai/my-finetune", prompt_tokens=600, completion_tokens=0, cost_usd=None,
              cost_source="unknown", created_at=NOW))
    decision = tracker.check(USER, None, model="openai/my-finetune", estimate=300, now=NOW)
    token_rule = next(d for d in (decision, *decision.others) if d.metric == "tokens")
    cost_rule = next(d for d in (decision, *decision.others) if d.metric == "cost")
    assert token_rule.used == 600 and cost_rule.used == 0 and cost_rule.unknown_cost_calls == 1


def test_leaked_reservation_expires_after_its_ttl(make_tracker, sqlite_url):
    """A reservation whose process died (never settled) stops counting after reservation_ttl_seconds."""
    tracker = make_tracker(sqlite_url, config(user_limit=10_000, reservation_ttl_seconds=1))
    # Reserved by a limiter of its own on the same database and never settled: a crashed process.
    crashed = Limiter(store_of(tracker), tracker.config, tracker.bypasses, PriceBook(tracker.config))
    held = crashed.reserve(USER, None, estimate=9_000)
    assert held.allowed and held.reservation_id
    assert not tracker.check(USER, estimate=2_000).allowed
    time.sleep(1.2)
    assert tracker.check(USER, estimate=2_000).allowed


def test_config_is_read_once_and_reloaded_explicitly(make_tracker, sqlite_url, tmp_path):
    """Editing models.json changes nothing until reload_config(); a bad file raises and keeps the old rules."""
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"user_limit": 1_000}))
    tracker = make_tracker(sqlite_url, path)
    seed(tracker, dict(user_id=USER, prompt_tokens=900, completion_tokens=0))
    assert not tracker.check(USER, estimate=200).allowed
    path.write_text(json.dumps({"user_limit": 5_000}))
    assert not tracker.check(USER, estimate=200).allowed  # not re-read per check
    tracker.reload_config()
    assert tracker.check(USER, estimate=200).allowed
    path.write_text(json.dumps({"user_limit": -5}))
    with pytest.raises(ConfigurationError) as bad:
        tracker.reload_config()
    assert str(path) in str(bad.value) and '"user_limit"' in str(bad.value) and "-5" in str(bad.value)
    assert tracker.config.user_limit == 5_000 and tracker.check(USER, estimate=200).allowed


def test_a_slow_burn_against_a_huge_limit_has_no_forecast_and_is_admitted(make_tracker, sqlite_url):
    """At 10 tokens an hour a 10**15-token limit lasts beyond any date: no forecast, and never a refusal (the
    forecast once overflowed datetime and the request was refused as 'could not be evaluated')."""
    from tests.support.limits import USER, config, seed

    tracker = make_tracker(sqlite_url, config(user_limit=10**15))
    seed(tracker, dict(user_id=USER, prompt_tokens=10, completion_tokens=0))
    decision = tracker.check(USER, estimate=1)
    assert decision.allowed and decision.used == 10
    assert decision.forecast_exhausted_at is None
    with tracker.guard(USER, estimate=1) as admitted:
        assert admitted.allowed
