"""How to test a bot with ``dspy_tokens_discord.testing``: the example bot (``discord_bot.py`` beside this file)
in a fake Discord, its DSPy program answered by a local fake LLM server, its usage in a real SQLite file.

Run with ``python -m pytest examples`` (needs pytest and pytest-asyncio).
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # price from DSPy's bundled map: no network

import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from dspy_tokens_discord.testing import FakeDiscord  # noqa: E402

from dspy_tokens import Config, TokenTracker  # noqa: E402
from dspy_tokens.testing import FakeLLMServer  # noqa: E402


def load_bot_module():
    spec = importlib.util.spec_from_file_location("discord_bot", Path(__file__).with_name("discord_bot.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_ask_answers_and_is_counted_against_the_user(tmp_path):
    """A member's /ask reaches the LLM once, is answered publicly, and shows up in their ephemeral /token-usage;
    /token-stats needs Manage Server."""
    tracker = TokenTracker(f"sqlite:///{tmp_path / 'usage.db'}", Config())
    with FakeLLMServer() as llm:
        bot = load_bot_module().create_bot(tracker, lm=llm.lm("openai/gpt-4o-mini"))
        async with FakeDiscord(bot) as fake:
            alice = fake.member("alice")
            [answer] = await fake.slash("ask", question="What is DSPy?", user=alice)
            assert answer.content and not answer.ephemeral and len(llm.requests) == 1

            tracker.flush()
            [usage] = await fake.slash("token-usage", user=alice)
            assert usage.ephemeral and f"**{llm.usage_totals()['total_tokens']}** tokens" in usage.render()

            [refused] = await fake.slash("token-stats", user=alice)
            assert refused.ephemeral and "Manage Server" in refused.content
            [stats] = await fake.slash("token-stats", user=fake.member("mod", permissions=["manage_guild"]))
            assert stats.files and stats.embeds[0]["title"].endswith("Test Server")
    tracker.close()
