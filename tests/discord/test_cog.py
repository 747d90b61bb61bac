"""``TokenUsageCog`` through discord.py's real dispatch: /token-usage, /token-stats, the scheduled report."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import discord
from discord.ext import commands
from dspy_tokens_discord import TokenUsageCog
from dspy_tokens_discord.charts import PNG_MAGIC
from dspy_tokens_discord.embeds import (
    F_BREAKDOWN,
    F_BY_FEATURE,
    F_BY_MODEL,
    F_COST,
    F_PER_DAY,
    F_RECENT,
    F_SERVER,
    F_TOP_SERVERS,
    F_TOP_USERS,
    F_TOTALS,
    F_YOU,
    GENERIC_ERROR,
)

from dspy_tokens.config import Bypasses
from tests.discord.support.harness import ADMIN, ALICE, BOB, CAROL, OTHER_GUILD_ID, OWNER_ID, REPORT_CHANNEL_ID, settle
from tests.discord.support.rows import seed, usage_row
from tests.support.db import stored_rows

MANAGE_GUILD = str(discord.Permissions(manage_guild=True).value)
USAGE_LIMITS = {"user_limit": 10_000, "guild_limit": 50_000, "default_estimate_tokens": 10}
NOW = datetime.now(timezone.utc)
AT_PACE = r" · at this pace used up <t:\d+:R>"


def seed_usage(tracker):
    """ALICE: 300 here + 1,000 elsewhere (+ 5,000 outside the window); BOB: 400 here."""
    seed(tracker,
         usage_row(user_id=ALICE, tokens=200, prompt=150, cached=20, reasoning=5, cost="0.002"),
         usage_row(user_id=ALICE, tokens=100, prompt=75, cost="0.001"),
         usage_row(user_id=ALICE, tokens=1000, prompt=750, cost="0.010", guild_id=OTHER_GUILD_ID),
         usage_row(user_id=ALICE, tokens=5000, cost="0.050", created_at=NOW - timedelta(days=40)),
         usage_row(user_id=BOB, tokens=400, cost="0.004"))


async def test_own_usage_is_ephemeral_with_usage_limits_and_breakdown(make_app):
    """/token-usage defers ephemerally and answers with your and the server's usage vs limits, breakdown, cost."""
    app = await make_app(USAGE_LIMITS)
    seed_usage(app.tracker)
    await app.slash("token-usage", permissions="0")
    defer, answer = app.wire.posted
    assert defer.path.endswith("/callback") and defer.json == {"type": 5, "data": {"flags": 64}}
    assert answer.path.startswith("/webhooks/") and answer.ephemeral
    [embed] = answer.embeds
    assert embed["title"] == "🪙 Your token usage" and embed["description"] == "Last 30 days (UTC)."
    # The usage is of this hour: each limit line ends with when the recent pace reaches it.
    assert re.fullmatch(re.escape("**1,300** tokens · 3 calls · $0.0130\n"
                                  "Limit: 1,300 / 10,000 tokens in the last 30 days · **8,700** left") + AT_PACE,
                        answer.field(F_YOU))
    assert re.fullmatch(re.escape("**700** tokens · 3 calls · $0.0070\n"
                                  "Limit: 700 / 50,000 tokens in the last 30 days · **49,300** left") + AT_PACE,
                        answer.field(F_SERVER))
    assert answer.field(F_BREAKDOWN) == ("Prompt **975** · Completion **325**\n"
                                         "Cached **20** (part of prompt) · Reasoning **5** (part of completion)")
    assert answer.field(F_COST) == "$0.0130"
    assert F_RECENT not in [f["name"] for f in embed["fields"]]


async def test_own_usage_over_limit_says_when_it_frees_up(make_app):
    """An exhausted user sees the rule marked over, with a Discord timestamp for when it frees up."""
    app = await make_app({**USAGE_LIMITS, "user_limit": 1000})
    seed_usage(app.tracker)
    [answer] = await app.slash("token-usage")
    you = answer.field(F_YOU)
    assert "Limit: 1,300 / 1,000 tokens in the last 30 days · **0** left · ⛔ over, frees up <t:" in you
    assert answer.embeds[0]["color"] == discord.Color.red().value


async def test_usage_exactly_at_the_limit_counts_as_used_up(make_app):
    """A user at exactly 100% is shown as over (no request fits), with the time it frees up."""
    app = await make_app({**USAGE_LIMITS, "user_limit": 1300})
    seed_usage(app.tracker)
    [answer] = await app.slash("token-usage")
    assert "Limit: 1,300 / 1,300 tokens in the last 30 days · **0** left · ⛔ over, frees up <t:" in answer.field(F_YOU)


async def test_bypassed_user_sees_unlimited(make_app):
    """A bypassed user's own limit reads 'unlimited'; the server's limit is still shown."""
    app = await make_app(USAGE_LIMITS, bypasses=Bypasses(users=frozenset({ALICE})))
    seed_usage(app.tracker)
    [answer] = await app.slash("token-usage")
    assert answer.field(F_YOU).endswith("Limit: **unlimited** (bypass)")
    assert re.search(re.escape("Limit: 700 / 50,000 tokens in the last 30 days · **49,300** left") + AT_PACE + "$",
                     answer.field(F_SERVER))


async def test_usage_in_a_dm_has_no_server_section(make_app):
    """/token-usage in a DM shows your own usage and limits only."""
    app = await make_app(USAGE_LIMITS)
    seed_usage(app.tracker)
    [answer] = await app.slash("token-usage", guild_id=None)
    names = [f["name"] for f in answer.embeds[0]["fields"]]
    assert answer.ephemeral and F_YOU in names and F_SERVER not in names
    assert answer.field(F_YOU).startswith("**1,300** tokens · 3 calls")


async def test_admin_sees_member_with_recent_activity(make_app):
    """An admin's /token-usage user:@bob shows Bob's usage and his last 10 calls, newest first."""
    app = await make_app(USAGE_LIMITS)
    seed(app.tracker, *[usage_row(user_id=BOB, tokens=10 * (i + 1), feature=f"f{i}",
                                  created_at=NOW - timedelta(minutes=12 - i)) for i in range(12)])
    [answer] = await app.slash("token-usage", user=ADMIN, permissions=MANAGE_GUILD, user_options={"user": BOB})
    assert answer.ephemeral and answer.embeds[0]["title"] == "🪙 Token usage — Bob"
    assert answer.field("👤 Bob").startswith("**780** tokens · 12 calls")
    assert answer.embeds[0]["thumbnail"]["url"]
    recent = answer.field(F_RECENT).split("\n")
    assert len(recent) == 10 and "120 tokens · f11" in recent[0] and "30 tokens · f2" in recent[-1]


def seed_stats(tracker):
    seed(tracker,
         usage_row(user_id=ALICE, tokens=200, cost="0.002"),
         usage_row(user_id=ALICE, tokens=100, cost="0.001", feature="chat"),
         usage_row(user_id=BOB, tokens=400, cost="0.004"),
         usage_row(user_id=CAROL, tokens=50, cost="0.0005", model="openai/gpt-4o"),
         usage_row(user_id=BOB, tokens=999, cost="0.01", created_at=NOW - timedelta(days=10)),
         usage_row(user_id=ALICE, tokens=1000, cost="0.01", guild_id=OTHER_GUILD_ID))


async def test_token_stats_admin_gets_embed_and_png_chart(make_app):
    """An admin gets an ephemeral embed (totals, ranking, models, features) with a PNG chart attached."""
    app = await make_app()
    seed_stats(app.tracker)
    await app.slash("token-stats", {"period": "7d"}, user=ADMIN, permissions=MANAGE_GUILD)
    defer, answer = app.wire.posted
    assert defer.json == {"type": 5, "data": {"flags": 64}} and answer.ephemeral
    [(filename, png)] = answer.files
    assert filename == "token_stats.png" and png.startswith(PNG_MAGIC)
    assert [a["filename"] for a in answer.json["attachments"]] == ["token_stats.png"]
    [embed] = answer.embeds
    assert embed["image"]["url"] == "attachment://token_stats.png"
    assert embed["title"] == "📊 Token stats — Test Server" and embed["description"] == "Period: last 7 days (UTC)."
    assert answer.field(F_TOTALS) == "Tokens **750** · Cost **$0.0075** · Calls **4** · Active users **3**"
    assert answer.field(F_TOP_USERS).split("\n") == [
        f"`1.` <@{BOB}> — **400** tokens · $0.0040", f"`2.` <@{ALICE}> — **300** tokens · $0.0030",
        f"`3.` <@{CAROL}> — **50** tokens · $0.0005"]
    assert answer.field(F_BY_MODEL).split("\n") == [
        "`1.` `openai/gpt-4o-mini` — **700** tokens · $0.0070", "`2.` `openai/gpt-4o` — **50** tokens · $0.0005"]
    assert answer.field(F_BY_FEATURE).split("\n") == [
        "`1.` `ask` — **650** tokens · $0.0065", "`2.` `chat` — **100** tokens · $0.0010"]
    assert F_TOP_SERVERS not in [f["name"] for f in embed["fields"]]
    per_day = answer.field(F_PER_DAY).split("\n")
    assert len(per_day) == 8 and per_day[0] == f"`{NOW:%m-%d}` **750** tokens · $0.0075"


async def test_token_stats_periods(make_app):
    """The 30-day period includes older usage that the 7-day period leaves out."""
    app = await make_app()
    seed_stats(app.tracker)
    [answer] = await app.slash("token-stats", {"period": "30d"}, user=ADMIN, permissions=MANAGE_GUILD)
    assert answer.field(F_TOTALS).startswith("Tokens **1,749** ·")
    [today] = await app.slash("token-stats", {"period": "today"}, user=ADMIN, permissions=MANAGE_GUILD)
    assert today.embeds[0]["description"] == "Period: today (UTC)."


async def test_all_servers_is_owner_only(make_app):
    """scope=all: refused for a server admin; the owner gets totals everywhere and the top servers."""
    app = await make_app()
    seed_stats(app.tracker)
    [refusal] = await app.slash("token-stats", {"scope": "all"}, user=ADMIN, permissions=MANAGE_GUILD)
    assert refusal.ephemeral and refusal.content == "🚫 Only the bot owner can see every server's usage."
    [answer] = await app.slash("token-stats", {"scope": "all"}, user=OWNER_ID)
    assert answer.embeds[0]["title"] == "📊 Token stats — all servers"
    assert answer.field(F_TOP_SERVERS).split("\n") == [
        f"`1.` server `{OTHER_GUILD_ID}` — **1,000** tokens · $0.0100",
        "`2.` Test Server — **750** tokens · $0.0075"]
    [dm] = await app.slash("token-stats", user=OWNER_ID, guild_id=None)
    assert F_TOP_SERVERS in [f["name"] for f in dm.embeds[0]["fields"]]


async def test_sync_payload(app):
    """Synced commands: kebab-case names, described options, period choices, Manage Server hint (32)."""
    await app.bot.tree.sync()
    [put] = [s for s in app.wire.sent if s.method == "PUT"]
    assert put.path == f"/applications/{app.bot.application_id}/commands"
    synced = {c["name"]: c for c in app.wire.commands}
    usage, stats = synced["token-usage"], synced["token-stats"]
    assert usage["default_member_permissions"] is None
    user, scope = usage["options"]
    assert user == {"name": "user", "description": "Admins only: a member of this server whose usage here to show",
                    "type": 6, "required": False}
    assert scope["name"] == "scope" and [c["value"] for c in scope["choices"]] == ["server", "all"]
    assert stats["default_member_permissions"] == 32
    period = next(o for o in stats["options"] if o["name"] == "period")
    assert [c["value"] for c in period["choices"]] == ["today", "7d", "30d"]
    assert all(len(c["description"]) <= 100 for c in synced.values())


def seed_report(tracker):
    for rank, user in enumerate((ALICE, BOB, CAROL, ADMIN, OWNER_ID)):
        seed(tracker, usage_row(user_id=user, tokens=500 - 100 * rank, cost=f"{0.005 - 0.001 * rank:.3f}"))
    seed(tracker, usage_row(user_id=ALICE, tokens=10_000, guild_id=OTHER_GUILD_ID),
         usage_row(user_id=BOB, tokens=7_000, created_at=NOW - timedelta(days=2)))


async def test_report_ranks_with_medals_and_pings_nobody(make_app):
    """The report lists the top N of the channel's server with 🥇🥈🥉 then `4.`, totals, AllowedMentions none."""
    app = await make_app(report_channel_id=REPORT_CHANNEL_ID, report_top_users=4)
    seed_report(app.tracker)
    app.wire.clear()
    await app.cog.report_loop()  # one iteration of the loop body, no scheduling
    [post] = app.wire.messages()
    assert post.method == "POST" and post.path == f"/channels/{REPORT_CHANNEL_ID}/messages"
    assert post.json["allowed_mentions"] == {"parse": []}
    [embed] = post.embeds
    assert embed["title"] == "📊 Token consumption report"
    lines = embed["description"].split("\n")
    assert lines[0].startswith("Period: last 24 hours (since <t:") and lines[0].endswith("· Test Server")
    assert lines[2:] == ["**🏆 Top 4 users**",
                         f"🥇 <@{ALICE}> — **500** tokens · $0.0050", f"🥈 <@{BOB}> — **400** tokens · $0.0040",
                         f"🥉 <@{CAROL}> — **300** tokens · $0.0030", f"`4.` <@{ADMIN}> — **200** tokens · $0.0020"]
    assert post.field(F_TOTALS) == "Tokens **1,500** · Cost **$0.0150** · Calls **5** · Active users **5**"


async def test_report_loop_started_in_cog_load_and_stopped_in_cog_unload(make_app):
    """With a report channel the loop runs after cog_load and is cancelled by cog_unload."""
    app = await make_app(report_channel_id=REPORT_CHANNEL_ID, report_interval_seconds=3600)
    loop = app.cog.report_loop
    assert loop.is_running() and loop.seconds == 3600
    await app.bot.remove_cog("TokenUsage")
    for _ in range(100):
        if not loop.is_running():
            break
        await asyncio.sleep(0.01)
    assert not loop.is_running()


async def test_no_report_channel_no_loop(app):
    """Without STATS_REPORT_CHANNEL_ID nothing is scheduled."""
    assert not app.cog.report_loop.is_running()


async def test_report_loop_really_fires(make_app):
    """Real scheduling at a 50 ms interval posts reports to the channel repeatedly."""
    app = await make_app(report_channel_id=REPORT_CHANNEL_ID, report_interval_seconds=3600)
    cog = app.cog
    cog.settings = replace(cog.settings, report_interval_seconds=0.05)
    cog.report_loop.change_interval(seconds=0.05)
    cog.report_loop.restart()
    app.wire.clear()
    for _ in range(200):
        if len(app.wire.messages()) >= 2:
            break
        await asyncio.sleep(0.01)
    posts = app.wire.messages()
    assert len(posts) >= 2 and all(p.path == f"/channels/{REPORT_CHANNEL_ID}/messages" for p in posts)
    assert posts[0].embeds[0]["description"].startswith("Period: last 0 seconds")


async def test_report_failure_is_logged_and_loop_survives(make_app, monkeypatch, caplog):
    """An exception in the report is logged with its traceback; the loop body does not raise."""
    app = await make_app(report_channel_id=REPORT_CHANNEL_ID)

    async def broken(**_):
        raise RuntimeError("report exploded")

    monkeypatch.setattr(app.cog, "send_report", broken)
    with caplog.at_level(logging.ERROR, logger="dspy_tokens_discord"):
        await app.cog.report_loop()
    [record] = [r for r in caplog.records if "scheduled token usage report failed" in r.message]
    assert record.exc_info and "report exploded" in caplog.text
    assert app.cog.report_loop.is_running()


async def test_unexpected_error_is_generic_ephemeral_and_logged(make_app, monkeypatch, caplog):
    """A crash inside /token-usage shows a generic ephemeral message, logs the traceback, leaks nothing."""
    app = await make_app()

    def broken(*args, **kwargs):
        raise RuntimeError("password=hunter2 leaked?")

    monkeypatch.setattr(app.tracker, "summary", broken)
    with caplog.at_level(logging.ERROR, logger="dspy_tokens_discord"):
        messages = await app.slash("token-usage")
    [message] = messages
    assert message.ephemeral and message.content == GENERIC_ERROR
    assert all("hunter2" not in str(s.json) for s in app.wire.sent)
    [record] = [r for r in caplog.records if r.name == "dspy_tokens_discord" and r.levelno == logging.ERROR]
    assert "unexpected error in /token-usage" in record.getMessage() and record.exc_info[0] is RuntimeError
    assert "hunter2" in caplog.text  # the traceback is in the log


async def test_full_flow_ask_then_token_usage_shows_exact_tokens(make_app):
    """A real DSPy program inside /ask under @enforce_limits; /token-usage then shows exactly its tokens."""
    app = await make_app(USAGE_LIMITS)
    [answer] = await app.slash("ask", {"question": "How many tokens does this take?"})
    assert answer.content.startswith("Answer to:")
    sent = app.server.usage_totals()
    assert len(app.server.requests) == 1 and sent["total_tokens"] > 0
    [usage] = await app.slash("token-usage")
    total, prompt, completion = sent["total_tokens"], sent["prompt_tokens"], sent["completion_tokens"]
    assert usage.field(F_YOU).startswith(f"**{total:,}** tokens · 1 call · ")
    assert f"Limit: {total:,} / 10,000 tokens in the last 30 days · **{10_000 - total:,}** left" in usage.field(F_YOU)
    assert usage.field(F_SERVER).startswith(f"**{total:,}** tokens · 1 call · ")
    assert usage.field(F_BREAKDOWN).startswith(f"Prompt **{prompt:,}** · Completion **{completion:,}**")
    [row] = stored_rows(app.tracker)
    assert row["total_tokens"] == total and row["cost_usd"] > 0


async def test_load_extension_uses_bot_token_tracker(make_tracker, sqlite_url):
    """await bot.load_extension('dspy_tokens_discord') adds both cogs with bot.token_tracker."""
    tracker = make_tracker(sqlite_url)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    bot.token_tracker = tracker
    await bot.load_extension("dspy_tokens_discord")
    cog = bot.get_cog("TokenUsage")
    assert isinstance(cog, TokenUsageCog) and cog.tracker is tracker
    assert {c.name for c in bot.tree.get_commands()} >= {"token-usage", "token-stats", "token-limits"}
    assert bot.get_cog("TokenLimits").tracker is tracker
    await bot.unload_extension("dspy_tokens_discord")
    assert bot.get_cog("TokenUsage") is None and bot.get_cog("TokenLimits") is None
    await bot.close()
    await settle()
