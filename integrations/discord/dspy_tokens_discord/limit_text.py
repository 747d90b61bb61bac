"""Limit decisions in words: the refusal, the warn-mode warning, the soft-threshold heads-up and the limit lines
of ``/token-usage``. Pure: the input is the core's :class:`dspy_tokens.LimitDecision`."""

from __future__ import annotations

from typing import Iterable

from dspy_tokens import LimitDecision

from .text import amount, timestamp, unit

_WHO = {"user": ("You have", "your"), "guild": ("This server has", "this server's"),
        "global": ("This bot has", "the bot's")}


def window_label(decision: LimitDecision, window_days: int) -> str:
    return {"rolling": f"in the last {window_days} days", "day": "today (UTC)",
            "month": "this month (UTC)"}.get(decision.window or "", "in the current window")


def _model_of(decision: LimitDecision) -> str:
    rule = decision.rule or ""
    return rule[len("models["):rule.index("]")] if rule.startswith("models[") and "]" in rule else ""


def _numbers(decision: LimitDecision, window_days: int, verb: str = "") -> str:
    """``0 of 5,000 tokens used in the last 30 days, 5,000 more held by requests in progress (released by <t:…:t>
    at the latest)``: what runs in progress hold is never called used."""
    d = decision
    text = (f"{amount(d.metric, d.used)} of {amount(d.metric, d.limit)}{unit(d.metric)}{verb} "
            f"{window_label(d, window_days)}")
    return f"{text}, {held_text(d)}" if d.reserved else text


def held_text(decision: LimitDecision) -> str:
    """``5,000 more held by requests in progress (released by <t:…:t> at the latest)``."""
    text = f"{amount(decision.metric, decision.reserved)} more held by requests in progress"
    if decision.held_until is not None:
        text += f" (released by {timestamp(decision.held_until, 't')} at the latest)"
    return text


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
    who, _ = _WHO.get(decision.scope or "global", _WHO["global"])
    model = _model_of(decision)
    whose = "your" if decision.scope == "user" else "its"
    if decision.used >= decision.limit:
        subject = f"{who} reached {whose} usage limit"
    else:  # the rest is held by requests in progress, or too small for this one: not "reached"
        subject = f"{who.replace(' has', ' does not have').replace('You have', 'You do not have')} enough left " \
                  f"in {whose} usage limit"
    subject += f" for {model}" if model else ""
    numbers = _numbers(decision, window_days, " used")
    return f"⛔ {subject}: {numbers}. {_when_free(decision)} See `/token-usage` for details."


def warning_text(decision: LimitDecision, window_days: int = 30) -> str:
    """Warn mode: the request ran although a rule would refuse it."""
    who, _ = _WHO.get(decision.scope or "global", _WHO["global"])
    numbers = _numbers(decision, window_days)
    over = {"user": "You are", "guild": "This server is"}.get(decision.scope or "", "This bot is")
    return (f"⚠️ {over} over the usage limit ({numbers}). This request went through, but such requests "
            f"may be refused once limits are enforced.")


def fallback_text(model: str) -> str:
    """The one-line notice when a request ran on a rule's fallback model instead of a refusal."""
    return f"↪️ The usage limit for the usual model is reached, so this answer came from **{model}** instead."


def soft_notice_text(decision: LimitDecision, window_days: int = 30) -> str:
    """The one-time heads-up when a soft threshold (e.g. 80%) is reached."""
    _, whose = _WHO.get(decision.scope or "global", _WHO["global"])
    percent = int(decision.ratio * 100) if decision.limit else 0
    numbers = _numbers(decision, window_days)
    state = "used or held by requests in progress" if decision.reserved else "used"
    return f"ℹ️ Heads-up: {percent}% of {whose} usage limit is {state} ({numbers}). See `/token-usage` for details."


def limit_lines(decisions: Iterable[LimitDecision], window_days: int) -> list[str]:
    lines = []
    for d in decisions:
        model = _model_of(d)
        line = (f"Limit{f' ({model})' if model else ''}: {amount(d.metric, d.used)} / "
                f"{amount(d.metric, d.limit)}{unit(d.metric)} {window_label(d, window_days)} · "
                + (f"{held_text(d)} · " if d.reserved else "") + f"**{amount(d.metric, d.remaining)}** left")
        if d.exceeded:
            line += " · ⛔ over" + (f", frees up {timestamp(d.resets_at)}" if d.resets_at else "")
        elif d.warning:
            line += " · ⚠️ nearly used up"
        if not d.exceeded and d.forecast_exhausted_at is not None:
            line += f" · at this pace used up {timestamp(d.forecast_exhausted_at)}"
        lines.append(line)
    return lines


def status_lines(decisions: Iterable[LimitDecision]) -> list[str]:
    """A member's personal limits without numbers, for a server admin: those limits count usage in every server,
    and one server's admin must not read how much someone used elsewhere."""
    lines = []
    for d in decisions:
        model = _model_of(d)
        state = "⛔ used up" if d.exceeded else ("⚠️ nearly used up" if d.warning else "within the limit")
        lines.append(f"Limit{f' ({model})' if model else ''}: {state} (counts every server; amounts not shown)")
    return lines
