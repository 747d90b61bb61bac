"""Case 6 in Discord: tokens held by a request in progress (or by a process that died mid-run) are never called
used. A user with 0 real usage whose limit is held by a reservation reads "0 of 1,000 tokens used, 1,000 more held
by requests in progress (released by … at the latest)" in the refusal and in /token-usage — through discord.py's
real dispatch, with a real reservation in the database."""

from __future__ import annotations

import re
import time

from dspy_tokens_discord.embeds import F_YOU

from tests.discord.support.harness import ALICE, GUILD_ID

LIMITS = {"user_limit": 1000, "default_estimate_tokens": 50}
RELEASED = re.compile(r"\(released by <t:(\d+):t> at the latest\)")


def held_by_a_dead_run(app):
    """A guard entered and never left: the reservation stays until its time to live (600 s) runs out."""
    hold = app.tracker.guard(ALICE, GUILD_ID, estimate=1000)
    hold.__enter__()
    return hold


async def test_refusal_tells_used_from_held(make_app):
    app = await make_app(LIMITS)
    hold = held_by_a_dead_run(app)
    try:
        [refusal] = await app.slash("ask", {"question": "hi"})
    finally:
        hold.__exit__(None, None, None)
    text = refusal.content
    assert refusal.ephemeral and "reached" not in text and "1,000 of 1,000" not in text
    assert text.startswith("⛔ You do not have enough left in your usage limit: 0 of 1,000 tokens used in the last "
                           "30 days, 1,000 more held by requests in progress (released by <t:")
    assert "Requests still in progress must finish first" in text
    released = int(RELEASED.search(text).group(1))
    assert time.time() < released <= time.time() + 600  # no hold outlasts its 600 s time to live
    assert app.server.requests == []


async def test_token_usage_limit_line_tells_used_from_held(make_app):
    app = await make_app(LIMITS)
    hold = held_by_a_dead_run(app)
    try:
        [answer] = await app.slash("token-usage")
    finally:
        hold.__exit__(None, None, None)
    you = answer.field(F_YOU)
    assert "Limit: 0 / 1,000 tokens in the last 30 days · 1,000 more held by requests in progress (released by <t:" in you
    assert "at the latest) · **0** left" in you
