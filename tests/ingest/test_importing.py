"""``copy`` and ``import`` on every backend: a SQLite database copied up to PostgreSQL/MariaDB, and an export
imported into a fresh database, answer ``summary()``, ``top()`` and ``breakdown()`` to the last token and
picodollar; the counters equal the source's; a second run adds nothing; an interrupted copy resumes."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dspy_tokens import Reports
from dspy_tokens.cli import main
from dspy_tokens.ingest import copy_rows, import_file
from dspy_tokens.store import ROW_COLUMNS, Store
from tests.support.db import all_rows, counter_rows, stored_counters
from tests.support.rows import NOW, hand_rows, insert, random_rows

PERIODS = [dict(), dict(period="month"), dict(period="week"), dict(period="today"), dict(period="7d"),
           dict(since=NOW.replace(month=1, day=5), until=NOW.replace(month=2, day=17, hour=3))]


@pytest.fixture
def source(tmp_path):
    """A SQLite database (the default backend) with ~12 weeks of varied calls and the hand-made ones."""
    url = f"sqlite:///{tmp_path / 'source.db'}"
    insert(url, random_rows(700) + list(hand_rows().values()))
    return url


def run(*args):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def reports_of(url: str) -> dict:
    """Every report a bot shows, as plain values: summaries of several periods, top users and guilds by tokens
    and cost, and breakdowns by each dimension and by day."""
    reports = Reports(Store(url), clock=lambda: NOW)
    found: dict = {}
    for i, period in enumerate(PERIODS):
        found[f"summary {i}"] = reports.summary(**period)
        found[f"summary {i} user 2"] = reports.summary(**period, user_id=2)
        for scope in ("user", "guild"):
            for by in ("tokens", "cost"):
                found[f"top {i} {scope} {by}"] = reports.top(5, by=by, scope=scope, **period)
        for by in ("user", "guild", "model", "feature", "day"):
            found[f"breakdown {i} {by}"] = reports.breakdown(by, **period)
    return found


def model_counters(url: str) -> list[tuple]:
    return sorted(tuple(sorted(row.items())) for row in counter_rows(url, "ModelUsageCounter"))


def rows_without_ids(url: str) -> list[tuple]:
    return [tuple(row[c] for c in ROW_COLUMNS) for row in all_rows(url)]


def test_copy_from_sqlite_gives_the_same_reports_and_counters(source, database_url):
    """``dspy-tokens copy --from SQLite --to URL`` moves every row (the same values, in the same order), rebuilds
    the hourly counters and rollups from them, and every report of the target equals the source's exactly."""
    result = run("copy", "--from", source, "--to", database_url, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert (payload["read"], payload["added"], payload["skipped"]) == (710, 710, 0)
    assert payload["calls_only_in_rollups"] == 0
    assert rows_without_ids(database_url) == rows_without_ids(source)
    assert stored_counters(database_url) == stored_counters(source)
    assert model_counters(database_url) == model_counters(source)
    assert reports_of(database_url) == reports_of(source)


def test_a_second_copy_adds_nothing(source, database_url):
    """Copy is idempotent by call_uuid: running it again reads every row and adds none, and the reports do not
    move (no counter is counted twice)."""
    assert run("copy", "--from", source, "--to", database_url).exit_code == 0
    before = reports_of(database_url)
    again = run("copy", "--from", source, "--to", database_url)
    assert again.exit_code == 0, again.output
    assert "copied 0 of 710 rows" in again.stdout and "710 already there" in again.stdout
    assert reports_of(database_url) == before == reports_of(source)


def test_an_interrupted_copy_resumes_where_it_stopped(source, database_url):
    """A copy that dies after some batches keeps what it committed; running it again adds exactly the rest."""
    target = Store(database_url)

    def die_after_three_batches(done, total):
        if done >= 300:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        copy_rows(Store(source), target, batch_size=100, progress=die_after_three_batches)
    assert len(all_rows(database_url)) == 300
    resumed = copy_rows(Store(source), target, batch_size=100)
    assert (resumed.read, resumed.added, resumed.skipped) == (710, 410, 300)
    assert reports_of(database_url) == reports_of(source)
    assert stored_counters(database_url) == stored_counters(source)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_an_export_imported_into_a_fresh_database_round_trips(source, database_url, tmp_path, fmt):
    """``export`` then ``import`` into a fresh database: the same rows, the same reports; exporting the target
    gives the source's export back (apart from the ids, the target's own); importing again adds nothing."""
    exported = tmp_path / f"usage.{fmt}"
    assert run("export", "--format", fmt, "-o", str(exported), "-d", source).exit_code == 0
    result = run("import", str(exported), "-d", database_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 710
    assert rows_without_ids(database_url) == rows_without_ids(source)
    assert reports_of(database_url) == reports_of(source)
    assert stored_counters(database_url) == stored_counters(source)

    again = tmp_path / f"again.{fmt}"
    assert run("export", "--format", fmt, "-o", str(again), "-d", database_url).exit_code == 0
    first, second = exported.read_text().splitlines(), again.read_text().splitlines()
    if fmt == "jsonl":
        first, second = ([{k: v for k, v in json.loads(line).items() if k != "id"} for line in lines]
                         for lines in (first, second))
    else:
        first, second = ([line.split(",", 1)[1] for line in lines] for lines in (first, second))
    assert second == first

    twice = import_file(Store(database_url), exported, fmt)
    assert (twice.read, twice.added) == (710, 0)
    assert reports_of(database_url) == reports_of(source)


def test_copy_refuses_what_it_cannot_do(source, tmp_path):
    """One-line errors: a missing source database, the same database as both ends, an anonymized export (its ids
    are pseudonyms) and a JSON array read as JSON lines are refused, naming the fix; a file whose name does not
    tell its format is a usage error."""
    missing = run("copy", "--from", str(tmp_path / "nothing.db"), "--to", source)
    assert missing.exit_code == 1 and "no database at" in missing.output
    assert not (tmp_path / "nothing.db").exists()
    same = run("copy", "--from", source, "--to", source)
    assert same.exit_code == 1 and "must be another database" in same.output
    anonymized = tmp_path / "anon.jsonl"
    assert run("export", "--format", "jsonl", "--anonymize", "-o", str(anonymized), "-d", source).exit_code == 0
    refused = run("import", str(anonymized), "-d", str(tmp_path / "target.db"))
    assert refused.exit_code == 1
    assert "anon.jsonl:1: " in refused.output and "anonymized exports cannot be imported" in refused.output
    array = tmp_path / "usage.json"
    assert run("export", "--format", "json", "-o", str(array), "-d", source).exit_code == 0
    wrong_format = run("import", str(array), "--format", "jsonl", "-d", str(tmp_path / "target.db"))
    assert wrong_format.exit_code == 1 and "export with --format jsonl" in wrong_format.output
    notes = tmp_path / "usage.txt"
    notes.write_text("calls")
    unknown = run("import", str(notes), "-d", str(tmp_path / "t.db"))
    assert unknown.exit_code == 2 and "give --format" in unknown.output


def test_copy_warns_about_usage_that_survives_only_in_rollups(source, database_url):
    """After a cleanup the source's old usage lives only in its rollups; a copy cannot move it, and says so."""
    Reports(Store(source)).cleanup(30)
    result = run("copy", "--from", source, "--to", database_url)
    assert result.exit_code == 0, result.output
    assert "survive only in its daily and monthly rollups" in result.stderr


def test_copy_from_a_server_back_down_to_sqlite(database_url, tmp_path):
    """The other way too (PostgreSQL/MariaDB rows read back as exact Decimal costs and UTC times): a copy into a
    SQLite file answers every report as its source does."""
    insert(database_url, random_rows(300, seed=5) + list(hand_rows().values()))
    target = f"sqlite:///{tmp_path / 'down.db'}"
    result = run("copy", "--from", database_url, "--to", target)
    assert result.exit_code == 0, result.output
    assert rows_without_ids(target) == rows_without_ids(database_url)
    assert reports_of(target) == reports_of(database_url)
