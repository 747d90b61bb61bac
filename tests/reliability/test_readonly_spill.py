"""Case 3 of "loses nothing": the writer must not die when its spill directory is read-only (a read-only root
file system in Kubernetes; the default spill directory of a server database is under ``~/.cache``). A row the
database refuses must then be set aside somewhere: it used to be written to the spill directory, the write raised,
and the writer thread died — every later call of the process was queued and never committed."""

from __future__ import annotations

import logging

from dspy_tokens.testing import FakeLLMServer
from tests.support.faults import refuse_rows, stop_refusing
from tests.support.mounts import read_only
from tests.support.reliability import figures, report
from tests.support.wire import ask


def test_a_read_only_spill_directory_never_stops_recording(make_tracker, database_url, tmp_path, caplog):
    """Spill directory read-only; one call the database refuses as data, then 50 ordinary calls: the 50 are
    committed, the refused row is held in memory (health().rejected) with an error naming the directory and the
    fix, and the writer stays alive."""
    with read_only(tmp_path / "spill") as spill:
        tracker = make_tracker(database_url, spill_dir=spill)
        with FakeLLMServer() as server, caplog.at_level(logging.WARNING, logger="dspy_tokens"):
            ask(tracker, server, 1, feature="warm")
            assert tracker.flush(timeout=30)
            refuse_rows(database_url, "refuse")
            try:
                ask(tracker, server, 1, start=1, feature="refuse")
                ask(tracker, server, 50, start=2, feature="after")
                flushed = tracker.flush(timeout=30)
            finally:
                stop_refusing(database_url)
            alive = tracker.stats.alive
            found = report("3 read-only spill directory + one refused row (issue: 50 of 50 later calls lost)",
                           {**figures(database_url, server.answered), "flushed": flushed, "writer_alive": alive})
            health = tracker.health()
    assert flushed and alive and health.writer_alive
    assert found["stored"] == 51 and found["lost"] == 1 and found["duplicated"] == 0 and found["counters_equal_rows"]
    assert health.rejected == 1
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(str(spill) in m and "DSPY_TOKENS_SPILL_DIR" in m for m in said), said
