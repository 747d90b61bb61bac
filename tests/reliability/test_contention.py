"""SQLite under contention: two processes with eight threads each write usage, take reservations and check
limits on one database file at once. Nothing about the lock may reach the user's code."""

from __future__ import annotations

import json

from dspy_tokens.testing import FakeLLMServer
from tests.support.db import reservations
from tests.support.reliability import count_rows, counter_totals, read_event, spawn, token_sums

PROCESSES, THREADS, SECONDS = 2, 8, 6
LIMITS = {"user_limit": 10**9, "guild_limit": 10**10, "global_limit": 10**12}


def test_two_processes_eight_threads_no_database_is_locked_escapes(sqlite_url, make_tracker, tmp_path):
    """2 processes x 8 threads guarding, checking and calling on one SQLite file: no lock error reaches users."""
    with FakeLLMServer() as server:
        children = [spawn("contend", sqlite_url, server.url, str(tmp_path / f"spill{i}"), str(THREADS), str(SECONDS),
                          json.dumps(LIMITS)) for i in range(PROCESSES)]
        results = [read_event(child, "done", timeout=180) for child in children]
        for child in children:
            assert child.wait(timeout=60) == 0
        answered, sent = server.answered, server.usage_totals()
    for result in results:
        print(f"\ncontention: {result['guarded']} guarded, {result['checks']} checks, {result['plain']} plain; "
              f"{result['problem_count']} library warnings {result['problems'][:3]}")
        assert result["errors"] == []
        assert result["unchecked"] == 0 and result["refused"] == 0
        assert result["flushed"] and result["last_error"] is None
        assert not [p for p in result["problems"] if "locked" in p.lower()]
        assert result["guarded"] >= THREADS and result["plain"] >= THREADS
    tracker = make_tracker(sqlite_url)
    rows, distinct = count_rows(tracker)
    assert rows == distinct == answered == sum(r["guarded"] + r["plain"] for r in results)
    assert token_sums(tracker) == sent
    assert counter_totals(tracker) == (rows, sent["total_tokens"])
    assert reservations(tracker) == 0
