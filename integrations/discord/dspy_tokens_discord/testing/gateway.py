"""The inbound side, as the gateway would do it: discord.py's real start-up minus the websocket, then events
handed to its own parsers (the one module of the kit that touches discord.py's connection state).

``start``: ``bot.login()`` (``GET /users/@me``, ``GET /oauth2/applications/@me``, then ``setup_hook()``: cogs
load), READY, GUILD_CREATE. ``deliver_*``: ``parse_interaction_create`` runs the CommandTree (interaction_check,
checks, cooldowns, transformers, error handlers); ``parse_message_create`` runs on_message listeners and prefix
commands. ``settle``: wait for the tasks discord.py spawned for them.
"""

from __future__ import annotations

import asyncio
from typing import Any, Iterable

import discord

from .payloads import ready_payload

READY_TIMEOUT = 5.0


async def start(bot: discord.Client, guilds: Iterable[dict]) -> None:
    """Log ``bot`` in against the fake wire and make ``guilds`` (GUILD_CREATE payloads) available."""
    guilds = list(guilds)
    await bot.login("fake-token")
    state: Any = bot._connection
    state.guild_ready_timeout, state._chunk_guilds = 0.05, False  # no 2 s guild wait, no member chunking
    state.parse_ready(ready_payload([int(g["id"]) for g in guilds]))
    for guild in guilds:
        state.parse_guild_create(guild)
    await asyncio.wait_for(bot.wait_until_ready(), READY_TIMEOUT)


def deliver_interaction(bot: Any, payload: dict) -> None:
    bot._connection.parse_interaction_create(payload)


def deliver_message(bot: Any, payload: dict) -> None:
    bot._connection.parse_message_create(payload)


def add_role(bot: Any, guild_id: int, role: dict) -> None:
    bot._connection.parse_guild_role_create({"guild_id": str(guild_id), "role": role})


async def settle() -> None:
    """Wait until every dispatch task discord.py spawned (commands, events) has finished."""
    me = asyncio.current_task()
    while busy := [t for t in asyncio.all_tasks() if t is not me and not t.done() and
                   (t.get_name() == "CommandTree-invoker" or t.get_name().startswith("discord.py: "))]:
        await asyncio.gather(*busy, return_exceptions=True)
