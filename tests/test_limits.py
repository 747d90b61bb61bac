"""Limits: every rule, mode and bypass, the rolling ``resets_at``, reservations, and configuration handling."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dspy
import pytest

from dspy_tokens import ConfigurationError, TokenLimitExceeded
from dspy_tokens.config import parse_config
from dspy_tokens.testing import usage_row
from conftest import stored_rows

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=timezone.utc)
USER, GUILD, OTHER_USER = 42, 7, 43


def config(**values):
    return parse_config(values, "models.json")


def seed(tracker, *rows):
    tracker.store.insert_rows([usage_row(**r) for r in rows])


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
    decision = tracker.limiter.check(USER, GUILD, estimate=4_000, now=NOW)
    assert (decision.allowed, decision.scope, decision.rule, decision.used, decision.limit) == \
        (True, "user", "user_limit", 6_000, 10_000)
    assert decision.remaining == 4_000
    refused = tracker.limiter.check(USER, GUILD, estimate=4_001, now=NOW)
    assert not refused.allowed and refused.exceeded and refused.scope == "user"
    assert "6,000 of 10,000 tokens in the last 30 days" in refused.message


def test_guild_and_global_limits(make_tracker, database_url):
    """guild_limit sums every member of the guild; global_limit sums everyone; the refusing rule is named."""
    tracker = make_tracker(database_url, config(guild_limit=5_000, global_limit=8_000))
    seed(tracker, dict(user_id=1, guild_id=GUILD, prompt_tokens=2_000, completion_tokens=0, created_at=NOW),
         dict(user_id=2, guild_id=GUILD, prompt_tokens=2_000, completion_tokens=0, created_at=NOW),
         dict(user_id=3, guild_id=99, prompt_tokens=3_000, completion_tokens=0, created_at=NOW))
    in_guild = tracker.limiter.check(USER, GUILD, estimate=1_500, now=NOW)
    assert not in_guild.allowed and in_guild.scope == "guild" and in_guild.used == 4_000
    assert in_guild.message.startswith("This server has used 4,000 of 5,000 tokens")
    elsewhere = tracker.limiter.check(USER, 99, estimate=1_500, now=NOW)
    assert not elsewhere.allowed and elsewhere.scope == "global" and elsewhere.used == 7_000
    assert tracker.limiter.check(USER, 99, estimate=1_000, now=NOW).allowed


def test_cost_limits_use_exact_decimal_dollars(make_tracker, database_url):
    """user_cost_limit/guild_cost_limit/global_cost_limit compare exact dollars, estimating at the model's rate."""
    tracker = make_tracker(database_url, config(user_cost_limit=1, guild_cost_limit=2, global_cost_limit=3))
    seed(tracker, dict(user_id=USER, guild_id=GUILD, cost_usd=Decimal("0.999"), created_at=NOW),
         dict(user_id=OTHER_USER, guild_id=GUILD, cost_usd=Decimal("0.9"), created_at=NOW),
         dict(user_id=OTHER_USER, guild_id=8, cost_usd=Decimal("1.0"), created_at=NOW))
    # gpt-4o-mini's dearer rate is output, 6e-07 $/token: 1,000 tokens hold $0.0006.
    allowed = tracker.limiter.check(USER, GUILD, model="openai/gpt-4o-mini", estimate=1_000, now=NOW)
    assert allowed.allowed and allowed.metric == "cost" and allowed.used == Decimal("0.999")
    assert allowed.requested == Decimal("0.0006")
    refused = tracker.limiter.check(USER, GUILD, model="openai/gpt-4o-mini", estimate=2_000, now=NOW)
    assert not refused.allowed and refused.rule == "user_cost_limit" and refused.limit == Decimal(1)
    other = tracker.limiter.check(44, 8, model="openai/gpt-4o-mini", estimate=1_000_000, now=NOW)
    assert not other.allowed and other.rule == "global_cost_limit" and other.used == Decimal("2.899")


def test_daily_and_monthly_budgets_reset_on_utc_calendar_boundaries(make_tracker, database_url):
    """daily_* count since 00:00 UTC and free up at the next midnight; monthly_cost_limit at the 1st."""
    tracker = make_tracker(database_url, config(daily_token_limit=1_000, monthly_cost_limit=Decimal("0.5")))
    seed(tracker,
         dict(prompt_tokens=900, completion_tokens=0, cost_usd=Decimal("0.1"), created_at=NOW.replace(hour=0, minute=1)),
         dict(prompt_tokens=5_000, completion_tokens=0, cost_usd=Decimal("0.3"),
              created_at=NOW.replace(hour=0, minute=0) - timedelta(microseconds=1)))
    daily = tracker.limiter.check(USER, None, estimate=200, now=NOW)
    assert not daily.allowed and daily.rule == "daily_token_limit" and daily.used == 900
    assert daily.resets_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert "today (UTC)" in daily.message
    monthly = tracker.limiter.check(USER, None, model="openai/gpt-4o-mini", estimate=100, now=NOW)
    assert monthly.allowed
    expensive = tracker.limiter.check(USER, None, model="openai/gpt-4o-mini", estimate=200_000, now=NOW.replace(hour=23))
    assert not expensive.allowed
    assert any(d.rule == "monthly_cost_limit" and d.resets_at == datetime(2026, 12, 1, tzinfo=timezone.utc)
               for d in (expensive, *expensive.others))


def test_per_model_override_counts_only_that_model(make_tracker, database_url):
    """A limit inside a model entry applies to that model's usage only; other models stay under the global rule."""
    cfg = config(user_limit=100_000, models=[
        {"label": "big", "name": "gpt-4o", "provider": "openai", "user_limit": 1_000},
        {"label": "small", "name": "gpt-4o-mini", "provider": "openai"}])
    tracker = make_tracker(database_url, cfg)
    seed(tracker, dict(user_id=USER, model="openai/gpt-4o", prompt_tokens=800, completion_tokens=0, created_at=NOW),
         dict(user_id=USER, model="openai/gpt-4o-mini", prompt_tokens=50_000, completion_tokens=0, created_at=NOW))
    big = tracker.limiter.check(USER, None, model="openai/gpt-4o", estimate=300, now=NOW)
    assert not big.allowed and big.rule == "models[big].user_limit" and big.used == 800
    assert tracker.limiter.check(USER, None, model="big", estimate=300, now=NOW).rule == "models[big].user_limit"
    small = tracker.limiter.check(USER, None, model="openai/gpt-4o-mini", estimate=300, now=NOW)
    assert small.allowed and small.rule == "user_limit" and small.used == 50_800


def test_rolling_resets_at_is_when_enough_old_usage_leaves(make_tracker, sqlite_url):
    """resets_at is the end of the hour whose usage, once 30 days old, frees enough room — not "in 30 days"."""
    tracker = make_tracker(sqlite_url, config(user_limit=10_000))
    oldest = datetime(2026, 10, 30, 9, 15, tzinfo=timezone.utc)
    middle = datetime(2026, 11, 10, 18, 40, tzinfo=timezone.utc)
    seed(tracker, dict(user_id=USER, prompt_tokens=3_000, completion_tokens=0, created_at=oldest),
         dict(user_id=USER, prompt_tokens=4_000, completion_tokens=0, created_at=middle),
         dict(user_id=USER, prompt_tokens=2_500, completion_tokens=0, created_at=NOW - timedelta(minutes=5)))
    # 9,500 used: a 2,000-token request needs 1,500 freed -> the oldest hour (09:00-10:00) leaving suffices.
    small = tracker.limiter.check(USER, None, estimate=2_000, now=NOW)
    assert small.resets_at == datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
    assert "Enough frees up at 2026-11-29 10:00 UTC" in small.message
    # A 5,000-token request needs 4,500 freed: the oldest two hours must leave.
    big = tracker.limiter.check(USER, None, estimate=5_000, now=NOW)
    assert big.resets_at == datetime(2026, 12, 10, 19, 0, tzinfo=timezone.utc)
    # Larger than the whole limit: never.
    huge = tracker.limiter.check(USER, None, estimate=20_000, now=NOW)
    assert huge.resets_at is None and "larger than the whole limit" in huge.message
    # At the reset time the request really is allowed.
    assert tracker.limiter.check(USER, None, estimate=2_000, now=small.resets_at).allowed


def test_enforcement_modes_and_soft_threshold(make_tracker, sqlite_url, caplog):
    """enforce refuses; warn allows, flags and logs; off allows; the soft threshold flags a warning early."""
    rows = [dict(user_id=USER, prompt_tokens=8_500, completion_tokens=0, created_at=NOW)]
    enforce = make_tracker(sqlite_url, config(user_limit=10_000, soft_limit_ratio=0.8))
    seed(enforce, *rows)
    soft = enforce.limiter.check(USER, None, estimate=100, now=NOW)
    assert soft.allowed and soft.warning and not soft.exceeded
    assert not enforce.limiter.check(USER, None, estimate=2_000, now=NOW).allowed

    warn = make_tracker(sqlite_url, config(user_limit=10_000, enforcement="warn"))
    with caplog.at_level("WARNING", logger="dspy_tokens"):
        decision = warn.limiter.check(USER, None, estimate=2_000, now=NOW)
    assert decision.allowed and decision.exceeded and decision.warning
    assert any("warn mode" in r.getMessage() for r in caplog.records)
    with warn.guard(USER, estimate=2_000) as held:  # warn mode never blocks and reserves nothing
        assert held.reservation_id is None

    off = make_tracker(sqlite_url, config(user_limit=10_000, enforcement="off"))
    assert off.limiter.check(USER, None, estimate=2_000, now=NOW).allowed


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
    decision = tracker.limiter.check(USER, None, model="openai/my-finetune", estimate=300, now=NOW)
    token_rule = next(d for d in (decision, *decision.others) if d.metric == "tokens")
    cost_rule = next(d for d in (decision, *decision.others) if d.metric == "cost")
    assert token_rule.used == 600 and cost_rule.used == 0 and cost_rule.unpriced_calls == 1


def test_guard_refuses_before_the_llm_runs(make_tracker, sqlite_url, server):
    """A refused guard raises TokenLimitExceeded carrying the decision, and no HTTP request is made."""
    tracker = make_tracker(sqlite_url, config(user_limit=1_000))
    seed(tracker, dict(user_id=USER, prompt_tokens=990, completion_tokens=0))
    with pytest.raises(TokenLimitExceeded) as refused:
        with dspy.context(lm=server.lm(), callbacks=[tracker]), tracker.guard(USER, estimate=50):
            dspy.Predict("question -> answer")(question="never sent")
    assert refused.value.decision.scope == "user" and refused.value.decision.used == 990
    assert str(refused.value) == refused.value.decision.message
    assert server.requests == []


def test_guard_reserves_then_settles_to_actual_usage(make_tracker, database_url, server):
    """Inside the block the estimate is held; after it the hold is gone and only the real usage counts."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    reservations = tracker.store.models.Reservation
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        with tracker.guard(USER, GUILD, channel_id=9, feature="chat", estimate=5_000) as held:
            assert held.reservation_id and tracker.check(USER, estimate=0).reserved == 5_000
            dspy.ChainOfThought("question -> answer")(question="how much did this cost?")
    assert tracker.flush(10)
    with tracker.store.db.connection_context():
        assert reservations.select().count() == 0
    actual = server.usage_totals()["total_tokens"]
    after = tracker.check(USER, estimate=0)
    assert (after.used, after.reserved) == (actual, 0)
    [row] = stored_rows(tracker)
    assert (row["user_id"], row["guild_id"], row["channel_id"], row["feature"]) == (USER, GUILD, 9, "chat")


async def test_async_guard_settles_and_releases_on_exception(make_tracker, sqlite_url, server):
    """async with guard works with acall, and a block that raises still releases its reservation."""
    tracker = make_tracker(sqlite_url, config(user_limit=100_000))
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        async with tracker.guard(USER, estimate=3_000):
            await dspy.Predict("question -> answer").acall(question="async")
        with pytest.raises(RuntimeError):
            async with tracker.guard(USER, estimate=3_000):
                raise RuntimeError("handler failed")
    assert tracker.flush(10)
    decision = tracker.check(USER, estimate=0)
    assert decision.reserved == 0 and decision.used == server.usage_totals()["total_tokens"]


def test_leaked_reservation_expires_after_its_ttl(make_tracker, sqlite_url):
    """A reservation whose process died (never settled) stops counting after reservation_ttl_seconds."""
    tracker = make_tracker(sqlite_url, config(user_limit=10_000, reservation_ttl_seconds=1))
    held = tracker.limiter.reserve(USER, None, estimate=9_000)  # reserved, never settled: a crashed process
    assert held.allowed and held.reservation_id
    assert not tracker.check(USER, estimate=2_000).allowed
    time.sleep(1.2)
    assert tracker.check(USER, estimate=2_000).allowed


def test_concurrent_guards_in_threads_admit_only_what_fits(make_tracker, database_url):
    """8 threads at 94,000/100,000 asking 5,000 each: exactly one is admitted (reserve happens atomically)."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    seed(tracker, dict(user_id=USER, prompt_tokens=94_000, completion_tokens=0))
    start, decided, admitted, refused = threading.Barrier(8), threading.Barrier(8), [], []

    def request():
        start.wait()
        try:
            with tracker.guard(USER, estimate=5_000):
                admitted.append(1)
                decided.wait(timeout=30)  # the "LLM" runs until every other request has been decided
        except TokenLimitExceeded:
            refused.append(1)
            decided.wait(timeout=30)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (1, 7)


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


@pytest.mark.parametrize("document, field, fix", [
    ({"user_limit": "100k"}, '"user_limit"', "integer"),
    ({"user_limit": True}, '"user_limit"', "integer"),
    ({"user_cost_limit": -1}, '"user_cost_limit"', "non-negative"),
    ({"enforcement": "strict"}, '"enforcement"', "enforce, warn, off"),
    ({"user_limt": 5}, '"user_limt"', 'did you mean "user_limit"'),
    ({"time_window_days": 0}, '"time_window_days"', ">= 1"),
    ({"models": [{"label": "x", "name": "m", "user_limit": -1}]}, "models[0].user_limit", "integer"),
    ({"soft_limit_ratio": 1.5}, '"soft_limit_ratio"', "(0, 1]"),
])
def test_malformed_limits_name_field_value_and_fix(document, field, fix):
    """Bad limit settings raise ConfigurationError naming the file, the field, the value and the fix."""
    with pytest.raises(ConfigurationError) as error:
        parse_config(document, "conf/models.json")
    message = str(error.value)
    assert message.startswith("conf/models.json: ") and field in message and fix in message


def test_rebuild_counters_restores_them_from_rows(make_tracker, database_url):
    """Counters wiped or corrupted are rebuilt exactly from the raw rows (the audit path)."""
    from dspy_tokens.counters import rebuild

    tracker = make_tracker(database_url, config(user_limit=100_000))
    seed(tracker, *[dict(user_id=USER + i % 3, guild_id=GUILD, prompt_tokens=100 * i, completion_tokens=i,
                         created_at=NOW - timedelta(hours=5 * i)) for i in range(1, 30)])
    counters = tracker.store.models.UsageCounter

    def snapshot():
        with tracker.store.db.connection_context():
            return sorted(counters.select().tuples())

    before = snapshot()
    with tracker.store.db.connection_context():
        counters.update(tokens=counters.tokens + 1).execute()
    assert snapshot() != before
    with tracker.store.db.connection_context():
        rebuild(tracker.store.db, tracker.store.models)
    assert snapshot() == before


async def test_cancelled_async_guard_releases_what_it_reserved(make_tracker, sqlite_url):
    """A task cancelled while its guard is deciding does not leave the reservation held until the TTL."""
    import asyncio

    tracker = make_tracker(sqlite_url, config(user_limit=10_000))
    reserve = tracker.limiter.reserve

    def slow_reserve(*args, **kwargs):
        time.sleep(0.3)
        return reserve(*args, **kwargs)

    tracker.limiter.reserve = slow_reserve

    async def handler():
        async with tracker.guard(USER, estimate=9_000):
            pytest.fail("the block must not run")

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)  # the decision thread finishes and its reservation is handed back
    assert tracker.flush(10)
    assert tracker.check(USER, estimate=9_000).allowed
