"""Pure formatting: numbers, limit decisions and usage data → text and ``discord.Embed``.

The inputs are the core's own types: :class:`dspy_tokens.Summary` (totals of a period), :class:`dspy_tokens.Group`
(a line of a ranking or breakdown), :class:`dspy_tokens.LimitDecision` and :class:`dspy_tokens.CallRecord` (a
stored call, a dict). Nothing here touches the network or the database, so every function can be tested without
a bot. Discord's limits are enforced here (title 256, description 4096, 25 fields, field name 256, value 1024,
footer 2048, 6000 in total): long lists are cut at a line boundary with "… and N more".
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Iterable, Sequence

import discord

from dspy_tokens import CallRecord, Group, LimitDecision, Summary, Totals

TITLE_MAX, DESCRIPTION_MAX, FIELDS_MAX, FIELD_NAME_MAX, FIELD_VALUE_MAX, FOOTER_MAX, EMBED_MAX = (
    256, 4096, 25, 256, 1024, 2048, 6000)
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


# -- numbers -------------------------------------------------------------------------------------------
def tokens(n: int | None) -> str:
    return "?" if n is None else f"{int(n):,}"


def money(value: Decimal | float | int | None) -> str:
    """``$12.34`` from one dollar up, ``$0.0070`` from $0.0001, then six decimals (``$0.000025``), ``<$0.000001``."""
    if value is None:
        return "?"
    value = Decimal(str(value))
    if value == 0:
        return "$0.00"
    if value >= 1:
        return f"${value.quantize(Decimal('0.01'), ROUND_HALF_UP):,}"
    if value >= Decimal("0.0001"):
        return f"${value.quantize(Decimal('0.0001'), ROUND_HALF_UP)}"
    small = value.quantize(Decimal("0.000001"), ROUND_HALF_UP)
    return "<$0.000001" if small == 0 else f"${small:f}".rstrip("0")


def amount(metric: str, value) -> str:
    return tokens(value) if metric == "tokens" else money(value)


def unit(metric: str) -> str:
    return " tokens" if metric == "tokens" else ""


def timestamp(moment: datetime, style: str = "R") -> str:
    """A Discord timestamp: every reader sees it in their own time zone (``R``: "in 3 hours")."""
    return f"<t:{int(moment.timestamp())}:{style}>"


def duration(seconds: float) -> str:
    """``86400`` → ``24 hours``; ``604800`` → ``7 days``; ``90`` → ``90 seconds``."""
    s = int(seconds)

    def plural(n, name):
        return f"{n} {name}{'s' if n != 1 else ''}"
    if s > 86400 and s % 86400 == 0:
        return plural(s // 86400, "day")
    if s >= 3600 and s % 3600 == 0:
        return plural(s // 3600, "hour")
    if s >= 60 and s % 60 == 0:
        return plural(s // 60, "minute")
    return plural(s, "second")


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def fit_lines(lines: Sequence[str], limit: int = FIELD_VALUE_MAX, empty: str = "—") -> str:
    """Join ``lines`` with newlines, keeping whole lines under ``limit`` and saying how many were left out."""
    if not lines:
        return empty
    out: list[str] = []
    for i, line in enumerate(lines):
        line = truncate(line, limit)
        rest = len(lines) - i - 1
        tail = f"\n… and {rest} more" if rest else ""
        candidate = "\n".join([*out, line])
        if len(candidate) + len(tail) <= limit:
            out.append(line)
            continue
        more = f"… and {len(lines) - i} more"
        while out and len("\n".join([*out, more])) > limit:
            out.pop()
            more = f"… and {len(lines) - len(out)} more"
        return "\n".join([*out, more])
    return "\n".join(out)


def embed_size(embed: discord.Embed) -> int:
    """What Discord counts against the 6000-character total."""
    size = len(embed.title or "") + len(embed.description or "")
    size += sum(len(f.name or "") + len(f.value or "") for f in embed.fields)
    size += len(embed.footer.text or "") + len(embed.author.name or "")
    return size


def fit(embed: discord.Embed) -> discord.Embed:
    """Enforce every embed limit: truncate each part, drop trailing fields past 25 or past 6000 in total."""
    if embed.title:
        embed.title = truncate(embed.title, TITLE_MAX)
    if embed.description:
        embed.description = truncate(embed.description, DESCRIPTION_MAX)
    fields = [(truncate(f.name or "\u200b", FIELD_NAME_MAX), truncate(f.value or "\u200b", FIELD_VALUE_MAX), f.inline)
              for f in embed.fields][:FIELDS_MAX]
    embed.clear_fields()
    for name, value, inline in fields:
        embed.add_field(name=name, value=value, inline=inline)
    if embed.footer.text:
        embed.set_footer(text=truncate(embed.footer.text, FOOTER_MAX), icon_url=embed.footer.icon_url)
    while embed_size(embed) > EMBED_MAX and embed.fields:
        embed.remove_field(len(embed.fields) - 1)
    if embed_size(embed) > EMBED_MAX and embed.description:
        over = embed_size(embed) - EMBED_MAX
        embed.description = truncate(embed.description, max(1, len(embed.description) - over))
    return embed


# -- limit decisions -----------------------------------------------------------------------------------
_WHO = {"user": ("You have", "your"), "guild": ("This server has", "this server's"),
        "global": ("This bot has", "the bot's")}


def window_label(decision: LimitDecision, window_days: int) -> str:
    return {"rolling": f"in the last {window_days} days", "day": "today (UTC)",
            "month": "this month (UTC)"}.get(decision.window or "", "in the current window")


def _model_of(decision: LimitDecision) -> str:
    rule = decision.rule or ""
    return rule[len("models["):rule.index("]")] if rule.startswith("models[") and "]" in rule else ""


def _used(decision: LimitDecision):
    return decision.used + decision.reserved


def _when_free(decision: LimitDecision) -> str:
    if decision.resets_at is not None:
        return f"It frees up {timestamp(decision.resets_at)} ({timestamp(decision.resets_at, 'f')})."
    if decision.limit is not None and decision.requested > decision.limit:
        return "This request is larger than the whole limit."
    return "Requests still in progress must finish first; try again in a moment."


def refusal_text(decision: LimitDecision, window_days: int = 30) -> str:
    """The friendly refusal: who is over (you / this server / the bot), used and limit, when it frees up."""
    if decision.scope is None or decision.limit is None:
        return f"⛔ {decision.message}"
    who, _ = _WHO.get(decision.scope or "", _WHO["global"])
    model = _model_of(decision)
    subject = f"{who} reached {'its' if decision.scope != 'user' else 'your'} usage limit" + (
        f" for {model}" if model else "")
    numbers = (f"{amount(decision.metric, _used(decision))} of {amount(decision.metric, decision.limit)}"
               f"{unit(decision.metric)} used {window_label(decision, window_days)}")
    return f"⛔ {subject}: {numbers}. {_when_free(decision)} See `/token-usage` for details."


def warning_text(decision: LimitDecision, window_days: int = 30) -> str:
    """Warn mode: the request ran although a rule would refuse it."""
    who, _ = _WHO.get(decision.scope or "", _WHO["global"])
    numbers = (f"{amount(decision.metric, _used(decision))} of {amount(decision.metric, decision.limit)}"
               f"{unit(decision.metric)} {window_label(decision, window_days)}")
    over = {"user": "You are", "guild": "This server is"}.get(decision.scope or "", "This bot is")
    return (f"⚠️ {over} over the usage limit ({numbers}). This request went through, but such requests "
            f"may be refused once limits are enforced.")


def soft_notice_text(decision: LimitDecision, window_days: int = 30) -> str:
    """The one-time heads-up when a soft threshold (e.g. 80%) is reached."""
    _, whose = _WHO.get(decision.scope or "", _WHO["global"])
    percent = int(decision.ratio * 100) if decision.limit else 0
    numbers = (f"{amount(decision.metric, _used(decision))} of {amount(decision.metric, decision.limit)}"
               f"{unit(decision.metric)} {window_label(decision, window_days)}")
    return f"ℹ️ Heads-up: {percent}% of {whose} usage limit is used ({numbers}). See `/token-usage` for details."


def limit_lines(decisions: Iterable[LimitDecision], window_days: int) -> list[str]:
    lines = []
    for d in decisions:
        model = _model_of(d)
        line = (f"Limit{f' ({model})' if model else ''}: {amount(d.metric, _used(d))} / "
                f"{amount(d.metric, d.limit)}{unit(d.metric)} {window_label(d, window_days)} · "
                f"**{amount(d.metric, d.remaining)}** left")
        if d.exceeded:
            line += " · ⛔ over" + (f", frees up {timestamp(d.resets_at)}" if d.resets_at else "")
        elif d.warning:
            line += " · ⚠️ nearly used up"
        lines.append(line)
    return lines


# -- /token-usage --------------------------------------------------------------------------------------
def _totals_line(t: Totals) -> str:
    return f"**{tokens(t.total_tokens)}** tokens · {t.calls:,} call{'s' if t.calls != 1 else ''} · {money(t.cost_usd)}"


def usage_embed(*, subject: str, is_self: bool, user_totals: Totals, guild_totals: Totals | None,
                decision: LimitDecision | None, window_days: int, guild_name: str | None = None,
                guild_decision: LimitDecision | None = None, bypassed: bool = False,
                recent: Sequence[CallRecord] | None = None, avatar_url: str | None = None) -> discord.Embed:
    """The /token-usage answer: the user's and the server's usage in the window against every limit.

    ``decision`` is the tracker's answer for the smallest request by this user in this server (``rules``: every
    applicable rule). When the user is bypassed (``bypassed`` or ``decision.bypassed``) it has no
    rules, and ``guild_decision`` — the answer for the server alone — supplies the server's and the bot's.
    """
    title = "🪙 Your token usage" if is_self else f"🪙 Token usage — {subject}"
    embed = discord.Embed(title=title, description=f"Last {window_days} days (UTC).", color=COLOR_INFO)
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

