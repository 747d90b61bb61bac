"""``dspy-tokens reprice`` through click's CliRunner: the dry run's table and JSON (exact money), the real run
applying the same difference, and a rerun changing nothing; and ``export`` carrying the pricing columns. On every
backend the ``database_url`` fixture reaches; calls are real DSPy calls against the local server."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import dspy
import pytest
from click.testing import CliRunner

from dspy_tokens.cli import main
from dspy_tokens.testing import Reply
from tests.support.db import all_rows, stored_rows
from tests.support.wire import GPT4O_MINI, ask

PIPED = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None}
OLD, NEW = ("1e-06", "2e-06"), ("3e-06", "5e-06")


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], env=PIPED)
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 0, result.output
    return result.stdout


def models_json(path, rates) -> str:
    path.write_text(json.dumps({"models": [{"label": "mini", "name": "gpt-4o-mini", "provider": "openai",
                                            "input_cost_per_token": float(rates[0]),
                                            "output_cost_per_token": float(rates[1])}]}))
    return str(path)


def cost_at(row: dict, rates) -> Decimal:
    cached = row["cached_tokens"] or 0
    return ((row["prompt_tokens"] - cached) * Decimal(rates[0]) + cached * GPT4O_MINI["cache_read"]
            + row["completion_tokens"] * Decimal(rates[1]))


def test_dry_run_shows_the_difference_the_real_run_applies_and_a_rerun_changes_nothing(
        make_tracker, database_url, server, tmp_path):
    tracker = make_tracker(database_url, models_json(tmp_path / "old.json", OLD))
    ask(tracker, server, 3, user_id=1)
    rows = stored_rows(tracker)
    difference = sum(cost_at(r, NEW) - cost_at(r, OLD) for r in rows)
    new = models_json(tmp_path / "new.json", NEW)
    common = ["--since", "2026-01-01", "--database", database_url, "--config", new]

    shown = run("reprice", "--dry-run", *common)
    line = next(line for line in shown.splitlines() if line.startswith("openai/gpt-4o-mini"))
    assert line.split()[1:4] == ["3", "3", "0"]
    assert line.split()[-1] == f"${difference.normalize():f}"  # exact, not rounded to 6 places
    assert "nothing was written" in shown
    assert all_rows(database_url) == rows

    planned = json.loads(run("reprice", "--dry-run", "--json", *common))
    assert planned["dry_run"] is True and planned["written"] == 0
    assert Decimal(planned["total"]["difference_usd"]) == difference
    assert isinstance(planned["total"]["difference_usd"], str)  # money as a decimal string

    applied = json.loads(run("reprice", "--json", *common))
    assert applied["written"] == 3 and applied["total"] == planned["total"]
    assert [r["cost_usd"] for r in all_rows(database_url)] == [cost_at(r, NEW) for r in rows]
    again = run("reprice", *common)
    assert "repriced 0 of 3 rows: $0;" in again


def test_reprice_needs_since_and_an_existing_database(tmp_path):
    result = CliRunner().invoke(main, ["reprice", "--database", str(tmp_path / "none.db"), "--since", "2026-01-01"])
    assert result.exit_code == 1 and "no database" in result.output
    assert CliRunner().invoke(main, ["reprice"]).exit_code == 2
    assert not (tmp_path / "none.db").exists()


PRICING_COLUMNS = {"cache_write_tokens": "400", "audio_tokens": "50", "service_tier": "priority",
                   "request_type": "chat"}


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_exports_carry_the_pricing_columns(make_tracker, database_url, server, fmt):
    """``export`` writes cache-write and audio tokens, the service tier, the request type and the price version."""
    tracker = make_tracker(database_url)
    server.enqueue(Reply(service_tier="priority", usage={
        "prompt_tokens": 1000, "completion_tokens": 60, "total_tokens": 1060,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 30, "cache_creation_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 20}}))
    with dspy.context(lm=server.lm(engine="litellm"), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="which price")
    stored = stored_rows(tracker)[0]
    text = run("export", "--format", fmt, "--database", database_url)
    if fmt == "csv":
        exported = next(csv.DictReader(io.StringIO(text)))
    elif fmt == "json":
        exported = json.loads(text)[0]
    else:
        exported = json.loads(text.splitlines()[0])
    assert {k: str(exported[k]) for k in PRICING_COLUMNS} == PRICING_COLUMNS
    assert exported["price_version"] == stored["price_version"] and exported["price_version"].startswith("litellm-")
