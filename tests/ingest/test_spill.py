"""Spill files: rows that cannot reach the database wait on local disk (on close, or past ``max_buffer``) and are
replayed into a working database by the next tracker on the same spill directory — exactly once, counters
included. Real DSPy programs over HTTP feed the trackers."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.db import (
    CLOSED_PORT_URL,
    assert_counters_match_rows,
    expected_counters,
    rows_in,
    stored_counters,
    stored_rows,
)
from tests.support.wire import ask, assert_rows_match_requests, question, wait_until


def spilled(spill_dir: Path) -> list[Path]:
    """The spill segments waiting in a directory."""
    return sorted(spill_dir.glob("spill-*.jsonl")) if spill_dir.is_dir() else []


def spilled_lines(spill_dir: Path) -> int:
    """How many rows wait in the spill segments."""
    return sum(len(p.read_text().splitlines()) for p in spilled(spill_dir))


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
