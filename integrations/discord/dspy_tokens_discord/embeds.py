"""Pure formatting of usage data into ``discord.Embed``: /token-usage, /token-stats and the scheduled report.

The inputs are the core's own types: :class:`dspy_tokens.Summary` (totals of a period), :class:`dspy_tokens.Group`
(a line of a ranking or breakdown), :class:`dspy_tokens.LimitDecision` and :class:`dspy_tokens.CallRecord` (a
stored call, a dict). Nothing here touches the network or the database. Numbers and Discord's size limits are in
:mod:`.text`, limit decisions in words in :mod:`.limit_text`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

import discord

from dspy_tokens import CallRecord, Group, LimitDecision, Summary, Totals

from .limit_text import limit_lines, refusal_text, soft_notice_text, status_lines, warning_text, window_label
from .text import (
    DESCRIPTION_MAX,
    EMBED_MAX,
    FIELD_NAME_MAX,
    FIELD_VALUE_MAX,
    FIELDS_MAX,
    FOOTER_MAX,
    TITLE_MAX,
    amount,
    duration,
    embed_size,
    fit,
    fit_lines,
    money,
    timestamp,
    tokens,
    truncate,
    unit,
)

__all__ = [  # the formatting helpers live in .text and .limit_text; re-exported for callers of this module
    "DESCRIPTION_MAX", "EMBED_MAX", "FIELD_NAME_MAX", "FIELD_VALUE_MAX", "FIELDS_MAX", "FOOTER_MAX", "TITLE_MAX",
    "amount", "call_line", "day_lines", "duration", "embed_size", "fit", "fit_lines", "limit_lines", "money",
    "ranked_lines", "refusal_text", "report_embed", "soft_notice_text", "stats_embed", "status_lines",
    "timestamp", "tokens",
    "totals_text", "truncate", "unit", "usage_embed", "user_label", "warning_text", "window_label"]

MEDALS = ("🥇", "🥈", "🥉")
CHART_FILENAME = "token_stats.png"
COLOR_WARN, COLOR_STOP, COLOR_INFO = discord.Color.gold(), discord.Color.red(), discord.Color.blurple()

# Field names: stable, tests and users can rely on them.
F_YOU, F_SERVER, F_BOT, F_BREAKDOWN, F_COST, F_RECENT = ("👤 You", "🏠 This server", "🌐 Whole bot", "🔎 Breakdown",
                                                         "💵 Cost", "🕘 Recent activity")
F_TOTALS, F_TOP_USERS, F_TOP_SERVERS, F_BY_MODEL, F_BY_FEATURE, F_PER_DAY = (
    "📈 Totals", "🏆 Top users", "🏰 Top servers", "🧠 By model", "🧩 By feature", "📅 Per day")

GENERIC_ERROR = "⚠️ Something went wrong on our side. It has been logged; please try again later."
# The /token-stats periods (the core's own period names) and how the embed says them.
PERIOD_LABELS = {"today": "today", "7d": "last 7 days", "30d": "last 30 days"}


# -- /token-usage --------------------------------------------------------------------------------------
def _totals_line(t: Totals) -> str:
    return f"**{tokens(t.total_tokens)}** tokens · {t.calls:,} call{'s' if t.calls != 1 else ''} · {money(t.cost_usd)}"


def usage_embed(*, subject: str, is_self: bool, user_totals: Totals, guild_totals: Totals | None,
                decision: LimitDecision | None, window_days: int, guild_name: str | None = None,
                guild_decision: LimitDecision | None = None, bypassed: bool = False,
                recent: Sequence[CallRecord] | None = None, avatar_url: str | None = None,
                this_server_only: bool = False) -> discord.Embed:
    """The /token-usage answer: the user's and the server's usage in the window against every limit.

    ``this_server_only``: another member's usage shown to a server admin — the totals and calls passed in are
    this server's only, and the member's personal limits (which count every server) show a status, no numbers.

    ``decision`` is the tracker's answer for the smallest request by this user in this server (``rules``: every
    applicable rule). When the user is bypassed (``bypassed`` or ``decision.bypassed``) it has no
    rules, and ``guild_decision`` — the answer for the server alone — supplies the server's and the bot's.
    """
    title = "🪙 Your token usage" if is_self else f"🪙 Token usage — {subject}"
    where = ", in this server only" if this_server_only else ""
    embed = discord.Embed(title=title, description=f"Last {window_days} days (UTC){where}.", color=COLOR_INFO)
    if avatar_url:
        embed.set_thumbnail(url=avatar_url)
    bypassed = bypassed or bool(decision is not None and decision.bypassed)
    source = guild_decision if bypassed and guild_decision is not None else decision
    rules = list(source.rules) if source is not None and not source.bypassed else []
    if any(d.exceeded and d.enforcement == "enforce" for d in rules):
        embed.color = COLOR_STOP
    elif any(d.warning for d in rules):
        embed.color = COLOR_WARN

    def section(totals: Totals, scope: str) -> str:
        lines = [_totals_line(totals)]
        if scope == "user" and bypassed or source is not None and source.bypassed:
            lines.append("Limit: **unlimited** (bypass)")
        else:
            scoped = [d for d in rules if d.scope == scope]
            if scope == "user" and this_server_only:
                lines += status_lines(scoped) or ["Limit: none"]
            else:
                lines += limit_lines(scoped, window_days) or ["Limit: none"]
        return fit_lines(lines)

    embed.add_field(name=F_YOU if is_self else f"👤 {subject}", value=section(user_totals, "user"), inline=False)
    if guild_totals is not None:
        name = F_SERVER if not guild_name else f"🏠 {guild_name}"
        embed.add_field(name=name, value=section(guild_totals, "guild"), inline=False)
    global_rules = [d for d in rules if d.scope == "global"]
    if global_rules:
        embed.add_field(name=F_BOT, value=fit_lines(limit_lines(global_rules, window_days)), inline=False)
    t = user_totals
    embed.add_field(name=F_BREAKDOWN, value=(
        f"Prompt **{tokens(t.prompt_tokens)}** · Completion **{tokens(t.completion_tokens)}**\n"
        f"Cached **{tokens(t.cached_tokens)}** (part of prompt) · Reasoning **{tokens(t.reasoning_tokens)}** "
        f"(part of completion)"), inline=False)
    cost = money(t.cost_usd)
    if t.unknown_cost_calls:
        n = t.unknown_cost_calls
        cost += f" + {n:,} call{'s' if n != 1 else ''} with an unknown price"
    embed.add_field(name=F_COST, value=cost, inline=False)
    if recent is not None:
        embed.add_field(name=F_RECENT, value=fit_lines([call_line(c) for c in recent], empty="No calls yet."),
                        inline=False)
    if decision is not None and decision.enforcement != "enforce" and not bypassed:
        embed.set_footer(text=f"Limits are in {decision.enforcement!r} mode: nothing is refused.")
    return fit(embed)


def call_line(call: CallRecord) -> str:
    """One line of "recent activity" from a stored call (:meth:`dspy_tokens.TokenTracker.recent_calls`)."""
    what = call["feature"] or "—"
    extra = " · cache hit" if call["cache_hit"] else (" · failed" if call["error"] else "")
    return (f"{timestamp(call['created_at'], 'f')} — {tokens(call['total_tokens'])} tokens · {truncate(what, 40)} · "
            f"{truncate(call['model'], 40)}{extra}")


# -- /token-stats --------------------------------------------------------------------------------------
def ranked_lines(groups: Sequence[Group], label, medals: bool = False) -> list[str]:
    lines = []
    for i, g in enumerate(groups):
        rank = MEDALS[i] if medals and i < len(MEDALS) else f"`{i + 1}.`"
        lines.append(f"{rank} {label(g.key)} — **{tokens(g.total_tokens)}** tokens · {money(g.cost_usd)}")
    return lines


def user_label(user_id) -> str:
    return f"<@{user_id}>"


def totals_text(t: Summary) -> str:
    text = (f"Tokens **{tokens(t.total_tokens)}** · Cost **{money(t.cost_usd)}** · Calls **{t.calls:,}** · "
            f"Active users **{t.active_users:,}**")
    if t.unknown_cost_calls:
        n = t.unknown_cost_calls
        text += f"\n{n:,} call{'s' if n != 1 else ''} with an unknown price (not in cost)"
    return text


def day_lines(days: Sequence[Group]) -> list[str]:
    """Newest day first, so a cut drops the oldest days."""
    return [f"`{g.key:%m-%d}` **{tokens(g.total_tokens)}** tokens · {money(g.cost_usd)}"
            for g in reversed(days) if g.key is not None]


def stats_embed(*, scope_label: str, period_label: str, totals: Summary, top_users: Sequence[Group],
                by_model: Sequence[Group], by_feature: Sequence[Group], top_servers: Sequence[Group] | None = None,
                days: Sequence[Group] = (), server_label=None, chart: bool = False) -> discord.Embed:
    embed = discord.Embed(title=f"📊 Token stats — {scope_label}", description=f"Period: {period_label} (UTC).",
                          color=COLOR_INFO)
    embed.add_field(name=F_TOTALS, value=totals_text(totals), inline=False)
    embed.add_field(name=F_TOP_USERS, value=fit_lines(ranked_lines(top_users, user_label), empty="No usage."),
                    inline=False)
    if top_servers is not None:
        embed.add_field(name=F_TOP_SERVERS, value=fit_lines(ranked_lines(top_servers, server_label or str),
                                                            empty="No usage."), inline=False)
    embed.add_field(name=F_BY_MODEL, value=fit_lines(ranked_lines(by_model, lambda k: f"`{k}`"), empty="No usage."),
                    inline=False)
    embed.add_field(name=F_BY_FEATURE, value=fit_lines(ranked_lines(by_feature, lambda k: f"`{k or 'other'}`"),
                                                       empty="No usage."), inline=False)
    if days:
        embed.add_field(name=F_PER_DAY, value=fit_lines(day_lines(days)), inline=False)
    if chart:
        embed.set_image(url=f"attachment://{CHART_FILENAME}")
    return fit(embed)


# -- scheduled report ----------------------------------------------------------------------------------
def report_embed(*, top_users: Sequence[Group], totals: Summary, interval_seconds: float, since: datetime,
                 now: datetime | None = None, scope_label: str | None = None) -> discord.Embed:
    """The seed's report: 🥇🥈🥉 then `4.`, tokens and cost per user, grand totals."""
    now = now or datetime.now(timezone.utc)
    head = f"Period: last {duration(interval_seconds)} (since {timestamp(since, 'f')})"
    if scope_label:
        head += f" · {scope_label}"
    ranking = ranked_lines(top_users, user_label, medals=True)
    body = fit_lines(ranking, DESCRIPTION_MAX - len(head) - 40, empty="No usage in this period.")
    embed = discord.Embed(title="📊 Token consumption report",
                          description=f"{head}\n\n**🏆 Top {len(top_users)} users**\n{body}" if top_users
                          else f"{head}\n\nNo usage in this period.",
                          color=COLOR_INFO, timestamp=now)
    embed.add_field(name=F_TOTALS, value=totals_text(totals), inline=False)
    return fit(embed)
