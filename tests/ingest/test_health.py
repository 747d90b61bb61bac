"""What the writer tells people: ``tracker.health()`` through a working database, an outage and a refused row, and
the volume of its outage log (one warning when the outage starts, one when it ends with how many rows waited)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import dspy
import pytest
from playhouse.db_url import parse

from dspy_tokens import Health, usage_context
from tests.support.db import CLOSED_PORT_URL, stored_rows
from tests.support.faults import TcpProxy, refuse_rows, stop_refusing, via_proxy
from tests.support.reliability import count_rows, host_port
from tests.support.wire import ask, wait_until


class TestHealth:
    """``tracker.health()`` answers the questions an operator asks: is it recording, and what waits where."""

    def test_a_working_tracker_is_healthy(self, tracker, server):
        """Writer alive, database reachable, nothing pending, spilled or refused."""
        ask(tracker, server, 3)
        assert tracker.flush(timeout=30)
        health = tracker.health()
        assert isinstance(health, Health) and health.ok
        assert (health.writer_alive, health.database_reachable, health.pending, health.spilled, health.rejected,
                health.last_error) == (True, True, 0, 0, 0, None)
        assert health.spill_dir == tracker.stats.spill_dir

    def test_an_outage_shows_rows_waiting_and_the_error(self, make_tracker, server, tmp_path):
        """Database down: reachable False, the rows pending (or spilled on close), the driver's error named."""
        down = make_tracker(CLOSED_PORT_URL, spill_dir=tmp_path / "spill")
        ask(down, server, 4)
        assert wait_until(lambda: down.stats.last_error is not None, timeout=10)
        health = down.health()
        assert not health.ok and health.writer_alive and not health.database_reachable
        assert health.pending == 4 and health.spilled == 0
        assert "Connection refused" in health.last_error or "connection" in health.last_error.lower()
        down.close(timeout=1)
        after = down.health()
        assert not after.writer_alive and after.pending == 0 and after.spilled == 4

    def test_a_refused_row_is_counted_until_it_is_replayed(self, make_tracker, database_url, server):
        """A row the database refuses as data shows as rejected (kept on disk), the others are stored."""
        tracker = make_tracker(database_url)
        refuse_rows(database_url, "refuse")
        try:
            ask(tracker, server, 2, feature="ok")
            ask(tracker, server, 1, start=2, feature="refuse")
            assert tracker.flush(timeout=30), tracker.stats.last_error
            health = tracker.health()
        finally:
            stop_refusing(database_url)
        assert health.writer_alive and health.database_reachable and health.rejected == 1 and not health.ok
        assert len(stored_rows(tracker)) == 2

    def test_a_reader_has_no_writer(self, database_url, make_tracker):
        """TokenTracker.reader: no writer, no spill directory; the database is pinged."""
        from dspy_tokens import TokenTracker

        make_tracker(database_url)  # creates the schema
        reader = TokenTracker.reader(database_url)
        try:
            health = reader.health()
        finally:
            reader.close()
        assert (health.writer_alive, health.database_reachable, health.pending, health.spill_dir) == \
               (False, True, 0, None)


# -- log volume ---------------------------------------------------------------------------------------------------

class Warnings(logging.Handler):
    """Collects the library's warnings and errors."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def warnings_log():
    handler = Warnings()
    logger = logging.getLogger("dspy_tokens")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def load(tracker, server, stop: threading.Event, threads: int = 4) -> list[threading.Thread]:
    """``threads`` threads making tracked calls until ``stop`` is set."""
    predict, lm = dspy.Predict("question -> answer"), server.lm()

    def run(n: int) -> None:
        i = 0
        while not stop.is_set():
            with dspy.context(lm=lm, callbacks=[tracker]), usage_context(user_id=1 + n):
                predict(question=f"load {n} {i}")
            i += 1

    workers = [threading.Thread(target=run, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    return workers


@pytest.fixture
def short_sqlite_busy_timeout(monkeypatch):
    """Make a locked SQLite database fail writes after 50 ms instead of 5 s."""
    import dspy_tokens.store._db as db  # the pragmas every SQLite connection is opened with (no public knob)
    monkeypatch.setattr(db, "SQLITE_PRAGMAS", {**db.SQLITE_PRAGMAS, "busy_timeout": 50})


def outage(database_url: str):
    """(the URL a tracker should use, a function that starts a 1 s outage and ends it): a cut network for the
    servers, another connection holding SQLite's write lock."""
    if database_url.startswith("sqlite"):
        path = parse(database_url)["database"]

        def hold() -> None:
            holder = sqlite3.connect(path, isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            time.sleep(1.0)
            holder.execute("COMMIT")
            holder.close()
        return database_url, hold, lambda: None
    proxy = TcpProxy(*host_port(database_url)).start()

    def cut() -> None:
        proxy.stop()
        time.sleep(1.0)
        proxy.start()
    return via_proxy(database_url, proxy), cut, proxy.stop


def test_a_one_second_outage_under_load_logs_two_warnings_per_outage(make_tracker, database_url, server, warnings_log,
                                                          short_sqlite_busy_timeout):
    """Four threads calling through a 1 s outage: one warning when it starts, one when it ends (naming how many
    rows waited), nothing in between — and every row is stored once."""
    url, cut, cleanup = outage(database_url)
    try:
        tracker = make_tracker(url)
        ask(tracker, server, 1)
        assert tracker.flush(timeout=30)
        stop = threading.Event()
        workers = load(tracker, server, stop)
        time.sleep(0.3)
        warnings_log.messages.clear()
        cut()
        time.sleep(0.5)
        stop.set()
        for worker in workers:
            worker.join()
        assert tracker.flush(timeout=60), tracker.stats.last_error
        messages = list(warnings_log.messages)
        print(f"\n1 s outage under load: {len(messages)} warnings; {server.answered} calls")
        assert count_rows(tracker) == (server.answered, server.answered)
        # Two warnings per outage the writer saw, in order. A loaded machine can let one commit slip between two
        # attempts of the holder (SQLite) or the proxy restart, so the writer may see the cut as two outages; the
        # volume it logs is still bounded by outages, never by the rows or the retries.
        assert messages and len(messages) % 2 == 0 and len(messages) <= 4, messages
        for start, end in zip(messages[::2], messages[1::2]):
            assert "unavailable" in start and "available again" in end and "rows that waited" in end, messages
    finally:
        cleanup()
