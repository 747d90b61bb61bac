"""The write path: batching, flush/close, database locks and network outages (rows wait, then are written exactly
once), and no database I/O on the caller's thread. Real DSPy programs over HTTP feed a real tracker on every
backend. Spill files and their replay are in tests/ingest/test_spill.py."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dspy
import peewee
import pytest
from playhouse.db_url import parse

from dspy_tokens import usage_context
from dspy_tokens.store import Store
from tests.support.db import assert_counters_match_rows, rows_in, stored_rows
from tests.support.faults import TcpProxy, via_proxy
from tests.support.wire import GPT4O_MINI, answered, ask, assert_rows_match_requests, hand_cost, question, sent, tokens

# -- recording on every backend ------------------------------------------------------------------------------------

class TestRecording:
    """One call round-trips through each backend with every column."""

    def test_a_call_is_stored_with_every_column_on_every_backend(self, tracker, server):
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

class TestFlushAndClose:
    """flush() and close() return only once the rows are committed; rows are committed in batches."""

    def test_flush_returns_only_after_the_rows_are_committed(self, sqlite_tracker, server, monkeypatch):
        """flush() returns once the rows are committed: another connection sees them right after, even with a slow
        database."""
        real = Store.write_batch

        def slow_write(store, rows, *args, **kwargs):
            time.sleep(0.3)
            return real(store, rows, *args, **kwargs)

        monkeypatch.setattr(Store, "write_batch", slow_write)
        ask(sqlite_tracker, server, 3)
        assert sqlite_tracker.flush(timeout=10) is True
        assert len(rows_in(sqlite_tracker.database_url)) == 3

    def test_close_drains_everything_submitted(self, make_tracker, sqlite_url, server):
        """close() right after the calls still commits every row before it returns."""
        tracker = make_tracker(sqlite_url)
        ask(tracker, server, 5)
        assert tracker.close(timeout=10) is True
        rows = rows_in(sqlite_url)
        assert len(rows) == 5
        assert_rows_match_requests(rows, server)

    def test_rows_are_written_in_batches_of_at_most_batch_size(self, make_tracker, sqlite_url, server, monkeypatch):
        """Rows queued while the writer is busy are committed together, in batches of at most batch_size."""
        tracker = make_tracker(sqlite_url, batch_size=4)
        real = Store.write_batch
        sizes, gate = [], threading.Event()

        def gated_write(store, rows, *args, **kwargs):
            if rows:
                sizes.append(len(rows))
            gate.wait(10)  # hold the writer until every call is queued
            return real(store, rows, *args, **kwargs)

        monkeypatch.setattr(Store, "write_batch", gated_write)
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


# -- outages: rows wait for the database, then are written exactly once -----------------------------------------

@pytest.fixture
def short_sqlite_busy_timeout(monkeypatch):
    """Make a locked SQLite database fail writes after 100 ms instead of 5 s."""
    import dspy_tokens.store._db as db  # the pragmas every SQLite connection is opened with (no public knob)
    monkeypatch.setattr(db, "SQLITE_PRAGMAS", {**db.SQLITE_PRAGMAS, "busy_timeout": 100})


class TestOutages:
    """A locked or unreachable database: calls go on, rows wait, and are written exactly once afterwards."""

    def test_sqlite_locked_mid_stream_loses_and_duplicates_nothing(self, make_tracker, sqlite_url, server, tmp_path,
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
    def test_network_outage_mid_stream_loses_and_duplicates_nothing(self, make_tracker, database_url, server, tmp_path):
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
            assert tracker.flush(timeout=20), tracker.stats.last_error
            rows = stored_rows(tracker)
            assert len(rows) == 5 == len({r["call_uuid"] for r in rows})
            assert_rows_match_requests(rows, server)
            assert_counters_match_rows(tracker)
        finally:
            proxy.stop()


# -- no database I/O on the caller's thread ------------------------------------------------------------------------

class TestCallerThread:
    """The database is used only on the writer thread: a slow database never slows the program."""

    async def test_database_work_happens_only_on_the_writer_thread(self, sqlite_tracker, server, monkeypatch):
        """Every insert and every SQL statement of the tracker runs on the dspy-tokens-writer thread, whether the
        program runs sync, in dspy.Parallel workers or as gathered acalls."""
        threads = []

        def spy(real):
            def wrapper(*args, **kwargs):
                threads.append(threading.current_thread().name)
                return real(*args, **kwargs)
            return wrapper

        # On the classes: every Store write and every statement or connection of any Peewee database in the process.
        monkeypatch.setattr(Store, "write_batch", spy(Store.write_batch))
        monkeypatch.setattr(peewee.Database, "execute_sql", spy(peewee.Database.execute_sql))
        monkeypatch.setattr(peewee.Database, "connect", spy(peewee.Database.connect))
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

    async def test_a_slow_database_does_not_slow_gathered_acalls(self, sqlite_tracker, server, monkeypatch):
        """With every insert taking 0.2 s, a gather of 4 acalls still finishes in well under 4 x 0.2 s."""
        real = Store.write_batch

        def slow_write(store, rows, *args, **kwargs):
            time.sleep(0.2)
            return real(store, rows, *args, **kwargs)

        monkeypatch.setattr(Store, "write_batch", slow_write)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            await predict.acall(question="warm up")  # first-call setup is not what this test measures
            started = time.perf_counter()
            await asyncio.gather(*(predict.acall(question=question(i)) for i in range(4)))
            elapsed = time.perf_counter() - started
        assert elapsed < 0.5, elapsed  # inserts on the caller's path would take >= 0.8 s
        assert len(stored_rows(sqlite_tracker)) == 5


# -- timestamps -------------------------------------------------------------------------------------------------

@pytest.fixture
def los_angeles_time(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class TestTimestamps:
    """Stored times are UTC whatever the local time zone."""

    def test_created_at_is_utc_whatever_the_local_timezone(self, tracker, server, los_angeles_time):
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


# -- the writer cannot die ------------------------------------------------------------------------------------------

class TestSupervision:
    """A bug in the writer's own code never stops recording: the thread starts again with the rows it held."""

    def test_an_unexpected_error_in_the_writer_loop_loses_nothing(self, make_tracker, sqlite_url, server,
                                                                 monkeypatch, caplog):
        """The committer's loop raising (a bug, here injected into its journal bookkeeping) three times: the
        thread starts again, stays alive, logs it, and every row is committed once."""
        from dspy_tokens.ingest.journal import Journal

        real, failures = Journal.reset, []

        def buggy_reset(journal):
            if len(failures) < 3:
                failures.append(1)
                raise RuntimeError("a bug in the writer")
            return real(journal)

        monkeypatch.setattr(Journal, "reset", buggy_reset)
        tracker = make_tracker(sqlite_url)
        with caplog.at_level(logging.ERROR, logger="dspy_tokens"):
            ask(tracker, server, 5)
            assert tracker.flush(timeout=30), tracker.stats.last_error
        assert len(failures) == 3 and tracker.stats.alive and tracker.health().writer_alive
        assert any("writer thread failed" in r.getMessage() for r in caplog.records)
        rows = stored_rows(tracker)
        assert len(rows) == 5 == len({r["call_uuid"] for r in rows})
        assert_rows_match_requests(rows, server)

    def test_a_write_path_raising_something_unexpected_keeps_the_rows(self, make_tracker, sqlite_url, server,
                                                                     monkeypatch):
        """write_batch raising an exception that is not a StorageError (a bug) twice: rows are kept, the write is
        retried, and they land exactly once; the error is reported in stats meanwhile."""
        real, calls = Store.write_batch, []

        def failing_twice(store, rows, *args, **kwargs):
            calls.append(len(rows))
            if len(calls) <= 2:
                raise KeyError("a bug on the write path")
            return real(store, rows, *args, **kwargs)

        monkeypatch.setattr(Store, "write_batch", failing_twice)
        tracker = make_tracker(sqlite_url)
        ask(tracker, server, 4)
        assert tracker.flush(timeout=30), tracker.stats.last_error
        assert len(stored_rows(tracker)) == 4 and tracker.stats.last_error is None
