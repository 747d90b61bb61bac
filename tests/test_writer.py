"""The write path: batching, flush/close, outages (spill and replay), idempotency, counters, timestamps, and no
database I/O on the caller's thread. Real DSPy programs over HTTP feed a real tracker on every backend."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import dspy
import pytest
from playhouse.db_url import parse

from dspy_tokens import usage_context
from dspy_tokens.store import Store
from dspy_tokens.testing import Reply, TcpProxy, via_proxy
from helpers import (
    GPT4O_MINI, answered, assert_rows_match_requests, hand_cost, question, sent, stored_rows, tokens, wait_until,
)

CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1: connection refused
PICO = 10**12


def ask(tracker, server, n: int, start: int = 0, **context) -> list[str]:
    """Run n Predict calls through the tracker; returns the answers."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[tracker]), usage_context(**context):
        return [predict(question=question(i)).answer for i in range(start, start + n)]


def rows_in(url: str) -> list[dict]:
    """Every row in the database at ``url``, read through a connection of its own."""
    store = Store(url)
    try:
        model = store.models.TokenUsage
        with store.db.connection_context():
            if not store.db.table_exists("token_usage"):
                return []
            return list(model.select().dicts())
    finally:
        store.close()


def spilled(spill_dir: Path) -> list[Path]:
    return sorted(spill_dir.glob("spill-*.jsonl")) if spill_dir.is_dir() else []


def spilled_lines(spill_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in spilled(spill_dir))


def expected_counters(rows: list[dict]) -> dict[tuple, list[int]]:
    """(scope, scope_id, hour) -> [calls, tokens, cost in picodollars, unpriced calls], summed from raw rows."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        hour = int(row["created_at"].timestamp()) // 3600
        cost = row["cost_usd"]
        scopes = [("global", 0)] + [(scope, row[f"{scope}_id"]) for scope in ("user", "guild")
                                    if row[f"{scope}_id"] is not None]
        for scope, scope_id in scopes:
            acc = totals[(scope, scope_id, hour)]
            acc[0] += 1
            acc[1] += row["total_tokens"] or 0
            acc[2] += int(cost * PICO) if cost is not None else 0
            acc[3] += cost is None and row["error"] is None
    return dict(totals)


def stored_counters(tracker) -> dict[tuple, list[int]]:
    model = tracker.store.models.UsageCounter
    with tracker.store.db.connection_context():
        return {(c["scope"], c["scope_id"], c["hour"]): [c["calls"], c["tokens"], c["cost_pusd"], c["unpriced_calls"]]
                for c in model.select().dicts()}


def assert_counters_match_rows(tracker) -> None:
    rows = stored_rows(tracker)
    assert stored_counters(tracker) == expected_counters(rows)


# -- recording on every backend ------------------------------------------------------------------------------------

def test_a_call_is_stored_with_every_column_on_every_backend(tracker, server):
    """One attributed call round-trips through each backend with exact tokens, Decimal cost, booleans and a UTC
    timestamp."""
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        with usage_context(user_id=2**63 - 1, guild_id=1, channel_id=2, feature="ask"):
            dspy.ChainOfThought("question -> answer")(question="store me")
    [row] = stored_rows(tracker)
    usage = sent(answered(server)[0])
    assert tokens(row) == usage
    assert (row["user_id"], row["guild_id"], row["channel_id"], row["feature"]) == (2**63 - 1, 1, 2, "ask")
    assert row["cost_usd"] == hand_cost(usage, GPT4O_MINI) and isinstance(row["cost_usd"], Decimal)
    assert row["cost_source"] == "price_map" and row["model"] == "openai/gpt-4o-mini"
    assert row["cache_hit"] is False and row["usage_reported"] is True and row["error"] is None
    assert row["module"] == "ChainOfThought>Predict" and row["call_index"] == 0 and len(row["call_uuid"]) == 32
    assert row["created_at"].tzinfo == timezone.utc
    assert abs(datetime.now(timezone.utc) - row["created_at"]) < timedelta(seconds=5)


# -- flush and close ----------------------------------------------------------------------------------------------

def test_flush_returns_only_after_the_rows_are_committed(sqlite_tracker, server, monkeypatch):
    """flush() returns once the rows are committed: another connection sees them right after, even with a slow
    database."""
    store = sqlite_tracker.store
    real = store.insert_rows

    def slow_insert(rows, *args, **kwargs):
        time.sleep(0.3)
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(store, "insert_rows", slow_insert)
    ask(sqlite_tracker, server, 3)
    assert sqlite_tracker.flush(timeout=10) is True
    assert len(rows_in(store.url)) == 3


def test_close_drains_everything_submitted(make_tracker, sqlite_url, server):
    """close() right after the calls still commits every row before it returns."""
    tracker = make_tracker(sqlite_url)
    ask(tracker, server, 5)
    assert tracker.close(timeout=10) is True
    rows = rows_in(sqlite_url)
    assert len(rows) == 5
    assert_rows_match_requests(rows, server)


def test_rows_are_written_in_batches_of_at_most_batch_size(make_tracker, sqlite_url, server, monkeypatch):
    """Rows queued while the writer is busy are committed together, in batches of at most batch_size."""
    tracker = make_tracker(sqlite_url, batch_size=4)
    store = tracker.store
    real = store.insert_rows
    sizes, gate = [], threading.Event()

    def gated_insert(rows, *args, **kwargs):
        if rows:
            sizes.append(len(rows))
        gate.wait(10)  # hold the writer until every call is queued
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(store, "insert_rows", gated_insert)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        dspy.Parallel(num_threads=5, disable_progress_bar=True)(
            [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(10)])
    gate.set()
    rows = stored_rows(tracker)
    assert len(rows) == 10 and sum(sizes) == 10
    assert max(sizes) <= 4
    assert len(sizes) <= 4  # 1 held batch + the other 9 rows in ceil(9/4) = 3 batches
    assert_counters_match_rows(tracker)


# -- outages: spill, replay, idempotency --------------------------------------------------------------------------

def test_unreachable_database_never_fails_the_program_and_spills_on_close(make_tracker, server, tmp_path):
    """With the database unreachable the DSPy calls succeed, flush(timeout) returns False and close() spills every
    row to the spill directory."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill)
    answers = ask(down, server, 3)
    assert answers == [f"Answer to: {' '.join(question(i).split()[:8])}" for i in range(3)]
    assert down.flush(timeout=1) is False
    assert down.close(timeout=1) is False
    assert spilled_lines(spill) == 3


def test_spilled_rows_are_replayed_exactly_once(make_tracker, database_url, server, tmp_path):
    """Rows spilled during an outage are replayed into a working database by the next tracker with the same
    spill_dir — once: replaying the same segment again (a crash after commit) adds nothing, counters included."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill)
    ask(down, server, 4, user_id=10, guild_id=20)
    assert down.close(timeout=1) is False
    [segment] = spilled(spill)
    backup = tmp_path / "segment.copy"
    shutil.copy(segment, backup)

    up = make_tracker(database_url, spill_dir=spill)
    # Replayed at start, without any new call or flush.
    assert wait_until(lambda: len(rows_in(database_url)) == 4, timeout=10)
    rows = stored_rows(up)
    assert len(rows) == 4 and {(r["user_id"], r["guild_id"]) for r in rows} == {(10, 20)}
    assert_rows_match_requests(rows, server)
    assert spilled(spill) == []
    counters = stored_counters(up)
    assert counters == expected_counters(rows)
    assert up.close() is True

    shutil.copy(backup, spill / segment.name)  # the same rows once more
    again = make_tracker(database_url, spill_dir=spill)
    assert again.flush(timeout=10)
    assert spilled(spill) == []
    assert sorted(r["call_uuid"] for r in stored_rows(again)) == sorted(r["call_uuid"] for r in rows)
    assert stored_counters(again) == counters


def test_buffer_overflow_spills_to_disk_while_the_database_is_down(make_tracker, sqlite_url, server, tmp_path):
    """Past max_buffer rows the writer spills to disk while the database is down, without waiting for close()."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill, max_buffer=2)
    ask(down, server, 6)
    assert wait_until(lambda: spilled_lines(spill) >= 3, timeout=15)
    down.close(timeout=1)
    assert spilled_lines(spill) == 6
    up = make_tracker(sqlite_url, spill_dir=spill)
    rows = stored_rows(up)
    assert len(rows) == 6
    assert_rows_match_requests(rows, server)
    assert_counters_match_rows(up)


@pytest.fixture
def short_sqlite_busy_timeout(monkeypatch):
    """Make a locked SQLite database fail writes after 100 ms instead of 5 s."""
    import dspy_tokens.db as db
    monkeypatch.setattr(db, "SQLITE_PRAGMAS", {**db.SQLITE_PRAGMAS, "busy_timeout": 100})


def test_sqlite_locked_mid_stream_loses_and_duplicates_nothing(make_tracker, sqlite_url, server, tmp_path,
                                                               short_sqlite_busy_timeout):
    """Another connection holding SQLite's write lock mid-stream: calls go on, rows wait (never 'rejected'), and all
    are written exactly once when the lock is released."""
    spill = tmp_path / "spill"
    tracker = make_tracker(sqlite_url, spill_dir=spill)
    ask(tracker, server, 2)
    assert tracker.flush(timeout=10)
    path = parse(sqlite_url)["database"]
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        ask(tracker, server, 3, start=2)
        assert time.monotonic() - started < 2  # the program is not slowed down by the locked database
        assert tracker.flush(timeout=0.5) is False
    finally:
        holder.execute("COMMIT")
        holder.close()
    assert tracker.flush(timeout=15)
    rows = stored_rows(tracker)
    assert len(rows) == 5 == len({r["call_uuid"] for r in rows})
    assert_rows_match_requests(rows, server)
    assert_counters_match_rows(tracker)
    assert not list(spill.glob("rejected-*")) if spill.is_dir() else True


@pytest.mark.parametrize("database_url", [
    pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)],
    indirect=True)
def test_network_outage_mid_stream_loses_and_duplicates_nothing(make_tracker, database_url, server, tmp_path):
    """The database link cut mid-stream and restored: the calls made meanwhile are written exactly once after it
    comes back, counters included."""
    params = parse(database_url)
    proxy = TcpProxy(params["host"], params["port"]).start()
    proxied = via_proxy(database_url, proxy)
    try:
        tracker = make_tracker(proxied, spill_dir=tmp_path / "spill")
        ask(tracker, server, 2, user_id=1)
        assert tracker.flush(timeout=10)
        proxy.stop()  # every connection dropped, new ones refused
        ask(tracker, server, 3, start=2, user_id=1)
        assert tracker.flush(timeout=0.5) is False
        proxy.start()
        assert tracker.flush(timeout=20), tracker.writer.last_error
        rows = stored_rows(tracker)
        assert len(rows) == 5 == len({r["call_uuid"] for r in rows})
        assert_rows_match_requests(rows, server)
        assert_counters_match_rows(tracker)
    finally:
        proxy.stop()


# -- no database I/O on the caller's thread ------------------------------------------------------------------------

async def test_database_work_happens_only_on_the_writer_thread(sqlite_tracker, server, monkeypatch):
    """Every insert and every SQL statement of the tracker runs on the dspy-tokens-writer thread, whether the
    program runs sync, in dspy.Parallel workers or as gathered acalls."""
    store = sqlite_tracker.store
    threads = []
    real_insert, real_sql, real_connect = store.insert_rows, store.db.execute_sql, store.db.connect

    def spy(real):
        def wrapper(*args, **kwargs):
            threads.append(threading.current_thread().name)
            return real(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(store, "insert_rows", spy(real_insert))
    monkeypatch.setattr(store.db, "execute_sql", spy(real_sql))
    monkeypatch.setattr(store.db, "connect", spy(real_connect))
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        predict(question=question(0))
        dspy.Parallel(num_threads=4, disable_progress_bar=True)(
            [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(1, 5)])
        await asyncio.gather(*(predict.acall(question=question(i)) for i in range(5, 8)))
    assert sqlite_tracker.flush(timeout=10)
    assert threads and set(threads) == {"dspy-tokens-writer"}
    monkeypatch.undo()
    assert len(stored_rows(sqlite_tracker)) == 8


async def test_a_slow_database_does_not_slow_gathered_acalls(sqlite_tracker, server, monkeypatch):
    """With every insert taking 0.2 s, a gather of 4 acalls still finishes in well under 4 x 0.2 s."""
    store = sqlite_tracker.store
    real = store.insert_rows

    def slow_insert(rows, *args, **kwargs):
        time.sleep(0.2)
        return real(rows, *args, **kwargs)

    monkeypatch.setattr(store, "insert_rows", slow_insert)
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        await predict.acall(question="warm up")  # first-call setup is not what this test measures
        started = time.perf_counter()
        await asyncio.gather(*(predict.acall(question=question(i)) for i in range(4)))
        elapsed = time.perf_counter() - started
    assert elapsed < 0.5, elapsed  # inserts on the caller's path would take >= 0.8 s
    assert len(stored_rows(sqlite_tracker)) == 5


# -- timestamps and counters ---------------------------------------------------------------------------------------

@pytest.fixture
def los_angeles_time(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_created_at_is_utc_whatever_the_local_timezone(tracker, server, los_angeles_time):
    """Under TZ=America/Los_Angeles (where DSPy's own timestamps are naive local time), created_at is UTC-aware and
    within a second of now."""
    lm = server.lm()
    before = datetime.now(timezone.utc)
    with dspy.context(lm=lm, callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="what time is it")
    now = datetime.now(timezone.utc)
    [row] = stored_rows(tracker)
    assert row["created_at"].utcoffset() == timedelta(0)
    assert before <= row["created_at"] <= now and now - row["created_at"] < timedelta(seconds=1)
    dspy_local = datetime.fromisoformat(lm.history[-1]["timestamp"])  # naive, local: 7 or 8 hours behind UTC
    assert dspy_local.tzinfo is None
    assert abs(now.replace(tzinfo=None) - dspy_local) > timedelta(hours=6)


def test_counters_sum_exactly_to_the_raw_rows(tracker, server):
    """token_usage_counters (user, guild, global per hour) equal the sums of the raw rows: calls, tokens, cost in
    picodollars, unpriced calls — across users, guilds, unknown models, cache hits and failures."""
    predict = dspy.Predict("question -> answer")
    cached = server.lm(cache=True)
    server.enqueue(Reply(cached_tokens=30, reasoning_tokens=2))
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        with usage_context(user_id=1, guild_id=100):
            predict(question=question(0))
            predict(question=question(1))
        with usage_context(user_id=2, guild_id=100):
            predict(question=question(2))
            with dspy.context(lm=cached):
                predict(question=question(3))
                predict(question=question(3))  # a cache hit
        with usage_context(user_id=3):
            with dspy.context(lm=server.lm("openai/my-finetune-xyz")):
                predict(question=question(4))  # unknown price
            server.enqueue(Reply(status=500))
            with dspy.context(lm=server.lm(num_retries=0)), pytest.raises(Exception):
                predict(question=question(5))  # a failed call
        predict(question=question(6))  # no user, no guild
    rows = stored_rows(tracker)
    assert len(rows) == 8
    counters = stored_counters(tracker)
    assert counters == expected_counters(rows)
    hour = next(iter(counters))[2]
    assert counters[("global", 0, hour)][0] == 8  # the scenario covered every kind of call
    assert counters[("global", 0, hour)][3] == 1  # only the unknown model is unpriced (the failure has an error)
    assert counters[("guild", 100, hour)][0] == 5
