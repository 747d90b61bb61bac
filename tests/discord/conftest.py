"""Fixtures of the Discord tests: a real ``commands.Bot`` with the cog and example commands, started through
discord.py's own login/READY/GUILD_CREATE path against a fake wire, a real TokenTracker on a SQLite file, and a
local OpenAI-compatible server behind a real DSPy program. ``tests/conftest.py`` supplies ``make_tracker``,
``sqlite_url`` and ``server``."""

from __future__ import annotations

import pytest
from dspy_tokens_discord.config import (
    ENV_ADMIN_PERMISSION,
    ENV_REPORT_CHANNEL_ID,
    ENV_REPORT_INTERVAL,
    ENV_REPORT_TOP_USERS,
    ENV_SUPER_ROLE_IDS,
)

from dspy_tokens.config import Bypasses, Config, parse_config
from tests.discord.support.bot import App, build_bot
from tests.discord.support.harness import FakeWire, start


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """The process environment must not configure the bot under test."""
    for name in (ENV_SUPER_ROLE_IDS, ENV_REPORT_CHANNEL_ID, ENV_REPORT_INTERVAL, ENV_REPORT_TOP_USERS,
                 ENV_ADMIN_PERMISSION):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def wire():
    """The kit's fake wire: discord.py's two outbound seams replaced by a recorder that answers with parseable
    JSON, for the test's duration."""
    with FakeWire().patched() as wire:
        yield wire


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
