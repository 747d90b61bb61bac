"""``dspy-tokens import FILE --format gepeto-sqlite --timezone TZ``: the table GePeTo's token manager writes
(``token_usage``: Discord ids, session, call index, three token counts, model, a naive local ISO timestamp) goes
into any backend with its local times in UTC, ids derived from each row (a second import adds nothing), costs
priced from the price map and marked ``import:price_map``; the GePeTo file is only read."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from click.testing import CliRunner

from dspy_tokens import Reports
from dspy_tokens.cli import main
from dspy_tokens.store import Store
from tests.support.db import all_rows, expected_counters, rows_in, stored_counters
from tests.support.rows import insert, seed_row

ALICE, BOB, GUILD, CHANNEL = 111111111111111111, 222222222222222222, 333333333333333333, 444444444444444444
#: GePeTo's rows (user, guild, session, call index, model, completion, prompt, total, timestamp as it wrote it).
GEPETO_ROWS = [
    (ALICE, GUILD, "sess-a", 0, "openai/gpt-4o-mini", 200, 1000, 1200, "2025-01-15T10:00:00.250000"),  # CET
    (ALICE, GUILD, "sess-a", 1, "openai/gpt-4o-mini", 100, 3000, 3100, "2025-01-15T10:00:02.500000"),
    (BOB, None, "sess-b", 0, "openai/gpt-4o-mini", 50, 400, 450, "2025-07-01T14:30:00"),  # CEST, a DM
    (BOB, GUILD, "sess-c", 0, "groq/some-unlisted-model", 10, 90, 100, "2025-07-01T23:59:59.999999"),
]


def make_gepeto_db(path) -> None:
    """A SQLite file with GePeTo v1's table (its column order and types), filled with ``GEPETO_ROWS``."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE token_usage (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER NOT NULL, "
        "guild_id INTEGER, channel_id INTEGER NOT NULL, session_id TEXT NOT NULL, call_index INTEGER NOT NULL, "
        "model TEXT NOT NULL, completion_tokens INTEGER NOT NULL, prompt_tokens INTEGER NOT NULL, "
        "total_tokens INTEGER NOT NULL, timestamp TEXT NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP)")
    connection.executemany(
        "INSERT INTO token_usage (user_id, guild_id, channel_id, session_id, call_index, model, completion_tokens, "
        "prompt_tokens, total_tokens, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(u, g, CHANNEL, s, i, m, c, p, t, ts) for u, g, s, i, m, c, p, t, ts in GEPETO_ROWS])
    connection.commit()
    connection.close()


@pytest.fixture
def gepeto(tmp_path):
    path = tmp_path / "token_usage.db"
    make_gepeto_db(path)
    return path


def run(*args):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output, result.output
    return result


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_gepeto_rows_arrive_in_utc_priced_and_attributed(gepeto, database_url):
    """Each GePeTo row becomes one call: Berlin's local times are converted (CET +1 in January, CEST +2 in July),
    the ids are kept whole, tokens are as GePeTo counted them, and the cost is the price map's, marked as priced
    on import; a model the map does not know stays unknown, never $0."""
    result = run("import", str(gepeto), "--format", "gepeto-sqlite", "--timezone", "Europe/Berlin",
                 "-d", database_url, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 4
    rows = all_rows(database_url)
    assert [row["created_at"] for row in rows] == [
        utc(2025, 1, 15, 9, 0, 0, 250000), utc(2025, 1, 15, 9, 0, 2, 500000), utc(2025, 7, 1, 12, 30),
        utc(2025, 7, 1, 21, 59, 59, 999999)]
    assert [(r["user_id"], r["guild_id"], r["channel_id"], r["session_id"], r["call_index"]) for r in rows] == [
        (ALICE, GUILD, CHANNEL, "sess-a", 0), (ALICE, GUILD, CHANNEL, "sess-a", 1), (BOB, None, CHANNEL, "sess-b", 0),
        (BOB, GUILD, CHANNEL, "sess-c", 0)]
    assert [(r["prompt_tokens"], r["completion_tokens"], r["total_tokens"]) for r in rows] == [
        (1000, 200, 1200), (3000, 100, 3100), (400, 50, 450), (90, 10, 100)]
    # gpt-4o-mini lists $0.15 / $0.60 per million input / output tokens.
    assert [r["cost_usd"] for r in rows] == [Decimal("0.00027"), Decimal("0.00051"), Decimal("0.00009"), None]
    assert [r["cost_source"] for r in rows] == ["import:price_map"] * 3 + ["unknown"]
    assert all(r["usage_reported"] and not r["cache_hit"] and r["error"] is None for r in rows)
    assert stored_counters(database_url) == expected_counters(rows)

    reports = Reports(Store(database_url))
    summary = reports.summary()
    assert (summary.calls, summary.prompt_tokens, summary.completion_tokens, summary.total_tokens) == (
        4, 4490, 360, 4850)
    assert (summary.cost_usd, summary.unknown_cost_calls, summary.active_users) == (Decimal("0.00087"), 1, 2)
    assert [(g.key, g.total_tokens) for g in reports.top(by="tokens")] == [(ALICE, 4300), (BOB, 550)]
    assert [g.key for g in reports.breakdown("day")] == [utc(2025, 1, 15).date(), utc(2025, 7, 1).date()]


def test_a_second_gepeto_import_adds_nothing_and_the_file_is_untouched(gepeto, database_url):
    """The ids come from the rows themselves (not from the zone given), so importing the same file again, even
    with another --timezone, finds every row stored; the GePeTo file is opened read-only."""
    digest = hashlib.sha256(gepeto.read_bytes()).hexdigest()
    first = run("import", str(gepeto), "--timezone", "Europe/Berlin", "-d", database_url)  # .db: gepeto-sqlite
    assert first.exit_code == 0, first.output
    summary = Reports(Store(database_url)).summary()
    again = run("import", str(gepeto), "--format", "gepeto-sqlite", "--timezone", "UTC", "-d", database_url)
    assert again.exit_code == 0, again.output
    assert "imported 0 of 4 rows" in again.stdout and "4 already there" in again.stdout
    assert Reports(Store(database_url)).summary() == summary
    assert len(all_rows(database_url)) == 4
    assert hashlib.sha256(gepeto.read_bytes()).hexdigest() == digest


def test_gepeto_import_refuses_without_a_zone_or_with_the_wrong_file(gepeto, tmp_path):
    """Local times without --timezone are refused before anything is written, naming the option (guessing would
    shift every call by hours); an unknown zone, a dspy-tokens database and a file that is not SQLite are one-line
    errors."""
    target = str(tmp_path / "usage.db")
    no_zone = run("import", str(gepeto), "--format", "gepeto-sqlite", "-d", target)
    assert no_zone.exit_code == 1 and "local time without a zone" in no_zone.output
    assert "--timezone" in no_zone.output
    assert rows_in(f"sqlite:///{target}") == []
    bad_zone = run("import", str(gepeto), "--timezone", "Mars/Olympus", "-d", target)
    assert bad_zone.exit_code == 1 and "IANA time zone" in bad_zone.output
    ours = tmp_path / "ours.db"
    insert(f"sqlite:///{ours}", [seed_row()])
    wrong = run("import", str(ours), "--timezone", "UTC", "-d", target)
    assert wrong.exit_code == 1 and "dspy-tokens copy --from" in wrong.output
    text = tmp_path / "notes.db"
    text.write_text("not a database")
    garbage = run("import", str(text), "--timezone", "UTC", "-d", target)
    assert garbage.exit_code == 1 and "SQLite database" in garbage.output


def test_the_smaller_managers_usage_table_needs_no_zone(tmp_path, database_url):
    """GePeTo's smaller manager keeps a ``usage`` table (user, model, tokens, UTC-aware ISO timestamps, no
    session): it comes in without --timezone, one session per call, and a second import adds nothing."""
    path = tmp_path / "token_usage.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE usage (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER, model TEXT, "
                       "prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER, timestamp TEXT)")
    connection.executemany(
        "INSERT INTO usage (user_id, model, prompt_tokens, completion_tokens, total_tokens, timestamp) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(ALICE, "openai/gpt-4o-mini", 1000, 200, 1200, "2025-03-01T08:00:00.500000+00:00"),
         (ALICE, "openai/gpt-4o-mini", 1000, 200, 1200, "2025-03-01T10:00:00+01:00")])
    connection.commit()
    connection.close()
    first = run("import", str(path), "-d", database_url, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["added"] == 2
    rows = all_rows(database_url)
    assert [r["created_at"] for r in rows] == [utc(2025, 3, 1, 8, 0, 0, 500000), utc(2025, 3, 1, 9)]
    assert [r["session_id"] == r["call_uuid"] for r in rows] == [True, True]
    assert [(r["user_id"], r["guild_id"], r["cost_usd"]) for r in rows] == [(ALICE, None, Decimal("0.00027"))] * 2
    assert json.loads(run("import", str(path), "-d", database_url, "--json").stdout)["added"] == 0
