"""What each page and API call reads, through the tracker's public report API only (the rollups answer; no
call here scans the raw rows except a session's own calls and the latest few thousand for recent sessions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from dspy_tokens import Group, Summary, TokenTracker
from dspy_tokens.reports import BREAKDOWNS

from .params import Scope

#: Breakdown tables beside "model"; "request_type" joins by itself once the reports API knows that dimension.
TABLE_DIMENSIONS = tuple(d for d in ("model", "request_type", "feature") if d in BREAKDOWNS)
CHART_MODELS = 7  # the chart stacks this many models; the rest are one "other" segment
OTHER = "(other models)"


def summary(tracker: TokenTracker, scope: Scope) -> Summary:
    return tracker.summary(**scope.range, **scope.filters)


def breakdown(tracker: TokenTracker, by: str, scope: Scope, limit: int | None = None) -> list[Group]:
    return tracker.breakdown(by, **scope.range, **scope.filters, limit=limit)


def top(tracker: TokenTracker, scope_name: str, scope: Scope, n: int = 10, by: str = "cost") -> list[Group]:
    return tracker.top(n, by, scope_name, **scope.range, **scope.filters)


@dataclass(frozen=True)
class DailySeries:
    """One entry per UTC day of the range (days without calls included), each split by model."""

    days: list[date]
    totals: dict[date, Group]  # days with calls
    models: list[str]  # stacking order: largest first, OTHER last when present
    parts: dict[tuple[date, str], Group]  # (day, model) -> totals


def daily(tracker: TokenTracker, scope: Scope, split: str = "model", now: datetime | None = None) -> DailySeries:
    days = tracker.breakdown("day", **scope.range, **scope.filters)
    parts = tracker.breakdown(("day", split), **scope.range, **scope.filters)
    totals = {g.key: g for g in days}
    start, end = tracker.reports.bounds(**scope.range)
    today = (now or datetime.now(timezone.utc)).date()
    first = start.date() if start is not None else min(totals, default=today)
    last = (end - timedelta(microseconds=1)).date() if end is not None else max(today, max(totals, default=today))
    last = min(last, max(today, max(totals, default=today)))  # the rest of a month has no bars yet
    span = [first + timedelta(days=i) for i in range((last - first).days + 1)] if first <= last else []
    weight: dict[str, int] = {}
    for g in parts:
        weight[g.key[1]] = weight.get(g.key[1], 0) + g.total_tokens
    ranked = sorted(weight, key=lambda m: (-weight[m], str(m)))
    kept = set(ranked[:CHART_MODELS]) if len(ranked) > CHART_MODELS + 1 else set(ranked)
    merged: dict[tuple[date, str], Group] = {}
    for g in parts:
        name = g.key[1] if g.key[1] in kept else OTHER
        key = (g.key[0], name if name is not None else "(none)")
        merged[key] = g if key not in merged else _add(merged[key], g, key)
    models = [m if m is not None else "(none)" for m in ranked if m in kept]
    if len(kept) < len(ranked):
        models.append(OTHER)
    return DailySeries(span, totals, models, merged)


def _add(a: Group, b: Group, key) -> Group:
    fields = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
              "cost_usd", "unknown_cost_calls", "cache_hits", "errors")
    return Group(by=a.by, key=key, **{f: getattr(a, f) + getattr(b, f) for f in fields})
