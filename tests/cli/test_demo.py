"""``dspy-tokens demo`` (the README's first command): a real DSPy program against a local fake LLM server,
recorded and then shown as usage tables."""

from __future__ import annotations

from click.testing import CliRunner

from dspy_tokens.cli import main
from dspy_tokens.cli.demo_program import USERS
from dspy_tokens.store import Store


def test_demo_records_a_real_program_and_prints_the_tables(tmp_path, monkeypatch):
    """`dspy-tokens demo` (the README's first command) runs Predict + ChainOfThought + ReAct with a tool for two
    users, records every call (5 per user: classify, think, tool step, finish, extract) and prints both tables."""
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = CliRunner().invoke(main, ["demo", "--database", url])
    assert result.exit_code == 0, result.output
    assert "Usage per session (latest first)" in result.output and "Usage per user" in result.output
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
    for user, _, _ in USERS:
        assert str(user) in result.output
