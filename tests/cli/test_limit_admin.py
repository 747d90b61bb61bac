"""``dspy-tokens limits set|clear|reset|bypass|show|history``: a change made from the shell is stored, holds for
every tracker on the database at its next check, and is audited with who made it. On every backend."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from dspy_tokens import TokenTracker
from dspy_tokens.cli import main
from dspy_tokens.cli.common import EXIT_NO
from dspy_tokens.config import parse_config
from tests.support.rows import insert, seed_row

PIPED = {"FORCE_COLOR": None, "TTY_COMPATIBLE": None}
USER, OTHER = 111111111111111111, 222222222222222222


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], env=PIPED)
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture
def used(database_url):
    """USER has used 1,000 tokens; OTHER nothing."""
    insert(database_url, [seed_row(user_id=USER, prompt_tokens=900, completion_tokens=100, total_tokens=1000)])
    return database_url


def checker(url: str) -> TokenTracker:
    """Another process's view: a tracker of its own on the same database, with a generous configured limit."""
    return TokenTracker.reader(url, parse_config({"user_limit": 1_000_000}, "test"))


class TestLimitsFromTheShell:
    def test_set_holds_for_another_tracker_and_clear_gives_back_the_configured_rule(self, used):
        """A per-user limit set from the shell refuses that user in a tracker that was already open; ``clear``
        makes the configured (generous) rule apply again."""
        other = checker(used)
        try:
            assert other.check(USER, estimate=100).allowed
            done = run("limits", "set", "user", USER, "--tokens", 1_050, "--window", "7d", "--by", "alice",
                       "-d", used)
            assert done.exit_code == 0, done.output
            assert f"user {USER}: 1,050 tokens per 7d" in done.stdout
            decision = other.check(USER, estimate=100)
            assert not decision.allowed and decision.used == 1000
            assert other.check(OTHER, estimate=100).allowed  # only that user
            assert run("limits", "clear", "user", USER, "-d", used).exit_code == 0
            assert other.check(USER, estimate=100).allowed
        finally:
            other.close()

    def test_the_check_is_still_limits_user_id_and_sees_the_override(self, used):
        """``limits USER_ID`` (the support check) keeps working beside the subcommands and applies overrides."""
        assert run("limits", "set", "user", USER, "--tokens", 500, "-d", used).exit_code == 0
        refused = run("limits", USER, "--estimate", 10, "-d", used)
        assert refused.exit_code == EXIT_NO, refused.output
        assert json.loads(run("limits", "check", OTHER, "--json", "-d", used).stdout)["allowed"] is True

    def test_reset_and_bypass(self, used):
        """``reset`` stops earlier usage counting; ``bypass`` lets a user over the limit through until ``--off``."""
        assert run("limits", "set", "user", USER, "--tokens", 1_000, "-d", used).exit_code == 0
        other = checker(used)
        try:
            assert not other.check(USER, estimate=100).allowed
            assert run("limits", "bypass", "user", USER, "-d", used).exit_code == 0
            assert other.check(USER, estimate=100).allowed
            assert run("limits", "bypass", "user", USER, "--off", "-d", used).exit_code == 0
            assert not other.check(USER, estimate=100).allowed
            assert run("limits", "reset", "user", USER, "-d", used).exit_code == 0
            decision = other.check(USER, estimate=100)
            assert decision.allowed and decision.used == 0
        finally:
            other.close()
        shown = json.loads(run("limits", "show", "user", USER, "--json", "-d", used).stdout)
        assert shown["scope_id"] == str(USER) and shown["override"]["tokens"] == 1000
        assert shown["override"]["bypass"] is False and shown["override"]["reset_at"]

    def test_history_says_who_changed_what(self, used):
        """Every change is audited, latest first, with the ``--by`` name (or ``cli:<login>``); ids as strings."""
        run("limits", "set", "user", USER, "--cost-usd", "0.50", "--by", "alice", "-d", used)
        run("limits", "bypass", "guild", 7, "--by", "bob", "-d", used)
        run("limits", "clear", "user", USER, "-d", used)
        changes = json.loads(run("limits", "history", "--json", "-d", used).stdout)["changes"]
        assert [(c["action"], c["scope"], c["scope_id"]) for c in changes] == [
            ("clear", "user", str(USER)), ("bypass", "guild", "7"), ("set", "user", str(USER))]
        assert changes[2]["changed_by"] == "alice" and changes[2]["detail"]["cost_usd"] == "0.5"
        assert changes[0]["changed_by"].startswith("cli")
        only_user = json.loads(run("limits", "history", "user", USER, "--json", "-d", used).stdout)["changes"]
        assert {c["scope"] for c in only_user} == {"user"} and len(only_user) == 2
        table = run("limits", "history", "-d", used).stdout
        assert "alice" in table and "bob" in table

    @pytest.mark.parametrize("args, message", [
        (["set", "user", "--tokens", "5"], "give the user's id"),
        (["set", "global", "5", "--tokens", "5"], "takes no ID"),
        (["set", "user", "5"], "give tokens="),
        (["set", "user", "5", "--window", "fortnight"], "window"),
        (["set", "user", "5", "--cost-usd", "lots"], "cost_usd"),
    ])
    def test_bad_changes_are_refused_with_the_fix_and_change_nothing(self, used, args, message):
        result = run("limits", *args, "-d", used)
        assert result.exit_code != 0 and message in result.output, result.output
        assert json.loads(run("limits", "history", "--json", "-d", used).stdout)["changes"] == []


def test_a_change_made_by_another_process_holds_at_the_next_check(used):
    """Two processes: ``dspy-tokens limits set`` run as its own process refuses the user in this process's open
    tracker at its next check, and ``limits clear`` from a third process lifts it."""
    import os
    import subprocess
    import sys

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "dspy_tokens", "limits", *map(str, args), "-d", used],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        assert done.returncode == 0, done.stderr

    bot = checker(used)
    try:
        assert bot.check(USER, estimate=100).allowed
        cli("set", "user", USER, "--tokens", 1_050, "--by", "ops")
        refused = bot.check(USER, estimate=100)
        assert not refused.allowed and refused.limit == 1_050
        cli("clear", "user", USER)
        assert bot.check(USER, estimate=100).allowed
        assert [c.changed_by for c in bot.limit_changes("user", USER)][1] == "ops"
    finally:
        bot.close()
