"""The cog's reads: the core's public report API as ``TokenUsageCog`` uses it — ranked by tokens
(``by_tokens``), days without usage filled in (``per_day``), and the limits' own rolling window
(``window_start``)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from dspy_tokens_discord.cog import by_tokens, per_day

from dspy_tokens import Summary
from dspy_tokens.config import parse_config
from tests.discord.support.harness import ALICE, BOB, CAROL, GUILD_ID, OTHER_GUILD_ID
from tests.discord.support.rows import seed, usage_row

NOW = datetime.now(timezone.utc)


@pytest.fixture
def seeded(make_tracker, sqlite_url):
    """Seeded usage, read through the core's report methods."""
    tracker = make_tracker(sqlite_url)
    seed(tracker,
         usage_row(user_id=ALICE, tokens=100, prompt=70, cached=30, reasoning=4, cost="0.001",
                   created_at=NOW - timedelta(days=1)),
         usage_row(user_id=ALICE, tokens=50, cost=None, feature="chat"),
         usage_row(user_id=BOB, tokens=300, cost="0.003", model="openai/gpt-4o"),
         usage_row(user_id=CAROL, tokens=1000, cost="0.01", guild_id=OTHER_GUILD_ID),
         usage_row(user_id=BOB, tokens=7, cost="0.5", created_at=NOW - timedelta(days=40)))
    return tracker


def test_summary_numbers(seeded):
    """summary() adds tokens by kind and known cost, counts unpriced calls and active users, by scope."""
    since = NOW - timedelta(days=30)
    assert seeded.summary(since=since, guild_id=GUILD_ID) == Summary(
        calls=3, prompt_tokens=70 + 37 + 225, completion_tokens=30 + 13 + 75, cached_tokens=30, reasoning_tokens=4,
        total_tokens=450, cost_usd=Decimal("0.004"), unknown_cost_calls=1, active_users=2, since=since)
    assert seeded.summary(since=since, user_id=ALICE).total_tokens == 150
    assert seeded.summary(since=None).total_tokens == 1457
    later, end = NOW + timedelta(days=1), NOW + timedelta(days=2)
    assert seeded.summary(since=later, until=end) == Summary(since=later, until=end)


def test_rankings_breakdowns_and_days(seeded):
    """top/breakdown (as the cog ranks them: by tokens) order by tokens; per_day fills empty days with zeros,
    oldest first."""
    since = NOW - timedelta(days=30)
    assert [(g.key, g.total_tokens) for g in by_tokens(seeded.top(10, by="tokens", scope="user", since=since))] == [
        (CAROL, 1000), (BOB, 300), (ALICE, 150)]
    assert [g.key for g in by_tokens(seeded.top(1, by="tokens", scope="user", since=since, guild_id=GUILD_ID))] == [
        BOB]
    assert [(g.key, g.total_tokens) for g in by_tokens(seeded.top(10, by="tokens", scope="guild", since=since))] == [
        (OTHER_GUILD_ID, 1000), (GUILD_ID, 450)]
    assert [(g.key, g.calls) for g in by_tokens(seeded.breakdown("feature", since=since))] == [("ask", 3), ("chat", 1)]
    # by tokens, although gpt-4o-mini's $0.011 > gpt-4o's $0.003 would rank the other way by cost
    assert [(g.key, g.total_tokens, g.cost_usd) for g in by_tokens(seeded.breakdown("model", since=since), 1)] == [
        ("openai/gpt-4o-mini", 1150, Decimal("0.011"))]
    days = per_day(seeded.breakdown("day", since=NOW - timedelta(days=3), guild_id=GUILD_ID), NOW - timedelta(days=3))
    assert [d.key for d in days] == [(NOW - timedelta(days=3 - i)).date() for i in range(4)]
    assert [d.total_tokens for d in days] == [0, 0, 100, 350]
    with pytest.raises(ValueError):
        seeded.breakdown("colour", since=since)


def test_recent_calls_newest_first(seeded):
    """recent_calls() lists a user's calls newest first, with feature, model and tokens."""
    calls = seeded.recent_calls(ALICE)
    assert [(c["feature"], c["total_tokens"]) for c in calls] == [("chat", 50), ("ask", 100)]


def test_window_start_is_the_cores_rolling_window(make_tracker, sqlite_url):
    """/token-usage totals start where the core's rolling rules start (tracker.window_start); a daily rule does not
    move them, and with no rule they still start time_window_days before the current hour."""
    def hour():
        return datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)

    tracker = make_tracker(sqlite_url, parse_config({"user_limit": 100, "daily_token_limit": 1000,
                                                     "time_window_days": 7}, "test models.json"))
    before = hour()
    decision = tracker.check(ALICE, GUILD_ID, estimate=1)
    start = tracker.window_start()
    after = hour()
    [rolling] = [d for d in decision.rules if d.window == "rolling"]
    assert start == rolling.window_start
    assert rolling.window_start in (before - timedelta(days=7), after - timedelta(days=7))
    daily_only = tracker.check(None, None, estimate=1)  # only the global daily rule applies
    assert [d.window for d in daily_only.rules] == ["day"]
    now = datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
    assert tracker.window_start(now) == datetime(2030, 4, 29, 7, tzinfo=timezone.utc)
