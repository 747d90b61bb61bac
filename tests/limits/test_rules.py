"""Limit rules from models.json: calendar windows (UTC day and month) and the rolling window's ``resets_at``,
per-model overrides, and malformed limit settings named with their fix. Decisions are asked of
``tracker.check(..., now=...)`` over usage seeded through the write path."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dspy_tokens import ConfigurationError
from dspy_tokens.config import parse_config
from tests.support.limits import NOW, USER, config, seed


def test_daily_and_monthly_budgets_reset_on_utc_calendar_boundaries(make_tracker, database_url):
    """daily_* count since 00:00 UTC and free up at the next midnight; monthly_cost_limit at the 1st."""
    tracker = make_tracker(database_url, config(daily_token_limit=1_000, monthly_cost_limit=Decimal("0.5")))
    seed(tracker,
         dict(prompt_tokens=900, completion_tokens=0, cost_usd=Decimal("0.1"),
              created_at=NOW.replace(hour=0, minute=1)),
         dict(prompt_tokens=5_000, completion_tokens=0, cost_usd=Decimal("0.3"),
              created_at=NOW.replace(hour=0, minute=0) - timedelta(microseconds=1)))
    daily = tracker.check(USER, None, estimate=200, now=NOW)
    assert not daily.allowed and daily.rule == "daily_token_limit" and daily.used == 900
    assert daily.resets_at == datetime(2026, 11, 24, tzinfo=timezone.utc)
    assert "today (UTC)" in daily.message
    monthly = tracker.check(USER, None, model="openai/gpt-4o-mini", estimate=100, now=NOW)
    assert monthly.allowed
    expensive = tracker.check(USER, None, model="openai/gpt-4o-mini", estimate=200_000, now=NOW.replace(hour=23))
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
    big = tracker.check(USER, None, model="openai/gpt-4o", estimate=300, now=NOW)
    assert not big.allowed and big.rule == "models[big].user_limit" and big.used == 800
    assert tracker.check(USER, None, model="big", estimate=300, now=NOW).rule == "models[big].user_limit"
    small = tracker.check(USER, None, model="openai/gpt-4o-mini", estimate=300, now=NOW)
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
    small = tracker.check(USER, None, estimate=2_000, now=NOW)
    assert small.resets_at == datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
    assert "Enough frees up at 2026-11-29 10:00 UTC" in small.message
    # A 5,000-token request needs 4,500 freed: the oldest two hours must leave.
    big = tracker.check(USER, None, estimate=5_000, now=NOW)
    assert big.resets_at == datetime(2026, 12, 10, 19, 0, tzinfo=timezone.utc)
    # Larger than the whole limit: never.
    huge = tracker.check(USER, None, estimate=20_000, now=NOW)
    assert huge.resets_at is None and "larger than the whole limit" in huge.message
    # At the reset time the request really is allowed.
    assert tracker.check(USER, None, estimate=2_000, now=small.resets_at).allowed


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
