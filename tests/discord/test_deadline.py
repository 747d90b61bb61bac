"""Discord's 3-second deadline (case 8): whatever the database does, ``@enforce_limits`` gets an initial response to
Discord in time — a defer when the limit decision is slow, nothing extra when it is quick. Driven through
discord.py's real dispatch against a fake wire that refuses late initial responses as Discord does; the slow
database is the real SQLite file behind a simulated round trip per statement."""

from __future__ import annotations

import asyncio

import discord
import pytest
from dspy_tokens_discord import enforce_limits

from dspy_tokens.store.latency import database_latency
from tests.discord.support.harness import ALICE, settle, slash_payload
from tests.discord.support.rows import seed, usage_row
from tests.support.db import stored_rows

LIMITS = {"user_limit": 1000, "guild_limit": 100_000, "default_estimate_tokens": 50}
SLOW = 0.3  # seconds per statement: a decision of ~6 statements takes ~1.8 s, past the 1.5 s budget
DEADLINE = 3.0


async def deadline_app(make_app, deadline=DEADLINE):
    """A started bot whose database schema is in place (as at any start but the very first), and a wire that
    refuses initial responses arriving more than ``deadline`` seconds after their interaction."""
    app = await make_app(LIMITS)
    app.tracker.check(user_id=ALICE, guild_id=None)
    app.wire.response_deadline = deadline
    return app


def initial_responses(app, payload) -> list:
    return [s for s in app.wire.sent if s.is_initial_response and s.path.split("/")[2] == payload["id"]]


async def run(app, name, options=None, **kwargs):
    payload = slash_payload(name, options, **kwargs)
    app.wire.clear()
    app.bot._connection.parse_interaction_create(payload)
    await settle()
    return payload


async def test_slow_decision_defers_then_answers_as_followup(make_app):
    """With a slow database /ask is deferred within the deadline and its answer arrives as the followup that
    replaces "thinking…"; the handler's own defer() is absorbed (never a second initial response)."""
    app = await deadline_app(make_app)
    with database_latency(SLOW):
        payload = await run(app, "ask", {"question": "slow?"})
    [first] = initial_responses(app, payload)
    assert first.json["type"] == 5 and not first.ephemeral
    assert 1.4 <= first.seconds_after(payload["id"]) < DEADLINE
    [answer] = app.wire.messages()
    assert answer.is_followup and answer.content.startswith("Answer to:") and not answer.ephemeral
    assert app.wire.refused == [] and app.errors == []
    assert len(app.server.requests) == 1
    app.tracker.flush()
    assert len(stored_rows(app.tracker)) == 1


async def test_slow_decision_send_message_handler_becomes_followup(make_app):
    """A handler that answers with interaction.response.send_message works unchanged after the automatic defer."""
    app = await deadline_app(make_app)
    with database_latency(SLOW):
        await run(app, "cog-ask", {"question": "slow?"})
    [answer] = app.wire.messages()
    assert answer.is_followup and answer.content.startswith("Answer to:")
    assert app.wire.refused == [] and app.errors == []


async def test_slow_refusal_is_deferred_and_stays_private(make_app):
    """A refusal decided late still reaches only the user: the public placeholder is deleted and the refusal is an
    ephemeral followup; the LLM is never called."""
    app = await deadline_app(make_app)
    seed(app.tracker, usage_row(user_id=ALICE, tokens=1000))
    with database_latency(0.5):  # a refusal takes fewer statements (it reserves nothing)
        payload = await run(app, "ask", {"question": "slow?"})
    [first] = initial_responses(app, payload)
    assert first.json["type"] == 5 and first.seconds_after(payload["id"]) < DEADLINE
    assert any(s.method == "DELETE" and s.path.endswith("/messages/@original") for s in app.wire.sent)
    [refusal] = app.wire.messages()
    assert refusal.is_followup and refusal.ephemeral and refusal.content.startswith("⛔ You have reached")
    assert app.wire.refused == [] and app.server.requests == []


async def test_quick_decision_sends_nothing_extra(make_app):
    """The fast path is unchanged: the handler's own response is the only initial response, and a quick refusal
    is the ephemeral callback itself (no defer before it)."""
    app = await deadline_app(make_app)
    payload = await run(app, "ask-strict", {"question": "quick"})
    [first] = initial_responses(app, payload)
    assert first.json["type"] == 4 and first.content.startswith("Answer to:")
    seed(app.tracker, usage_row(user_id=ALICE, tokens=1000))
    payload = await run(app, "cog-ask", {"question": "quick"})
    [refusal] = initial_responses(app, payload)
    assert refusal.json["type"] == 4 and refusal.ephemeral and refusal.content.startswith("⛔")
    assert app.wire.messages() == [refusal] and app.wire.refused == []


async def test_without_the_defer_a_slow_decision_misses_the_deadline(make_app):
    """The case itself: with ``defer_after=None`` the slow decision answers too late and Discord refuses it."""
    app = await deadline_app(make_app, deadline=1.0)

    @app.bot.tree.command(name="ask-nodefer", description="no automatic defer")
    @enforce_limits(app.tracker, defer_after=None)
    async def ask_nodefer(interaction: discord.Interaction):
        await interaction.response.send_message("answer")

    with database_latency(0.25):  # ~1.5 s decision
        await run(app, "ask-nodefer")
    late = app.wire.refused  # the handler's answer, then the bot's error handler's apology: both too late
    assert late and all(s.is_initial_response and s.error == "Unknown interaction" for s in late)
    assert app.wire.messages() == []
    [(where, error)] = app.errors
    assert where == "tree" and isinstance(getattr(error, "original", error), discord.NotFound)


async def test_fake_refuses_late_and_repeated_initial_responses(make_app):
    """The fake wire as Discord: an initial response after the deadline is 10062, a second one is 40060."""
    app = await deadline_app(make_app, deadline=0.2)
    seen: list = []

    @app.bot.tree.command(name="sleepy", description="answers late")
    async def sleepy(interaction: discord.Interaction):
        await asyncio.sleep(0.3)
        try:
            await interaction.response.send_message("late")
        except discord.NotFound as exc:
            seen.append(exc.code)

    @app.bot.tree.command(name="twice", description="answers twice")
    async def twice(interaction: discord.Interaction):
        await interaction.response.send_message("one")
        interaction.response._response_type = None  # forget it was answered, as a buggy bot might
        try:
            await interaction.response.send_message("two")
        except discord.HTTPException as exc:
            seen.append(exc.code)

    await run(app, "sleepy")
    await run(app, "twice")
    assert seen == [10062, 40060]
    [one] = app.wire.messages()
    assert one.content == "one" and [s.error for s in app.wire.refused] == ["Interaction has already been acknowledged"]


@pytest.mark.parametrize("defer_after", [-1, "soon"])
def test_defer_after_is_validated(make_tracker, sqlite_url, defer_after):
    with pytest.raises((ValueError, TypeError), match="defer_after"):
        enforce_limits(make_tracker(sqlite_url), defer_after=defer_after)
