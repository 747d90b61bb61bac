"""One decision from one read of the store: each rule's used / reserved / requested, the estimate cut down to
what is left when nobody gave one, when a refused request fits again, and when the recent pace reaches a limit."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from ..store.reading import Freeing, Reading, WindowRead
from ..store.units import PICO, hour_of, moment_of_hour
from .decision import LimitDecision
from .messages import describe
from .request import Request
from .rules import COST, DAY, MONTH, REQUESTS, ROLLING, TOKENS, Rule

PACE_HOURS = 3  # the forecast's burn rate: usage of the current hour and the two before it
_COLUMN = {TOKENS: 0, COST: 1, REQUESTS: 3}  # in a window sum (tokens, cost_pusd, unpriced_calls, calls)
_HELD = {TOKENS: 0, COST: 1, REQUESTS: 2}  # in a reservation sum (tokens, cost_pusd, calls)
_FREED = {TOKENS: "tokens", COST: "cost_pusd", REQUESTS: "calls"}  # the counter column a rolling window frees


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


@dataclass
class Plan:
    """What one decision reads, built once per request: per rule its window, hold and pace keys and, for a rolling
    rule, the freeing hours to ask for; and the scopes whose overrides and resets the same statement reads."""

    held: list
    windows: list[WindowRead]
    scopes: list
    keys: dict = field(default_factory=dict)  # id(rule) -> (window key, hold key, pace key, Freeing | None)


def plan(ask: Ask, scopes=()) -> Plan:
    request = ask.request
    pace_start = hour_of(ask.now) - PACE_HOURS + 1
    keys: dict = {}
    reads: dict[tuple, set] = {}
    for rule in ask.rules:
        sid = scope_id(rule, request)
        hold = (rule.scope, sid, rule.model)
        key, pace = (rule.scope, sid, rule.model, rule.start_hour(ask.now)), (rule.scope, sid, rule.model, pace_start)
        freeing = None
        if rule.window == ROLLING:
            need = {TOKENS: ask.tokens, COST: ask.cost, REQUESTS: 1}[rule.metric]
            freeing = Freeing(_FREED[rule.metric], rule.limit, need, hold)
        keys[id(rule)] = (key, hold, pace, freeing)
        reads.setdefault((key, True), set()).add(freeing)
        reads.setdefault((pace, False), set())
    windows = []
    for (key, reset), freeings in sorted(reads.items(), key=str):
        windows.append(WindowRead(key, reset))
        windows += [WindowRead(key, reset, f) for f in sorted(freeings - {None}, key=str)]
    held = sorted({k[1] for k in keys.values()}, key=str)
    wanted = sorted({(r.scope, scope_id(r, request)) for r in ask.rules} | set(scopes))
    return Plan(held, windows, wanted, keys)


def read(windows, ask: Ask, scopes=()) -> tuple[Plan, Reading]:
    """The plan of ``ask`` and its one read of the store (with the overrides of ``scopes`` besides the rules')."""
    found = plan(ask, scopes)
    return found, windows.read(found.held, found.windows, ask.store_now, found.scopes)


def decide(windows, ask: Ask, cost_of: Callable[[str | None, int], int],
           found: tuple[Plan, Reading] | None = None) -> LimitDecision:
    """``found``: the plan and reading of this very ask (:func:`read`), else the store is read here."""
    request, now = ask.request, ask.now
    the_plan, reading = found if found is not None else read(windows, ask)
    pace_start = hour_of(now) - PACE_HOURS + 1
    rows = []
    for rule in ask.rules:
        key, hold, pace, freeing = the_plan.keys[id(rule)]
        counted = list(reading.used[(key, True)])
        baseline = reading.baseline(key)
        if baseline is not None:
            counted = [max(c - b, 0) for c, b in zip(counted, baseline)]
        held = reading.reserved[hold][_HELD[rule.metric]]
        rows.append((rule, key, counted, counted[_COLUMN[rule.metric]], held, reading.used[(pace, False)], freeing))
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
    for rule, key, counted, used, held, pace, freeing in rows:
        need = need_of[rule.metric]
        exceeded = used + held + need > rule.limit
        start = reading.start(key)
        resets_at = None
        if exceeded and need <= rule.limit:
            if rule.window != ROLLING:
                resets_at = rule.calendar_reset(now)
            elif (key, freeing, need) in reading.frees:
                hour = reading.frees[(key, freeing, need)]
                resets_at = None if hour is None else rule.leaves_window(hour)
            else:  # a need the statement did not ask about (a warn rule under an estimate cut down): ask now
                resets_at = _rolling_reset(windows, rule, (*key[:3], start), used + held + need - rule.limit)
        forecast = None if exceeded else _forecast(rule, now, rule.limit - used - held,
                                                   pace[_COLUMN[rule.metric]], pace_start)
        results.append((rule, exceeded, used, held, need, counted[2], resets_at, forecast, start))
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
    for hour, value in windows.usage_by_hour(window, _FREED[rule.metric]):
        freed += value
        if freed >= must_free:
            return rule.leaves_window(hour)
    return None


def _decision(result, ask: Ask, source: str) -> LimitDecision:
    rule, exceeded, used, held, need, unpriced, resets_at, forecast, start = result
    mode = rule_mode(rule, ask.mode)
    held_until = ask.now + timedelta(seconds=ask.hold_seconds) if held else None
    soft = rule.limit > 0 and (used + held + need) >= ask.soft_ratio * rule.limit
    decision = LimitDecision(
        allowed=not exceeded or mode != "enforce", scope=rule.scope, rule=rule.key, metric=rule.metric,
        used=amount(rule.metric, used), reserved=amount(rule.metric, held), held_until=held_until,
        limit=rule.limit_value,
        requested=amount(rule.metric, need), resets_at=resets_at, window=rule.window,
        window_start=moment_of_hour(start), warning=soft or (exceeded and mode == "warn"),
        exceeded=exceeded, enforcement=mode, unknown_cost_calls=unpriced, estimate_source=source,
        forecast_exhausted_at=forecast)
    return replace(decision, message=describe(decision, rule))
