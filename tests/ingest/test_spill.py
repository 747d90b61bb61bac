"""Spill files: rows that cannot reach the database wait on local disk (on close, or past ``max_buffer``) and are
replayed into a working database by the next tracker on the same spill directory — exactly once, counters
included. The line codec reads any version's rows; garbage and refused rows block no other file; a journal is
taken only once its owner's lock is free. Real DSPy programs over HTTP feed the trackers."""

from __future__ import annotations

import json
import os
import shutil
import signal
from decimal import Decimal
from pathlib import Path

import pytest

from dspy_tokens.testing import FakeLLMServer
from tests.support.db import (
    CLOSED_PORT_URL,
    assert_counters_match_rows,
    expected_counters,
    rows_in,
    stored_counters,
    stored_rows,
)
from tests.support.rows import seed_row
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


# -- the codec: lines from any version are rows ---------------------------------------------------------------------

def line_of(row: dict, drop=(), **extra) -> str:
    """A spill line for ``row`` (a complete row dict), without the ``drop`` columns and with ``extra`` keys."""
    from dspy_tokens.ingest.journal import encode
    from dspy_tokens.store import UsageRow

    data = json.loads(encode(UsageRow(**row)))
    for column in drop:
        del data[column]
    data.update(extra)
    return json.dumps(data)


class TestCodec:
    """Every line a version of dspy-tokens wrote is read back as a row; a line that is not a row is refused."""

    def test_a_row_round_trips_exactly(self):
        """Decimal cost, aware datetime, ids and booleans come back exactly."""
        from dspy_tokens.ingest.journal import decode, encode
        from dspy_tokens.store import UsageRow

        row = UsageRow(**seed_row(user_id=2**63 - 1, cost_usd=Decimal("0.000000123456"), cache_hit=True))
        assert decode(encode(row)) == row

    def test_journal_lines_read_back_as_the_rows_written_awkward_text_and_big_counts_included(self):
        """The journal's batch encoding (orjson, json for what orjson refuses) gives lines ``decode`` reads back
        exactly: non-ASCII, quotes, newlines and a token count beyond 64 bits."""
        from dspy_tokens.ingest.journal import decode, encode, encode_lines
        from dspy_tokens.store import UsageRow

        rows = [UsageRow(**seed_row(feature='caf\u00e9 "\\n"\n\t\u2603', cost_usd=Decimal("0.000000123456"))),
                UsageRow(**seed_row(prompt_tokens=2**70, error="line one\nline two")),
                UsageRow(**seed_row(user_id=None, cost_usd=None))]
        lines = encode_lines(rows).decode("utf-8").split("\n")
        assert lines[-1] == "" and [decode(line) for line in lines[:-1]] == rows
        assert [json.loads(line) for line in lines[:-1]] == [json.loads(encode(row)) for row in rows]

    def test_a_newer_versions_line_with_extra_columns_keeps_its_row(self):
        """Keys this version does not know (a newer version's columns) are ignored; the row is kept."""
        from dspy_tokens.ingest.journal import decode

        row = seed_row()
        decoded = decode(line_of(row, future_kind="chat", future_tags={"a": 1}, future_tokens=12))
        assert decoded._asdict() == row

    def test_an_older_versions_line_without_some_columns_keeps_its_row(self):
        """Missing optional columns become None, missing required ones their natural value; nothing is refused."""
        from dspy_tokens.ingest.journal import decode

        row = seed_row(feature="chat", module="Predict")
        decoded = decode(line_of(row, drop=("cached_tokens", "reasoning_tokens", "response_model", "latency_ms",
                                            "session_id", "cost_source", "cache_hit", "usage_reported")))
        assert (decoded.cached_tokens, decoded.reasoning_tokens, decoded.latency_ms) == (None, None, None)
        assert decoded.session_id == row["call_uuid"] and decoded.call_index == 0
        assert decoded.cost_source == "unknown" and decoded.cache_hit is False and decoded.usage_reported is True
        assert (decoded.prompt_tokens, decoded.cost_usd, decoded.feature) == (100, row["cost_usd"], "chat")

    def test_values_of_another_type_are_coerced(self):
        """Counts as strings, a cost as a float, a naive ISO time (UTC) are read as the column's type."""
        from dspy_tokens.ingest.journal import decode

        row = seed_row()
        data = json.loads(line_of(row))
        data.update(prompt_tokens="100", cost_usd=0.000027, created_at=row["created_at"].replace(tzinfo=None)
                    .isoformat(), user_id="not a number")
        decoded = decode(json.dumps(data))
        assert decoded.prompt_tokens == 100 and decoded.cost_usd == Decimal("0.000027")
        assert decoded.created_at == row["created_at"] and decoded.user_id is None

    def test_text_no_database_can_store_is_cleaned(self):
        """NUL and lone surrogates (written by an older version) are cleaned, so the row can be stored."""
        from dspy_tokens.ingest.journal import decode

        decoded = decode(line_of(seed_row(feature="bad\x00feature", model="gpt\ud800")))
        assert decoded.feature == "badfeature" and decoded.model == "gpt\ufffd"

    @pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"call_uuid": "x"}', '"a string"', '{"a": 1}',
                                      '{"call_uuid": "x", "created_at": "yesterday"}', '{"call_uuid": "abc", "crea'])
    def test_a_line_that_is_not_a_row_is_refused(self, line):
        """Garbage, JSON that is not a row object, a row without its id or time, a truncated line: ValueError."""
        from dspy_tokens.ingest.journal import decode

        with pytest.raises(ValueError):
            decode(line)


# -- replay: nothing blocks the rest ---------------------------------------------------------------------------------

def write_segment(spill_dir: Path, name: str, lines: list[str]) -> Path:
    """A spill segment as another process (or version) would have left it."""
    spill_dir.mkdir(parents=True, exist_ok=True)
    path = spill_dir / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


class TestReplay:
    """Every waiting file is replayed; garbage, other versions' lines and refused rows block nothing."""

    def test_bad_lines_and_other_versions_rows_block_no_segment(self, make_tracker, database_url, tmp_path):
        """Segments with garbage lines, rows of other versions and a poison row first in sort order: every row is
        stored once, the garbage is kept in an unreadable- file, later segments are replayed, flush() is True."""
        spill = tmp_path / "spill"
        rows = [seed_row(user_id=1 + i % 3, feature="bad\x00feature" if i == 0 else None) for i in range(12)]
        write_segment(spill, "spill-0000.jsonl", [
            "not json at all", "[1, 2, 3]", '{"valid": "json", "but": "not a row"}', line_of(rows[0]),
            line_of(rows[1], drop=("reasoning_tokens", "cached_tokens")), line_of(rows[2], request_type="chat"),
            '{"call_uuid": "truncat'])
        write_segment(spill, "spill-0001.jsonl", [line_of(r) for r in rows[3:8]])
        write_segment(spill, "spill-ffff.jsonl", [line_of(r) for r in rows[8:]])
        tracker = make_tracker(database_url, spill_dir=spill)
        assert tracker.flush(timeout=30), tracker.stats.last_error
        stored = stored_rows(tracker)
        assert sorted(r["call_uuid"] for r in stored) == sorted(r["call_uuid"] for r in rows)
        assert {r["feature"] for r in stored} == {"badfeature", None}
        assert_counters_match_rows(tracker)
        [unreadable] = spill.glob("unreadable-*.jsonl")
        assert len(unreadable.read_text().splitlines()) == 4
        assert not list(spill.glob("spill-*")) and not list(spill.glob("claimed-*"))

    def test_a_row_the_database_refuses_is_set_aside_and_replayable_after_a_fix(self, make_tracker, database_url,
                                                                               tmp_path):
        """A spilled row the database refuses as data goes to a rejected- file; the other rows and segments are
        stored; after the fix `dspy-tokens spill replay --rejected` stores it, exactly once."""
        from click.testing import CliRunner

        from dspy_tokens.cli import main
        from tests.support.faults import refuse_rows, stop_refusing

        spill = tmp_path / "spill"
        rows = [seed_row(user_id=7, feature="refuse" if i == 3 else "ok") for i in range(10)]
        write_segment(spill, "spill-0000.jsonl", [line_of(r) for r in rows[:5]])
        write_segment(spill, "spill-0001.jsonl", [line_of(r) for r in rows[5:]])
        refuse_rows(database_url, "refuse")
        try:
            tracker = make_tracker(database_url, spill_dir=spill)
            assert tracker.flush(timeout=30), tracker.stats.last_error
            assert len(stored_rows(tracker)) == 9
            assert tracker.health().rejected == 1
            [rejected] = spill.glob("rejected-*.jsonl")
            assert json.loads(rejected.read_text())["call_uuid"] == rows[3]["call_uuid"]
        finally:
            stop_refusing(database_url)
        runner = CliRunner()
        result = runner.invoke(main, ["spill", "replay", "--rejected", "-d", database_url, "--spill-dir", str(spill)])
        assert result.exit_code == 0, result.output
        assert "1 new" in result.output
        assert sorted(r["call_uuid"] for r in rows_in(database_url)) == sorted(r["call_uuid"] for r in rows)
        assert_counters_match_rows(tracker)
        assert not list(spill.iterdir())


# -- journals: alive while their owner lives, whatever its PID ---------------------------------------------------------

class TestJournals:
    """A journal is proven alive by its owner's lock, not by its PID."""

    def test_a_live_journal_is_never_taken_and_a_dead_one_is_replayed_once(self, make_tracker, database_url,
                                                                         tmp_path):
        """A process recording while its database is down holds its journal: another tracker on the same spill
        directory leaves it alone; once the process is SIGKILLed, its journal is replayed exactly once."""
        from tests.support.reliability import read_event, spawn

        spill = tmp_path / "spill"
        with FakeLLMServer() as server:
            child = spawn("record", CLOSED_PORT_URL, server.url, str(spill), "2")
            try:
                read_event(child, "started", timeout=120)
                assert wait_until(lambda: read_event(child, "progress")["calls"] >= 20, timeout=60)
                assert wait_until(lambda: list(spill.glob("journal-*.jsonl")), timeout=30)  # journaled after return
                [journal] = spill.glob("journal-*.jsonl")
                other = make_tracker(database_url, spill_dir=spill)
                assert other.flush(timeout=30)
                assert rows_in(database_url) == [] and journal.exists()  # the owner lives: not taken
                lines_before = len(journal.read_text().splitlines())
                assert wait_until(lambda: len(journal.read_text().splitlines()) > lines_before, timeout=30)
            finally:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
            journaled = {json.loads(line)["call_uuid"] for line in journal.read_text().splitlines()}
            after = make_tracker(database_url, spill_dir=spill)
            assert after.flush(timeout=30), after.stats.last_error
            stored = [r["call_uuid"] for r in rows_in(database_url)]
            assert len(stored) == len(set(stored)) == len(journaled) and set(stored) == journaled
            assert not list(spill.glob("journal-*")) and not list(spill.glob("claimed-*"))

    def test_a_pid_named_journal_of_an_older_version_is_replayed_even_under_our_own_pid(self, make_tracker,
                                                                                     sqlite_url, tmp_path):
        """An older version's journal named by PID is replayed when that PID is gone — or is this very process, as
        after every restart of a container (PID 1), where such a journal can only be a dead one."""
        spill = tmp_path / "spill"
        rows = [seed_row() for _ in range(3)]
        write_segment(spill, f"journal-{os.getpid()}-deadbeef.jsonl", [line_of(r) for r in rows])
        tracker = make_tracker(sqlite_url, spill_dir=spill)
        assert tracker.flush(timeout=30)
        assert len(stored_rows(tracker)) == 3 and not list(spill.iterdir())


def test_a_spill_file_that_cannot_be_written_leaves_nothing_behind(tmp_path):
    """On a full disk a spill write fails cleanly: no zero-byte or partial spill-*.tmp file is left."""
    from dspy_tokens.ingest import SpillDirectory
    from dspy_tokens.store import UsageRow
    from tests.support.mounts import fill, tmpfs

    with tmpfs(tmp_path / "full", "64k") as full:
        fill(full)
        with pytest.raises(OSError):
            SpillDirectory(full / "spill").write([UsageRow(**seed_row()) for _ in range(50)])
        leftovers = [p.name for p in full.rglob("*") if p.is_file() and p.name != "filler"]
        assert leftovers == []
