"""Periods (all UTC) and how a range is cut into spans the store can answer cheaply.

Calendar periods are the whole UTC calendar unit that contains now: ``"today"`` is ``[00:00, next 00:00)``,
``"week"`` ``[Monday 00:00, next Monday 00:00)``, ``"month"`` ``[the 1st 00:00, the next 1st 00:00)``.
``"all"`` / ``None`` is everything. A ``timedelta`` (or ``"7d"``, ``"24h"``) is rolling and open-ended: every row
from ``now - delta`` on. ``since=`` / ``until=`` give an explicit half-open range ``[since, until)`` (UTC-aware
datetimes, or dates meaning 00:00 UTC; either may be omitted); ``since`` excludes ``period``, ``until`` overrides
a calendar period's end. A row belongs to a range when ``since <= created_at < until``: a call at
23:59:59.999999 yesterday is not "today", one at 00:00:00 is.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from typing import Union

from ..store.spans import RAW, Span
from ..store.units import (
    GRAIN_DAY,
    GRAIN_HOUR,
    GRAIN_MONTH,
    date_of_day,
    day_of,
    day_of_month,
    hour_of,
    midnight_of_day,
    moment_of_hour,
    month_of,
)

PERIODS = ("today", "week", "month", "all")
#: What ``period=`` takes: ``"today" | "week" | "month" | "all" | None``, a ``timedelta``, or ``"7d"``/``"24h"``.
Period = Union[str, timedelta, None]
#: What ``since=``/``until=`` take: a UTC-aware ``datetime``, a ``date`` (00:00 UTC), or None (unbounded).
Moment = Union[datetime, date, None]
#: An id filter (``user_id=``, ``guild_id=``): an int or a string of digits (see :func:`dspy_tokens.parse_id`).
IdFilter = Union[int, str, None]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def parse_period(period):
    """``"today" | "week" | "month" | "all" | None``, a ``timedelta``, or ``"<N>d"`` / ``"<N>h"`` (rolling)."""
    if period is None or isinstance(period, timedelta) or period in PERIODS:
        return period
    match = re.fullmatch(r"\s*(\d+)\s*([dh])\s*", str(period))
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"period {period!r} is not one of {', '.join(PERIODS)}, or a rolling length "
                         "like 7d or 24h")
    amount = int(match.group(1))
    return timedelta(days=amount) if match.group(2) == "d" else timedelta(hours=amount)


def _aware(name: str, value) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{name}={value!r} is naive; pass a timezone-aware datetime (e.g. tzinfo=timezone.utc)")
        return value.astimezone(timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, dtime(), timezone.utc)
    raise ValueError(f"{name} must be a datetime or a date, got {value!r}")


def period_bounds(period=None, since=None, until=None, now: datetime | None = None):
    """The UTC range ``(since, until)`` a period means (None = unbounded); see the module docstring."""
    period = parse_period(period)
    if period is not None and since is not None:
        raise ValueError("give either a period or since=, not both")
    now = (now or utc_now()).astimezone(timezone.utc)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = None, None
    if isinstance(period, timedelta):
        if period <= timedelta(0):
            raise ValueError(f"a rolling period must be positive, got {period}")
        start = now - period
    elif period == "today":
        start, end = midnight, midnight + timedelta(days=1)
    elif period == "week":
        start = midnight - timedelta(days=now.weekday())
        end = start + timedelta(days=7)
    elif period == "month":
        start = midnight.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        start = _aware("since", since)
    if until is not None:
        end = _aware("until", until)
    if start is not None and end is not None and start > end:
        raise ValueError(f"since ({start.isoformat()}) is after until ({end.isoformat()})")
    return start, end


def plan_spans(since: datetime | None, until: datetime | None, months: bool = True,
               now: datetime | None = None, subtract: bool = True, hours: bool = False) -> list[Span]:
    """Cut ``[since, until)`` into partial days, whole months (if allowed) and whole days.

    Every piece is read whichever way reads less: a partial day as its raw rows, or as its day bucket *minus* the
    raw rows of the day outside the range (a span with ``sign`` -1); a month the range covers only in part as its
    covered days, or as the month bucket minus its other days. The 30 days up to the 3rd are then last month minus
    its first three days plus this month (three day buckets instead of 27); a rolling week starting at 09:00 is
    that day minus its first nine hours of rows. Nothing after ``now`` has rows, so it costs nothing: ``today``
    stays one day bucket and ``week`` may be its month minus the days to come. ``subtract`` False: no span is
    subtracted (partial days are their raw rows, months their days).

    ``hours`` (where hour rollups answer: a total, or one of ``HOUR_DIMENSIONS``): a partial day is its whole
    hours as hour buckets (or its day bucket minus the hours outside it, whichever reads fewer buckets), and its
    partial hours as their raw rows or as their hour bucket minus the raw rows outside them: at most an hour of raw
    rows per range."""

    def length(lo: datetime, hi: datetime) -> timedelta:  # how much of [lo, hi) can hold rows
        return max(timedelta(0), (hi if now is None else min(hi, now)) - lo)

    def partial(lo: datetime, hi: datetime, start: datetime, stop: datetime, sign: int,
                bucket: Span) -> list[Span]:
        """``[lo, hi)`` of the bucket ``[start, stop)``: its raw rows, or the bucket minus the raw rows outside."""
        outside = [(a, b) for a, b in ((start, lo), (hi, stop)) if a < b]
        if not subtract or sum((length(a, b) for a, b in outside), timedelta(0)) >= length(lo, hi):
            return [Span(RAW, lo, hi, sign)]
        return [bucket] + [Span(RAW, a, b, -sign) for a, b in outside]

    def by_hours(lo: datetime, hi: datetime, sign: int) -> list[Span]:
        """``[lo, hi)`` (within one day) as whole hour buckets and its partial hours."""
        first, last = hour_of(lo) + (lo != moment_of_hour(hour_of(lo))), hour_of(hi)
        if first > last:  # inside one hour
            return partial(lo, hi, moment_of_hour(last), moment_of_hour(last + 1), sign,
                           Span(GRAIN_HOUR, last, last + 1, sign))
        spans = [] if first == last else [Span(GRAIN_HOUR, first, last, sign)]
        if lo < moment_of_hour(first):
            spans += partial(lo, moment_of_hour(first), moment_of_hour(first - 1), moment_of_hour(first), sign,
                             Span(GRAIN_HOUR, first - 1, first, sign))
        if moment_of_hour(last) < hi:
            spans += partial(moment_of_hour(last), hi, moment_of_hour(last), moment_of_hour(last + 1), sign,
                             Span(GRAIN_HOUR, last, last + 1, sign))
        return spans

    def buckets(spans: list[Span]) -> int:  # hour buckets read; hours after now hold nothing yet
        limit = None if now is None else hour_of(now) + 1
        return sum(max(0, (s.hi if limit is None else min(s.hi, limit)) - s.lo) for s in spans
                   if s.kind == GRAIN_HOUR)

    def partial_day(day: int, lo: datetime, hi: datetime) -> tuple[bool, list[Span]]:
        """The range's part ``[lo, hi)`` of ``day``: (whether the day's bucket is read, the spans beside it)."""
        start, stop = midnight_of_day(day), midnight_of_day(day + 1)
        if not hours:
            parts = partial(lo, hi, start, stop, 1, Span(GRAIN_DAY, day, day + 1))
            taken = parts[0].kind == GRAIN_DAY  # the caller reads the day bucket with the whole days
            return taken, parts[1:] if taken else parts
        inside = by_hours(lo, hi, 1)
        if subtract:
            outside = [span for a, b in ((start, lo), (hi, stop)) if a < b for span in by_hours(a, b, -1)]
            if buckets(outside) + 1 < buckets(inside):
                return True, outside
        return False, inside

    if since is not None and until is not None and day_of(since) == day_of(until - timedelta(microseconds=1)):
        day = day_of(since)
        if (since, until) != (midnight_of_day(day), midnight_of_day(day + 1)):  # inside one day
            taken, parts = partial_day(day, since, until)
            return ([Span(GRAIN_DAY, day, day + 1)] if taken else []) + parts
    spans: list[Span] = []
    first_day = end_day = None
    if since is not None:
        first_day = day_of(since)
        if since != midnight_of_day(first_day):
            taken, edge = partial_day(first_day, since, midnight_of_day(first_day + 1))
            spans += edge
            first_day += 0 if taken else 1
    if until is not None:
        end_day = day_of(until)
        if until != midnight_of_day(end_day):
            taken, edge = partial_day(end_day, midnight_of_day(end_day), until)
            spans += edge
            end_day += 1 if taken else 0
    if first_day is not None and end_day is not None and first_day >= end_day:
        return spans  # no whole day between the two partial days
    if not months:
        return spans + [Span(GRAIN_DAY, first_day, end_day)]
    return spans + _month_plan(first_day, end_day, None if now is None else day_of(now), subtract)


def _month_plan(first_day: int | None, end_day: int | None, today: int | None, subtract: bool) -> list[Span]:
    """Whole days ``[first_day, end_day)`` (None: unbounded) as month buckets plus or minus day buckets."""

    def cost(lo: int, hi: int) -> int:  # day buckets read; days after today hold nothing yet
        return max(0, (hi if today is None else min(hi, today + 1)) - lo)

    def month_is_cheaper(outside: int, inside: int) -> bool:  # the month bucket itself costs about a day
        return subtract and outside + 1 < inside

    head = None if first_day is None else month_of(date_of_day(first_day))
    tail = None if end_day is None else month_of(date_of_day(end_day - 1))  # the month of the last day
    days: list[Span] = []
    lo_month, hi_month = head, None if tail is None else tail + 1
    if head is not None and head == tail:  # one month: its days, or the month minus the days around them
        start, stop = day_of_month(head), day_of_month(head + 1)
        assert first_day is not None and end_day is not None
        if month_is_cheaper(cost(start, first_day) + cost(end_day, stop), cost(first_day, end_day)):
            return [Span(GRAIN_MONTH, head, head + 1)] + [
                Span(GRAIN_DAY, lo, hi, -1) for lo, hi in ((start, first_day), (end_day, stop)) if lo < hi]
        return [Span(GRAIN_DAY, first_day, end_day)]
    if head is not None and first_day is not None and first_day != day_of_month(head):
        start, stop = day_of_month(head), day_of_month(head + 1)
        if month_is_cheaper(cost(start, first_day), cost(first_day, stop)):
            days.append(Span(GRAIN_DAY, start, first_day, -1))
        else:
            days.append(Span(GRAIN_DAY, first_day, stop))
            lo_month = head + 1
    if tail is not None and end_day is not None and end_day != day_of_month(tail + 1):
        start, stop = day_of_month(tail), day_of_month(tail + 1)
        if month_is_cheaper(cost(end_day, stop), cost(start, end_day)):
            days.append(Span(GRAIN_DAY, end_day, stop, -1))
        else:
            days.append(Span(GRAIN_DAY, start, end_day))
            hi_month = tail
    if today is not None and end_day is None and lo_month is not None and lo_month > month_of(date_of_day(today)):
        # Open-ended from a day of this month: one open span of day buckets, not the months to come.
        return [Span(GRAIN_DAY, span.lo, None) if span.sign > 0 else span for span in days]
    if lo_month is not None and hi_month is not None and lo_month >= hi_month:
        return days
    return [Span(GRAIN_MONTH, lo_month, hi_month)] + days
