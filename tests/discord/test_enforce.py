"""``@enforce_limits`` driven through discord.py's real dispatch: slash, hybrid, prefix and on_message."""

from __future__ import annotations

import sys

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from dspy_tokens_discord import AppTokenLimitExceeded, TokenLimitExceeded, enforce_limits

import dspy_tokens
from dspy_tokens.config import Bypasses
from tests.discord.support import future_annotated_commands
from tests.discord.support.harness import (
    ALICE,
    BOB,
    BOT_ID,
    BYPASS_ROLE,
    CAROL,
    CHANNEL_ID,
    GUILD_ID,
    PLAIN_ROLE,
    SUPER_ROLE,
    FakeWire,
    settle,
    slash_payload,
)
from tests.discord.support.rows import seed, usage_row
from tests.support.db import stored_rows

LIMITS = {"user_limit": 1000, "guild_limit": 5000, "default_estimate_tokens": 50}
MENTION = f"<@{BOT_ID}> what is the answer?"


async def over_limit_app(make_app, user=ALICE, **kwargs):
    """A started bot whose ``user`` has used up the 1,000-token user limit."""
    app = await make_app(kwargs.pop("config", LIMITS), **kwargs)
    seed(app.tracker, usage_row(user_id=user, tokens=1000))
    return app


async def test_slash_ask_runs_and_attributes_calls(app):
    """/ask under no limit runs the DSPy program; its call is stored for user, guild, channel, command, session."""
    payload = slash_payload("ask", {"question": "what is 2+2?"})
    app.wire.clear()
    app.bot._connection.parse_interaction_create(payload)
    await settle()
    [answer] = app.wire.messages()
    assert answer.content.startswith("Answer to:") and not answer.ephemeral
    [row] = stored_rows(app.tracker)  # recorded although the handler never registered the tracker as callback
    assert (row["user_id"], row["guild_id"], row["channel_id"], row["feature"], row["session_id"]) == (
        ALICE, GUILD_ID, CHANNEL_ID, "ask", payload["id"])
    assert row["total_tokens"] == app.server.usage_totals()["total_tokens"] > 0


async def test_slash_refusal_is_ephemeral_and_llm_never_called(make_app):
    """Over the user limit, /ask gets one ephemeral refusal with used/limit/reset and the LLM gets 0 requests."""
    app = await over_limit_app(make_app)
    [refusal] = await app.slash("ask", {"question": "hi"})
    assert refusal.path.endswith("/callback") and refusal.json["type"] == 4 and refusal.ephemeral
    text = refusal.content
    assert text.startswith("⛔ You have reached your usage limit: 1,000 of 1,000 tokens used in the last 30 days.")
    assert "It frees up <t:" in text and ":R>" in text and "/token-usage" in text
    assert refusal.data["allowed_mentions"] == {"parse": []}
    assert app.server.requests == []
    assert len(stored_rows(app.tracker)) == 1  # only the seeded row


async def test_guild_over_limit_names_the_server(make_app):
    """When the server (not the user) is over, the refusal says so and nothing runs."""
    app = await make_app(LIMITS)
    seed(app.tracker, usage_row(user_id=BOB, tokens=5000))
    [refusal] = await app.slash("ask", {"question": "hi"}, user=ALICE)
    assert refusal.ephemeral and refusal.content.startswith(
        "⛔ This server has reached its usage limit: 5,000 of 5,000")
    assert app.server.requests == []


async def test_refusal_after_defer_uses_ephemeral_followup(make_app):
    """A handler wrapped after it already responded is refused with an ephemeral followup, not a callback."""
    app = await over_limit_app(make_app)
    tracker = app.tracker

    @app.bot.tree.command(name="late", description="defers before the limit check")
    async def late(interaction: discord.Interaction):
        await interaction.response.defer(ephemeral=True, thinking=True)
        await guarded(interaction)

    @enforce_limits(tracker)
    async def guarded(interaction: discord.Interaction):
        raise AssertionError("must not run")

    [refusal] = await app.slash("late")
    assert refusal.path.startswith("/webhooks/") and refusal.ephemeral and refusal.content.startswith("⛔")


async def test_hybrid_as_slash_refusal_is_ephemeral(make_app):
    """A hybrid command used as a slash command is refused ephemerally (ctx.send(ephemeral=True))."""
    app = await over_limit_app(make_app)
    [refusal] = await app.slash("hask", {"question": "hi"})
    assert refusal.path.endswith("/callback") and refusal.ephemeral and refusal.content.startswith("⛔ You have")
    assert app.server.requests == []


@pytest.mark.parametrize("command", ["!hask what now", "!pask what now"])
async def test_prefix_refusal_is_a_reply_without_mention(make_app, command):
    """Hybrid-as-prefix and prefix commands are refused with a reply that pings nobody; the LLM never runs."""
    app = await over_limit_app(make_app)
    [refusal] = await app.message(command)
    assert refusal.method == "POST" and refusal.path == f"/channels/{CHANNEL_ID}/messages"
    assert refusal.json["message_reference"]["channel_id"] == CHANNEL_ID
    assert refusal.json["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert refusal.content.startswith("⛔ You have reached your usage limit")
    assert app.server.requests == []


async def test_prefix_and_hybrid_calls_are_attributed(app):
    """Prefix (session = message id) and hybrid-as-slash (session = interaction id) runs are attributed."""
    [reply] = await app.message("!pask tell me", message_id=555_000_000_000_000_001)
    assert reply.content.startswith("Answer to:")
    payload = slash_payload("hask", {"question": "and you?"}, user=BOB)
    app.bot._connection.parse_interaction_create(payload)
    await settle()
    rows = {r["feature"]: r for r in stored_rows(app.tracker)}
    assert (rows["pask"]["user_id"], rows["pask"]["session_id"]) == (ALICE, "555000000000000001")
    assert (rows["hask"]["user_id"], rows["hask"]["session_id"]) == (BOB, payload["id"])


async def test_cog_command_is_enforced(make_app):
    """@enforce_limits on a cog method (self first) finds the interaction and refuses over the limit."""
    app = await over_limit_app(make_app)
    [refusal] = await app.slash("cog-ask", {"question": "hi"})
    assert refusal.ephemeral and refusal.content.startswith("⛔")
    assert len(stored_rows(app.tracker)) == 1 and app.server.requests == []


async def test_cog_command_runs_with_its_name_as_feature(app):
    """A cog slash command under the limit runs and is recorded under the command's name."""
    [answer] = await app.slash("cog-ask", {"question": "hi"})
    assert answer.content.startswith("Answer to:")
    assert [r["feature"] for r in stored_rows(app.tracker)] == ["cog-ask"]


async def test_on_message_checks_only_mentions(make_app):
    """An over-limit user's ordinary chat gets no refusal spam; a mention of the bot gets one quiet reply."""
    app = await over_limit_app(make_app)
    assert await app.message("just chatting") == []
    [refusal] = await app.message(MENTION, mentions=[BOT_ID])
    assert refusal.json["message_reference"]["message_id"]
    assert refusal.json["allowed_mentions"] == {"parse": [], "replied_user": False}
    assert refusal.content.startswith("⛔ You have reached your usage limit")
    assert app.server.requests == []


async def test_on_message_mention_answers_and_is_attributed(app):
    """Under the limit a mention reaches the LLM; the call is stored with feature 'chat' and the message id."""
    [reply] = await app.message(MENTION, mentions=[BOT_ID], message_id=556_000_000_000_000_001)
    assert reply.content.startswith("Answer to:")
    [row] = stored_rows(app.tracker)
    assert (row["feature"], row["session_id"], row["user_id"]) == ("chat", "556000000000000001", ALICE)


async def test_bot_authors_are_never_refused(make_app):
    """A message from another bot is never checked nor refused (the handler itself ignores bots)."""
    app = await over_limit_app(make_app, user=CAROL)
    assert await app.message(MENTION, author=CAROL, bot=True, mentions=[BOT_ID]) == []
    assert app.server.requests == []


@pytest.mark.parametrize("bypasses, roles", [
    (Bypasses(users=frozenset({ALICE})), ()),
    (Bypasses(guilds=frozenset({GUILD_ID})), ()),
    (Bypasses(roles=frozenset({BYPASS_ROLE})), (PLAIN_ROLE, BYPASS_ROLE)),
    (None, (SUPER_ROLE,)),
], ids=["user", "guild", "role-in-bypass-file", "SUPER_ROLE_IDS"])
async def test_bypass_lets_over_limit_requests_through(make_app, bypasses, roles):
    """Users, servers and roles on the bypass list and SUPER_ROLE_IDS members are never refused, still recorded."""
    app = await over_limit_app(make_app, bypasses=bypasses)
    messages = await app.slash("ask", {"question": "hi"}, roles=roles)
    assert [m.content[:10] for m in messages] == ["Answer to:"]
    assert len(app.server.requests) == 1
    rows = stored_rows(app.tracker)
    assert len(rows) == 2 and rows[-1]["user_id"] == ALICE and rows[-1]["feature"] == "ask"


async def test_plain_role_does_not_bypass(make_app):
    """A role on neither list changes nothing: the over-limit member is refused."""
    app = await over_limit_app(make_app, bypasses=Bypasses(roles=frozenset({BYPASS_ROLE})))
    [refusal] = await app.slash("ask", {"question": "hi"}, roles=(PLAIN_ROLE,))
    assert refusal.content.startswith("⛔") and app.server.requests == []


async def test_raise_error_reaches_tree_on_error_as_check_failure(make_app):
    """raise_error=True: the slash error reaches the bot's tree.on_error as an app_commands.CheckFailure."""
    app = await over_limit_app(make_app)
    [handled] = await app.slash("ask-strict", {"question": "hi"})
    assert handled.content == "handled by the bot" and handled.ephemeral
    [(where, error)] = app.errors
    assert where == "tree" and isinstance(error, AppTokenLimitExceeded)
    assert isinstance(error, app_commands.CheckFailure) and isinstance(error, dspy_tokens.TokenLimitExceeded)
    assert error.decision.scope == "user" and error.decision.used == 1000 and error.decision.limit == 1000
    assert app.server.requests == []


@pytest.mark.parametrize("deliver", ["prefix", "hybrid-slash"])
async def test_raise_error_reaches_on_command_error_unwrapped(make_app, deliver):
    """raise_error=True on prefix and hybrid commands reaches on_command_error as TokenLimitExceeded itself."""
    app = await over_limit_app(make_app)
    if deliver == "prefix":
        assert await app.message("!pstrict hi") == []
    else:
        await app.slash("hstrict", {"question": "hi"})
    [(where, error)] = app.errors
    assert where == "command" and type(error) is TokenLimitExceeded
    assert isinstance(error, commands.CheckFailure) and error.decision.scope == "user"
    assert app.server.requests == []


async def test_raise_error_in_on_message_reaches_on_error(make_app):
    """raise_error=True in an on_message listener reaches the client's on_error as TokenLimitExceeded."""
    app = await over_limit_app(make_app)
    seen: list = []

    @app.bot.listen("on_message")
    @enforce_limits(app.tracker, raise_error=True, when=lambda m: m.content.startswith("?"))
    async def strict_chat(message: discord.Message):
        raise AssertionError("must not run")

    async def on_error(event, *args, **kwargs):
        seen.append((event, sys.exc_info()[1]))

    app.bot.on_error = on_error
    assert await app.message("?question") == []
    [(event, error)] = seen
    assert event == "on_message" and type(error) is TokenLimitExceeded and error.decision.scope == "user"


async def test_warn_mode_runs_and_warns(make_app):
    """In warn mode an over-limit request runs, and the user also gets an ephemeral warning."""
    app = await over_limit_app(make_app, config={**LIMITS, "enforcement": "warn"})
    answer, warning = await app.slash("ask", {"question": "hi"})
    assert answer.content.startswith("Answer to:") and not answer.ephemeral
    assert warning.ephemeral and warning.content.startswith("⚠️ You are over the usage limit (1,000 of 1,000 tokens")
    assert len(app.server.requests) == 1


async def test_soft_threshold_notice_is_shown_once(make_app):
    """Crossing the soft threshold (80%) gives a one-time ephemeral heads-up; the next request gets none."""
    app = await make_app({**LIMITS, "soft_limit_ratio": 0.8, "default_estimate_tokens": 10})
    seed(app.tracker, usage_row(user_id=ALICE, tokens=850))
    answer, notice = await app.slash("ask", {"question": "hi"})
    assert answer.content.startswith("Answer to:")
    assert notice.ephemeral and notice.content.startswith("ℹ️ Heads-up: 85% of your usage limit is used (850 of 1,000")
    again = await app.slash("ask", {"question": "again"})
    assert [m.content[:10] for m in again] == ["Answer to:"]
    assert len(app.server.requests) == 2


async def test_off_mode_never_refuses_nor_notifies(make_app):
    """With enforcement off an over-limit user gets the answer and no message about limits."""
    app = await over_limit_app(make_app, config={**LIMITS, "enforcement": "off"})
    messages = await app.slash("ask", {"question": "hi"})
    assert [m.content[:10] for m in messages] == ["Answer to:"]


async def test_future_annotations_module(make_app):
    """A PEP 563 user module works: the slash option keeps Range's max_length, the prefix converter runs."""
    app = await make_app()
    calls: list = []
    future_annotated_commands.register(app.bot, app.tracker, calls)
    await app.bot.tree.sync()
    synced = {c["name"]: c for c in app.wire.commands}
    [option] = synced["future-ask"]["options"]
    assert (option["name"], option["type"], option["max_length"], option["required"]) == ("prompt", 3, 200, True)
    [reply] = await app.slash("future-ask", {"prompt": "hello"})
    assert reply.content == "ok hello"
    [shout] = await app.message("!future-shout quiet")
    assert shout.content == "QUIET" and calls == ["hello", "QUIET"]


async def test_future_annotations_module_still_enforced(make_app):
    """Commands from the PEP 563 module are refused over the limit like any other."""
    app = await over_limit_app(make_app)
    calls: list = []
    future_annotated_commands.register(app.bot, app.tracker, calls)
    [refusal] = await app.slash("future-ask", {"prompt": "hello"})
    assert refusal.ephemeral and refusal.content.startswith("⛔") and calls == []


async def test_checks_under_the_decorator_still_run(make_app):
    """A permission check stacked with @enforce_limits runs first: a non-admin is refused by discord.py."""
    app = await make_app(LIMITS)
    ran: list = []

    @app.bot.tree.command(name="admin-ask", description="admins only")
    @app_commands.checks.has_permissions(administrator=True)
    @enforce_limits(app.tracker)
    async def admin_ask(interaction: discord.Interaction):
        ran.append(interaction.id)
        await interaction.response.send_message("ran")

    await app.slash("admin-ask", permissions="0")
    [(where, error)] = app.errors
    assert isinstance(error, app_commands.MissingPermissions) and ran == []
    [ok] = await app.slash("admin-ask", permissions=str(discord.Permissions(administrator=True).value))
    assert ok.content == "ran" and len(ran) == 1


def test_decorator_must_sit_below_command_decorators(sqlite_url, make_tracker):
    """@enforce_limits above @app_commands.command / @commands.command is a TypeError at import time."""
    tracker = make_tracker(sqlite_url)

    async def ask(interaction: discord.Interaction, question: str):
        pass

    with pytest.raises(TypeError, match="below"):
        enforce_limits(tracker)(app_commands.command(name="ask", description="x")(ask))
    with pytest.raises(TypeError, match="below"):
        enforce_limits(tracker)(commands.command(name="ask")(ask))
    with pytest.raises(TypeError, match="TokenTracker"):
        enforce_limits(ask)
    with pytest.raises(TypeError, match="async"):
        enforce_limits(tracker)(lambda interaction: None)
    with pytest.raises(ValueError, match="estimate"):
        enforce_limits(tracker, estimate=-5)


async def test_missing_target_is_a_clear_error(sqlite_url, make_tracker):
    """A wrapped function called without an Interaction, Context or Message says so."""
    tracker = make_tracker(sqlite_url)

    @enforce_limits(tracker)
    async def handler(text: str):
        return text

    with pytest.raises(TypeError, match="no Interaction, Context or Message"):
        await handler("hi")


async def test_dm_slash_is_attributed_without_guild(app):
    """A slash command in a DM is checked and recorded with no guild id."""
    [answer] = await app.slash("ask", {"question": "hi"}, guild_id=None)
    assert answer.content.startswith("Answer to:")
    [row] = stored_rows(app.tracker)
    assert (row["user_id"], row["guild_id"]) == (ALICE, None)


async def test_unreachable_reply_is_logged_not_raised(make_app, monkeypatch, caplog):
    """If the refusal cannot be delivered (HTTP error), it is logged; nothing escapes to the bot."""
    app = await over_limit_app(make_app)
    original = FakeWire.answer

    def failing(self, route, body, files, params):
        if route.url.endswith("/callback"):
            response = type("R", (), {"status": 403, "reason": "Forbidden"})()
            raise discord.Forbidden(response, {"code": 50013, "message": "Missing Permissions"})
        return original(self, route, body, files, params)

    monkeypatch.setattr(FakeWire, "answer", failing)
    await app.slash("ask", {"question": "hi"})
    assert app.errors == [] and "could not deliver" in caplog.text
