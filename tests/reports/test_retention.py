"""Retention: raw rows older than N days go in short batches; the rollups stay, so old periods still answer."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dspy
import pytest

from dspy_tokens import Config, Reports
from dspy_tokens.testing import FakeLLMServer
from tests.support.db import all_rows
from tests.support.rows import GPT4O, NOW, at, insert, usage_row
from tests.support.wire import wait_until

RETENTION_THREAD = "dspy-tokens-retention"


def ids(reports: Reports) -> list[str]:
    """The call_uuids still stored, in insertion order."""
    db = reports.store.db
    return [r[0] for r in db.execute_sql("SELECT call_uuid FROM token_usage ORDER BY id").fetchall()]


def counter_hours(reports: Reports, table: str = "token_usage_counters") -> set[tuple]:
    """(scope, scope_id, hour) of every stored hourly counter."""
    return {(scope, int(scope_id), int(hour)) for scope, scope_id, hour in reports.store.db.execute_sql(
        f"SELECT scope, scope_id, hour FROM {table}").fetchall()}


def hour(moment: datetime) -> int:
    """The hour bucket (hours since the epoch) of a moment."""
    return int(moment.timestamp()) // 3600


@pytest.fixture
def retention_threads(monkeypatch) -> list[threading.Thread]:
    """Every thread named dspy-tokens-retention started during the test, in start order."""
    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread):
        if thread.name == RETENTION_THREAD:
            started.append(thread)
        return real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return started


def test_cleanup_deletes_a_100_day_old_row_keeps_a_10_day_old_one_and_old_reports_still_answer(database_url):
    """The prior-art vector (90 days: a 100-day-old row goes, a 10-day-old one stays), and then every summary of
    the old period is answered from the kept rollups as before."""
    old = usage_row(NOW - timedelta(days=100), prompt=1000, completion=500, cost="0.00045", user_id=7,
                    guild_id=70, feature="chat", session_id="old-session")
    recent = usage_row(NOW - timedelta(days=10), prompt=100, completion=50, cost="0.000045", user_id=8,
                       guild_id=70, feature="search", model=GPT4O)
    reports = Reports(insert(database_url, [old, recent]), clock=lambda: NOW)
    old_day = dict(since=old["created_at"].date(), until=old["created_at"].date() + timedelta(days=1))
    old_month = dict(since=at(2024, 12, 1), until=at(2025, 1, 1))  # 2024-12-02 is 100 days before NOW
    before = [reports.summary(), reports.summary(**old_day), reports.summary(**old_month, user_id=7),
              reports.summary(**old_month, user_id=7, feature="chat"), reports.breakdown("model"),
              reports.breakdown("day", **old_month), reports.top(5, "cost"), reports.top(5, "tokens", "guild")]

    result = reports.cleanup(older_than_days=90)

    assert (result.rows, result.batches, result.dry_run) == (1, 1, False)
    assert result.cutoff == at(2024, 12, 12, 10)  # 90 days before 2025-03-12 10:30, floored to the hour
    assert ids(reports) == [recent["call_uuid"]]
    after = [reports.summary(), reports.summary(**old_day), reports.summary(**old_month, user_id=7),
             reports.summary(**old_month, user_id=7, feature="chat"), reports.breakdown("model"),
             reports.breakdown("day", **old_month), reports.top(5, "cost"), reports.top(5, "tokens", "guild")]
    assert after == before
    old_summary = reports.summary(**old_day)
    assert (old_summary.calls, old_summary.total_tokens, old_summary.cost_usd, old_summary.active_users) == (
        1, 1500, Decimal("0.00045"), 1)
    # What is gone with the rows: the session, the export, and sub-day precision in the deleted period.
    assert reports.session("old-session") == []
    assert reports.summary(since=old["created_at"] - timedelta(hours=1), until=old["created_at"] + timedelta(hours=1)
                           ).calls == 0
    assert reports.cleanup(older_than_days=90).rows == 0  # idempotent


def test_dry_run_counts_what_would_go_and_deletes_nothing(database_url):
    """A dry run counts the rows and hourly counters a cleanup would delete, and deletes nothing."""
    rows = [usage_row(NOW - timedelta(days=d)) for d in (200, 120, 91, 89, 1)]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    result = reports.cleanup(90, dry_run=True)
    assert (result.rows, result.dry_run, result.batches) == (3, True, 0)
    assert result.counter_rows == 3 + 3  # per old row: its global hourly counter, and the per-model one
    assert result.hour_rollup_rows == 3 * 4  # per old row: its hour in each of the four hour rollup scopes
    assert len(ids(reports)) == 5


def test_the_hour_rollups_of_deleted_hours_go_with_their_rows(database_url):
    """Hour buckets are kept as long as their rows: a cleanup deletes those of the hours it emptied."""
    rows = [usage_row(NOW - timedelta(days=d)) for d in (200, 120, 91, 89, 1)]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    hours = "SELECT COUNT(*) FROM token_usage_rollups WHERE grain = 'h'"
    with reports.store.db.connection_context():
        assert reports.store.db.execute_sql(hours).fetchone()[0] == 5 * 4
    assert reports.cleanup(90).hour_rollup_rows == 3 * 4
    with reports.store.db.connection_context():
        assert reports.store.db.execute_sql(hours).fetchone()[0] == 2 * 4
    assert reports.summary("7d").calls == 1


def test_cleanup_deletes_in_batches_of_ids_with_progress(database_url):
    """Old rows go in batches of ``batch_size`` ids, reporting the running count after each batch."""
    rows = [usage_row(NOW - timedelta(days=100, minutes=i)) for i in range(23)] + [usage_row(NOW)]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    seen = []
    result = reports.cleanup(90, batch_size=5, progress=seen.append)
    assert (result.rows, result.batches) == (23, 5)
    assert seen == [5, 10, 15, 20, 23]
    assert ids(reports) == [rows[-1]["call_uuid"]]


def test_cutoff_is_a_whole_hour_so_the_counters_stay_rebuildable(database_url):
    """Rows are deleted by whole hours (the counters' rebuild relies on it): within the cutoff hour they stay."""
    cutoff = at(2024, 12, 12, 10)
    rows = [usage_row(cutoff - timedelta(microseconds=1)), usage_row(cutoff), usage_row(cutoff + timedelta(minutes=20))]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    assert reports.cleanup(90).rows == 1
    assert ids(reports) == [rows[1]["call_uuid"], rows[2]["call_uuid"]]


def test_hourly_limit_counters_are_pruned_only_beyond_the_limits_window(database_url):
    """Counters older than max(older_than_days, keep_counters_days) go; newer ones serve the limits as before."""
    moments = [NOW - timedelta(days=d) for d in (100, 40, 20)]
    rows = [usage_row(m, prompt=10, completion=5, user_id=1, guild_id=2) for m in moments]
    reports = Reports(insert(database_url, rows), clock=lambda: NOW)
    before = counter_hours(reports)
    assert before == {(scope, scope_id, hour(m)) for m in moments for scope, scope_id in
                      (("global", 0), ("user", 1), ("guild", 2))}
    result = reports.cleanup(10, keep_counters_days=32, batch_size=1)  # one row per transaction
    assert (result.rows, result.batches) == (3, 3)  # all raw rows are older than 10 days
    assert result.counters_cutoff == at(2025, 2, 8, 10)
    kept = {(s, i, hour(moments[2])) for s, i in (("global", 0), ("user", 1), ("guild", 2))}
    assert counter_hours(reports) == kept
    assert result.counter_rows == 6 + 6  # per-scope and per-model counters of the two oldest hours
    assert {h for *_, h in counter_hours(reports)} == {hour(moments[2])}
    model_hours = {int(h) for (h,) in reports.store.db.execute_sql("SELECT hour FROM token_usage_model_counters")}
    assert model_hours == {hour(moments[2])}
    # The 20-day-old usage is gone from the raw rows but still in the rollups.
    assert reports.summary("30d").total_tokens == 15


def test_tracker_cleanup_defaults_to_retention_days_and_keeps_counters_for_the_window(make_tracker, sqlite_url):
    """``tracker.cleanup()`` uses retention_days from models.json, and keeps the hourly counters for the limits'
    window (time_window_days + 1)."""
    tracker = make_tracker(sqlite_url, Config(retention_days=30, time_window_days=45))
    now = datetime.now(timezone.utc)
    insert(tracker.database_url, [usage_row(now - timedelta(days=d), user_id=1) for d in (50, 40, 5)])
    result = tracker.cleanup(dry_run=True)
    assert result.rows == 2  # older than 30 days
    assert result.counter_rows == 2 + 2  # only the 50-day-old hour is beyond the 46-day window: global + user,
    # in the per-scope and in the per-model counters
    assert now - result.cutoff >= timedelta(days=30) and now - result.counters_cutoff >= timedelta(days=46)


def test_retention_days_in_models_json_cleans_up_automatically_off_the_caller_thread(make_tracker, sqlite_url,
                                                                                     retention_threads):
    """With retention_days set, the writer's commit starts a cleanup thread, at most once per interval."""
    tracker = make_tracker(sqlite_url, Config(retention_days=90))
    now = datetime.now(timezone.utc)
    old, kept = usage_row(now - timedelta(days=100)), usage_row(now - timedelta(days=10))
    insert(tracker.database_url, [old, kept])
    with FakeLLMServer() as server, dspy.context(lm=server.lm(), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="hi")
        assert tracker.flush(timeout=30)
        assert len(retention_threads) == 1  # started by the commit
        first = retention_threads[0]
        assert first.name == RETENTION_THREAD
        first.join(timeout=30)
        stored = [r["call_uuid"] for r in all_rows(tracker)]
        assert old["call_uuid"] not in stored and kept["call_uuid"] in stored and len(stored) == 2
        dspy.Predict("question -> answer")(question="again")  # a second commit within the hour
        assert tracker.flush(timeout=30)
    assert retention_threads == [first]  # not started again before retention_interval
    assert wait_until(lambda: not first.is_alive())


def test_no_automatic_cleanup_without_retention_days(make_tracker, sqlite_url, server, retention_threads):
    """Without retention_days no retention thread is ever started."""
    tracker = make_tracker(sqlite_url)
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="hi")
    assert tracker.flush(timeout=30)
    assert retention_threads == []


def test_bad_cleanup_arguments(sqlite_url):
    """older_than_days must be a positive whole number of days."""
    reports = Reports(insert(sqlite_url, []), clock=lambda: NOW)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="older_than_days"):
            reports.cleanup(bad)
