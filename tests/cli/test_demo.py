"""``dspy-tokens demo`` (the README's first command): a real DSPy program against a local fake LLM server,
recorded into the demo's own database and then shown as usage tables a user can follow up on."""

from __future__ import annotations

import json
import re

from click.testing import CliRunner

from dspy_tokens.cli import main
from dspy_tokens.cli.demo_program import USERS
from dspy_tokens.store import Store


def test_demo_records_a_real_program_and_prints_the_tables(tmp_path, monkeypatch):
    """`dspy-tokens demo` runs Predict + ChainOfThought + ReAct with a tool for two users, records every call
    (5 per user: classify, think, tool step, finish, extract) and prints both tables."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(main, ["demo", "--database", url])
    assert result.exit_code == 0, result.output
    assert "Usage per session (this run, latest first)" in result.output and "Usage per user" in result.output
    store = Store(url)
    usage = store.models.TokenUsage
    with store.db.connection_context():
        rows = list(usage.select().order_by(usage.session_id, usage.call_index).dicts())
    assert len(rows) == 10 and {r["user_id"] for r in rows} == {user for user, _, _ in USERS}
    sessions = {r["session_id"] for r in rows}
    assert len(sessions) == 2
    for session in sessions:
        assert [r["call_index"] for r in rows if r["session_id"] == session] == [0, 1, 2, 3, 4]
    assert any(r["module"] and r["module"].startswith("Assistant>ReAct") for r in rows)


def test_demo_uses_its_own_file_never_the_configured_database(tmp_path, monkeypatch):
    """Without ``--database`` the demo writes ./dspy_tokens_demo.db, even when $DSPY_TOKENS_DATABASE_URL names a
    (possibly production) database: that one is not even created."""
    monkeypatch.chdir(tmp_path)
    production = tmp_path / "production.db"
    monkeypatch.setenv("DSPY_TOKENS_DATABASE_URL", f"sqlite:///{production}")
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code == 0, result.output
    assert not production.exists()
    assert (tmp_path / "dspy_tokens_demo.db").exists()
    assert "recording into sqlite:///dspy_tokens_demo.db" in result.output


def test_demo_names_its_users_and_prints_session_ids_that_session_finds(tmp_path, monkeypatch):
    """Each user is shown by name next to their id, and each session id the demo prints is complete:
    ``dspy-tokens session <id>`` (the command it suggests) finds that run's five calls, for that user."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "-d", "demo.db"])
    assert result.exit_code == 0, result.output
    out = result.output
    for user_id, _, name in USERS:
        assert f"{name} ({user_id})" in out
        assert re.search(rf"^{name}\s+{user_id}\s", out, flags=re.MULTILINE)
    sessions = out.split("Usage per session")[1].split("Usage per user")[0]
    shown = re.findall(r"^([0-9a-f]{16,})\s+(\w+) \((\d+)\)", sessions, flags=re.MULTILINE)
    assert len(shown) == 2
    names = {user_id: name for user_id, _, name in USERS}
    for session_id, name, user_id in shown:
        assert names[int(user_id)] == name
        found = CliRunner().invoke(main, ["session", session_id, "--json", "-d", "demo.db"])
        assert found.exit_code == 0, found.output
        calls = json.loads(found.stdout)
        assert len(calls) == 5 and {c["user_id"] for c in calls} == {user_id}  # ids are strings in JSON
    assert f"dspy-tokens session {shown[0][0]} -d" in out
