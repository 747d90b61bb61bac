"""Pure formatting (no bot): numbers, embed limits, refusal texts, and the embeds built from the core's report
types."""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import discord
import pytest
from dspy_tokens_discord import embeds

from dspy_tokens import Group, LimitDecision, Summary


@pytest.mark.parametrize("value, text", [
    (None, "?"), (0, "$0.00"), (Decimal("12.345"), "$12.35"), (Decimal("0.007"), "$0.0070"),
    (Decimal("0.000025"), "$0.000025"), (Decimal("0.0000001"), "<$0.000001"), (1234, "$1,234.00")])
def test_money(value, text):
    """Costs read naturally at every scale; unknown is '?', never $0."""
    assert embeds.money(value) == text


@pytest.mark.parametrize("seconds, text", [(86400, "24 hours"), (604800, "7 days"), (3600, "1 hour"),
                                           (90, "90 seconds"), (120, "2 minutes")])
def test_duration(seconds, text):
    """Report periods are said the way people say them."""
    assert embeds.duration(seconds) == text


def test_fit_lines_cuts_at_a_line_and_counts_the_rest():
    """Long rankings are cut at a whole line, ending with '… and N more', within the field limit."""
    lines = [f"`{i}.` <@{10**17 + i}> — **{i:,}** tokens · $0.0010" for i in range(200)]
    text = embeds.fit_lines(lines)
    assert len(text) <= 1024 and text.endswith("more")
    kept = text.split("\n")[:-1]
    assert kept == lines[:len(kept)] and text.split("\n")[-1] == f"… and {200 - len(kept)} more"
    assert embeds.fit_lines([]) == "—" and embeds.fit_lines(["x" * 5000]).endswith("…")


def test_fit_enforces_every_embed_limit():
    """An oversized embed is trimmed to Discord's limits (title, description, 25 fields, values, 6000 total)."""
    embed = discord.Embed(title="t" * 300, description="d" * 5000)
    for _ in range(40):
        embed.add_field(name="n" * 300, value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    embeds.fit(embed)
    assert len(embed.title) <= 256 and len(embed.description) <= 4096 and len(embed.fields) <= 25
    assert all(len(f.name) <= 256 and len(f.value) <= 1024 for f in embed.fields)
    assert len(embed.footer.text) <= 2048 and embeds.embed_size(embed) <= 6000


def decision(**kwargs) -> LimitDecision:
    """A refusing user-limit decision; ``kwargs`` override its fields."""
    base = dict(allowed=False, scope="user", rule="user_limit", used=990, reserved=10, limit=1000, requested=50,
                resets_at=datetime(2030, 1, 2, 3, tzinfo=timezone.utc), window="rolling", exceeded=True)
    return LimitDecision(**{**base, **kwargs})


def test_refusal_texts_name_who_is_over_and_when_it_frees_up():
    """Refusals say you / this server / this bot, used and limit, what requests in progress hold (never called
    used, with when it is released), and the reset."""
    ts = int(datetime(2030, 1, 2, 3, tzinfo=timezone.utc).timestamp())
    assert embeds.refusal_text(decision(used=1000, reserved=0)) == (
        f"⛔ You have reached your usage limit: 1,000 of 1,000 tokens used in the last 30 days. "
        f"It frees up <t:{ts}:R> (<t:{ts}:f>). See `/token-usage` for details.")
    held = datetime(2030, 1, 1, 12, 5, tzinfo=timezone.utc)
    assert embeds.refusal_text(decision(held_until=held)) == (
        f"⛔ You do not have enough left in your usage limit: 990 of 1,000 tokens used in the last 30 days, 10 more "
        f"held by requests in progress (released by <t:{int(held.timestamp())}:t> at the latest). "
        f"It frees up <t:{ts}:R> (<t:{ts}:f>). See `/token-usage` for details.")
    assert embeds.refusal_text(decision(scope="guild", rule="guild_limit", used=1000, reserved=0)).startswith(
        "⛔ This server has reached its usage limit")
    assert embeds.refusal_text(decision(scope="guild", rule="guild_limit")).startswith(
        "⛔ This server does not have enough left in its usage limit: 990 of 1,000 tokens used")
    daily = decision(scope="global", rule="daily_cost_limit", metric="cost", used=Decimal("5.5"), reserved=0,
                     limit=Decimal("5"), window="day")
    assert embeds.refusal_text(daily).startswith("⛔ This bot has reached its usage limit: $5.50 of $5.00 used today")
    per_model = decision(rule="models[gpt-4o].user_limit")
    assert "usage limit for gpt-4o:" in embeds.refusal_text(per_model)
    too_big = decision(resets_at=None, requested=5000)
    assert "larger than the whole limit" in embeds.refusal_text(too_big)
    unknown = LimitDecision(False, message="Usage limits cannot be checked right now; please try again in a moment.")
    assert embeds.refusal_text(unknown) == "⛔ Usage limits cannot be checked right now; please try again in a moment."


# -- the core's report types ---------------------------------------------------------------------------
def test_totals_and_cost_name_calls_with_an_unknown_price():
    """A Summary's unknown_cost_calls are said next to the cost, never folded into it as $0."""
    totals = Summary(calls=3, total_tokens=1234, cost_usd=Decimal("0.5"), unknown_cost_calls=2, active_users=1)
    assert embeds.totals_text(totals) == ("Tokens **1,234** · Cost **$0.5000** · Calls **3** · Active users **1**\n"
                                          "2 calls with an unknown price (not in cost)")
    embed = embeds.usage_embed(subject="x", is_self=True, guild_totals=None, decision=LimitDecision(True),
                               user_totals=Summary(calls=1, total_tokens=5, unknown_cost_calls=1), window_days=30)
    fields = {f.name: f.value for f in embed.fields}
    assert fields[embeds.F_COST] == "$0.00 + 1 call with an unknown price"
    assert fields[embeds.F_YOU] == "**5** tokens · 1 call · $0.00\nLimit: none"


def test_call_lines_read_core_call_records():
    """A recent call (a CallRecord dict) shows time, tokens, feature, model, and cache hit or failure."""
    call = {"created_at": datetime(2030, 1, 2, 3, tzinfo=timezone.utc), "total_tokens": 120, "feature": None,
            "model": "openai/gpt-4o", "cost_usd": None, "cache_hit": True, "error": None}
    ts = int(call["created_at"].timestamp())
    assert embeds.call_line(call) == f"<t:{ts}:f> — 120 tokens · — · openai/gpt-4o · cache hit"
    failed = dict(call, cache_hit=False, error="TimeoutError", feature="ask")
    assert embeds.call_line(failed) == f"<t:{ts}:f> — 120 tokens · ask · openai/gpt-4o · failed"


def test_day_lines_newest_first_from_core_groups():
    """Per-day lines come from core Groups keyed by date, newest first so a cut drops the oldest days."""
    days = [Group(by="day", key=date(2030, 1, 1), total_tokens=5),
            Group(by="day", key=date(2030, 1, 2), total_tokens=7, cost_usd=Decimal("0.01"))]
    assert embeds.day_lines(days) == ["`01-02` **7** tokens · $0.0100", "`01-01` **5** tokens · $0.00"]
