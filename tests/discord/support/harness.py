"""The Discord tests' world on the shipped kit (:mod:`dspy_tokens_discord.testing`): its ids, roles and channels,
and the kit's payload builders with this world's defaults (alice in #general of the test server)."""

from __future__ import annotations

from dspy_tokens_discord.testing import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    EPHEMERAL,
    GUILD_ID,
    OWNER_ID,
    FakeWire,
    Sent,
    payloads,
    settle,
)
from dspy_tokens_discord.testing import start as start_bot

ALICE = 100_000_000_000_000_002
BOB = 100_000_000_000_000_003
CAROL = 100_000_000_000_000_004
ADMIN = 100_000_000_000_000_005
OTHER_GUILD_ID = 200_000_000_000_000_002
REPORT_CHANNEL_ID = 300_000_000_000_000_002
SUPER_ROLE = 400_000_000_000_000_001
PLAIN_ROLE = 400_000_000_000_000_002
BYPASS_ROLE = 400_000_000_000_000_003
NAMES = {OWNER_ID: "owner", ALICE: "alice", BOB: "bob", CAROL: "carol", ADMIN: "admin", BOT_ID: "tokenbot"}

__all__ = ["ADMIN", "ALICE", "APP_ID", "BOB", "BOT_ID", "BYPASS_ROLE", "CAROL", "CHANNEL_ID", "EPHEMERAL", "GUILD_ID",
           "NAMES", "OTHER_GUILD_ID", "OWNER_ID", "PLAIN_ROLE", "REPORT_CHANNEL_ID", "SUPER_ROLE", "FakeWire", "Sent",
           "guild_payload", "message_payload", "settle", "slash_payload", "start"]


def guild_payload() -> dict:
    """The test server: roles super, plain and bypass; channels #general and #reports."""
    roles = [payloads.role_payload(SUPER_ROLE, "super", 3), payloads.role_payload(PLAIN_ROLE, "plain", 1),
             payloads.role_payload(BYPASS_ROLE, "bypass", 2)]
    return payloads.guild_payload(roles=roles, channels={CHANNEL_ID: "general", REPORT_CHANNEL_ID: "reports"})


def message_payload(content: str, *, author: int = ALICE, **kwargs) -> dict:
    return payloads.message_payload(content, author=author, name=NAMES.get(author), **kwargs)


def slash_payload(name: str, options: dict | None = None, *, user: int = ALICE, **kwargs) -> dict:
    return payloads.slash_payload(name, options, user=user, user_name=NAMES.get(user), member_names=NAMES, **kwargs)


async def start(bot) -> None:
    """The kit's start-up (login, READY, GUILD_CREATE) into the test server."""
    await start_bot(bot, [guild_payload()])
