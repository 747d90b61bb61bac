"""Fixtures for the Discord integration (imported by each test module: a ``conftest.py`` here would shadow
``tests/conftest.py`` for modules that do ``from conftest import ...``): a real ``commands.Bot`` with the cog and example commands, started
through discord.py's own login/READY/GUILD_CREATE path against a fake wire, a real TokenTracker on a SQLite
file, and a local OpenAI-compatible server behind a real DSPy program."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

import discord
import dspy
import pytest
from discord import app_commands
from discord.ext import commands

from discord_harness import (BOT_ID, CHANNEL_ID, GUILD_ID, SUPER_ROLE, FakeWire, Sent, install, message_payload,
                             settle, slash_payload, start)
from dspy_tokens.config import Bypasses, Config, parse_config
from dspy_tokens.store import ROW_COLUMNS
from dspy_tokens_discord import TokenUsageCog, enforce_limits
from dspy_tokens_discord.config import (ENV_ADMIN_PERMISSION, ENV_REPORT_CHANNEL_ID, ENV_REPORT_INTERVAL,
                                        ENV_REPORT_TOP_USERS, ENV_SUPER_ROLE_IDS)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The process environment must not configure the bot under test."""
    for name in (ENV_SUPER_ROLE_IDS, ENV_REPORT_CHANNEL_ID, ENV_REPORT_INTERVAL, ENV_REPORT_TOP_USERS,
                 ENV_ADMIN_PERMISSION):
        monkeypatch.delenv(name, raising=False)


def usage_row(*, user_id=None, guild_id=GUILD_ID, tokens=100, prompt=None, completion=None, cached=0, reasoning=0,
              cost="0.001", model="openai/gpt-4o-mini", feature="ask", created_at=None, channel_id=CHANNEL_ID,
              session_id=None, error=None) -> dict:
    """One stored call, with every column of ``ROW_COLUMNS``."""
    prompt = tokens * 3 // 4 if prompt is None else prompt
    completion = tokens - prompt if completion is None else completion
    row = {
        "call_uuid": uuid.uuid4().hex, "session_id": session_id or uuid.uuid4().hex, "call_index": 0,
        "user_id": user_id, "guild_id": guild_id, "channel_id": channel_id, "feature": feature, "module": "Predict",
        "model": model, "response_model": None, "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": tokens, "cached_tokens": cached, "reasoning_tokens": reasoning,
        "cost_usd": None if cost is None else Decimal(cost), "cost_source": "config" if cost else "unknown",
        "cache_hit": False, "usage_reported": True, "error": error, "latency_ms": 10,
        "created_at": created_at or datetime.now(timezone.utc),
    }
    assert set(row) == set(ROW_COLUMNS)
    return row


def seed(tracker, *rows: dict) -> None:
    tracker.store.insert_rows(list(rows))


def rows_of(tracker) -> list[dict]:
    """Every stored call after the writer drained, oldest first."""
    assert tracker.flush(timeout=10), "writer did not drain"
    model = tracker.store.models.TokenUsage
    with tracker.store.db.connection_context():
        return list(model.select().order_by(model.created_at, model.call_index).dicts())


def mentions_bot(message: discord.Message) -> bool:
    return message.guild is None or any(u.id == BOT_ID for u in message.mentions)


@dataclass
class App:
    bot: commands.Bot
    tracker: object
    wire: FakeWire
    server: object
    errors: list = field(default_factory=list)  # (where, error) seen by the bot's own error handlers

    @property
    def cog(self) -> TokenUsageCog:
        return self.bot.get_cog("TokenUsage")

    async def slash(self, name: str, options=None, **kwargs) -> list[Sent]:
        """Deliver a slash command through ``parse_interaction_create``; return the messages it produced."""
        self.wire.clear()
        self.bot._connection.parse_interaction_create(slash_payload(name, options, **kwargs))
        await settle()
        return self.wire.messages()

    async def message(self, content: str, **kwargs) -> list[Sent]:
        """Deliver a chat message through ``parse_message_create`` (prefix commands and on_message)."""
        self.wire.clear()
        self.bot._connection.parse_message_create(message_payload(content, **kwargs))
        await settle()
        return self.wire.messages()


def build_bot(tracker, lm, errors: list, cog_kwargs: dict) -> commands.Bot:
    """A bot like the example: /ask (slash), hask (hybrid), !pask (prefix), a mention-only chat listener, a cog
    command, and raise_error variants whose errors are recorded by the bot's own handlers."""
    program = dspy.Predict("question -> answer")
    limits = dict(super_role_ids=[SUPER_ROLE])

    async def answer(question: str) -> str:
        with dspy.context(lm=lm):
            return (await program.acall(question=question)).answer

    class Bot(commands.Bot):
        async def setup_hook(self):
            await self.add_cog(TokenUsageCog(self, tracker, **{"super_role_ids": [SUPER_ROLE], **cog_kwargs}))
            await self.add_cog(AskCog())

    intents = discord.Intents.default()
    intents.message_content = True
    bot = Bot(command_prefix="!", intents=intents, help_command=None, chunk_guilds_at_startup=False,
              allowed_mentions=discord.AllowedMentions(everyone=False, roles=False))

    @bot.tree.command(name="ask", description="Ask the model")
    @enforce_limits(tracker, **limits)
    async def ask(interaction: discord.Interaction, question: str):
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(await answer(question))

    @bot.tree.command(name="ask-strict", description="Ask the model; limits raise")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def ask_strict(interaction: discord.Interaction, question: str):
        await interaction.response.send_message(await answer(question))

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError):
        errors.append(("tree", error))
        if not interaction.response.is_done():
            await interaction.response.send_message("handled by the bot", ephemeral=True)

    @bot.hybrid_command(name="hask", description="Ask the model (hybrid)")
    @enforce_limits(tracker, **limits)
    async def hask(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.hybrid_command(name="hstrict", description="Ask the model (hybrid); limits raise")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def hstrict(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.command(name="pask")
    @enforce_limits(tracker, **limits)
    async def pask(ctx: commands.Context, *, question: str):
        await ctx.reply(await answer(question), mention_author=False)

    @bot.command(name="pstrict")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def pstrict(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.event
    async def on_command_error(ctx: commands.Context, error: commands.CommandError):
        errors.append(("command", error))

    @bot.listen("on_message")
    @enforce_limits(tracker, when=mentions_bot, feature="chat", **limits)
    async def chat(message: discord.Message):
        if message.author.bot or not mentions_bot(message):
            return
        await message.reply(await answer(message.content), mention_author=False)

    class AskCog(commands.Cog):
        @app_commands.command(name="cog-ask", description="Ask the model from a cog")
        @enforce_limits(tracker, **limits)
        async def ask_from_cog(self, interaction: discord.Interaction, question: str):
            await interaction.response.send_message(await answer(question))

    return bot


@pytest.fixture
def wire(monkeypatch):
    return install(monkeypatch, FakeWire())


@pytest.fixture
async def make_app(wire, make_tracker, sqlite_url, server):
    """``await make_app(config={...models.json...}, bypasses=Bypasses(...), **cog_kwargs)`` → a started App."""
    apps: list[App] = []

    async def make(config: dict | Config | None = None, bypasses: Bypasses | None = None, **cog_kwargs) -> App:
        cfg = config if isinstance(config, Config) else parse_config(config or {}, "test models.json")
        tracker = make_tracker(sqlite_url, cfg, bypasses=bypasses or Bypasses())
        errors: list = []
        bot = build_bot(tracker, server.lm(), errors, cog_kwargs)
        app = App(bot, tracker, wire, server, errors)
        apps.append(app)
        await start(bot)
        return app

    yield make
    for app in apps:
        await app.bot.close()


@pytest.fixture
async def app(make_app):
    """A started bot with no limits configured."""
    return await make_app()
