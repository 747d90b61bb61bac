"""Case 2 of "loses nothing": one poison row must not block every later spill segment, and the writer must not
spin on it. During an outage rows are spilled in segments; when the database comes back they are replayed. A row
the database cannot store (a NUL in a string on PostgreSQL; a row a trigger refuses) used to stop the replay at
its segment for good, with ``flush()`` never true and the writer retrying in a tight loop.
"""

from __future__ import annotations

import time

import dspy
import pytest

from dspy_tokens import usage_context
from dspy_tokens.testing import FakeLLMServer
from tests.support.db import store_of
from tests.support.faults import TcpProxy, refuse_rows, stop_refusing, via_proxy
from tests.support.reliability import figures, host_port, rejected_lines, report

SERVERS = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres),
                                                   pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)
CALLS = 220


def outage_calls(tracker, server, n: int, poison_at: int, feature: str) -> None:
    """``n`` calls; call ``poison_at`` is made with ``feature``, the others with "plain"."""
    predict, lm = dspy.Predict("question -> answer"), server.lm()
    with dspy.context(lm=lm, callbacks=[tracker]):
        for i in range(n):
            with usage_context(user_id=3, feature=feature if i == poison_at else "plain"):
                predict(question=f"outage {i}")


def idle_load(target, seconds: float = 2.0) -> tuple[float, float]:
    """(database transactions per second, this process's CPU %) over ``seconds`` of doing nothing: what a writer
    with nothing left to do costs (PostgreSQL counts transactions; elsewhere only the CPU is measured)."""
    store = store_of(target)

    def commits():
        if store.dialect != "postgresql":
            return 0
        with store.db.connection_context():
            store.db.execute_sql("SELECT pg_stat_clear_snapshot()")
            return store.db.execute_sql("SELECT xact_commit FROM pg_stat_database "
                                        "WHERE datname = current_database()").fetchone()[0]
    before, cpu = commits(), time.process_time()
    time.sleep(seconds)
    return (commits() - before) / seconds, 100 * (time.process_time() - cpu) / seconds


@SERVERS
@pytest.mark.parametrize("feature, refused", [
    pytest.param("bad\x00feature", False, id="nul-in-feature"),
    pytest.param("refuse", True, id="row-the-database-refuses"),
])
def test_a_poison_row_spilled_in_an_outage_blocks_no_other_row(make_tracker, database_url, tmp_path, feature,
                                                               refused):
    """1 + 220 calls, the 220 while the database is cut off (spilled in segments of ~20), one of them poison; then the
    database comes back: every other row is written exactly once, the poison row is stored cleaned (a NUL) or
    set aside as rejected (a row the database refuses), flush() is true, and the writer then rests."""
    proxy = TcpProxy(*host_port(database_url)).start()
    spill = tmp_path / "spill"
    if refused:
        refuse_rows(database_url, feature)
    try:
        tracker = make_tracker(via_proxy(database_url, proxy), spill_dir=spill, max_buffer=20)
        with FakeLLMServer() as server:
            outage_calls(tracker, server, 1, 0, "warm")
            assert tracker.flush(timeout=30)
            proxy.stop()
            outage_calls(tracker, server, CALLS, 5, feature)
            proxy.start()
            flushed = tracker.flush(timeout=30)
            per_second, cpu = idle_load(database_url)
            found = report(f"2 {store_of(database_url).dialect} outage + one poison row ({feature!r}) "
                           "(issue: 96 of 221 never written)", {**figures(database_url, server.answered, spill),
                                                               "flushed": flushed,
                                                               "idle_transactions_per_s": round(per_second),
                                                               "idle_cpu_percent": round(cpu)})
    finally:
        proxy.stop()
        if refused:
            stop_refusing(database_url)
    assert flushed, tracker.stats.last_error
    assert found["duplicated"] == 0 and found["counters_equal_rows"]
    assert found["lost"] == (1 if refused else 0) and found["rejected"] == (1 if refused else 0)
    assert rejected_lines(spill) == found["rejected"]
    assert per_second < 20 and cpu < 20  # resting, not retrying in a loop
    assert not [p for p in spill.glob("*") if p.name.startswith(("spill-", "claimed-"))]
