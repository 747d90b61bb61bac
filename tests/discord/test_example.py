"""The example bot (``examples/discord_bot.py``), imported and driven through the harness."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.discord.support.harness import ALICE, GUILD_ID, OWNER_ID, message_payload, settle, slash_payload, start

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "discord_bot.py"


def load_example():
    """Import examples/discord_bot.py as a module of its own."""
    spec = importlib.util.spec_from_file_location("discord_bot_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_imports_without_a_token(monkeypatch):
    """examples/discord_bot.py imports cleanly with no DISCORD_TOKEN, and main() exits with a clear message."""
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    example = load_example()
    assert callable(example.create_bot)
    with pytest.raises(SystemExit, match="DISCORD_TOKEN"):
        example.main([])


async def test_example_bot_answers_and_syncs(wire, make_tracker, sqlite_url, server):
    """The example's /ask runs its DSPy program under the limits, and the owner's '!sync guild' syncs."""
    example = load_example()
    tracker = make_tracker(sqlite_url)
    bot = example.create_bot(tracker, lm=server.lm())
    await start(bot)
    try:
        bot._connection.parse_interaction_create(slash_payload("ask", {"question": "What is DSPy?"}))
        await settle()
        answer = wire.messages()[-1]
        assert answer.path.startswith("/webhooks/") and answer.content
        assert len(server.requests) == 1
        assert tracker.flush(10)
        assert tracker.summary(since=None, user_id=ALICE).total_tokens == server.usage_totals()["total_tokens"]
        wire.clear()
        bot._connection.parse_message_create(message_payload("!sync guild", author=OWNER_ID))
        await settle()
        [put] = [s for s in wire.sent if s.method == "PUT"]
        assert put.path == f"/applications/{bot.application_id}/guilds/{GUILD_ID}/commands"
        assert {c["name"] for c in put.json} == {"ask", "token-usage", "token-stats", "token-limits"}
        assert wire.messages()[-1].content == "Synced 4 command(s) (guild)."
    finally:
        await bot.close()


def test_offline_mode_runs_the_commands_against_the_fakes_and_prints_a_transcript():
    """``python examples/discord_bot.py --offline`` needs no token and no provider: it runs /ask, /token-usage,
    /token-stats (as an admin and as a member) and !sync against the shipped fake Discord and FakeLLMServer, and
    prints who said what and what the bot answered."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISCORD_TOKEN", "OPENAI_API_KEY")}
    done = subprocess.run([sys.executable, str(EXAMPLE), "--offline"], capture_output=True, text=True, timeout=120,
                          env=env, cwd=EXAMPLE.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    turns = done.stdout.split("\n\n")
    said = [turn.splitlines()[0] for turn in turns if turn.strip() and not turn.startswith("LLM calls")]
    assert said == ["alice: /ask question: What is DSPy?", "alice: /token-usage", "admin: /token-stats period: 7d",
                    "alice: /token-stats", "owner: !sync guild"]
    ask, usage, stats, refused, sync = turns[:5]
    assert ask.splitlines()[1].startswith("bot: Answer to: What is DSPy?")
    assert "bot: (ephemeral)" in usage and "**" in usage and "tokens · 1 call" in usage
    assert "[📊 Token stats — Test Server]" in stats and "file token_stats.png (" in stats and ", PNG)" in stats
    assert "(ephemeral) 🚫 You need the Manage Server permission" in refused
    assert "bot: Synced 4 command(s) (guild)." in sync
    assert done.stdout.rstrip().endswith("LLM calls answered by the fake server: 1")
