"""The sentences a decision carries, fit to show the user (the Discord replies have their own wording). What was
really used and what runs in progress hold are told apart."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..store.units import SCOPE_CHANNEL, SCOPE_FEATURE, SCOPE_GUILD, SCOPE_USER
from .decision import LimitDecision
from .rules import COST, DAY, MONTH, REQUESTS, ROLLING, Rule

_UNIT = {COST: "", REQUESTS: "requests"}


def amount_text(metric: str, value) -> str:
    if metric != COST:
        return f"{value:,}"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def clock_text(moment: datetime, now: datetime | None = None) -> str:
    """``14:05 UTC`` (the date too when it is not today), rounded up to the minute so "by" holds."""
    up = moment.replace(second=0, microsecond=0) + (timedelta(minutes=1) if moment.second or moment.microsecond
                                                     else timedelta())
    today = (now or datetime.now(timezone.utc)).date()
    return f"{up:%H:%M} UTC" if up.date() == today else f"{up:%Y-%m-%d %H:%M} UTC"


def held_text(decision: LimitDecision) -> str:
    """``5,000 more are held by requests in progress (released by 14:05 UTC at the latest)``."""
    count = decision.reserved
    text = f"{amount_text(decision.metric, count)} more {'is' if count == 1 else 'are'} held by requests in progress"
    if decision.held_until is not None:
        text += f" (released by {clock_text(decision.held_until)} at the latest)"
    return text


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
    if not decision.exceeded:
        left = f"{amount_text(decision.metric, decision.remaining)} {unit}".rstrip()
        text = _then(decision, head, f"{left} left.")
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
    return _then(decision, head, f"this request needs up to {need} more. {when}")


def _then(decision: LimitDecision, head: str, rest: str) -> str:
    """``head; rest``, or — what runs in progress hold is never called used — ``head; held. Rest``."""
    if not decision.reserved:
        return f"{head}; {rest}"
    return f"{head}; {held_text(decision)}. {rest[0].upper()}{rest[1:]}"
