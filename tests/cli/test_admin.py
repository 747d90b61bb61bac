"""The commands that guard a database: reads that never create anything, a bare path as SQLite, ``limits``'
exit code, the counters audit (``db rebuild-counters [--check]``), and ``cleanup``'s confirmation and the space it
gives back. On every backend the ``database_url`` fixture reaches."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from dspy_tokens.cli import main
from dspy_tokens.cli.common import EXIT_NO
from dspy_tokens.store import Store
from tests.support.rows import hand_rows, insert, random_rows, seed_row

PIPED = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None}


def run(*args, input=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=PIPED, input=input)
    assert "Traceback" not in result.output, result.output
    return result


def tables_of(url: str) -> list[str]:
    store = Store(url)
    with store.db.connection_context():
        return sorted(store.db.get_tables())


def counters_of(url: str) -> list[tuple]:
    store = Store(url)
    with store.db.connection_context():
        return sorted(store.models.UsageCounter.select().tuples())


READS = [["report"], ["top"], ["session", "s-today"], ["export"], ["db", "status"], ["limits", "1"],
         ["db", "rebuild-counters", "--check"], ["cleanup", "--older-than", "1", "--yes"],
         ["reprice", "--since", "2026-01-01"]]


class TestReadsCreateNothing:
    @pytest.mark.parametrize("command", READS, ids=lambda c: "-".join(c[:2]))
    def test_a_database_without_our_tables_is_refused_and_left_as_it_was(self, database_url, tmp_path, command):
        """Reads (and cleanup) on a database that holds no dspy-tokens data say so with a non-zero exit and create
        nothing: the server database keeps no tables, a SQLite file stays empty."""
        url = database_url
        if url.startswith("sqlite"):
            path = tmp_path / "empty.db"
            sqlite3.connect(path).close()  # an existing, empty SQLite file
            url = f"sqlite:///{path}"
        result = run(*command, "-d", url)
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith("Error: no dspy-tokens data here") and result.stderr.count("\n") == 1
        assert tables_of(url) == []

    def test_a_missing_sqlite_file_is_not_created(self, tmp_path):
        """A read of a SQLite path that does not exist creates neither the file nor its directory."""
        target = tmp_path / "nowhere" / "usage.db"
        result = run("report", "-d", target)
        assert result.exit_code == 1 and "no database at" in result.stderr
        assert not target.parent.exists()

    def test_a_bare_path_is_a_sqlite_file(self, tmp_path, monkeypatch):
        """``-d usage.db`` (no ``sqlite:///``) is the SQLite file at that path, relative or absolute."""
        insert(f"sqlite:///{tmp_path / 'usage.db'}", list(hand_rows().values()))
        monkeypatch.chdir(tmp_path)
        relative = run("report", "--period", "all", "--json", "-d", "usage.db")
        absolute = run("report", "--period", "all", "--json", "-d", tmp_path / "usage.db")
        assert relative.exit_code == 0 and absolute.exit_code == 0, relative.output + absolute.output
        assert json.loads(relative.stdout)["summaries"]["all"]["calls"] == 10
        assert relative.stdout == absolute.stdout


class TestLimitsExitCode:
    def test_a_refusal_exits_3_and_an_admission_0(self, database_url, tmp_path):
        """``limits USER`` exits 3 (documented in ``--help``) when the request would be refused, 0 when allowed;
        ``--json`` carries the same verdict."""
        insert(database_url, [seed_row(user_id=1, prompt_tokens=100, completion_tokens=20, total_tokens=120)])
        config = tmp_path / "models.json"
        config.write_text(json.dumps({"user_limit": 100}))
        refused = run("limits", 1, "--estimate", 10, "--config", config, "-d", database_url)
        assert refused.exit_code == EXIT_NO == 3, refused.output
        assert refused.stdout.startswith("REFUSED")
        assert json.loads(run("limits", 1, "--estimate", 10, "--config", config, "--json", "-d",
                              database_url).stdout)["allowed"] is False
        allowed = run("limits", 2, "--estimate", 10, "--config", config, "-d", database_url)
        assert allowed.exit_code == 0, allowed.output
        assert allowed.stdout.startswith("allowed")


class TestLimitsUsedAndHeld:
    def test_tokens_held_by_a_run_in_progress_are_not_called_used(self, database_url, tmp_path, make_tracker):
        """Case 6 from the CLI: 0 used, 5,000 held by a run still in progress (or killed): the message, the table
        and ``--json`` keep used and reserved apart and say by when the hold is released at the latest."""
        from dspy_tokens.config import parse_config

        config = tmp_path / "models.json"
        config.write_text(json.dumps({"user_limit": 5000}))
        tracker = make_tracker(database_url, parse_config({"user_limit": 5000}, "test"))
        hold = tracker.guard(1, estimate=5000)
        hold.__enter__()
        try:
            shown = run("limits", 1, "--estimate", 1, "--config", config, "-d", database_url)
            data = json.loads(run("limits", 1, "--estimate", 1, "--config", config, "--json", "-d",
                                  database_url).stdout)
        finally:
            hold.__exit__(None, None, None)
        assert shown.exit_code == EXIT_NO, shown.output
        assert "You have used 0 of 5,000 tokens" in shown.stdout
        assert "5,000 more are held by requests in progress (released by" in shown.stdout
        [rule] = data["rules"]
        assert (rule["used"], rule["reserved"]) == ("0", "5000")
        held_until = datetime.fromisoformat(rule["held_until"])
        assert 0 < (held_until - datetime.now(timezone.utc)).total_seconds() <= 600


class TestCountersAudit:
    def test_check_reports_drift_without_changing_anything_and_rebuild_fixes_it(self, database_url):
        """``db rebuild-counters --check`` says the counters match (exit 0); after they are damaged (one wrong,
        one missing, one orphan) it names each kind and the totals before and after, exits 3 and changes nothing;
        ``db rebuild-counters`` then restores exactly the original counters and says what it changed."""
        insert(database_url, random_rows(200))
        clean = counters_of(database_url)
        assert run("db", "rebuild-counters", "--check", "-d", database_url).stdout.rstrip().endswith(
            "no drift: the counters match the rows")
        store = Store(database_url)
        counter = store.models.UsageCounter
        first, second = clean[0], clean[1]
        with store.db.connection_context():
            counter.update(tokens=counter.tokens + 7).where(
                (counter.scope == first[0]) & (counter.scope_id == first[1]) & (counter.hour == first[2])).execute()
            counter.delete().where((counter.scope == second[0]) & (counter.scope_id == second[1])
                                   & (counter.hour == second[2])).execute()
            counter.insert(scope="user", scope_id=999_999, hour=clean[-1][2], calls=1, tokens=50, cost_pusd=0,
                           unpriced_calls=0).execute()
        damaged = counters_of(database_url)

        checked = run("db", "rebuild-counters", "--check", "--json", "-d", database_url)
        assert checked.exit_code == EXIT_NO, checked.output
        audit = json.loads(checked.stdout)
        scope = next(t for t in audit["tables"] if t["table"] == "scope")
        assert (audit["rows"], audit["drifted"], audit["checked_only"]) == (200, True, True)
        assert (scope["added"], scope["removed"], scope["changed"]) == (1, 1, 1)
        assert scope["before"]["tokens"] == scope["after"]["tokens"] + 7 + 50 - second[4]
        assert counters_of(database_url) == damaged

        rebuilt = run("db", "rebuild-counters", "-d", database_url)
        assert rebuilt.exit_code == 0, rebuilt.output
        assert "the counters had drifted from the rows; rebuilt from the rows" in rebuilt.stdout
        assert "per user/guild/global" in rebuilt.stdout and "→" in rebuilt.stdout
        assert counters_of(database_url) == clean
        assert run("db", "rebuild-counters", "--check", "-d", database_url).exit_code == 0


class TestCleanup:
    def old_rows(self, url: str, n: int = 3000) -> None:
        old = datetime.now(timezone.utc) - timedelta(days=400)
        insert(url, random_rows(n, start=old - timedelta(days=30), end=old))

    def test_it_asks_first_and_a_no_keeps_everything(self, database_url):
        """Without ``--yes`` cleanup asks (saying how many rows and from where); "n" aborts with exit 1 and
        deletes nothing, "y" deletes."""
        self.old_rows(database_url, 50)
        declined = run("cleanup", "--older-than", "90", "-d", database_url, input="n\n")
        assert declined.exit_code == 1 and "Aborted" in declined.stderr
        assert "Delete 50 rows created before" in declined.stderr
        assert json.loads(run("report", "--period", "all", "--json", "-d", database_url).stdout
                          )["summaries"]["all"]["calls"] == 50
        accepted = run("cleanup", "--older-than", "90", "-d", database_url, input="y\n")
        assert accepted.exit_code == 0, accepted.output
        assert "deleted 50 rows" in accepted.stdout
        assert run("export", "--format", "jsonl", "-d", database_url).stdout == ""

    def test_it_reclaims_the_space_of_the_deleted_rows(self, database_url, tmp_path):
        """After deleting, cleanup gives the space back (VACUUM / VACUUM ANALYZE / OPTIMIZE TABLE) and says how
        much; a SQLite file shrinks on disk. ``--no-reclaim`` leaves it."""
        self.old_rows(database_url)
        result = run("cleanup", "--older-than", "90", "--yes", "--json", "-d", database_url)
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["rows"] == 3000 and payload["bytes_before"] is not None
        if database_url.startswith("sqlite"):
            on_disk = sum(p.stat().st_size for p in tmp_path.glob("usage.db*") if p.is_file())
            assert payload["bytes_after"] < payload["bytes_before"] / 2
            assert on_disk <= payload["bytes_after"] + 64 * 1024, on_disk
        text = run("cleanup", "--older-than", "90", "--yes", "--no-reclaim", "-d", database_url).stdout
        assert "deleted 0 rows" in text and "reclaimed" not in text
