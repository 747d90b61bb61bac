"""The sentences a decision carries, fit to show the user (the Discord replies have their own wording)."""

from __future__ import annotations

from ..store.units import SCOPE_GUILD, SCOPE_USER
from .decision import LimitDecision
from .rules import DAY, MONTH, ROLLING, TOKENS, Rule


def amount_text(metric: str, value) -> str:
    return f"{value:,}" if metric == TOKENS else f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def window_text(rule: Rule) -> str:
    return {ROLLING: f"in the last {rule.days} days", DAY: "today (UTC)", MONTH: "this month (UTC)"}[rule.window]


def describe(decision: LimitDecision, rule: Rule) -> str:
    """A sentence fit to show the user."""
    who = {SCOPE_USER: "You have", SCOPE_GUILD: "This server has"}.get(decision.scope or "", "This bot has")
    if rule.model is not None:
        who += f" (model {rule.model})"
    unit = "tokens" if decision.metric == TOKENS else ""
    used = amount_text(decision.metric, decision.used + decision.reserved)
    limit = amount_text(decision.metric, decision.limit)
    head = f"{who} used {used} of {limit} {unit}".replace("  ", " ").rstrip() + f" {window_text(rule)}"
    if not decision.exceeded:
        return f"{head}; {amount_text(decision.metric, decision.remaining)} {unit}".rstrip() + " left."
    need = amount_text(decision.metric, decision.requested)
    if decision.resets_at is None:
        when = ("This request is larger than the whole limit."
                if decision.limit is not None and decision.requested > decision.limit
                else "Usage in flight must finish first; try again shortly.")
    else:
        when = f"Enough frees up at {decision.resets_at:%Y-%m-%d %H:%M} UTC."
    return f"{head}; this request needs up to {need} more. {when}"
