"""The sentences a decision carries, fit to show the user (the Discord replies have their own wording). What was
really used and what runs in progress hold are told apart."""

from __future__ import annotations

from ..store.units import SCOPE_CHANNEL, SCOPE_FEATURE, SCOPE_GUILD, SCOPE_USER
from .decision import LimitDecision
from .rules import COST, DAY, MONTH, REQUESTS, ROLLING, Rule

_UNIT = {COST: "", REQUESTS: "requests"}


def amount_text(metric: str, value) -> str:
    if metric != COST:
        return f"{value:,}"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def window_text(rule: Rule) -> str:
    if rule.window == ROLLING:
        hours = rule.window_hours
        count, unit = (hours // 24, "day") if hours % 24 == 0 else (hours, "hour")
        return f"in the last {count} {unit}{'s' if count != 1 else ''}"
    return {DAY: "today (UTC)", MONTH: "this month (UTC)"}[rule.window]


def describe(decision: LimitDecision, rule: Rule) -> str:
    """A sentence fit to show the user."""
    who = {SCOPE_USER: "You have", SCOPE_GUILD: "This server has", SCOPE_CHANNEL: "This channel has",
           SCOPE_FEATURE: "This feature has"}.get(decision.scope or "", "This bot has")
    if rule.model is not None:
        who += f" (model {rule.model})"
    unit = _UNIT.get(decision.metric, "tokens")
    used = amount_text(decision.metric, decision.used)
    limit = amount_text(decision.metric, decision.limit)
    head = f"{who} used {used} of {limit} {unit}".replace("  ", " ").rstrip() + f" {window_text(rule)}"
    if decision.reserved:
        head += f" ({amount_text(decision.metric, decision.reserved)} more held by runs in progress)"
    if not decision.exceeded:
        text = f"{head}; {amount_text(decision.metric, decision.remaining)} {unit}".rstrip() + " left."
        if decision.estimate_source == "left":
            text += f" This request was sized to what is left ({amount_text(decision.metric, decision.requested)})."
        if decision.forecast_exhausted_at is not None:
            text += f" At this pace the limit is reached at {decision.forecast_exhausted_at:%Y-%m-%d %H:%M} UTC."
        return text
    need = amount_text(decision.metric, decision.requested)
    if decision.resets_at is None:
        when = ("This request is larger than the whole limit." if decision.limit is not None and decision.requested > decision.limit
                else "Usage in flight must finish first; try again shortly." if decision.reserved
                else "Nothing frees up by itself; ask an administrator.")
    else:
        when = f"Enough frees up at {decision.resets_at:%Y-%m-%d %H:%M} UTC."
    return f"{head}; this request needs up to {need} more. {when}"
