"""``/token-limits`` through discord.py's real dispatch (only HTTP replaced), on the example bot: an admin's
change holds at a member's next ``/ask`` — also in another process (another bot and tracker on the same
database) — and a server admin acts on their own server and its members only."""

from __future__ import annotations

import discord
import pytest
from dspy_tokens.config import parse_config
from tests.discord.support.harness import (
    ADMIN,
    ALICE,
    BOB,
    GUILD_ID,
    OTHER_GUILD_ID,
    OWNER_ID,
    message_payload,
    settle,
    slash_payload,
    start,
)
from tests.discord.test_example import load_example

MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
CONFIG = {"user_limit": 100_000, "default_estimate_tokens": 10}


class Bot:
    """The example bot on its own tracker: one process of the bot."""

    def __init__(self, bot, tracker, wire):
        self.bot, self.tracker, self.wire = bot, tracker, wire

    async def slash(self, name: str, options=None, **kwargs):
        self.wire.clear()
        self.bot._connection.parse_interaction_create(slash_payload(name, options, **kwargs))
        await settle()
        return self.wire.messages()

    async def admin(self, name: str, options=None, **kwargs):
        return await self.slash(f"token-limits {name}", options, user=ADMIN, permissions=MANAGE_GUILD, **kwargs)


@pytest.fixture
async def make_bot(wire, make_tracker, sqlite_url, server):
    """``await make_bot()``: another process of the example bot on the same database."""
    example = load_example()
    bots = []

    async def make() -> Bot:
        tracker = make_tracker(sqlite_url, parse_config(CONFIG, "models.json"))
        bot = example.create_bot(tracker, lm=server.lm())
        await start(bot)
        bots.append(bot)
        return Bot(bot, tracker, wire)

    yield make
    for bot in bots:
        await bot.close()


async def test_a_limit_set_by_an_admin_refuses_the_members_next_ask_in_every_process(make_bot, server):
    """The admin's /token-limits (process 1) caps Alice; her next /ask in process 2 is refused without calling
    the LLM; clearing it lets her through again."""
    admin_side, member_side = await make_bot(), await make_bot()
    [first] = await member_side.slash("ask", {"question": "What is DSPy?"}, user=ALICE)
    assert first.content and len(server.requests) == 1
    assert member_side.tracker.flush(10)
    used = member_side.tracker.summary(since=None, user_id=ALICE).total_tokens
    [done] = await admin_side.admin("set", {"tokens": used}, user_options={"user": ALICE})
    assert done.ephemeral and done.embeds[0]["title"].startswith("✅ Limits set for")
    assert f"Limit: {used:,} tokens" in done.render()
    [refused] = await member_side.slash("ask", {"question": "And again?"}, user=ALICE)
    assert refused.ephemeral and f"{used:,}" in refused.content and len(server.requests) == 1
    [bob] = await member_side.slash("ask", {"question": "Me?"}, user=BOB)  # the cap is Alice's only
    assert not bob.ephemeral and len(server.requests) == 2
    [shown] = await admin_side.admin("show", user_options={"user": ALICE})
    assert "⛔" in shown.render() and "Set at run time" in shown.render()
    await admin_side.admin("clear", user_options={"user": ALICE})
    [again] = await member_side.slash("ask", {"question": "Now?"}, user=ALICE)
    assert not again.ephemeral and len(server.requests) == 3


async def test_server_limit_reset_and_bypass(make_bot, server):
    """A server-wide request cap refuses everyone here; reset makes earlier usage stop counting; bypass lifts it."""
    app = await make_bot()
    await app.slash("ask", {"question": "One"}, user=BOB)
    assert app.tracker.flush(10)
    [done] = await app.admin("set", {"requests": 1, "window": "1d"})
    assert "1 requests per 1d" in done.render()
    [refused] = await app.slash("ask", {"question": "Two"}, user=ALICE)
    assert refused.ephemeral and len(server.requests) == 1
    await app.admin("reset")
    answer, *_heads_up = await app.slash("ask", {"question": "Three"}, user=ALICE)
    assert not answer.ephemeral and len(server.requests) == 2
    assert app.tracker.flush(10)
    [refused] = await app.slash("ask", {"question": "Four"}, user=ALICE)
    assert refused.ephemeral
    await app.admin("bypass", {"on": True})
    answer, *_ = await app.slash("ask", {"question": "Five"}, user=ALICE)
    assert not answer.ephemeral and len(server.requests) == 3
    [shown] = await app.admin("show")
    assert "Bypass: **on**" in shown.render()


async def test_history_shows_who_changed_what(make_bot):
    """Every change is recorded as discord:<admin id>, listed latest first."""
    app = await make_bot()
    await app.admin("set", {"tokens": 500, "cost_usd": "0.50"})
    await app.admin("bypass", {"on": False})
    [history] = await app.admin("history")
    text = history.render()
    assert history.ephemeral and f"<@{ADMIN}>" in text
    assert text.index("**bypass** · off") < text.index("**set** · cost_usd 0.5, tokens 500")
    [change] = app.tracker.limit_changes("guild", GUILD_ID, limit=1)
    assert change.changed_by == f"discord:{ADMIN}"


async def test_non_admin_is_refused(make_bot):
    """Without the admin permission nothing runs and nothing changes (the runtime check, not the UI hint)."""
    app = await make_bot()
    [refusal] = await app.slash("token-limits set", {"tokens": 1}, user=ALICE, permissions="0")
    assert refusal.ephemeral and refusal.content.startswith("🚫 You need the Manage Server permission")
    assert app.tracker.limit_override("guild", GUILD_ID) is None and not app.tracker.limit_changes()


async def test_a_server_admin_cannot_reach_other_servers_or_global(make_bot):
    """An admin of this server: not another server (no permission there), not a non-member, not the global
    scope, not a member's bypass; the bot owner may."""
    app = await make_bot()
    [elsewhere] = await app.slash("token-limits set", {"tokens": 1}, user=ADMIN, permissions="0",
                                  guild_id=OTHER_GUILD_ID)
    assert elsewhere.content.startswith("🚫")
    [outsider] = await app.admin("set", {"tokens": 1}, user_options={"user": BOB}, non_members=[BOB])
    assert outsider.content == "🚫 Bob is not a member of this server."
    [global_] = await app.admin("set", {"tokens": 1, "scope": "global"})
    assert global_.content == "🚫 Only the bot owner can change or see the global limits."
    [bypass] = await app.admin("bypass", {"on": True}, user_options={"user": BOB})
    assert bypass.content.startswith("🚫 Only the bot owner can bypass a member")
    assert not app.tracker.limit_changes()
    [owner] = await app.slash("token-limits set", {"tokens": 1, "scope": "global"}, user=OWNER_ID)
    assert owner.embeds[0]["title"] == "✅ Limits set for every server (global)"
    assert app.tracker.limit_override("global").tokens == 1


async def test_a_bad_value_is_explained(make_bot):
    """A window the core refuses comes back as a short ephemeral message naming the option."""
    app = await make_bot()
    [answer] = await app.admin("set", {"tokens": 5, "window": "3w"})
    assert answer.ephemeral and answer.content.startswith("⚠️ `window` must be")


async def test_the_group_is_synced_with_an_admin_hint(make_bot):
    """Synced as one group of six subcommands, hinted to Manage Server (the runtime check is what enforces it)."""
    app = await make_bot()
    app.wire.clear()
    app.bot._connection.parse_message_create(message_payload("!sync guild", author=OWNER_ID))
    await settle()
    [put] = [s for s in app.wire.sent if s.method == "PUT"]
    [group] = [c for c in put.json if c["name"] == "token-limits"]
    assert int(group["default_member_permissions"]) == discord.Permissions(manage_guild=True).value
    assert {o["name"] for o in group["options"]} == {"show", "set", "clear", "reset", "bypass", "history"}
    assert all(o["type"] == 1 and len(o["description"]) <= 100 for o in group["options"])
