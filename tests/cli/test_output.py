"""How the command line looks: rich tables that fit and colour a terminal but stay plain and whole when piped,
progress bars on a terminal only, ``-h``, and a closed pipe (``report | head``) that ends the command quietly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

import pytest
from click.testing import CliRunner

from dspy_tokens.cli import main
from dspy_tokens.cli.tables import render_table
from tests.support.rows import hand_rows, insert, random_rows

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PIPED = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "NO_COLOR": None}  # whatever the outer environment says


@pytest.fixture
def seeded(sqlite_url):
    """The ten hand-made rows in a SQLite file."""
    insert(sqlite_url, list(hand_rows().values()))
    return sqlite_url


def invoke(*args, env=None, color=False, input=None):
    result = CliRunner().invoke(main, list(args), env={**PIPED, **(env or {})}, color=color, input=input)
    assert "Traceback" not in result.output, result.output
    return result


class TestTables:
    def test_piped_output_is_plain_and_never_wrapped(self, seeded):
        """Piped (not a terminal) a report has no colour codes and keeps each row on one line, whole, however
        narrow ``COLUMNS`` says the screen is: a script can ``grep`` a row and ``cut`` its cells."""
        result = invoke("report", "--since", "2025-03-01", "--by", "model", "-d", seeded, env={"COLUMNS": "40"})
        assert result.exit_code == 0, result.output
        assert not ANSI.search(result.stdout)
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) > 100
        [mystery] = [line for line in lines if line.startswith("acme/mystery")]
        assert mystery.split()[-1] == "0" and "unknown" in mystery.split()  # a whole row: key ... cache hits
        header = lines.index(next(line for line in lines if line.startswith("model")))
        assert set(lines[header + 1]) <= {"-", " "}  # a dashed rule under the header

    @pytest.mark.parametrize("columns", [100, 50])
    def test_on_a_terminal_tables_fit_its_width_are_coloured_and_lose_nothing(self, seeded, columns):
        """On a terminal (forced with ``FORCE_COLOR``, as rich reads it) a report is coloured and no line is wider
        than ``COLUMNS``; cells wrap instead of being cut (the same characters as the piped report). Where the
        numbers fit (the by-model table at 100 columns) only text wraps: every number stays whole on its row."""
        args = ("report", "--since", "2025-03-01", "--by", "model", "-d", seeded)
        result = invoke(*args, env={"FORCE_COLOR": "1", "COLUMNS": str(columns)}, color=True)
        assert result.exit_code == 0, result.output
        assert ANSI.search(result.stdout)
        text = ANSI.sub("", result.stdout)
        assert max(len(line) for line in text.splitlines()) <= columns
        piped = invoke(*args).stdout

        def characters(out):
            return Counter(c for line in out.splitlines() if set(line) - {"-", " ", "─"} for c in line if c != " ")
        assert characters(text) == characters(piped)
        if columns == 100:
            wanted = [line.split()[1:] for line in piped.split("By model")[1].splitlines()[3:]]
            shown = [line.split() for line in text.split("By model")[1].splitlines()[3:]]
            for numbers in wanted:
                assert any(row[-len(numbers):] == numbers for row in shown), (numbers, shown)

    def test_cells_are_formatted_and_numbers_right_aligned(self):
        """``render_table`` (which every command uses) writes None as -, money as $ with six decimals, ints with
        thousands separators, right-aligns numeric columns, says so when there are no rows, and keeps a title wider
        than the table on one line."""
        text = render_table(("name", "calls", "cost"), [("alice", 1234, __import__("decimal").Decimal("0.5")),
                                                         ("bob", 7, None)], "Title")
        lines = text.splitlines()
        assert lines[0] == "Title"
        assert lines[1].split() == ["name", "calls", "cost"]
        assert lines[3].split() == ["alice", "1,234", "$0.500000"] and lines[4].split() == ["bob", "7", "-"]
        assert lines[3].index("1,234") + len("1,234") == lines[4].index("7") + 1  # right-aligned
        assert "(no rows)" in render_table(("a", "b"), [])
        long_title = "Schema of sqlite:///" + "/very-long-directory" * 10
        assert render_table(("a",), [(1,)], long_title).splitlines()[0] == long_title  # a title is never wrapped

    def test_db_status_has_a_header(self, seeded):
        """``db status`` is a table with a header, one row per migration; ``--json`` gives the same as data."""
        text = invoke("db", "status", "-d", seeded).stdout
        lines = text.splitlines()
        assert lines[1].split()[:2] == ["version", "migration"] and "applied" in lines[1]
        assert lines[3].split()[0] == "1" and "applied" not in lines[3].split()[-1]
        payload = json.loads(invoke("db", "status", "--json", "-d", seeded).stdout)
        versions = [m["version"] for m in payload]
        assert versions[0] == 1 and versions == sorted(set(versions))
        assert all(m["applied_at"] for m in payload)


class TestJson:
    @pytest.mark.parametrize("command", [
        ["report"], ["top", "--period", "all"], ["session", "s-today"], ["limits", "1", "--estimate", "1"],
        ["prices", "openai/gpt-4o-mini"], ["db", "status"], ["db", "rebuild-counters", "--check"],
        ["cleanup", "--older-than", "1", "--dry-run"]], ids=lambda c: "-".join(c[:2]))
    def test_every_read_command_speaks_json(self, seeded, command):
        """Every read command (and the audits) takes ``--json`` and prints one JSON document, nothing else."""
        database = [] if command[0] == "prices" else ["-d", seeded]  # prices reads the price map, not a database
        result = invoke(*command, "--json", *database)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) not in (None, "", [], {})


class TestHelpAndPipes:
    @pytest.mark.parametrize("args", [["-h"], ["report", "-h"], ["db", "rebuild-counters", "-h"]])
    def test_dash_h_is_help(self, args):
        """``-h`` is ``--help`` for the group and every command; the group's help lists the exit codes."""
        result = invoke(*args)
        assert result.exit_code == 0 and result.stdout.startswith("Usage: ")
        if args == ["-h"]:
            assert "Exit codes: 0 done; 1 error" in result.stdout
            assert "3 the answer is no" in " ".join(result.stdout.split())

    @pytest.mark.parametrize("command", [["report", "--by", "session", "-n", "5000", "--period", "all"],
                                         ["export", "--format", "jsonl"]])
    def test_a_closed_pipe_ends_the_command_quietly(self, sqlite_url, command):
        """``dspy-tokens report | head -1`` (and ``export | head -1``): once the reader has gone the command stops
        without "Broken pipe", a traceback or an "Exception ignored" on stderr."""
        insert(sqlite_url, random_rows(2500))
        proc = subprocess.Popen([sys.executable, "-m", "dspy_tokens", *command, "-d", sqlite_url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
        proc.wait(timeout=60)
        assert first
        assert "Broken pipe" not in stderr and "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
        assert "Error" not in stderr


class TestProgress:
    def test_export_shows_a_progress_bar_on_a_terminal_only(self, seeded, tmp_path):
        """``export`` draws a rich progress bar (rows done of the total) on a terminal's stderr, and writes only its
        one summary line when stderr is piped."""
        target = tmp_path / "out.jsonl"
        shown = invoke("export", "--format", "jsonl", "-o", str(target), "-d", seeded,
                       env={"FORCE_COLOR": "1"}, color=True)
        assert shown.exit_code == 0, shown.output
        assert "exporting" in shown.stderr and "10/10" in ANSI.sub("", shown.stderr)
        piped = invoke("export", "--format", "jsonl", "-o", str(target), "-d", seeded)
        assert piped.stderr == f"exported 10 rows to {target}\n"

    def test_cleanup_and_rebuild_show_progress_bars(self, seeded):
        """``cleanup`` and ``db rebuild-counters`` draw their progress bars on a terminal too."""
        rebuilt = invoke("db", "rebuild-counters", "-d", seeded, env={"FORCE_COLOR": "1"}, color=True)
        assert rebuilt.exit_code == 0, rebuilt.output
        assert "reading rows" in rebuilt.stderr and "10/10" in ANSI.sub("", rebuilt.stderr)
        cleaned = invoke("cleanup", "--older-than", "1", "--yes", "-d", seeded, env={"FORCE_COLOR": "1"},
                         color=True)
        assert cleaned.exit_code == 0, cleaned.output
        assert "deleting rows" in cleaned.stderr and "10/10" in ANSI.sub("", cleaned.stderr)

    def test_reprice_shows_a_progress_bar_on_a_terminal_only(self, seeded):
        """``reprice`` draws its bar (rows read of the range's rows) on a terminal's stderr, nothing when piped."""
        shown = invoke("reprice", "--since", "2025-01-01", "--dry-run", "-d", seeded, env={"FORCE_COLOR": "1"},
                       color=True)
        assert shown.exit_code == 0, shown.output
        assert "would reprice" in shown.stderr and "10/10" in ANSI.sub("", shown.stderr)
        piped = invoke("reprice", "--since", "2025-01-01", "--dry-run", "-d", seeded)
        assert piped.exit_code == 0 and "would reprice" not in piped.stderr
