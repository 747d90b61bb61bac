"""Breakdowns by day and dimension, recent sessions, and the one JSON shape of report results (ids as strings,
pseudonyms for people's ids)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from dspy_tokens import Reports
from dspy_tokens.reports import Pseudonyms, json_ready
from tests.support.rows import NOW, at, insert, random_rows, usage_row


@pytest.fixture
def randomized(database_url):
    rows = random_rows(400)
    return Reports(insert(database_url, rows), clock=lambda: NOW), rows


class TestDayAndDimension:
    @pytest.mark.parametrize("dim, column", [("model", "model"), ("feature", "feature"), ("user", "user_id")])
    @pytest.mark.parametrize("period, since, filters", [
        ("month", None, {}), (None, NOW - timedelta(days=20), {}), ("7d", None, {}),
        ("month", None, {"guild_id": 10}), (None, at(2025, 1, 15, 12), {"model": "openai/gpt-4o"}),
        ("30h", None, {}), (None, at(2025, 3, 9, 7, 41), {"model": "openai/gpt-4o"}),
    ], ids=["month", "since-midnight-less", "rolling", "guild-filter", "model-filter", "rolling-hours",
            "partial-hour-model-filter"])
    def test_each_day_and_key_holds_exactly_its_rows(self, randomized, dim, column, period, since, filters):
        """``breakdown(("day", dim))`` equals summing the rows per (UTC day, key), whatever the spans (rollups,
        cube, partial days), and its parts add up to ``breakdown("day")``."""
        reports, rows = randomized
        start, end = reports.bounds(period, since)
        expected: dict = defaultdict(lambda: [0, 0, Decimal(0)])
        for r in rows:
            if start <= r["created_at"] and (end is None or r["created_at"] < end) and all(
                    r[k] == v for k, v in filters.items()):
                acc = expected[(r["created_at"].date(), r[column])]
                acc[0] += 1
                acc[1] += r["total_tokens"] or 0
                acc[2] += r["cost_usd"] or 0
        groups = reports.breakdown(("day", dim), period, since=since, **filters)
        assert {g.key: [g.calls, g.total_tokens, g.cost_usd] for g in groups} == dict(expected)
        assert [g.key[0] for g in groups] == sorted(g.key[0] for g in groups)
        per_day: dict = defaultdict(int)
        for g in groups:
            per_day[g.key[0]] += g.total_tokens
        assert dict(per_day) == {g.key: g.total_tokens for g in reports.breakdown("day", period, since=since,
                                                                                    **filters)}

    def test_a_pair_that_is_not_day_and_a_dimension_is_refused(self, randomized):
        """Only ("day", user|guild|model|feature) pairs exist."""
        reports, _ = randomized
        with pytest.raises(ValueError, match="pair"):
            reports.breakdown(("model", "day"))


class TestRecentSessions:
    def test_latest_sessions_first_with_all_their_calls(self, database_url):
        """The sessions with the latest calls, latest first; each with every call's totals, filters honoured."""
        rows = [usage_row(at(2025, 3, 12, 9, m), prompt=10 * m, completion=1, session_id=f"s{m % 3}",
                          call_index=m, user_id=1 + m % 2) for m in range(9)]
        reports = Reports(insert(database_url, rows), clock=lambda: NOW)
        found = reports.recent_sessions(2)
        assert [g.key for g in found] == ["s2", "s1"]
        assert found[0].calls == 3 and found[0].prompt_tokens == 10 * (2 + 5 + 8)
        assert found[0].first_at == at(2025, 3, 12, 9, 2) and found[0].last_at == at(2025, 3, 12, 9, 8)
        assert [g.key for g in reports.recent_sessions(5, user_id=1)] == ["s2", "s0", "s1"]
        assert reports.recent_sessions(3, user_id=99) == []


class TestJsonShape:
    def test_ids_are_strings_money_decimal_text_and_times_iso(self, database_url):
        """64-bit ids survive a JSON round trip as strings; money keeps every digit; dates and times are ISO."""
        big = 111111111111111111
        reports = Reports(insert(database_url, [usage_row(at(2025, 3, 12, 9), prompt=3, completion=1,
                                                          cost="0.000000123456", user_id=big, guild_id=big + 1,
                                                          session_id="s")]), clock=lambda: NOW)
        top = json.loads(json.dumps(json_ready(reports.top(1, "cost", "user", "all"))))
        assert top[0]["key"] == str(big) and top[0]["cost_usd"] == "0.000000123456"
        call = json.loads(json.dumps(json_ready(reports.session("s"))))[0]
        assert call["user_id"] == str(big) and call["guild_id"] == str(big + 1) and isinstance(call["id"], str)
        assert call["created_at"] == "2025-03-12T09:00:00+00:00"
        day = json_ready(reports.breakdown(("day", "user"), "all"))[0]
        assert day["key"] == ["2025-03-12", str(big)] and day["by"] == ["day", "user"]

    def test_pseudonyms_replace_peoples_ids_everywhere_and_stay_stable(self, database_url):
        """With a pseudonym, user/guild/channel ids and user/guild keys are hashed the same way; row ids stay."""
        reports = Reports(insert(database_url, [usage_row(at(2025, 3, 12, 9), user_id=5, guild_id=6,
                                                          channel_id=7, session_id="p")]), clock=lambda: NOW)
        names = Pseudonyms(b"salt")
        call = json_ready(reports.session("p"), pseudonym=names)[0]
        assert (call["user_id"], call["guild_id"], call["channel_id"]) == (names("user_id", 5),
                                                                            names("guild_id", 6),
                                                                            names("channel_id", 7))
        assert call["id"].isdigit()
        assert json_ready(reports.top(1, scope="user", period="all"), pseudonym=names)[0]["key"] == call["user_id"]
        assert Pseudonyms(b"other")("user_id", 5) != names("user_id", 5)
        assert len(names("user_id", 5)) == 16

    def test_unknown_types_are_refused_not_stringified(self):
        """Nothing is silently shaped into something else."""
        with pytest.raises(TypeError, match="set"):
            json_ready({"x": {1, 2}})
