"""The report, top, session, export, cleanup and prices commands, through click's CliRunner: what they print
(tables and JSON) for the hand-made rows, and one-line errors with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from dspy_tokens.cli import main
from tests.support.exports import read_csv_export
from tests.support.rows import hand_rows, insert


@pytest.fixture
def seeded(database_url):
    """The ten hand-made rows (``hand_rows``, 2025-02-28 .. 2025-03-12), stored through the writer's path."""
    rows = hand_rows()
    insert(database_url, list(rows.values()))
    return database_url, rows


def run(*args, database=None):
    """Invoke the command line (with ``--database``); it never prints a traceback."""
    extra = ["--database", database] if database else []
    result = CliRunner().invoke(main, [*args, *extra])
    assert "Traceback" not in result.output, result.output
    return result


def test_report_shows_summaries_and_breakdowns(seeded):
    """``report --since --by`` prints the summary and one table per breakdown; unknown costs are shown as such,
    never as a plain $0, and ``-n`` cuts each table."""
    url, _ = seeded
    result = run("report", "--since", "2025-03-01", "--by", "feature,model,user", database=url)
    assert result.exit_code == 0, result.output
    text = result.stdout
    for title in ("Usage, UTC", "By feature (2025-03-01 00:00 UTC to now)", "By model", "By user"):
        assert title in text
    assert "2,320" in text  # total tokens since March 1st
    lines = text.splitlines()
    # Unknown costs are shown as such, never as a plain $0: a model with no price, a user with one unpriced call.
    assert "unknown" in next(line for line in lines if line.startswith("acme/mystery"))
    users = text.split("By user")[1].splitlines()
    assert "$0.001438 + 1 unpriced" in next(line for line in users if line.split()[:1] == ["2"])
    top_two = run("report", "--since", "2025-03-01", "--by", "feature", "-n", "2", database=url).stdout
    assert "search" in top_two and "(none)" not in top_two  # the cache hit has no feature: third, cut by -n 2


def test_report_json_carries_every_number(seeded):
    """``report --json`` carries the range's summary (costs as exact decimal strings) and every breakdown."""
    url, _ = seeded
    result = run("report", "--since", "2025-03-01", "--until", "2025-03-12", "--json", "--by", "feature,day",
                 database=url)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    summary = payload["summaries"]["range"]
    assert (summary["calls"], summary["total_tokens"], summary["cost_usd"], summary["active_users"]) == (
        4, 1770, "0.002312", 3)  # B, C, D, E
    assert summary["since"] == "2025-03-01T00:00:00+00:00" and summary["until"] == "2025-03-12T00:00:00+00:00"
    assert [(g["key"], g["calls"]) for g in payload["breakdowns"]["feature"]] == [("search", 2), ("chat", 2)]
    assert [g["key"] for g in payload["breakdowns"]["day"]] == ["2025-03-01", "2025-03-09", "2025-03-10",
                                                                "2025-03-11"]


def test_report_all_time_json(seeded):
    """``report --json`` without a range gives the today, week, month and all-time summaries."""
    url, _ = seeded
    payload = json.loads(run("report", "--json", "--by", "model", database=url).stdout)
    everything = payload["summaries"]["all"]
    assert (everything["calls"], everything["total_tokens"], everything["cost_usd"],
            everything["unknown_cost_calls"], everything["errors"]) == (10, 3820, "0.0042415", 1, 1)
    assert set(payload["summaries"]) == {"today", "week", "month", "all"}


def test_top_by_tokens_and_by_cost(seeded):
    """``top`` ranks users by cost or tokens (JSON or a table) and guilds with ``--scope guild``."""
    url, _ = seeded
    by_cost = json.loads(run("top", "--period", "all", "--by", "cost", "-n", "3", "--json", database=url).stdout)
    assert [(g["key"], g["cost_usd"]) for g in by_cost] == [("1", "0.002177"), ("2", "0.0014375"), ("4", "0.00054")]
    text = run("top", "--since", "2025-03-01", "--scope", "guild", database=url).stdout
    assert "Top 10 guilds by tokens" in text and text.index(" 10 ") < text.index(" 20 ")


def test_session_lists_calls_in_order(seeded):
    """``session`` lists a session's calls in call order (table or JSON); an unknown session is a one-line error."""
    url, rows = seeded
    result = run("session", "s-today", database=url)
    assert result.exit_code == 0, result.output
    assert "Session s-today: user 1, guild 10, 2 calls" in result.stdout
    lines = result.stdout.splitlines()
    assert lines[-2].lstrip().startswith("0") and lines[-1].lstrip().startswith("1")
    calls = json.loads(run("session", "s-today", "--json", database=url).stdout)
    assert [c["call_uuid"] for c in calls] == [rows["E"]["call_uuid"], rows["F"]["call_uuid"]]
    missing = run("session", "nope", database=url)
    assert missing.exit_code == 1 and missing.stderr.count("\n") == 1 and "no calls recorded" in missing.stderr


def test_export_csv_to_a_file_and_anonymized_json_to_stdout(seeded, tmp_path):
    """``export`` writes every row as CSV to a file (saying so on stderr), or filtered, anonymized JSON to stdout."""
    url, rows = seeded
    target = tmp_path / "usage.csv"
    result = run("export", "--format", "csv", "-o", str(target), database=url)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"exported 10 rows to {target}\n"
    exported = read_csv_export(target.read_text(encoding="utf-8"))
    assert [r["call_uuid"] for r in exported] == [r["call_uuid"] for r in rows.values()]
    assert exported[0]["cost_usd"] == Decimal("0.00045") and exported[0]["user_id"] == 4
    anonymized = run("export", "--format", "json", "--anonymize", "--period", "all", "--guild", "20",
                     database=url)
    assert anonymized.exit_code == 0, anonymized.output
    data = json.loads(anonymized.stdout)
    assert len(data) == 5 and len({r["guild_id"] for r in data}) == 1 and data[0]["guild_id"] != 20
    assert "(ids anonymized)" in anonymized.stderr


def test_cleanup_dry_run_then_real_and_reports_still_answer(seeded):
    """``cleanup --dry-run`` says what would go; ``cleanup`` deletes it, and the reports answer as before from the
    rollups; without ``--older-than`` (or retention_days) it refuses."""
    url, _ = seeded
    before = json.loads(run("report", "--since", "2025-03-01", "--json", "--by", "model", database=url).stdout)
    dry = run("cleanup", "--older-than", "90", "--dry-run", database=url)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.startswith("would delete 10 rows created before")  # 2025 rows, today is later
    done = run("cleanup", "--older-than", "90", "--yes", database=url)
    assert done.stdout.startswith("deleted 10 rows") and "rollups are kept" in done.stdout
    after = json.loads(run("report", "--since", "2025-03-01", "--json", "--by", "model", database=url).stdout)
    assert after["summaries"]["range"] == before["summaries"]["range"]
    assert after["breakdowns"] == before["breakdowns"]
    assert run("export", "--format", "jsonl", database=url).stdout == ""
    assert run("cleanup", database=url).stderr.startswith("Error: give --older-than DAYS")


def test_prices_says_which_price_and_where_it_comes_from(tmp_path):
    """``prices`` shows a model's rates and their source (the bundled price map, or models.json); an unknown model
    is a one-line error."""
    bundled = run("prices", "openai/gpt-4o-mini")
    assert bundled.exit_code == 0, bundled.output
    assert "priced as gpt-4o-mini from the LiteLLM price map bundled with DSPy" in bundled.stdout
    assert "0.00000015" in bundled.stdout and "0.15" in bundled.stdout  # per token, per 1M tokens
    config = tmp_path / "models.json"
    config.write_text(json.dumps({"models": [{"label": "kimi", "provider": "groq", "name": "moonshotai/kimi-k2",
                                              "input_cost_per_token": 1e-06, "output_cost_per_token": 3e-06}]}))
    configured = json.loads(run("prices", "groq/moonshotai/kimi-k2", "--config", str(config), "--json").stdout)
    assert configured["source"] == "models.json" and configured["usd_per_token"] == {
        "input": "0.000001", "output": "0.000003", "cache_read": "0.000001", "reasoning": "0.000003"}
    unknown = run("prices", "acme/mystery")
    assert unknown.exit_code == 1 and unknown.stderr.count("\n") == 1
    assert "no price known for 'acme/mystery'" in unknown.stderr


@pytest.mark.parametrize("args, message", [
    (["report", "--database", "nosuch://nowhere"], "is not usable"),
    (["top", "--database", "postgresql://postgres@127.0.0.1:1/none"], "database error"),
    (["report", "--database", "sqlite:///{tmp}/missing.db"], "no database at"),
    (["report", "--period", "fortnight", "--database", "sqlite:///{tmp}/usage.db"], "fortnight"),
    (["report", "--by", "planet", "--database", "sqlite:///{tmp}/usage.db"], "--by planet"),
    (["cleanup", "--older-than", "9", "--config", "{tmp}/bad.json", "--database", "sqlite:///{tmp}/usage.db"],
     "is not valid JSON"),
])
def test_errors_are_one_line_with_a_nonzero_exit_and_no_traceback(tmp_path, args, message):
    """Bad URLs, unreachable or missing databases, bad periods, breakdowns and config files: one line on stderr,
    exit 1, nothing on stdout."""
    insert(f"sqlite:///{tmp_path}/usage.db", [])
    (tmp_path / "bad.json").write_text("{nope")
    result = CliRunner().invoke(main, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)  # click's exit, no crash


def test_export_jsonl_keeps_64_bit_ids_exact_and_imports_back(database_url, tmp_path):
    """``export --format jsonl`` writes user id 111111111111111111 (and money) as strings, so a reader that parses
    numbers as doubles (jq, JavaScript) keeps every digit; the lines import back to the same rows."""
    from tests.support.rows import NOW, usage_row

    rows = [usage_row(NOW, prompt=10, completion=5, cost="0.000012345678", user_id=111111111111111111,
                      guild_id=900000000000000001, channel_id=2**63 - 1, metadata='{"team":"a"}')]
    insert(database_url, rows)
    result = run("export", "--format", "jsonl", "--period", "all", database=database_url)
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    as_doubles = json.loads(line, parse_int=float)  # what a double-only reader sees: no number holds an id
    assert as_doubles["user_id"] == "111111111111111111" and as_doubles["guild_id"] == "900000000000000001"
    assert as_doubles["channel_id"] == str(2**63 - 1) and as_doubles["cost_usd"] == "0.000012345678"
    assert as_doubles["metadata"] == {"team": "a"}
    export_file = tmp_path / "usage.jsonl"
    export_file.write_text(result.stdout, encoding="utf-8")
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    imported = run("import", str(export_file), "--format", "jsonl", database=target)
    assert imported.exit_code == 0, imported.output
    again = run("export", "--format", "jsonl", "--period", "all", database=target)
    (copied,) = again.stdout.splitlines()
    original, copy = json.loads(line), json.loads(copied)
    assert {k: v for k, v in copy.items() if k != "id"} == {k: v for k, v in original.items() if k != "id"}
