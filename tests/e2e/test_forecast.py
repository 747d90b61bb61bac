"""Forecast end to end: after a real DSPy program runs, the recent burn rate (the current hour and the two before
it) gives when a limit is reached at this pace — in the decision, its message and ``dspy-tokens limits``."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import dspy
from click.testing import CliRunner

from dspy_tokens.cli import main
from tests.support.limits import USER, config, seed

LIMIT = 20_000


def run_program(tracker, server, calls=3):
    with dspy.context(lm=server.lm(), callbacks=[tracker]), tracker.guard(USER):
        step = dspy.Predict("question -> answer")
        for i in range(calls):
            step(question=f"question {i}")
    assert tracker.flush(10)
    return server.usage_totals()["total_tokens"]


def expected_forecast(now: datetime, spent: int) -> datetime:
    """``spent`` tokens since the start of the hour two hours ago: the rest of the limit at that pace."""
    pace_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    return now + (now - pace_start) * ((LIMIT - spent) / spent)


def test_the_recent_pace_says_when_the_limit_is_reached(make_tracker, database_url, server):
    tracker = make_tracker(database_url, config(user_limit=LIMIT))
    spent = run_program(tracker, server)
    now = datetime.now(timezone.utc)
    decision = tracker.check(USER, estimate=0, now=now)
    assert decision.used == spent
    assert abs(decision.forecast_exhausted_at - expected_forecast(now, spent)) < timedelta(seconds=1)
    assert f"At this pace the limit is reached at {decision.forecast_exhausted_at:%Y-%m-%d %H:%M} UTC" \
        in decision.message


def test_usage_older_than_the_pace_gives_no_forecast(make_tracker, sqlite_url):
    """Usage of ten hours ago counts toward the limit but says nothing about the pace now."""
    tracker = make_tracker(sqlite_url, config(user_limit=LIMIT))
    seed(tracker, dict(user_id=USER, prompt_tokens=5_000, completion_tokens=0,
                       created_at=datetime.now(timezone.utc) - timedelta(hours=10)))
    decision = tracker.check(USER, estimate=0)
    assert decision.used == 5_000 and decision.forecast_exhausted_at is None
    assert "At this pace" not in decision.message


def test_the_cli_shows_the_forecast(make_tracker, database_url, server, tmp_path):
    """``dspy-tokens limits USER``: in the table and the message, and as ISO 8601 in ``--json``."""
    tracker = make_tracker(database_url, config(user_limit=LIMIT))
    spent = run_program(tracker, server)
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"user_limit": LIMIT}))
    args = ["limits", str(USER), "--estimate", "0", "--config", str(models), "-d", database_url]
    env = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None, "COLUMNS": "200"}
    as_json = CliRunner().invoke(main, [*args, "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    [rule] = json.loads(as_json.stdout)["rules"]
    forecast = datetime.fromisoformat(rule["forecast_exhausted_at"])
    assert abs(forecast - expected_forecast(datetime.now(timezone.utc), spent)) < timedelta(seconds=5)
    human = CliRunner().invoke(main, args, env=env)
    assert human.exit_code == 0, human.output
    assert "used up at this pace" in human.stdout
    assert human.stdout.count(f"{forecast:%Y-%m-%d %H:}") >= 2  # the message and the table
