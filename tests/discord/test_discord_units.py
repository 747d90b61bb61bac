"""Pure parts of the Discord layer (no bot): configuration, formatting, embed limits, the chart, the data layer;
and the example bot, imported and driven through the harness."""

from __future__ import annotations

import importlib.util
import sys
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import discord
import pytest

from discord_fixtures import _clean_env, seed, usage_row, wire  # noqa: F401
from discord_harness import (ALICE, BOB, CAROL, GUILD_ID, OTHER_GUILD_ID, OWNER_ID, message_payload, settle,
                             slash_payload, start)
from dspy_tokens import ConfigurationError
from dspy_tokens.limits import LimitDecision
from dspy_tokens_discord import data, embeds
from dspy_tokens_discord.charts import PNG_MAGIC, usage_chart
from dspy_tokens_discord.config import DiscordSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "discord_bot.py"
NOW = datetime.now(timezone.utc)


# -- configuration -------------------------------------------------------------------------------------
def test_settings_default_then_env_then_arguments(monkeypatch):
    """Constructor arguments win over environment variables, which win over the defaults."""
    assert DiscordSettings.resolve() == DiscordSettings()
    assert DiscordSettings().report_interval_seconds == 86400 and DiscordSettings().report_top_users == 10
    monkeypatch.setenv("SUPER_ROLE_IDS", "11, 22,,33")
    monkeypatch.setenv("STATS_REPORT_CHANNEL_ID", "44")
    monkeypatch.setenv("STATS_REPORT_INTERVAL_SECONDS", "3600")
    monkeypatch.setenv("STATS_REPORT_TOP_USERS", "5")
    monkeypatch.setenv("STATS_ADMIN_PERMISSION", "administrator")
    env = DiscordSettings.resolve()
    assert env == DiscordSettings(frozenset({11, 22, 33}), 44, 3600.0, 5, "administrator")
    given = DiscordSettings.resolve(super_role_ids=[7], report_channel_id=8, report_interval_seconds=60,
                                    report_top_users=3, admin_permission="manage_guild")
    assert given == DiscordSettings(frozenset({7}), 8, 60.0, 3, "manage_guild")


@pytest.mark.parametrize("name, value", [
    ("SUPER_ROLE_IDS", "12,abc"), ("STATS_REPORT_CHANNEL_ID", "-4"), ("STATS_REPORT_INTERVAL_SECONDS", "soon"),
    ("STATS_REPORT_INTERVAL_SECONDS", "0"), ("STATS_REPORT_TOP_USERS", "100"), ("STATS_ADMIN_PERMISSION", "boss"),
])
def test_bad_settings_fail_loudly(monkeypatch, name, value):
    """A malformed variable raises ConfigurationError naming it, instead of silently disabling a feature."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        DiscordSettings.resolve()


# -- formatting ----------------------------------------------------------------------------------------
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
    for i in range(40):
        embed.add_field(name="n" * 300, value="v" * 2000)
    embed.set_footer(text="f" * 3000)
    embeds.fit(embed)
    assert len(embed.title) <= 256 and len(embed.description) <= 4096 and len(embed.fields) <= 25
    assert all(len(f.name) <= 256 and len(f.value) <= 1024 for f in embed.fields)
    assert len(embed.footer.text) <= 2048 and embeds.embed_size(embed) <= 6000


def decision(**kwargs) -> LimitDecision:
    base = dict(allowed=False, scope="user", rule="user_limit", used=990, reserved=10, limit=1000, requested=50,
                resets_at=datetime(2030, 1, 2, 3, tzinfo=timezone.utc), window="rolling", exceeded=True)
    return LimitDecision(**{**base, **kwargs})


def test_refusal_texts_name_who_is_over_and_when_it_frees_up():
    """Refusals say you / this server / this bot, used and limit (reservations included), and the reset."""
    ts = int(datetime(2030, 1, 2, 3, tzinfo=timezone.utc).timestamp())
    assert embeds.refusal_text(decision()) == (
        f"⛔ You have reached your usage limit: 1,000 of 1,000 tokens used in the last 30 days. "
        f"It frees up <t:{ts}:R> (<t:{ts}:f>). See `/token-usage` for details.")
    assert embeds.refusal_text(decision(scope="guild", rule="guild_limit")).startswith(
        "⛔ This server has reached its usage limit")
    daily = decision(scope="global", rule="daily_cost_limit", metric="cost", used=Decimal("5.5"), reserved=0,
                     limit=Decimal("5"), window="day")
    assert embeds.refusal_text(daily).startswith("⛔ This bot has reached its usage limit: $5.50 of $5.00 used today")
    per_model = decision(rule="models[gpt-4o].user_limit")
    assert "usage limit for gpt-4o:" in embeds.refusal_text(per_model)
    too_big = decision(resets_at=None, requested=5000)
    assert "larger than the whole limit" in embeds.refusal_text(too_big)
    unknown = LimitDecision(False, message="Usage limits cannot be checked right now; please try again in a moment.")
    assert embeds.refusal_text(unknown) == "⛔ Usage limits cannot be checked right now; please try again in a moment."


# -- chart ---------------------------------------------------------------------------------------------
def test_chart_is_a_png():
    """The per-day chart renders off-screen to PNG bytes."""
    days = [data.Group(date(2024, 1, 1) + timedelta(days=i), total_tokens=i * 1500) for i in range(30)]
    png = usage_chart(days).getvalue()
    assert png.startswith(PNG_MAGIC) and len(png) > 1000


# -- data ----------------------------------------------------------------------------------------------
@pytest.fixture
def seeded(make_tracker, sqlite_url):
    """Seeded usage, read through the core's report methods."""
    tracker = make_tracker(sqlite_url)
    seed(tracker,
         usage_row(user_id=ALICE, tokens=100, prompt=70, cached=30, reasoning=4, cost="0.001",
                   created_at=NOW - timedelta(days=1)),
         usage_row(user_id=ALICE, tokens=50, cost=None, feature="chat"),
         usage_row(user_id=BOB, tokens=300, cost="0.003", model="openai/gpt-4o"),
         usage_row(user_id=CAROL, tokens=1000, cost="0.01", guild_id=OTHER_GUILD_ID),
         usage_row(user_id=BOB, tokens=7, cost="0.5", created_at=NOW - timedelta(days=40)))
    return tracker


def test_summary_numbers(seeded):
    """summary() adds tokens by kind and known cost, counts unpriced calls and active users, by scope."""
    since = NOW - timedelta(days=30)
    assert data.summary(seeded, since=since, guild_id=GUILD_ID) == data.Totals(
        calls=3, prompt_tokens=70 + 37 + 225, completion_tokens=30 + 13 + 75, cached_tokens=30, reasoning_tokens=4,
        total_tokens=450, cost_usd=Decimal("0.004"), unpriced_calls=1, active_users=2)
    assert data.summary(seeded, since=since, user_id=ALICE).total_tokens == 150
    assert data.summary(seeded, since=None).total_tokens == 1457
    assert data.summary(seeded, since=NOW + timedelta(days=1), until=NOW + timedelta(days=2)) == data.Totals()


def test_rankings_breakdowns_and_days(seeded):
    """top/breakdown order by tokens; per_day fills empty days with zeros, oldest first."""
    since = NOW - timedelta(days=30)
    assert [(g.key, g.total_tokens) for g in data.top(seeded, "user", since=since)] == [
        (CAROL, 1000), (BOB, 300), (ALICE, 150)]
    assert [g.key for g in data.top(seeded, "user", since=since, guild_id=GUILD_ID, limit=1)] == [BOB]
    assert [(g.key, g.total_tokens) for g in data.top(seeded, "guild", since=since)] == [
        (OTHER_GUILD_ID, 1000), (GUILD_ID, 450)]
    assert [(g.key, g.calls) for g in data.breakdown(seeded, "feature", since=since)] == [("ask", 3), ("chat", 1)]
    # by tokens, although gpt-4o-mini's $0.011 > gpt-4o's $0.003 would rank the other way by cost
    assert [(g.key, g.total_tokens, g.cost_usd) for g in data.breakdown(seeded, "model", since=since, limit=1)] == [
        ("openai/gpt-4o-mini", 1150, Decimal("0.011"))]
    days = data.per_day(seeded, since=NOW - timedelta(days=3), guild_id=GUILD_ID)
    assert [d.key for d in days] == [(NOW - timedelta(days=3 - i)).date() for i in range(4)]
    assert [d.total_tokens for d in days] == [0, 0, 100, 350]
    with pytest.raises(ValueError):
        data.breakdown(seeded, "colour", since=since)


def test_recent_calls_newest_first(seeded):
    """recent_calls() lists a user's calls newest first, with feature, model and tokens."""
    calls = data.recent_calls(seeded, user_id=ALICE)
    assert [(c.feature, c.total_tokens) for c in calls] == [("chat", 50), ("ask", 100)]


# -- the example bot -----------------------------------------------------------------------------------
def load_example():
    spec = importlib.util.spec_from_file_location("discord_bot_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_imports_without_a_token(monkeypatch):
    """examples/discord_bot.py imports cleanly with no DISCORD_TOKEN, and main() exits with a clear message."""
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    example = load_example()
    assert callable(example.create_bot)
    with pytest.raises(SystemExit, match="DISCORD_TOKEN"):
        example.main([])


async def test_example_bot_answers_and_syncs(wire, make_tracker, sqlite_url, server):
    """The example's /ask runs its DSPy program under the limits, and the owner's '!sync guild' syncs."""
    example = load_example()
    tracker = make_tracker(sqlite_url)
    bot = example.create_bot(tracker, lm=server.lm())
    await start(bot)
    try:
        bot._connection.parse_interaction_create(slash_payload("ask", {"question": "What is DSPy?"}))
        await settle()
        answer = wire.messages()[-1]
        assert answer.path.startswith("/webhooks/") and answer.content
        assert len(server.requests) == 1
        assert tracker.flush(10)
        assert data.summary(tracker, since=None, user_id=ALICE).total_tokens == server.usage_totals()["total_tokens"]
        wire.clear()
        bot._connection.parse_message_create(message_payload("!sync guild", author=OWNER_ID))
        await settle()
        [put] = [s for s in wire.sent if s.method == "PUT"]
        assert put.path == f"/applications/{bot.application_id}/guilds/{GUILD_ID}/commands"
        assert {c["name"] for c in put.json} == {"ask", "token-usage", "token-stats"}
        assert wire.messages()[-1].content == "Synced 3 command(s) (guild)."
    finally:
        await bot.close()
