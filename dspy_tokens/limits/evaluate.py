"""One decision from one read of the store: each rule's used / reserved / requested, the estimate cut down to
what is left when nobody gave one, when a refused request fits again, and when the recent pace reaches a limit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from ..store.units import PICO, hour_of, moment_of_hour
from .decision import LimitDecision
from .messages import describe
from .request import Request
from .rules import COST, DAY, MONTH, REQUESTS, ROLLING, TOKENS, Rule

PACE_HOURS = 3  # the forecast's burn rate: usage of the current hour and the two before it
_COLUMN = {TOKENS: 0, COST: 1, REQUESTS: 3}  # in a window sum (tokens, cost_pusd, unpriced_calls, calls)
_HELD = {TOKENS: 0, COST: 1, REQUESTS: 2}  # in a reservation sum (tokens, cost_pusd, calls)


@dataclass
class Ask:
    """What is being decided; ``sized_*`` are what a reservation holds once :func:`decide` has bounded them."""

    request: Request
    rules: list[Rule]
    tokens: int
    cost: int
    source: str
    now: datetime  # the windows' clock
    store_now: datetime | None  # None: reservations expire on the database's clock
    mode: str
    soft_ratio: float
    resets: dict = field(default_factory=dict)  # (scope, scope_id) -> (reset hour, {model or "": baseline})
    sized_tokens: int = 0
    sized_cost: int = 0
    hold_seconds: int = 600  # a reservation's time to live: no hold counted now outlasts now + this


def amount(metric: str, value: int) -> int | Decimal:
    return value if metric != COST else (Decimal(value) / PICO).normalize()


def scope_id(rule: Rule, request: Request) -> int:
    return rule.scope_id(request.user_id, request.guild_id, request.channel_id, request.feature)


def lock_keys(ask: Ask) -> list[tuple[str, int]]:
    return sorted({(r.scope, scope_id(r, ask.request)) for r in ask.rules})


def rule_mode(rule: Rule, mode: str) -> str:
    return "warn" if rule.enforcement == "warn" and mode == "enforce" else mode


def _window(rule: Rule, ask: Ask) -> tuple[tuple, tuple | None]:
    """The rule's window key, and the reset baseline to subtract when a usage reset falls inside it."""
    sid = scope_id(rule, ask.request)
    start = rule.start_hour(ask.now)
    reset = ask.resets.get((rule.scope, sid))
    if reset is not None and reset[0] >= start:
        return (rule.scope, sid, rule.model, reset[0]), reset[1].get(rule.model or "")
    return (rule.scope, sid, rule.model, start), None


def decide(windows, ask: Ask, cost_of: Callable[[str | None, int], int]) -> LimitDecision:
    request, now = ask.request, ask.now
    held_keys = sorted({(r.scope, scope_id(r, request), r.model) for r in ask.rules}, key=str)
    found = {id(r): _window(r, ask) for r in ask.rules}
    pace_start = hour_of(now) - PACE_HOURS + 1
    pace_keys = {id(r): (r.scope, scope_id(r, request), r.model, pace_start) for r in ask.rules}
    keys = sorted({k for k, _ in found.values()} | set(pace_keys.values()), key=str)
    reserved, sums = windows.read(held_keys, keys, ask.store_now)
    rows = []
    for rule in ask.rules:
        key, baseline = found[id(rule)]
        counted = list(sums[key])
        if baseline is not None:
            counted = [max(c - b, 0) for c, b in zip(counted, baseline)]
        held = reserved[(rule.scope, scope_id(rule, request), rule.model)][_HELD[rule.metric]]
        rows.append((rule, key, counted, counted[_COLUMN[rule.metric]], held, sums[pace_keys[id(rule)]]))
    tokens, cost, source = ask.tokens, ask.cost, ask.source
    if source != "given":  # an estimate nobody asked for is cut down to what the enforced limits leave
        enforced = [r for r in rows if rule_mode(r[0], ask.mode) == "enforce"]
        left = [r[0].limit - r[3] - r[4] for r in enforced if r[0].metric == TOKENS]
        if left and tokens > min(left):
            tokens, source = max(min(left), 1), "left"
            cost = cost_of(request.model, tokens)
        left = [r[0].limit - r[3] - r[4] for r in enforced if r[0].metric == COST]
        if left and cost > min(left):
            cost, source = max(min(left), 1), "left"
    ask.sized_tokens, ask.sized_cost = tokens, cost
    need_of = {TOKENS: tokens, COST: cost, REQUESTS: 1}
    results = []
    for rule, key, counted, used, held, pace in rows:
        need = need_of[rule.metric]
        exceeded = used + held + need > rule.limit
        resets_at = None
        if exceeded and need <= rule.limit:
            resets_at = (_rolling_reset(windows, rule, key, used + held + need - rule.limit)
                         if rule.window == ROLLING else rule.calendar_reset(now))
        forecast = None if exceeded else _forecast(rule, now, rule.limit - used - held,
                                                   pace[_COLUMN[rule.metric]], pace_start)
        results.append((rule, exceeded, used, held, need, counted[2], resets_at, forecast))
    refusing = [r for r in results if r[1] and rule_mode(r[0], ask.mode) == "enforce"]
    # Report the refusing rule (the one freeing up last), else the rule closest to its limit.
    if refusing:
        chosen = max(refusing, key=lambda r: r[6] or datetime.max.replace(tzinfo=timezone.utc))
    else:
        chosen = max(results, key=lambda r: (r[2] + r[3] + r[4]) / r[0].limit if r[0].limit else 1.0)
    decisions = [_decision(r, ask, source) for r in results]
    main = decisions[results.index(chosen)]
    return replace(main, others=tuple(d for d in decisions if d is not main))


FORECAST_HORIZON = timedelta(days=3650)


def _forecast(rule: Rule, now: datetime, left: int, recent: int, pace_start: int) -> datetime | None:
    """When the limit is reached if usage goes on at the pace of the last :data:`PACE_HOURS` hours."""
    elapsed = (now - moment_of_hour(pace_start)).total_seconds()
    if recent <= 0 or elapsed <= 0 or left <= 0:
        return None
    seconds = left * elapsed / recent
    if seconds >= FORECAST_HORIZON.total_seconds():
        return None  # not within any horizon worth telling (and beyond datetime's range for huge limits)
    at = now + timedelta(seconds=seconds)
    if rule.window in (DAY, MONTH) and at >= rule.calendar_reset(now):
        return None  # the window starts again first
    return at


def _rolling_reset(windows, rule: Rule, window: tuple, must_free: int) -> datetime | None:
    """When enough of the oldest usage has left the window to fit the request (None: never by itself)."""
    freed = 0
    column = {TOKENS: "tokens", COST: "cost_pusd", REQUESTS: "calls"}[rule.metric]
    for hour, value in windows.usage_by_hour(window, column):
        freed += value
        if freed >= must_free:
            return rule.leaves_window(hour)
    return None


def _decision(result, ask: Ask, source: str) -> LimitDecision:
    rule, exceeded, used, held, need, unpriced, resets_at, forecast = result
    mode = rule_mode(rule, ask.mode)
    held_until = ask.now + timedelta(seconds=ask.hold_seconds) if held else None
    soft = rule.limit > 0 and (used + held + need) >= ask.soft_ratio * rule.limit
    decision = LimitDecision(
        allowed=not exceeded or mode != "enforce", scope=rule.scope, rule=rule.key, metric=rule.metric,
        used=amount(rule.metric, used), reserved=amount(rule.metric, held), held_until=held_until,
        limit=rule.limit_value,
        requested=amount(rule.metric, need), resets_at=resets_at, window=rule.window,
        window_start=moment_of_hour(_window(rule, ask)[0][3]), warning=soft or (exceeded and mode == "warn"),
        exceeded=exceeded, enforcement=mode, unknown_cost_calls=unpriced, estimate_source=source,
        forecast_exhausted_at=forecast)
    return replace(decision, message=describe(decision, rule))
