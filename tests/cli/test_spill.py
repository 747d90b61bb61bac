"""``dspy-tokens spill status|replay|discard`` through click's CliRunner, on a spill directory left by real trackers:
what waits where (table and JSON), a replay that stores each row once, and a discard that asks first and never
touches the files of a running process."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from dspy_tokens.cli import main
from tests.support.db import CLOSED_PORT_URL, rows_in
from tests.support.wire import ask


def run(*args, input=None):
    result = CliRunner().invoke(main, ["spill", *args], input=input)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def waiting(make_tracker, server, tmp_path):
    """A spill directory holding 4 rows a tracker could not commit (database down), plus one unreadable line and
    one rejected row file."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill)
    ask(down, server, 4)
    assert down.close(timeout=1) is False
    (spill / "unreadable-0000.jsonl").write_text("not a row\n")
    return spill


def test_status_lists_what_waits_where(waiting, database_url):
    """status: one line per file with its kind, state and rows, and the totals with what to do about each."""
    result = run("status", "-d", database_url, "--spill-dir", str(waiting))
    assert result.exit_code == 0, result.output
    assert str(waiting) in result.output and "waiting" in result.output and "not rows" in result.output
    assert "4 rows wait for the database" in result.output and "1 lines are not rows" in result.output
    data = json.loads(run("status", "-d", database_url, "--spill-dir", str(waiting), "--json").output)
    assert (data["waiting"], data["rejected"], data["unreadable"]) == (4, 0, 1)
    assert {f["kind"] for f in data["files"]} == {"spill", "unreadable"}


def test_replay_stores_each_row_once(waiting, database_url):
    """replay: the waiting rows are stored; a second replay finds nothing; the unreadable line stays."""
    first = run("replay", "-d", database_url, "--spill-dir", str(waiting))
    assert first.exit_code == 0, first.output
    assert "4 rows, 4 new" in first.output
    assert len(rows_in(database_url)) == 4
    again = run("replay", "-d", database_url, "--spill-dir", str(waiting))
    assert "replayed 0 files" in again.output and len(rows_in(database_url)) == 4
    assert [p.name for p in waiting.iterdir()] == ["unreadable-0000.jsonl"]


def test_replay_with_the_database_down_keeps_everything_and_fails(waiting):
    """replay against an unreachable database: exit 1 with one line saying to run it again; nothing is lost."""
    before = sorted(p.name for p in waiting.iterdir())
    result = run("replay", "-d", CLOSED_PORT_URL, "--spill-dir", str(waiting))
    assert result.exit_code == 1 and "run this again later" in result.output
    assert sorted(p.name for p in waiting.iterdir()) == before


def test_discard_asks_first_and_deletes_only_what_was_chosen(waiting, database_url):
    """discard --unreadable: lists the files and asks; "n" keeps them, "y" deletes them; the waiting rows stay.
    Without a choice it is a usage error."""
    assert run("discard", "-d", database_url, "--spill-dir", str(waiting)).exit_code == 2
    kept = run("discard", "--unreadable", "-d", database_url, "--spill-dir", str(waiting), input="n\n")
    assert kept.exit_code == 1 and (waiting / "unreadable-0000.jsonl").exists()
    gone = run("discard", "--unreadable", "-d", database_url, "--spill-dir", str(waiting), input="y\n")
    assert gone.exit_code == 0 and "deleted 1 files (1 rows)" in gone.output
    assert [p.name.split("-")[0] for p in waiting.iterdir()] == ["spill"]


def test_discard_never_touches_a_running_processs_journal(make_tracker, server, tmp_path, database_url):
    """A live tracker's journal is shown as held by a running process and survives discard --waiting --yes."""
    spill = tmp_path / "spill"
    down = make_tracker(CLOSED_PORT_URL, spill_dir=spill)
    ask(down, server, 2)
    deadline = time.monotonic() + 30  # the intake thread journals the calls after they return
    while not (journals := list(spill.glob("journal-*.jsonl"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    [journal] = journals
    status = run("status", "-d", database_url, "--spill-dir", str(spill))
    assert "held by a running process" in status.output
    result = run("discard", "--waiting", "--yes", "-d", database_url, "--spill-dir", str(spill))
    assert result.exit_code == 0 and "nothing to discard" in result.output
    assert journal.exists()
