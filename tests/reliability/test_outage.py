"""Database outages: the server database becomes unreachable while LM calls continue.

A TCP proxy in the test stands between the tracker and PostgreSQL/MariaDB; closing it refuses new connections
and cuts open ones mid-stream, reopening it brings the database back on the same address — so a live tracker
has to notice, keep its rows (in memory, then spill files), reconnect and write every row exactly once.
"""

from __future__ import annotations

import threading
import time

import dspy
import pytest

from dspy_tokens import TokenTracker, usage_context
from dspy_tokens.config import parse_config
from dspy_tokens.ingest import UsageWriter
from dspy_tokens.testing import FakeLLMServer
from tests.support.db import reservations
from tests.support.faults import TcpProxy, via_proxy
from tests.support.reliability import count_rows, counter_totals, host_port, spill_files, token_sums

SERVERS = pytest.mark.parametrize("database_url", ["postgres", "mysql"], indirect=True)
LIMITS = {"user_limit": 10**9, "guild_limit": 10**10}


def calls(predict, lm, tracker, n: int, tag: str, guarded: bool = False) -> None:
    for i in range(n):
        with dspy.context(lm=lm, callbacks=[tracker]):
            if guarded:
                with tracker.guard(user_id=7, guild_id=8, estimate=100):
                    predict(question=f"{tag} {i}")
            else:
                with usage_context(user_id=7, guild_id=8):
                    predict(question=f"{tag} {i}")


def assert_exactly_once(tracker: TokenTracker, server: FakeLLMServer) -> int:
    rows, distinct = count_rows(tracker)
    assert rows == distinct == server.answered
    sent = server.usage_totals()
    assert token_sums(tracker) == sent
    assert counter_totals(tracker) == (rows, sent["total_tokens"])
    return rows


@SERVERS
def test_outage_calls_succeed_and_every_record_lands_once_after_reconnect(database_url, make_tracker, tmp_path):
    """Proxy closed mid-run: all calls (plain and guarded) succeed; after reopening, rows == answered exactly."""
    proxy = TcpProxy(*host_port(database_url)).start()
    spill = tmp_path / "spill"
    tracker = make_tracker(via_proxy(database_url, proxy), parse_config(LIMITS, "outage"), spill_dir=spill,
                           max_buffer=40)
    try:
        with FakeLLMServer() as server:
            lm, predict = server.lm(), dspy.Predict("question -> answer")
            calls(predict, lm, tracker, 10, "before")
            assert tracker.flush(timeout=30)
            proxy.stop()  # refused from now on; open connections are cut
            started = time.monotonic()
            calls(predict, lm, tracker, 60, "down")
            calls(predict, lm, tracker, 20, "down-guarded", guarded=True)
            decision = tracker.check(user_id=7, guild_id=8)
            assert decision.allowed and decision.warning  # fail-open by default, flagged
            assert not tracker.flush(timeout=1.0)
            assert time.monotonic() - started < 60  # nothing waited on a dead database for long
            assert tracker.stats.last_error
            assert any(p.name.startswith("spill-") for p in spill_files(spill)), "rows beyond max_buffer spill"
            proxy.start()
            assert tracker.flush(timeout=60), tracker.stats.last_error
            rows = assert_exactly_once(tracker, server)
            assert rows == 90
            assert not [p for p in spill_files(spill) if p.name.startswith(("spill-", "claimed-", "rejected-"))]
            assert reservations(tracker) == 0
    finally:
        proxy.stop()


@SERVERS
def test_flapping_connection_never_loses_or_duplicates_a_row(database_url, make_tracker, tmp_path, monkeypatch):
    """The proxy drops every connection every ~150 ms while 4 threads make calls: rows == answered exactly."""
    real_init = UsageWriter.__init__

    def quick_retries(writer, *args, **kwargs):  # the tracker's writer backs off at most 0.2 s, not 5 s
        kwargs.setdefault("max_retry_delay", 0.2)
        real_init(writer, *args, **kwargs)

    monkeypatch.setattr(UsageWriter, "__init__", quick_retries)
    proxy = TcpProxy(*host_port(database_url)).start()
    tracker = make_tracker(via_proxy(database_url, proxy), spill_dir=tmp_path / "spill", max_buffer=100)
    stop = threading.Event()

    def flap():
        while not stop.is_set():
            time.sleep(0.15)
            proxy.stop()
            time.sleep(0.05)
            proxy.start()

    try:
        with FakeLLMServer() as server:
            lm, predict = server.lm(), dspy.Predict("question -> answer")
            flapper = threading.Thread(target=flap, daemon=True)
            flapper.start()
            workers = [threading.Thread(target=calls, args=(predict, lm, tracker, 60, f"flap{n}")) for n in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            stop.set()
            flapper.join()
            if not proxy.up:
                proxy.start()
            assert tracker.flush(timeout=60), tracker.stats.last_error
            print(f"\nflapping: {proxy.accepted} connections made through the proxy")
            assert assert_exactly_once(tracker, server) == 240
    finally:
        stop.set()
        proxy.stop()


@SERVERS
def test_records_made_while_refused_are_written_by_the_next_tracker(database_url, make_tracker, tmp_path):
    """Tracker on a closed port: calls succeed, rows spill on close; a new tracker (same spill dir) writes them once."""
    proxy = TcpProxy(*host_port(database_url))  # never started: connection refused
    spill = tmp_path / "spill"
    with FakeLLMServer() as server:
        lm, predict = server.lm(), dspy.Predict("question -> answer")
        down = TokenTracker(via_proxy(database_url, proxy), spill_dir=spill)
        calls(predict, lm, down, 25, "refused")
        assert not down.close(timeout=2)  # could not commit: kept on disk instead
        assert spill_files(spill)
        up = make_tracker(database_url, spill_dir=spill)
        assert up.flush(timeout=60), up.stats.last_error
        assert assert_exactly_once(up, server) == 25
        again = make_tracker(database_url, spill_dir=spill)  # nothing is replayed twice
        assert again.flush(timeout=30)
        assert count_rows(up) == (25, 25)
