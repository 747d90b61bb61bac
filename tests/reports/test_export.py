"""Exports: CSV, JSON and JSON lines, streamed, filterable and optionally anonymized, on every backend."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import datetime
from decimal import Decimal

import pytest

from dspy_tokens import Reports
from dspy_tokens.reports import EXPORT_COLUMNS
from dspy_tokens.store import ROW_COLUMNS, Store
from tests.support.exports import read_csv_export
from tests.support.rows import GPT4O, MINI, NOW, as_rows, at, hand_rows, insert, usage_row


def awkward_rows() -> list[dict]:
    """Values that break naive exporters: separators, quotes, newlines, unicode, NULLs, big ids, 12-place costs."""
    return [
        usage_row(at(2025, 3, 1, 8, 0, 0, 123456), prompt=1000, completion=500, cost="0.00045", user_id=2**63 - 1,
                  guild_id=900000000000000001, channel_id=5, feature='chat, "quoted"', module="ReAct>Predict",
                  response_model="gpt-4o-mini-2024-07-18", session_id="s1", cached_tokens=100, reasoning_tokens=7),
        usage_row(at(2025, 3, 1, 8, 0, 1), prompt=None, completion=None, cost=None, user_id=0, feature="résumé 📄",
                  error="HTTP 500\nline two, with a comma", usage_reported=False, cost_source="no_usage",
                  session_id="s1", call_index=1, latency_ms=None),
        usage_row(at(2025, 3, 2), prompt=0, completion=0, cost="0", cache_hit=True, cost_source="cache_hit",
                  model=GPT4O, session_id="s2"),
        usage_row(at(2025, 3, 3), prompt=7, completion=3, cost="0.000000000001", user_id=2, session_id="s3"),
    ]


def stored(rows: list[dict]) -> list[dict]:
    """The rows as an export shows them: in insertion (id) order, ids 1..n."""
    return [{"id": i, **{c: row[c] for c in ROW_COLUMNS}} for i, row in enumerate(rows, 1)]


def export_text(reports: Reports, fmt: str, **options) -> str:
    out = io.StringIO(newline="")
    reports.export(fmt, out, **options)
    return out.getvalue()


def test_csv_export_round_trips_every_column(database_url):
    """A CSV export parsed back (``read_csv_export``) equals the stored rows, value for value and type for type."""
    rows = awkward_rows()
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    text = export_text(reports, "csv")
    assert next(csv.reader(io.StringIO(text))) == list(EXPORT_COLUMNS)  # column names = table columns
    assert read_csv_export(text) == stored(rows)


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_exports_round_trip_with_exact_decimal_costs(database_url, fmt):
    """JSON is one valid array, JSON lines one object per line; 64-bit ids and costs are strings, exact for any
    reader (a JSON number past 2**53 loses digits in most)."""
    rows = awkward_rows()
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    text = export_text(reports, fmt)
    if fmt == "json":
        parsed = json.loads(text, parse_float=Decimal)
    else:
        parsed = [json.loads(line, parse_float=Decimal) for line in text.splitlines()]
        assert len(text.splitlines()) == len(rows)
    for row in parsed:
        row["created_at"] = datetime.fromisoformat(row["created_at"])
        assert all(row[c] is None or isinstance(row[c], str) for c in ("id", "user_id", "guild_id", "channel_id",
                                                                        "cost_usd"))
        row["cost_usd"] = None if row["cost_usd"] is None else Decimal(row["cost_usd"])
        for column in ("id", "user_id", "guild_id", "channel_id"):
            row[column] = None if row[column] is None else int(row[column])
    assert parsed == stored(rows)
    assert '"cost_usd":"0.000000000001"' in text and '"cost_usd":"0.00045"' in text
    assert '"user_id":"9223372036854775807"' in text


def test_empty_exports_are_still_valid(database_url):
    """An empty table exports as an empty JSON array, no JSON lines, and a CSV header only."""
    reports = Reports(Store(database_url), clock=lambda: NOW)
    assert json.loads(export_text(reports, "json")) == []
    assert export_text(reports, "jsonl") == ""
    assert export_text(reports, "csv").splitlines() == [",".join(EXPORT_COLUMNS)]


def test_anonymized_ids_are_stable_within_an_export_and_differ_across_exports(database_url):
    """Anonymized ids are the same for the same id within one export, differ between exports (a new salt) and
    between columns, and every other column is exported as stored."""
    rows = [usage_row(at(2025, 3, 1, h), user_id=u, guild_id=g, channel_id=c)
            for h, (u, g, c) in enumerate([(11, 100, 5), (22, 100, 5), (11, 200, None), (None, None, 6)])]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    first = read_csv_export(export_text(reports, "csv", anonymize=True))
    second = read_csv_export(export_text(reports, "csv", anonymize=True))
    users = [r["user_id"] for r in first]
    assert users[0] == users[2] != users[1] and users[3] is None  # user 11 twice, user 22, no user
    assert [r["guild_id"] for r in first][:2] == [first[0]["guild_id"]] * 2 != [first[2]["guild_id"]] * 2
    assert all(isinstance(u, str) and len(u) == 16 for u in users[:3])
    assert first[0]["user_id"] != second[0]["user_id"]  # a new salt per export: exports do not link
    assert first[0]["guild_id"] != first[0]["user_id"]  # the same number in two columns hashes differently
    text = export_text(reports, "jsonl", anonymize=True)
    assert '"user_id":11' not in text and '"guild_id":100' not in text
    # Everything else is exported as stored.
    plain = read_csv_export(export_text(reports, "csv"))
    for kept, anonymized in zip(plain, first):
        assert {k: v for k, v in kept.items() if k not in ("user_id", "guild_id", "channel_id")} == \
               {k: v for k, v in anonymized.items() if k not in ("user_id", "guild_id", "channel_id")}


def test_exports_take_the_report_filters_and_periods(database_url):
    """Exports take the same periods, ranges and filters as the reports."""
    rows = hand_rows()
    reports = Reports(insert(database_url, list(rows.values())), clock=lambda: NOW)
    today = read_csv_export(export_text(reports, "csv", period="today"))
    assert [r["call_uuid"] for r in today] == [rows[k]["call_uuid"] for k in "FGHIJ"]
    chat_guild_10 = read_csv_export(export_text(reports, "csv", guild_id=10, feature="chat"))
    assert [r["call_uuid"] for r in chat_guild_10] == [rows[k]["call_uuid"] for k in "EF"]
    ranged = read_csv_export(export_text(reports, "csv", since=at(2025, 3, 1), until=at(2025, 3, 10), model=MINI))
    assert [r["call_uuid"] for r in ranged] == [rows["B"]["call_uuid"]]


def test_export_reads_in_pages_and_reports_progress(sqlite_url, tmp_path):
    """An export to a path reads ``batch_size`` rows per page, reporting the running count after each page."""
    rows = [usage_row(at(2025, 3, 1, 0, i)) for i in range(10)]
    reports = Reports(insert(sqlite_url, rows), clock=lambda: NOW)
    seen = []
    target = tmp_path / "usage.jsonl"
    assert reports.export("jsonl", target, batch_size=3, progress=seen.append) == 10
    assert seen == [3, 6, 9, 10]
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == [str(i) for i in range(1, 11)]


class _Discard:
    """A text sink that keeps nothing."""

    def write(self, text):
        return len(text)


def test_export_memory_does_not_grow_with_the_number_of_rows(sqlite_url):
    """Peak memory of an export is bounded by one page, not by the table: 8x the rows, about the same peak."""
    store = Store(sqlite_url)
    store.write_batch(as_rows([usage_row(at(2025, 3, 1), feature="x" * 100) for _ in range(2_000)]))
    reports = Reports(store, clock=lambda: NOW)

    def peak() -> int:
        tracemalloc.start()
        try:
            reports.export("json", _Discard(), batch_size=500)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    small = peak()
    for _ in range(7):
        store.write_batch(as_rows([usage_row(at(2025, 3, 1), feature="x" * 100) for _ in range(2_000)]))
    large = peak()
    assert large < small * 1.5 + 200_000, (small, large)


def test_bad_export_arguments_are_value_errors(sqlite_url):
    """An unknown format, or no ``out=``, is a ValueError naming it."""
    reports = Reports(Store(sqlite_url), clock=lambda: NOW)
    with pytest.raises(ValueError, match="xml"):
        reports.export("xml", io.StringIO())
    with pytest.raises(ValueError, match="out="):
        reports.export("csv")
