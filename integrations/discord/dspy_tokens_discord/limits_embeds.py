"""The ``/token-limits`` replies: effective limits, overrides and the audit trail as embeds (pure formatting).

A member's personal limits count usage in every server: to a server admin they are shown without amounts, as
``/token-usage`` does, so one server's admin never reads what someone used elsewhere.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import discord

from dspy_tokens import LimitDecision

from .text import FIELD_VALUE_MAX, fit, fit_lines, money, timestamp, truncate

COLOR = discord.Color.blurple()
_METRIC_UNITS = {"tokens": " tokens", "requests": " requests"}
HISTORY_ROWS = 10


def amount(metric: str, value: Any) -> str:
    """Tokens and requests as counts, cost rules (metric ``cost``) in dollars."""
    if value is None:
        return "?"
    return money(value) if metric not in _METRIC_UNITS else f"{int(value):,}{_METRIC_UNITS[metric]}"


def window_text(decision: LimitDecision) -> str:
    start = decision.window_start
    return {"day": "today (UTC)", "month": "this month (UTC)"}.get(decision.window or "", (
        f"since {timestamp(start, 'f')}" if start is not None else ""))


def rule_line(d: LimitDecision, *, amounts: bool = True) -> str:
    """One rule: name, used and held apart, the limit, what is left, when it frees up or runs out."""
    name = f"`{truncate(d.rule or '?', 80)}`"
    if not amounts:
        state = "⛔ used up" if d.exceeded else ("⚠️ nearly used up" if d.warning else "within the limit")
        return f"{name}: {state} (counts every server; amounts not shown)"
    line = f"{name}: {amount(d.metric, d.used)} used"
    if d.reserved:
        line += f" + {amount(d.metric, d.reserved)} held"
    line += f" of {amount(d.metric, d.limit)} {window_text(d)}".rstrip()
    if d.exceeded:
        line += " · ⛔ over" + (f", frees up {timestamp(d.resets_at)}" if d.resets_at else "")
    else:
        line += f" · **{amount(d.metric, d.remaining)}** left"
        if d.forecast_exhausted_at is not None:
            line += f" · at this pace used up {timestamp(d.forecast_exhausted_at)}"
    return line


def override_lines(override: Any) -> list[str]:
    """What an admin set for the scope (``tracker.limit_override``), or that nothing is."""
    if override is None:
        return ["None: the configured rules apply."]
    lines = []
    limits = [f"{amount('tokens', override.tokens)}" if override.tokens is not None else None,
              money(override.cost_usd) if override.cost_usd is not None else None,
              amount("requests", override.requests) if override.requests is not None else None]
    set_ = [x for x in limits if x is not None]
    if set_:
        lines.append(f"Limit: {' · '.join(set_)} per {override.window or 'configured window'}")
    if override.bypass:
        lines.append("Bypass: **on** (limits are not enforced)")
    if override.reset_at is not None:
        lines.append(f"Usage before {timestamp(override.reset_at, 'f')} does not count")
    if override.updated_at is not None:
        lines.append(f"Last change {timestamp(override.updated_at)} by {who(override.updated_by)}")
    return lines or ["None: the configured rules apply."]


def who(changed_by: str | None) -> str:
    """``discord:<id>`` as a mention (shown, never pinged: replies carry no allowed mentions)."""
    if changed_by and changed_by.startswith("discord:") and changed_by[8:].isdigit():
        return f"<@{changed_by[8:]}>"
    return f"`{discord.utils.escape_markdown(changed_by or 'unknown')}`"


def limits_embed(*, target: str, decisions: Iterable[LimitDecision], override: Any, bypassed: bool,
                 amounts_for: Sequence[str] = ("user", "guild", "global", "channel", "feature")) -> discord.Embed:
    """``/token-limits show``: the rules that apply to ``target`` now, and what is overridden for it."""
    embed = discord.Embed(title=f"🎛️ Limits for {target}", color=COLOR)
    rules = [rule_line(d, amounts=d.scope in amounts_for) for d in decisions]
    if bypassed:
        rules.insert(0, "✅ Bypassed: no limit is enforced here.")
    embed.add_field(name="Rules in force", value=fit_lines(rules, FIELD_VALUE_MAX, "No limit applies."),
                    inline=False)
    embed.add_field(name="Set at run time", value=fit_lines(override_lines(override), FIELD_VALUE_MAX),
                    inline=False)
    embed.set_footer(text="Change with /token-limits set, clear, reset or bypass.")
    return fit(embed)


def change_embed(title: str, lines: Sequence[str]) -> discord.Embed:
    """The confirmation of a change."""
    return fit(discord.Embed(title=f"✅ {title}", description="\n".join(lines), color=discord.Color.green()))


def detail_text(action: str, detail: dict) -> str:
    if action == "bypass":
        return "on" if detail.get("on") else "off"
    if action == "reset":
        return "usage before this stops counting"
    if action == "clear":
        return "back to the configured rules"
    return ", ".join(f"{k} {v}" for k, v in sorted(detail.items())) or "—"


def history_embed(*, target: str, changes: Sequence[Any]) -> discord.Embed:
    """``/token-limits history``: the latest changes first, with who made them."""
    lines = [f"{timestamp(c.changed_at, 'f')} · **{c.action}** · {detail_text(c.action, c.detail)} · "
             f"{who(c.changed_by)}" for c in changes[:HISTORY_ROWS]]
    embed = discord.Embed(title=f"📜 Limit changes for {target}", color=COLOR,
                          description=fit_lines(lines, 4000, "No change recorded."))
    return fit(embed)
