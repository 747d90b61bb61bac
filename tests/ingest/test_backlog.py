"""The writer's backlog on disk under real file-system trouble: a long outage never stores a row twice on disk,
and ``close()`` with the database down and the disk full keeps every row — in the journal, or as a last resort in
the log, from which it can be replayed — instead of saying "kept in memory" and exiting without them."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from tests.support.db import CLOSED_PORT_URL, rows_in
from tests.support.mounts import fill, tmpfs
from tests.support.wire import ask, wait_until

CALLS = 120


def lines(directory: Path, prefix: str) -> int:
    """Rows in the files of ``directory`` whose name starts with ``prefix``."""
    return sum(len(p.read_text().splitlines()) for p in directory.glob(f"{prefix}*.jsonl")) if directory.is_dir() \
        else 0


def test_a_long_outage_stores_each_row_once_on_disk(make_tracker, server, tmp_path):
    """Database down while 4 threads make 120 calls, max_buffer=20: the spill files and the journal together hold
    each row exactly once (the journal is emptied of what was spilled), not the journal duplicating them."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill, max_buffer=20)
    workers = [threading.Thread(target=ask, args=(down, server, CALLS // 4), kwargs={"start": n * 100})
               for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    on_disk = lambda: lines(spill, "spill-") + lines(spill, "journal-")  # noqa: E731
    settled = wait_until(lambda: on_disk() == CALLS and lines(spill, "spill-") >= 100, timeout=15)
    print(f"\n{CALLS} rows held during an outage: {lines(spill, 'spill-')} in spill files, "
          f"{lines(spill, 'journal-')} in the journal")
    assert settled


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def library_log():
    handler = Records()
    logging.getLogger("dspy_tokens").addHandler(handler)
    yield handler
    logging.getLogger("dspy_tokens").removeHandler(handler)


def test_close_on_a_full_disk_keeps_the_rows_in_the_journal(make_tracker, database_url, server, tmp_path,
                                                            library_log):
    """Database down, then the spill directory's disk fills: close() cannot spill, says where the rows are (the
    journal), leaves no spill-*.tmp behind; once there is room again the next tracker writes them exactly once."""
    with tmpfs(tmp_path / "disk", "256k") as disk:
        spill = disk / "spill"
        down = make_tracker(CLOSED_PORT_URL, spill_dir=spill)
        ask(down, server, 20)
        assert wait_until(lambda: lines(spill, "journal-") == 20, timeout=10)
        fill(disk)
        assert down.close(timeout=1) is False
        said = " ".join(r.getMessage() for r in library_log.records)
        assert "journal" in said and str(spill) in said
        assert not [p for p in disk.rglob("*.tmp")]
        (disk / "filler").unlink()
        up = make_tracker(database_url, spill_dir=spill)
        assert up.flush(timeout=30), up.stats.last_error
        stored = [r["call_uuid"] for r in rows_in(database_url)]
        assert len(stored) == len(set(stored)) == 20


def test_rows_that_fit_nowhere_are_written_to_the_log_and_can_be_replayed(make_tracker, database_url, server,
                                                                          tmp_path, library_log):
    """Database down and the disk full from the start (no journal, no spill file): close() writes the rows to the
    log as spill lines, at ERROR; saved to a file, they replay exactly once — never gone without a word."""
    with tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        down = make_tracker(CLOSED_PORT_URL, spill_dir=disk / "spill")
        ask(down, server, 5)
        assert down.close(timeout=1) is False
    [dump] = [r for r in library_log.records if r.levelno == logging.ERROR and "spill lines" in r.getMessage()]
    lines_logged = dump.getMessage().split("\n")[1:]
    assert len(lines_logged) == 5 and all(json.loads(line)["call_uuid"] for line in lines_logged)
    recovered = tmp_path / "recovered"
    recovered.mkdir()
    (recovered / "spill-recovered.jsonl").write_text("\n".join(lines_logged) + "\n")
    up = make_tracker(database_url, spill_dir=recovered)
    assert up.flush(timeout=30), up.stats.last_error
    assert len(rows_in(database_url)) == 5
