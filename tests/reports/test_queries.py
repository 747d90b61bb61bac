"""Reports: summaries, breakdowns, top-N and sessions, checked against hand-computed numbers on every backend,
and against a direct computation over random rows (rollups plus partial-day raw rows answer exactly what summing
the rows gives)."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from dspy_tokens import Reports
from dspy_tokens.store import Store
from tests.support.rows import GPT4O, MINI, MYSTERY, NOW, as_rows, at, hand_rows, insert, random_rows


@pytest.fixture
def hand(database_url):
    """Reports over the ten hand-made rows (``hand_rows``), with the clock at ``NOW``."""
    rows = hand_rows()
    store = insert(database_url, list(rows.values()))
    return Reports(store, clock=lambda: NOW), rows


def numbers(totals) -> dict:
    """Every count of a Totals, by name."""
    return {k: getattr(totals, k) for k in ("calls", "prompt_tokens", "completion_tokens", "cached_tokens",
                                             "reasoning_tokens", "total_tokens", "cost_usd", "unknown_cost_calls",
                                             "cache_hits", "errors")}


# -- summary ---------------------------------------------------------------------------------------------------

class TestSummary:
    """Summaries of calendar and rolling periods and filters, by hand, to the microsecond."""

    def test_summary_of_today_week_month_and_all_by_hand(self, hand):
        """Every number of the four standard periods equals the sums worked out by hand from the ten rows."""
        reports, _ = hand
        today = reports.summary("today")
        # F, G, H, I, J: H is unpriced (tokens counted, no dollars), I a cache hit, J failed.
        assert numbers(today) == dict(calls=5, prompt_tokens=370, completion_tokens=180, cached_tokens=90,
                                      reasoning_tokens=20, total_tokens=550, cost_usd=Decimal("0.0014795"),
                                      unknown_cost_calls=1, cache_hits=1, errors=1)
        assert today.active_users == 3 and (today.since, today.until) == (at(2025, 3, 12), at(2025, 3, 13))
        week = reports.summary("week")  # + D (Monday 00:00) and E
        assert numbers(week) == dict(calls=7, prompt_tokens=1170, completion_tokens=350, cached_tokens=90,
                                     reasoning_tokens=20, total_tokens=1520, cost_usd=Decimal("0.0017015"),
                                     unknown_cost_calls=1, cache_hits=1, errors=1)
        assert week.active_users == 3 and (week.since, week.until) == (at(2025, 3, 10), at(2025, 3, 17))
        month = reports.summary("month")  # + B (1st 00:00) and C
        assert numbers(month) == dict(calls=9, prompt_tokens=1770, completion_tokens=550, cached_tokens=90,
                                      reasoning_tokens=20, total_tokens=2320, cost_usd=Decimal("0.0037915"),
                                      unknown_cost_calls=1, cache_hits=1, errors=1)
        assert month.active_users == 4 and (month.since, month.until) == (at(2025, 3, 1), at(2025, 4, 1))
        everything = reports.summary()  # + A
        assert (everything.calls, everything.total_tokens, everything.cost_usd, everything.active_users) == (
            10, 3820, Decimal("0.0042415"), 4)
        assert reports.summary("all") == everything

    def test_period_boundaries_are_utc_to_the_microsecond(self, hand):
        """23:59:59.999999 belongs to the day before; 00:00:00 to the new day, week and month (all UTC)."""
        reports, rows = hand
        assert reports.summary(since=rows["F"]["created_at"]).calls == 5  # F..J
        assert reports.summary(since=rows["E"]["created_at"]).calls == 6
        assert reports.summary(until=rows["F"]["created_at"]).calls == 5  # until is exclusive: A..E
        one_day = reports.summary(since=date(2025, 3, 11), until=date(2025, 3, 12))
        assert one_day.calls == 1 and one_day.total_tokens == 450  # E only
        # The same instant written in another time zone: 01:00 at UTC+1 is 00:00 UTC.
        plus_one = timezone(timedelta(hours=1))
        assert reports.summary(since=datetime(2025, 3, 12, 1, 0, tzinfo=plus_one)).calls == 5
        # Calendar periods from a clock set exactly on a boundary: Monday 2025-03-10 00:00 UTC.
        monday = Reports(reports.store, clock=lambda: at(2025, 3, 10))
        assert monday.bounds("today") == (at(2025, 3, 10), at(2025, 3, 11))
        assert monday.bounds("week") == (at(2025, 3, 10), at(2025, 3, 17))
        assert monday.summary("today").calls == 1  # D: the whole calendar day, and only it
        assert monday.summary("week").calls == 7  # D..J
        assert monday.summary("month").calls == 9  # B..J
        # Rolling periods end now and start exactly `delta` earlier.
        assert reports.bounds("36h") == (at(2025, 3, 10, 22, 30), None)
        assert reports.summary("36h").calls == 6  # E..J
        assert reports.summary(timedelta(minutes=30)).calls == 2  # I (10:00) and J (10:15)

    def test_bad_periods_and_filters_are_value_errors(self, hand):
        """Naive datetimes, a period with since, unknown periods, since after until, bad ids, unknown breakdowns and
        top-N metrics are ValueErrors naming the problem."""
        reports, _ = hand
        with pytest.raises(ValueError, match="naive"):
            reports.summary(since=datetime(2025, 3, 1))
        with pytest.raises(ValueError, match="either a period or since"):
            reports.summary("today", since=at(2025, 3, 1))
        with pytest.raises(ValueError, match="fortnight"):
            reports.summary("fortnight")
        with pytest.raises(ValueError, match="after until"):
            reports.summary(since=at(2025, 3, 2), until=at(2025, 3, 1))
        with pytest.raises(ValueError, match="user_id"):
            reports.summary(user_id=-5)
        with pytest.raises(ValueError, match="breakdowns are by"):
            reports.breakdown("planet")
        with pytest.raises(ValueError, match="tokens or cost"):
            reports.top(by="calls")

    def test_unknown_cost_calls_are_counted_apart_never_as_zero_dollars(self, hand):
        """An unpriced model's calls keep their tokens but are reported as unknown cost, not as $0."""
        reports, _ = hand
        mystery = reports.summary(model=MYSTERY)
        assert (mystery.calls, mystery.total_tokens, mystery.cost_usd, mystery.unknown_cost_calls) == (
            1, 100, Decimal(0), 1)
        assert not mystery.cost_complete
        user2 = reports.summary("today", user_id=2)  # G priced, H unpriced
        assert (user2.calls, user2.cost_usd, user2.unknown_cost_calls, user2.active_users) == (
            2, Decimal("0.0014375"), 1, 1)
        failed = reports.summary("today", user_id=3)  # J failed: an error, not an unknown cost
        assert (failed.calls, failed.errors, failed.unknown_cost_calls, failed.total_tokens) == (1, 1, 0, 0)
        cache_hit = reports.summary(since=at(2025, 3, 12, 10), until=at(2025, 3, 12, 10, 1))
        assert (cache_hit.calls, cache_hit.cache_hits, cache_hit.cost_usd, cache_hit.cost_complete) == (
            1, 1, Decimal(0), True)

    def test_filtered_summaries_by_hand(self, hand):
        """Summaries filtered by guild, feature, two dimensions at once (the daily cube) and a partial day (raw rows)
        equal the hand-computed sums."""
        reports, _ = hand
        assert numbers(reports.summary("month", guild_id=10)) == dict(
            calls=4, prompt_tokens=1000, completion_tokens=400, cached_tokens=90, reasoning_tokens=20,
            total_tokens=1400, cost_usd=Decimal("0.0036145"), unknown_cost_calls=0, cache_hits=0, errors=0)  # C E F G
        assert reports.summary("month", guild_id=10).active_users == 2
        chat = reports.summary("month", feature="chat")  # B E F J
        assert (chat.calls, chat.total_tokens, chat.cost_usd, chat.errors, chat.active_users) == (
            4, 900, Decimal("0.000267"), 1, 3)
        both = reports.summary("month", user_id=1, model=GPT4O)  # two filters: the daily cube answers (C)
        assert (both.calls, both.total_tokens, both.cost_usd, both.active_users) == (1, 500, Decimal("0.002"), 1)
        partial = reports.summary(since=at(2025, 3, 12, 9, 15), guild_id=20, feature="search")  # raw rows: H
        assert (partial.calls, partial.total_tokens, partial.unknown_cost_calls, partial.active_users) == (1, 100, 1, 1)


# -- breakdowns, top, sessions ------------------------------------------------------------------------------------

class TestBreakdownsTopSessions:
    """Breakdowns, top-N and sessions, by hand."""

    def test_breakdowns_by_feature_model_day_and_guild_by_hand(self, hand):
        """Breakdowns by feature, model, day and guild (with a limit, and for one user) equal the hand-computed groups,
        largest cost first (by day: in day order)."""
        reports, _ = hand
        by_feature = reports.breakdown("feature", "month")
        assert [(g.key, g.calls, g.total_tokens, g.cost_usd, g.unknown_cost_calls, g.errors, g.cache_hits)
                for g in by_feature] == [
            ("search", 4, 1420, Decimal("0.0035245"), 1, 0, 0),  # C D G H
            ("chat", 4, 900, Decimal("0.000267"), 0, 1, 0),  # B E F J
            (None, 1, 0, Decimal(0), 0, 0, 1),  # I: no feature
        ]
        by_model = reports.breakdown("model", "month")
        assert [(g.key, g.calls, g.total_tokens, g.cost_usd, g.unknown_cost_calls) for g in by_model] == [
            (GPT4O, 2, 800, Decimal("0.0034375"), 0),
            (MINI, 6, 1420, Decimal("0.000354"), 0),
            (MYSTERY, 1, 100, Decimal(0), 1),
        ]
        by_day = reports.breakdown("day", "week")
        assert [(g.key, g.calls, g.total_tokens) for g in by_day] == [
            (date(2025, 3, 10), 1, 520), (date(2025, 3, 11), 1, 450), (date(2025, 3, 12), 5, 550)]
        by_guild = reports.breakdown("guild", "month", limit=1)
        assert [(g.key, g.calls, g.total_tokens) for g in by_guild] == [(10, 4, 1400)]
        per_model_for_user = reports.breakdown("model", user_id=1)  # daily cube
        assert [(g.key, g.total_tokens) for g in per_model_for_user] == [(GPT4O, 500), (MINI, 600)]

    def test_top_users_and_guilds_by_tokens_and_by_cost(self, hand):
        """Top-N ranks by tokens or by cost (different orders here) and leaves out calls without a user."""
        reports, _ = hand
        by_tokens = reports.top(10, "tokens", period="month")
        assert [(g.key, g.total_tokens) for g in by_tokens] == [(1, 1100), (3, 520), (2, 400), (4, 300)]
        by_cost = reports.top(10, "cost", period="month")
        assert [(g.key, g.cost_usd) for g in by_cost] == [
            (1, Decimal("0.002177")), (2, Decimal("0.0014375")), (4, Decimal("0.00009")), (3, Decimal("0.000087"))]
        assert [g.key for g in reports.top(2, period="month")] == [1, 3]
        guilds = reports.top(5, scope="guild", period="month")
        assert [(g.key, g.calls, g.total_tokens) for g in guilds] == [(10, 4, 1400), (20, 4, 920)]
        # A rolling window: partial days from raw rows, whole days from the rollups.
        rolling = reports.top(3, period="36h")  # E..J
        assert [(g.key, g.total_tokens) for g in rolling] == [(1, 600), (2, 400), (3, 0)]

    def test_session_calls_in_call_index_order_and_session_breakdown(self, hand):
        """``session()`` lists a session's calls in call-index order with their stored values; the session breakdown
        lists the latest session first with its first and last call times."""
        reports, rows = hand
        calls = reports.session("s-today")
        assert [c["call_uuid"] for c in calls] == [rows["E"]["call_uuid"], rows["F"]["call_uuid"]]
        assert calls[1]["created_at"] == at(2025, 3, 12) and calls[1]["cost_usd"] == Decimal("0.000042")
        assert calls[1]["cache_hit"] is False and calls[1]["cached_tokens"] == 40
        assert reports.session("no-such-session") == []
        sessions = reports.breakdown("session", "week")
        assert sessions[0].key == rows["J"]["session_id"]  # latest first
        today = {g.key: g for g in sessions}["s-today"]
        assert (today.calls, today.total_tokens, today.first_at, today.last_at) == (
            2, 600, at(2025, 3, 11, 23, 59, 59, 999999), at(2025, 3, 12))


# -- the fast path answers exactly what the rows say ---------------------------------------------------------------

DIMENSION_COLUMNS = {"user": "user_id", "guild": "guild_id", "model": "model", "feature": "feature"}


def expected(rows, since, until, filters, by=None) -> dict:
    """The report computed directly from row dicts, with plain Python."""
    out = defaultdict(lambda: dict(calls=0, total_tokens=0, prompt_tokens=0, cached_tokens=0, cost_usd=Decimal(0),
                                   unknown_cost_calls=0, errors=0, cache_hits=0))
    for row in rows:
        if (since and row["created_at"] < since) or (until and row["created_at"] >= until):
            continue
        if any(row[DIMENSION_COLUMNS[d]] != v for d, v in filters.items()):
            continue
        key = {None: None, "day": row["created_at"].date(), "session": row["session_id"]}.get(
            by, row.get(DIMENSION_COLUMNS.get(by, "")))
        acc = out[key]
        acc["calls"] += 1
        for column in ("total_tokens", "prompt_tokens", "cached_tokens"):
            acc[column] += row[column] or 0
        acc["cost_usd"] += row["cost_usd"] or 0
        acc["unknown_cost_calls"] += row["cost_usd"] is None and row["error"] is None
        acc["errors"] += row["error"] is not None
        acc["cache_hits"] += row["cache_hit"]
    return dict(out)


NOTHING = dict(calls=0, total_tokens=0, prompt_tokens=0, cached_tokens=0, cost_usd=Decimal(0), unknown_cost_calls=0,
               errors=0, cache_hits=0)


def as_expected(totals) -> dict:
    """A Totals in the shape of :func:`expected`."""
    return {k: getattr(totals, k) for k in ("calls", "total_tokens", "prompt_tokens", "cached_tokens", "cost_usd",
                                             "unknown_cost_calls", "errors", "cache_hits")}


RANGES = [
    ("today", {}), ("week", {}), ("month", {}), (None, {}), ("7d", {}), ("36h", {}),
    (None, {"since": at(2025, 1, 15, 13, 5), "until": at(2025, 3, 3, 7)}),  # partial days around whole months
    (None, {"since": date(2025, 1, 1), "until": date(2025, 3, 1)}),  # whole months only
    (None, {"since": at(2025, 2, 3, 1), "until": at(2025, 2, 3, 5)}),  # inside one day
    (None, {"until": at(2025, 2, 10, 12)}),
    # Months minus the days outside the range (see plan_spans): the dashboard's 30 days, a month-long range with
    # a partial first day, one month without its first two and last three days, a range ending late in a month.
    (None, {"since": date(2025, 2, 11)}), (None, {"since": at(2025, 1, 4, 6, 30)}),
    (None, {"since": date(2025, 2, 3), "until": date(2025, 2, 26)}),
    (None, {"since": date(2025, 1, 1), "until": at(2025, 2, 25, 18)}),
    # Days minus the raw rows outside the range: most of one day, two partial days with no whole day between.
    (None, {"since": at(2025, 2, 3, 1), "until": at(2025, 2, 3, 23)}),
    (None, {"since": at(2025, 3, 1, 20), "until": at(2025, 3, 2, 5)}), ("60h", {}),
]


FILTERS = [{}, {"user": 2}, {"guild": 20}, {"model": GPT4O}, {"feature": "chat"}, {"user": 3, "model": MYSTERY},
           {"guild": 10, "feature": "search"}]


#: Ranges whose edges fall inside hours, over rows a few minutes apart: hour buckets, partial hours read as their
#: raw rows or as their hour bucket minus the rows outside, days minus the hours outside the range.
HOUR_RANGES = [
    ("5h", {}), ("30h", {}), ("today", {}),
    (None, {"since": at(2025, 3, 11, 9, 17, 30), "until": at(2025, 3, 11, 9, 44)}),  # inside one hour
    (None, {"since": at(2025, 3, 11, 9, 5), "until": at(2025, 3, 11, 9, 55)}),  # most of one hour
    (None, {"since": at(2025, 3, 11, 2, 40), "until": at(2025, 3, 11, 22, 10)}),  # a day minus hours outside
    (None, {"since": at(2025, 3, 10, 23, 50), "until": at(2025, 3, 11, 0, 20)}),  # across midnight
    (None, {"since": at(2025, 3, 10, 13, 0), "until": at(2025, 3, 11, 6, 0)}),  # whole hours only
    (None, {"since": at(2025, 3, 10, 7, 59, 59, 999999), "until": at(2025, 3, 12, 10, 0, 0, 1)}),
]


def assert_reports_equal_the_rows(database_url, rows, ranges) -> None:
    """Whatever the period and filters, the fast path answers exactly what summing the rows gives: summaries,
    active users, every breakdown, and top-N by tokens and by cost."""
    store = Store(database_url)
    for start in range(0, len(rows), 97):  # several batches, as the writer commits them
        store.write_batch(as_rows(rows[start:start + 97]))
    reports = Reports(store, clock=lambda: NOW)
    kwargs = {"user": "user_id", "guild": "guild_id", "model": "model", "feature": "feature"}
    for period, extra in ranges:
        since, until = reports.bounds(period, **extra)
        for filters in FILTERS:
            named = {kwargs[d]: v for d, v in filters.items()}
            where = (period, extra, filters)
            summary = reports.summary(period, **extra, **named)
            assert as_expected(summary) == expected(rows, since, until, filters).get(None, NOTHING), where
            users = {r["user_id"] for r in rows if r["user_id"] is not None
                     and (since is None or r["created_at"] >= since) and (until is None or r["created_at"] < until)
                     and all(r[DIMENSION_COLUMNS[d]] == v for d, v in filters.items())}
            assert summary.active_users == len(users), where
            for by in ("user", "guild", "model", "feature", "day", "session"):
                got = {g.key: as_expected(g) for g in reports.breakdown(by, period, **extra, **named)}
                assert got == expected(rows, since, until, filters, by), (by, *where)
            for scope in ("user", "guild"):
                want = expected(rows, since, until, filters, scope)
                for metric in ("tokens", "cost"):
                    column = "total_tokens" if metric == "tokens" else "cost_usd"
                    ranked = sorted((k for k in want if k is not None), key=lambda k: (-want[k][column], k))[:3]
                    got = reports.top(3, metric, scope, period, **extra, **named)
                    assert [g.key for g in got] == ranked, (scope, metric, *where)


class TestAgainstTheRows:
    """The fast path (rollups + partial-day raw rows) answers exactly what summing the rows gives."""

    def test_reports_equal_a_direct_computation_over_the_rows(self, database_url):
        """Months, days and partial days over ~12 weeks of rows."""
        assert_reports_equal_the_rows(database_url, random_rows(400), RANGES)

    def test_partial_hours_and_hour_buckets_equal_the_rows(self, database_url):
        """Hour buckets and partial hours over two and a half days of rows a few minutes apart."""
        assert_reports_equal_the_rows(database_url, random_rows(700, seed=11, start=at(2025, 3, 10)), HOUR_RANGES)
