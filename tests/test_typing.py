"""Users who run mypy against the public API need it clean: mypy (configured in pyproject.toml) finds no error in
the package nor in the Discord integration, and a user's code written against the public API passes ``mypy
--strict``. Run as a subprocess, as CI and users run it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["dspy_tokens", "integrations/discord/dspy_tokens_discord"]


def test_mypy_finds_no_error_in_the_packages(tmp_path):
    """``mypy dspy_tokens integrations/discord/dspy_tokens_discord`` succeeds (its errors are the failure)."""
    pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    result = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), *PACKAGES],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, "\n".join(errors) or result.stdout + result.stderr


USER_CODE = """
    from __future__ import annotations

    from datetime import timedelta
    from decimal import Decimal

    import discord
    from discord.ext import commands

    from dspy_tokens import Group, LimitDecision, Reports, Summary, TokenTracker
    from dspy_tokens.ingest import TransferResult, copy_rows
    from dspy_tokens.store import Store
    from dspy_tokens_discord import TokenUsageCog, enforce_limits
    from dspy_tokens_discord.testing import FakeDiscord, Sent

    tracker = TokenTracker("sqlite:///usage.db")
    summary: Summary = tracker.summary("month", user_id=42)
    cost: Decimal = summary.cost_usd
    top: list[Group] = tracker.top(5, by="cost", period=timedelta(days=7))
    daily: list[Group] = tracker.breakdown(("day", "model"), "week")
    decision: LimitDecision = tracker.check(42, "7", estimate=1000)
    left: int | Decimal | None = decision.remaining
    total: int = Reports("sqlite:///usage.db").summary(guild_id=123).total_tokens
    moved: TransferResult = copy_rows(Store("sqlite:///usage.db"), Store("postgresql://db/usage"))
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())


    @bot.tree.command(name="ask")
    @enforce_limits(tracker, feature="ask")
    async def ask(interaction: discord.Interaction, question: str) -> None:
        await interaction.response.send_message(question)


    async def test_bot() -> None:
        await bot.add_cog(TokenUsageCog(bot, tracker, report_channel_id=None))
        async with FakeDiscord(bot) as fake:
            replies: list[Sent] = await fake.slash("ask", question="hi", user=fake.member("alice"))
            assert replies
"""


def test_code_written_against_the_public_api_passes_mypy_strict(tmp_path):
    """A bot's own code using TokenTracker, Reports, copy_rows, @enforce_limits, the cog and FakeDiscord type-checks
    under ``mypy --strict`` (our packages read as an installed typed library would be: their own bodies silent)."""
    pytest.importorskip("mypy", reason="mypy is in the dev extra: pip install -e '.[dev]'")
    (tmp_path / "bot_code.py").write_text(textwrap.dedent(USER_CODE), encoding="utf-8")
    env = {**os.environ, "MYPYPATH": os.pathsep.join([str(ROOT), str(ROOT / "integrations" / "discord")])}
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir",
                             str(tmp_path / "cache"), "bot_code.py"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
