"""``LimitWindows.read``: one statement per check — reservations, window sums, the scopes' overrides and usage
resets, and for a rolling window the hour whose leaving lets the request fit. Checked against the answer of the
previous design (the window's hours read in a second query, summed oldest first in Python), on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from dspy_tokens.config import Bypasses
from dspy_tokens.limits import Limiter, Overrides
from dspy_tokens.limits.rules import rolling_start_hour
from dspy_tokens.pricing import PriceBook
from dspy_tokens.store import Store
from dspy_tokens.store.units import hour_of, moment_of_hour
from tests.support.limits import NOW, USER, config
from tests.support.rows import insert, seed_row

GUILD = 7
DAYS = 30
# (hours before NOW, tokens): usage spread over the window, one row outside it, two rows in one hour.
USAGE = [(24 * 31, 9_000), (24 * 29 + 5, 3_000), (24 * 20, 1_500), (24 * 20, 500), (24 * 9 + 3, 4_000),
         (24 * 2, 2_500), (1, 1_200)]


def _limiter(url: str, store: Store | None = None, **limits) -> tuple[Limiter, Store, Overrides]:
    cfg = config(time_window_days=DAYS, **limits)
    store = store or Store(url)
    overrides = Overrides(store, cfg)
    return Limiter(store, cfg, Bypasses(), PriceBook(cfg), overrides), store, overrides


def _seed(url: str, user: int = USER) -> None:
    insert(url, [seed_row(user_id=user, guild_id=GUILD, prompt_tokens=tokens, completion_tokens=0,
                          created_at=NOW - timedelta(hours=hours, minutes=7)) for hours, tokens in USAGE])


def _old_resets_at(store: Store, scope: str, scope_id: int, start: int, must_free: int) -> datetime | None:
    """The previous two-query answer: the window's hours with usage (a second query), freed oldest first."""
    freed = 0
    for hour, value in store.windows.usage_by_hour((scope, scope_id, None, start), "tokens"):
        freed += value
        if freed >= must_free:
            return moment_of_hour(hour + 1) + timedelta(days=DAYS)
    return None


@pytest.fixture
def statements():
    """The SQL statements SQLite runs on the checking thread's connection while the test body checks."""
    def trace(store: Store) -> list[str]:
        store.connect()
        seen: list[str] = []
        store.db.connection().set_trace_callback(seen.append)
        return seen
    return trace


def test_a_check_is_one_statement_allowed_and_refused(sqlite_url, statements):
    """Allowed or refused (with the time it frees up), with a usage reset and a bypass row stored for other
    scopes: the store is asked once per check."""
    limiter, store, overrides = _limiter(sqlite_url, user_limit=15_000, guild_limit=10**9)
    _seed(sqlite_url)
    overrides.set_bypass("user", USER + 1)
    overrides.reset_usage("guild", GUILD, now=NOW - timedelta(days=40))
    seen = statements(store)
    allowed = limiter.check(USER, GUILD, estimate=100, now=NOW)
    assert allowed.allowed and allowed.used == 12_700
    assert len(seen) == 1, seen
    refused = limiter.check(USER, GUILD, estimate=5_000, now=NOW)
    assert not refused.allowed and refused.rule == "user_limit" and refused.resets_at is not None
    assert len(seen) == 2, seen
    # Nobody gave an estimate and nothing is left: it is cut to 1 token, still answered from the one statement.
    full, _, _ = _limiter(sqlite_url, store, user_limit=12_700, guild_limit=10**9)
    cut = full.check(USER, GUILD, now=NOW)
    assert len(seen) == 3, seen
    assert not cut.allowed and cut.estimate_source == "left" and cut.requested == 1
    assert cut.resets_at == _old_resets_at(store, "user", USER, rolling_start_hour(DAYS, NOW), 1)
def test_an_override_limit_costs_a_second_statement_only_for_its_own_window(sqlite_url, statements):
    """A limit set at run time is known only once read: its rules' windows are read in a second statement."""
    limiter, store, overrides = _limiter(sqlite_url, user_limit=15_000)
    _seed(sqlite_url)
    overrides.set_limit("user", USER, tokens=13_000, window="7d")
    seen = statements(store)
    decision = limiter.check(USER, GUILD, estimate=100, now=NOW)
    assert decision.rule == "override[user 42].tokens" and decision.used == 2_500 + 1_200  # the last 7 days
    assert len(seen) == 2, seen


@pytest.mark.parametrize("estimate", [1, 800, 2_000, 4_700, 6_000, 9_000, 13_000, 15_000])
def test_resets_at_equals_the_two_query_answer(database_url, estimate):
    """For estimates freeing one hour, several or all of them: the same hour as summing the hours in Python,
    with an in-flight reservation counted."""
    limiter, store, _ = _limiter(database_url, user_limit=15_000)
    _seed(database_url)
    assert limiter.reserve(USER, None, estimate=1_000, now=NOW).allowed  # a hold the check counts
    decision = limiter.check(USER, None, estimate=estimate, now=NOW)
    start = rolling_start_hour(DAYS, NOW)
    used, held = 12_700, int(decision.reserved)
    assert decision.used == used
    if used + held + estimate <= 15_000:
        assert decision.allowed and decision.resets_at is None
        return
    expected = _old_resets_at(store, "user", USER, start, used + held + estimate - 15_000)
    assert not decision.allowed and decision.resets_at == expected


def test_overrides_and_resets_come_from_the_same_reading(database_url):
    """A run-time limit, a usage reset (its hour's earlier usage subtracted) and a bypass, each seen by the next
    check; the reset moves the window's start and the freeing hour with it."""
    limiter, store, overrides = _limiter(database_url, user_limit=15_000, guild_limit=10**9)
    _seed(database_url)
    reset_at = NOW - timedelta(days=9, hours=3)  # in the hour of the 4,000-token row, after it
    overrides.reset_usage("user", USER, now=reset_at)
    insert(database_url, [seed_row(user_id=USER, guild_id=GUILD, prompt_tokens=600, completion_tokens=0,
                                   created_at=reset_at + timedelta(minutes=1))])
    after = limiter.check(USER, GUILD, estimate=100, now=NOW)
    assert after.used == 600 + 2_500 + 1_200  # the reset hour counts only what came after the reset
    assert after.window_start == moment_of_hour(hour_of(reset_at))
    guild = next(d for d in after.rules if d.scope == "guild")
    assert guild.used == 12_700 + 600  # another scope's reset changes nothing here
    refused = limiter.check(USER, GUILD, estimate=14_000, now=NOW)
    expected = _old_resets_at(store, "user", USER, hour_of(reset_at), 4_300 + 14_000 - 15_000)
    assert not refused.allowed and refused.resets_at == expected
    overrides.set_limit("user", USER, tokens=4_000)
    assert not limiter.check(USER, GUILD, estimate=100, now=NOW).allowed
    overrides.set_bypass("user", USER)
    assert limiter.check(USER, GUILD, estimate=100, now=NOW).bypassed
    overrides.set_bypass("user", USER, on=False)
    overrides.clear_limit("user", USER)
    back = limiter.check(USER, GUILD, estimate=100, now=NOW)
    assert back.allowed and back.limit == 15_000 and back.used == 4_300


def test_a_reading_is_tagged_per_part(database_url):
    """Reservations, windows (with and without the reset), and overrides decode to their own keys."""
    _, store, overrides = _limiter(database_url)
    _seed(database_url)
    overrides.reset_usage("user", USER, now=NOW - timedelta(hours=1))
    from dspy_tokens.store.reading import Freeing, WindowRead
    start = rolling_start_hour(DAYS, NOW)
    key = ("user", USER, None, start)
    store.connect()
    freeing = Freeing("tokens", 5, 10, ("user", USER, None))
    reads = [WindowRead(key, True), WindowRead(key, True, freeing), WindowRead(key, False)]
    reading = store.windows.read([("user", USER, None)], reads, NOW, [("user", USER), ("guild", GUILD)])
    assert reading.reserved == {("user", USER, None): (0, 0, 0)}
    assert reading.used[(key, False)][0] == 12_700 and reading.used[(key, True)][0] == 1_200
    assert reading.start(key) == hour_of(NOW) - 1 and set(reading.overrides) == {("user", USER)}
    assert reading.baseline(key) is not None and reading.baseline(key)[0] == 1_200
    # Nothing counts after the reset (1,200 - 1,200): 10 tokens need 5 freed, the reset hour's leaving frees them.
    assert reading.frees[(key, freeing, 10)] == hour_of(NOW) - 1
