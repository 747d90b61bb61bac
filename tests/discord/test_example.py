"""The example bot (``examples/discord_bot.py``), imported and driven through the harness."""

from __future__ import annotations

import importlib.util
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
        assert {c["name"] for c in put.json} == {"ask", "token-usage", "token-stats"}
        assert wire.messages()[-1].content == "Synced 3 command(s) (guild)."
    finally:
        await bot.close()
