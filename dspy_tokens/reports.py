"""Reports over the usage database: summaries, breakdowns, top spenders, sessions, exports and retention.

    reports = Reports(Store("sqlite:///usage.db"))      # or tracker.summary(...), tracker.top(...), ...
    reports.summary("month")                            # Summary(calls=..., cost_usd=Decimal(...), ...)
    reports.breakdown("feature", "week")                # [Group(key="setup_help", ...), ...]
    reports.top(10, by="cost", period="month")          # the ten users who cost most this month
    reports.export("csv", "usage.csv", anonymize=True)  # streamed, constant memory
    reports.cleanup(older_than_days=90)                 # raw rows go; the rollups stay

Every method reads (or, for cleanup, writes) the database on the calling thread: they are reports, not the LM
hot path. From async code use ``await asyncio.to_thread(tracker.summary, "today")``.

Periods (all UTC)
-----------------
Calendar periods are the whole UTC calendar unit that contains now: ``"today"`` is ``[00:00, next 00:00)``,
``"week"`` ``[Monday 00:00, next Monday 00:00)``, ``"month"`` ``[the 1st 00:00, the next 1st 00:00)``.
``"all"`` / ``None`` is everything. A ``timedelta`` (or ``"7d"``, ``"24h"``) is rolling and open-ended: every row
from ``now - delta`` on. ``since=`` / ``until=`` give an explicit half-open range ``[since, until)`` (UTC-aware
datetimes, or dates meaning 00:00 UTC; either may be omitted); ``since`` excludes ``period``, ``until`` overrides
a calendar period's end. A row belongs to a range when ``since <= created_at < until``: a call at
23:59:59.999999 yesterday is not "today", one at 00:00:00 is.

Money
-----
Costs are ``Decimal`` everywhere. Sums are exact: the rollups keep integer picodollars, and raw rows are summed
as ``SUM(CAST(ROUND(cost_usd * 1e12) AS INTEGER))`` — on SQLite, where ``cost_usd`` is a float, each value
converts exactly to its picodollars (the stored double is the nearest one to a 12-place decimal), then the
integer sum is exact; a float ``SUM`` quantized afterwards accumulates rounding error over millions of rows.
Calls with no known price are never counted as $0: ``cost_usd`` is the cost of the priced calls and
``unknown_cost_calls`` says how many calls are missing from it (failed calls are counted in ``errors``).

How it stays fast at 10M rows
-----------------------------
The writer maintains, in the same transaction as the rows (see :mod:`dspy_tokens.rollups`):

* ``token_usage_rollups`` — totals per (scope, key) per UTC day and per UTC calendar month, for the scopes
  global, user, guild, model and feature;
* ``token_usage_daily`` — the daily cube keyed by (day, user, guild, model, feature).

A query's range ``[since, until)`` is cut into whole months, whole days and the partial days at its ends.
Whole months and days are read from the rollups; only the partial days (rolling periods, or explicit bounds
that are not at 00:00 UTC) read raw rows. Which table answers depends on the filters and the grouping:

* no filter, or one filter, grouped by nothing, by that same dimension or by day: ``token_usage_rollups``.
  A calendar day or month is one bucket, holding one row per key, so ``summary("month")`` reads one global row
  and counts one bucket of user rows, and ``top(10, period="month")`` reads one bucket of user rows and keeps
  the ten largest — no aggregation at all;
* two or more dimensions among filters and grouping (e.g. by model for one user): the daily cube;
* ``by="session"``, :meth:`Reports.session` and exports: the raw rows (indexes on time, user, guild, session).

A top-N over several buckets or spans (a week of days, a rolling window) first ranks the keys on the one
measure it sorts by, then reads every measure for the N winners only. The limits' hourly counters cannot serve
reports: they lack the token detail, and a month of per-user hours is nearly as many rows as calls at 10M rows.
Measured (``python -m benchmarks.bench_reports``, 10M rows, 10k users): ``summary("month")`` ~1 ms and
``top(10, period="month")`` ~2 ms on SQLite, where the GROUP BY over the month's raw rows takes 3–13 s. The price
is paid by the background writer: a batch upserts one rollup row per (grain, scope, key) and one cube row per
(day, user, guild, model, feature) it touches, which roughly halves its rows/s on SQLite and MariaDB (−30% on
PostgreSQL, where the upserts are multi-row statements) — still thousands of rows per second.

Active users come from the user rollups (no filter), are 0/1 with a user filter, and otherwise are counted
in the daily cube — which scans one day-row per (user, guild, model, feature) in the period, so
``summary(model=...)`` at 10M rows is slower than the unfiltered one.

Retention
---------
:meth:`Reports.cleanup` deletes raw rows older than N days (the cutoff is floored to the hour, so whole hours go,
as the counters' rebuild expects) in batches of ids picked oldest first through the ``created_at`` index, each
batch its own short transaction, and prunes the hourly limit counters older than
``max(N, keep_counters_days)`` days (the limits never look further back than their window). What survives,
forever: ``token_usage_daily`` and ``token_usage_rollups``, so summaries, breakdowns by user/guild/model/feature/
day and top-N of old periods still answer, at one-day resolution. What is gone for old periods: sessions, the
per-call rows (exports), and partial-day precision.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import secrets
import time
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, time as dtime, timedelta, timezone
from decimal import Decimal
from json.encoder import encode_basestring
from pathlib import Path
from typing import Callable, Iterable

from .db import write_transaction
from .rollups import (DAY, DIMENSIONS, MEASURES, MONTH, NO_ID, date_of_day, day_of, day_of_month, month_of,
                      pico_sql, raw_measures_sql, summed_measures_sql, text_sql)
from .schema import PICO
from .store import ROW_COLUMNS, Store

PERIODS = ("today", "week", "month", "all")
BREAKDOWNS = (*DIMENSIONS, "day", "session")
EXPORT_FORMATS = ("csv", "json", "jsonl")
EXPORT_COLUMNS = ("id", *ROW_COLUMNS)
ANONYMIZED_COLUMNS = ("user_id", "guild_id", "channel_id")
# OpenTelemetry GenAI names of the exported columns, for readers mapping an export onto OTel conventions.
OTEL_ALIASES = {
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    "cached_tokens": "gen_ai.usage.cache_read.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "session_id": "gen_ai.conversation.id",
}
COUNTER_TABLES = ("token_usage_counters", "token_usage_model_counters")
COUNTER_SCOPES = ("global", "user", "guild")
DEFAULT_KEEP_COUNTERS_DAYS = 32  # a calendar month, or a 30-day rolling window, plus a margin
Q12 = Decimal("1e-12")
_ALL = object()  # the key of an ungrouped result
_COLUMN = {"user": "user_id", "guild": "guild_id", "model": "model", "feature": "feature"}


# -- results ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Totals:
    """Usage of a set of calls. ``cost_usd`` covers the priced calls only; ``unknown_cost_calls`` counts the
    answered calls whose price is unknown (never counted as $0); failed calls are in ``errors``."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unknown_cost_calls: int = 0
    cache_hits: int = 0
    errors: int = 0

    @property
    def cost_complete(self) -> bool:
        """True when every answered call had a known price."""
        return self.unknown_cost_calls == 0

    def to_dict(self) -> dict:
        """JSON-ready: money as a decimal string, times as ISO 8601."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Summary(Totals):
    """:class:`Totals` of a period, plus how many distinct users made calls in it. ``until`` None: open."""

    active_users: int = 0
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Group(Totals):
    """One line of a breakdown: ``key`` is a user/guild id (int), a model or feature name, a ``date`` or a
    session id; ``None`` groups calls without one. Sessions also carry their first and last call times."""

    by: str = ""
    key: object = None
    first_at: datetime | None = None
    last_at: datetime | None = None


@dataclass(frozen=True)
class CleanupResult:
    """What :meth:`Reports.cleanup` deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    rows: int
    counters_cutoff: datetime
    counter_rows: int
    batches: int
    dry_run: bool

    def to_dict(self) -> dict:
        return {k: _jsonable(v) for k, v in asdict(self).items()}


def _jsonable(value):
    if isinstance(value, Decimal):
        return decimal_text(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def decimal_text(value: Decimal) -> str:
    """``Decimal`` as plain positional text without trailing zeros: 0.000045, 12, 0."""
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


def usd(pico: int) -> Decimal:
    return Decimal(pico) / PICO


def _totals(values) -> dict:
    calls, prompt, completion, total, cached, reasoning, pico, unpriced, hits, errors = values
    return dict(calls=calls, prompt_tokens=prompt, completion_tokens=completion, total_tokens=total,
                cached_tokens=cached, reasoning_tokens=reasoning, cost_usd=usd(pico), unknown_cost_calls=unpriced,
                cache_hits=hits, errors=errors)


# -- periods ----------------------------------------------------------------------------------------------------
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


def _midnight(day: int) -> datetime:
    return datetime.combine(date_of_day(day), dtime(), timezone.utc)


@dataclass(frozen=True)
class Span:
    """A piece of a range: raw rows in ``[lo, hi)`` (datetimes), or day/month buckets in ``[lo, hi)``."""

    kind: str  # "raw", DAY or MONTH
    lo: object = None  # None: unbounded
    hi: object = None


def plan_spans(since: datetime | None, until: datetime | None, months: bool = True,
               now: datetime | None = None) -> list[Span]:
    """Cut ``[since, until)`` into partial days (raw rows), whole months (if allowed) and whole days.

    With an open end and ``now``, months that start after ``now`` are not split off: ``today`` is then one open
    span of day buckets rather than the rest of this month's days plus all future months."""
    first_day = None if since is None else day_of(since) + (0 if since == _midnight(day_of(since)) else 1)
    end_day = None if until is None else day_of(until)
    if first_day is not None and end_day is not None and first_day >= end_day:
        return [Span("raw", since, until)]  # inside one day
    spans = []
    if since is not None and since < _midnight(first_day):
        spans.append(Span("raw", since, _midnight(first_day)))
    if until is not None and _midnight(end_day) < until:
        spans.append(Span("raw", _midnight(end_day), until))
    days = [(first_day, end_day)]
    if months:
        first_month = None
        if first_day is not None:
            start = date_of_day(first_day)
            first_month = month_of(start) + (0 if start.day == 1 else 1)
        end_month = None if end_day is None else month_of(date_of_day(end_day))
        future = end_month is None and now is not None and first_month is not None and first_month > month_of(now)
        if not future and (first_month is None or end_month is None or first_month < end_month):
            spans.append(Span(MONTH, first_month, end_month))
            days = []
            if first_month is not None:
                days.append((first_day, day_of_month(first_month)))
            if end_month is not None:
                days.append((day_of_month(end_month), end_day))
    for lo, hi in days:
        if lo is None or hi is None or lo < hi:
            spans.append(Span(DAY, lo, hi))
    return spans


# -- the reports --------------------------------------------------------------------------------------------------
class Reports:
    """Summaries, breakdowns, top-N, sessions, exports and retention over one :class:`Store`.

    ``clock`` returns the current UTC time (tests pin it). See the module docstring for periods and design.
    """

    def __init__(self, store: Store, clock: Callable[[], datetime] | None = None):
        self.store = store
        self.db = store.db
        self.dialect = store.dialect
        self.clock = clock or utc_now
        self._p = store.db.param
        self._created = store._created_db_value  # datetime -> the stored form of created_at
        self._raw_measures = raw_measures_sql(self.dialect)
        self._pico = pico_sql(self.dialect)
        self._sums = summed_measures_sql()

    def __repr__(self) -> str:
        return f"Reports({self.store!r})"

    # -- public API ---------------------------------------------------------------------------------------------
    def bounds(self, period=None, since=None, until=None) -> tuple[datetime | None, datetime | None]:
        return period_bounds(period, since, until, self.clock())

    def summary(self, period=None, *, since=None, until=None, user_id=None, guild_id=None, feature=None,
                model=None) -> Summary:
        """Totals of a period (default: everything), optionally for one user/guild/feature/model."""
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model)
        self._connect()
        found = self._collect(None, filters, since, until).get(_ALL)
        values = found[0] if found else [0] * len(MEASURES)
        if "user" in filters:
            active = 1 if values[0] else 0
        else:
            active = self._active_users(filters, since, until)
        return Summary(active_users=active, since=since, until=until, **_totals(values))

    def breakdown(self, by: str, period=None, *, since=None, until=None, user_id=None, guild_id=None,
                  feature=None, model=None, limit: int | None = None) -> list[Group]:
        """Totals per user, guild, model, feature, day or session. Ordered by day for ``"day"``, latest first
        for ``"session"``, else by cost then tokens (largest first)."""
        if by not in BREAKDOWNS:
            raise ValueError(f"by={by!r}: breakdowns are by {', '.join(BREAKDOWNS)}")
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model)
        self._connect()
        groups = self._collect(by, filters, since, until)
        items = [Group(by=by, key=key, first_at=extra[0], last_at=extra[1], **_totals(values))
                 for key, (values, extra) in groups.items()]
        if by == "day":
            items.sort(key=lambda g: g.key)
        elif by == "session":
            items.sort(key=lambda g: (g.first_at, g.key), reverse=True)
        else:
            items.sort(key=lambda g: (-g.cost_usd, -g.total_tokens, g.key is None, _sortable(g.key)))
        return items[:limit] if limit is not None else items

    def top(self, n: int = 10, by: str = "tokens", scope: str = "user", period=None, *, since=None, until=None,
            user_id=None, guild_id=None, feature=None, model=None) -> list[Group]:
        """The ``n`` users (or guilds) with the most tokens (or cost). Calls without one are left out."""
        if by not in ("tokens", "cost"):
            raise ValueError(f"by={by!r}: top spenders are ranked by tokens or cost")
        if scope not in ("user", "guild"):
            raise ValueError(f"scope={scope!r}: top spenders are users or guilds")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model)
        self._connect()
        groups = self._collect(scope, filters, since, until, rank=by, limit=n)
        metric = 3 if by == "tokens" else 6
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0][metric], kv[0]))[:n]
        return [Group(by=scope, key=key, **_totals(values)) for key, (values, _) in ranked]

    def session(self, session_id: str) -> list[dict]:
        """Every stored call of a session, in call order (dicts with the table's columns)."""
        self._connect()
        p = self._p
        cursor = self.db.execute_sql(
            f"SELECT {', '.join(EXPORT_COLUMNS)} FROM token_usage WHERE session_id = {p} ORDER BY call_index, id",
            (str(session_id),))
        convert = self._row_converter()
        return [dict(zip(EXPORT_COLUMNS, convert(row))) for row in cursor.fetchall()]

    def export(self, fmt: str = "csv", out=None, *, anonymize: bool = False, period=None, since=None, until=None,
               user_id=None, guild_id=None, feature=None, model=None, batch_size: int = 5000,
               progress: Callable[[int], None] | None = None) -> int:
        """Stream the raw rows (id order) to ``out`` (a text file object, or a path) as CSV, a JSON array, or
        JSON lines; returns the number of rows. Memory stays constant: rows are read in keyset pages by id.

        Columns are the table's (:data:`EXPORT_COLUMNS`; OTel GenAI equivalents in :data:`OTEL_ALIASES`). Times
        are ISO 8601 UTC, costs exact decimals (JSON numbers), NULL is empty in CSV and null in JSON.
        ``anonymize=True`` replaces user, guild and channel ids by a salted hash (HMAC-SHA256, 16 hex digits):
        equal ids get equal hashes within one export; the salt is random per export, so two exports do not
        link. Open files with ``newline=""`` for CSV.
        """
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model)
        if out is None:
            raise ValueError("export needs out=: a text file object or a path")
        if isinstance(out, (str, os.PathLike)):
            with open(Path(out), "w", encoding="utf-8", newline="") as fh:
                return self.export(fmt, fh, anonymize=anonymize, since=since, until=until, batch_size=batch_size,
                                   progress=progress, **_filter_kwargs(filters))
        self._connect()
        cells = _ExportCells(self.dialect, _Anonymizer() if anonymize else None)
        sink = _EXPORTERS[fmt](out, anonymize)
        where, params = self._raw_where(filters, since, until)
        sql = (f"SELECT {', '.join(EXPORT_COLUMNS)} FROM token_usage WHERE id > {self._p}"
               f"{' AND ' + where if where else ''} ORDER BY id LIMIT {int(batch_size)}")
        written, last_id = 0, 0
        sink.start()
        while True:
            page = self.db.execute_sql(sql, (last_id, *params)).fetchall()
            if not page:
                break
            last_id = page[-1][0]
            sink.rows(cells.convert(raw) for raw in page)
            written += len(page)
            if progress is not None:
                progress(written)
            if len(page) < batch_size:
                break
        sink.finish()
        return written

    def cleanup(self, older_than_days: int = 90, *, batch_size: int = 5000, dry_run: bool = False,
                keep_counters_days: int = DEFAULT_KEEP_COUNTERS_DAYS,
                progress: Callable[[int], None] | None = None) -> CleanupResult:
        """Delete raw rows created before ``now - older_than_days`` (floored to the hour), ``batch_size`` ids
        per short transaction, and the hourly limit counters older than ``max(older_than_days,
        keep_counters_days)`` days. The daily cube and the day/month rollups are kept (module docstring)."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
            raise ValueError(f"older_than_days must be a positive number of days, got {older_than_days!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        now = self.clock().astimezone(timezone.utc)
        cutoff = (now - timedelta(days=older_than_days)).replace(minute=0, second=0, microsecond=0)
        counters_cutoff = (now - timedelta(days=max(older_than_days, keep_counters_days))).replace(
            minute=0, second=0, microsecond=0)
        counter_hour = int(counters_cutoff.timestamp()) // 3600
        self._connect()
        p = self._p
        if dry_run:
            rows = self._scalar(f"SELECT COUNT(*) FROM token_usage WHERE created_at < {p}", (self._created(cutoff),))
            counters = sum(self._scalar(f"SELECT COUNT(*) FROM {t} WHERE hour < {p}", (counter_hour,))
                           for t in self._counter_tables())
            return CleanupResult(cutoff, rows, counters_cutoff, counters, 0, True)
        rows = batches = 0
        select = f"SELECT id FROM token_usage WHERE created_at < {p} ORDER BY created_at LIMIT {int(batch_size)}"
        while True:
            ids = [r[0] for r in self.db.execute_sql(select, (self._created(cutoff),)).fetchall()]
            if not ids:
                break
            with write_transaction(self.db):
                cursor = self.db.execute_sql(
                    f"DELETE FROM token_usage WHERE id IN ({', '.join([p] * len(ids))})", ids)
                rows += max(cursor.rowcount, 0)
            batches += 1
            if progress is not None:
                progress(rows)
            if len(ids) < batch_size:
                break
            time.sleep(0)  # let the writer in between batches
        counters = sum(self._prune_counters(t, counter_hour, batch_size) for t in self._counter_tables())
        return CleanupResult(cutoff, rows, counters_cutoff, counters, batches, False)

    # -- internals: connection and SQL helpers --------------------------------------------------------------------
    def _connect(self) -> None:
        self.store.ensure_schema()
        self.db.connect(reuse_if_open=True)

    def _scalar(self, sql: str, params=()) -> int:
        value = self.db.execute_sql(sql, params).fetchone()[0]
        return int(value or 0)

    def _rows(self, sql: str, params) -> list[tuple]:
        return self.db.execute_sql(sql, params).fetchall()

    def _raw_where(self, filters: dict, since, until) -> tuple[str, list]:
        p, clauses, params = self._p, [], []
        if since is not None:
            clauses.append(f"created_at >= {p}")
            params.append(self._created(since))
        if until is not None:
            clauses.append(f"created_at < {p}")
            params.append(self._created(until))
        for dim, value in filters.items():
            clauses.append(f"{_COLUMN[dim]} = {p}")
            params.append(value)
        return " AND ".join(clauses), params

    @staticmethod
    def _bucket_where(column: str, span: Span, p: str, clauses: list, params: list) -> None:
        if span.lo is not None and span.hi == span.lo + 1:
            clauses.append(f"{column} = {p}")
            params.append(span.lo)
            return
        if span.lo is not None:
            clauses.append(f"{column} >= {p}")
            params.append(span.lo)
        if span.hi is not None:
            clauses.append(f"{column} < {p}")
            params.append(span.hi)

    def _route(self, by: str | None, filters: dict) -> str | None:
        """The rollup scope that answers (``global``/a dimension), or None for the daily cube."""
        dims = set(filters) | ({by} if by in DIMENSIONS else set())
        if len(dims) <= 1:
            return next(iter(dims), "global")
        return None

    def _collect(self, by, filters, since, until, rank: str | None = None, limit: int | None = None) -> dict:
        """key -> (measures, (first_at, last_at)), merged over the spans of ``[since, until)``.

        With ``rank`` ("tokens"/"cost") and ``limit`` this is a top-N, without the calls that have no key. It
        ranks the keys on that one measure first (ten aggregates over every key cost several times more), then
        reads every measure of the ``limit`` winners only; one bucket of one rollup needs neither: its rows are
        read in rank order directly."""
        if by == "session":
            scope, spans = None, [Span("raw", since, until)]
        else:
            scope = self._route(by, filters)
            spans = plan_spans(since, until, months=scope is not None and by != "day", now=self.clock())
        sources = [self._source(span, scope, by, filters, exclude_none=bool(rank)) for span in spans]
        keys = None
        if rank:
            if len(sources) == 1 and sources[0].unique:
                return {key: (values, extra) for key, values, extra in self._fetch(sources[0], rank=rank,
                                                                                   limit=limit)}
            scores: dict = {}
            for source in sources:
                for key, score in self._scores(source, rank, limit if len(sources) == 1 else None):
                    scores[key] = scores.get(key, 0) + score
            keys = sorted(scores, key=lambda k: (-scores[k], k))[:limit]
            if not keys:
                return {}
        merged: dict = {}
        for source in sources:
            for key, values, extra in self._fetch(source, keys=keys):
                if key not in merged:
                    merged[key] = (list(values), extra)
                    continue
                acc, (first, last) = merged[key]
                for i, value in enumerate(values):
                    acc[i] += value
                if extra[0] is not None:
                    merged[key] = (acc, (min(first, extra[0]), max(last, extra[1])))
        return merged

    def _source(self, span: Span, scope: str | None, by, filters: dict, exclude_none: bool) -> "_Source":
        """The SQL pieces that read one span: raw rows, the daily cube (scope None), or one rollup scope."""
        p, clauses, params = self._p, [], []
        if span.kind == "raw":
            where, params = self._raw_where(filters, span.lo, span.hi)
            clauses = [where] if where else []
            column = {"session": "session_id", "feature": "COALESCE(feature, '')"}.get(by) or _COLUMN.get(by)
            if exclude_none and column:
                clauses.append(f"{column} IS NOT NULL")
            total_key = date_of_day(day_of(span.lo)) if by == "day" else _ALL  # raw spans lie within one day
            return _Source("token_usage", clauses, params, column, self._raw_measures,
                           {"tokens": "total_tokens", "cost": self._pico}, by, fixed_key=total_key,
                           times=by == "session")
        if scope is None:
            self._bucket_where("day", span, p, clauses, params)
            for dim, value in filters.items():
                clauses.append(f"{_COLUMN[dim]} = {p}")
                params.append(value)
            column = "day" if by == "day" else _COLUMN.get(by)
            if exclude_none:
                clauses.append(f"{column} <> {NO_ID}" if by in ("user", "guild") else f"{column} <> ''")
            return _Source("token_usage_daily", clauses, params, column, self._sums,
                           {"tokens": "total_tokens", "cost": "cost_pusd"}, by)
        clauses, params = [f"grain = {p}", f"scope = {p}"], [span.kind, scope]
        if filters:
            clauses.append(f"scope_key = {p}")
            params.append(str(filters[scope]))
        self._bucket_where("bucket", span, p, clauses, params)
        if exclude_none:
            clauses.append("scope_key <> ''")
        column = "bucket" if by == "day" else "scope_key" if by is not None else None
        # One bucket (today, a month) holds one row per key: no aggregation needed.
        unique = span.lo is not None and span.hi == span.lo + 1
        return _Source("token_usage_rollups", clauses, params, column,
                       ", ".join(MEASURES) if unique else self._sums, {"tokens": "total_tokens", "cost": "cost_pusd"},
                       by, unique=unique, text_keys=True)

    def _fetch(self, source: "_Source", keys=None, rank: str | None = None, limit: int | None = None) -> Iterable:
        clauses, params = list(source.clauses), list(source.params)
        if keys is not None:
            clauses.append(f"{source.column} IN ({', '.join([self._p] * len(keys))})")
            params += [source.to_db(k) for k in keys]
        column = source.column
        extra = ", MIN(created_at), MAX(created_at)" if source.times else ""
        sql = f"SELECT {column + ', ' if column else ''}{source.measures}{extra} FROM {source.table}{source.where(clauses)}"
        if column and not source.unique:
            sql += f" GROUP BY {column}"
        if rank:  # only for a single rollup bucket: its rows, largest first
            sql += f" ORDER BY {source.metric[rank]} DESC, {source.tiebreak()} LIMIT {int(limit)}"
        parse = self._time_parser()
        for row in self._rows(sql, params):
            key, rest = (source.fixed_key, row) if column is None else (source.key(row[0]), row[1:])
            values = [int(v) for v in rest[:len(MEASURES)]]
            if values[0] == 0:
                continue  # an ungrouped aggregate over no rows
            yield key, values, (parse(rest[-2]), parse(rest[-1])) if extra else (None, None)

    def _scores(self, source: "_Source", rank: str, limit: int | None) -> Iterable:
        """(key, one measure) per key: the cheap first pass of a top-N."""
        metric = source.metric[rank]
        if not source.unique:
            metric = f"SUM({metric})"
        sql = f"SELECT {source.column}, {metric} FROM {source.table}{source.where(source.clauses)}"
        if not source.unique:
            sql += f" GROUP BY {source.column}"
        if limit is not None:
            sql += f" ORDER BY {metric} DESC, {source.tiebreak()} LIMIT {int(limit)}"
        for key, score in self._rows(sql, source.params):
            yield source.key(key), int(score or 0)

    def _active_users(self, filters: dict, since, until) -> int:
        """Distinct users with calls in the range (filters without a user filter)."""
        p = self._p
        spans = plan_spans(since, until, months=not filters, now=self.clock())
        queries = []
        for span in spans:
            if span.kind == "raw":
                where, params = self._raw_where(filters, span.lo, span.hi)
                queries.append(("user_id", f"FROM token_usage WHERE {where + ' AND ' if where else ''}"
                                           "user_id IS NOT NULL", params, False))
            elif not filters:
                clauses, params = [f"grain = {p}", "scope = 'user'", "scope_key <> ''"], [span.kind]
                self._bucket_where("bucket", span, p, clauses, params)
                single = span.lo is not None and span.hi == span.lo + 1  # keys are unique within one bucket
                queries.append(("scope_key", f"FROM token_usage_rollups WHERE {' AND '.join(clauses)}", params,
                                single))
            else:
                clauses, params = [f"user_id <> {NO_ID}"], []
                self._bucket_where("day", span, p, clauses, params)
                for dim, value in filters.items():
                    clauses.append(f"{_COLUMN[dim]} = {p}")
                    params.append(value)
                queries.append(("user_id", f"FROM token_usage_daily WHERE {' AND '.join(clauses)}", params, False))
        if len(queries) == 1:
            column, body, params, unique = queries[0]
            return self._scalar(f"SELECT {'COUNT(*)' if unique else f'COUNT(DISTINCT {column})'} {body}", params)
        # Several spans: one UNION (which removes duplicates) of the ids as text, counted in the database.
        parts = [f"SELECT {column if column == 'scope_key' else text_sql(self.dialect, column)} AS u {body}"
                 for column, body, _, _ in queries]
        return self._scalar(f"SELECT COUNT(*) FROM ({' UNION '.join(parts)}) active",
                            [value for _, _, params, _ in queries for value in params])

    def _counter_tables(self) -> list[str]:
        tables = set(self.db.get_tables())
        return [t for t in COUNTER_TABLES if t in tables]

    def _prune_counters(self, table: str, before_hour: int, batch_size: int) -> int:
        """Delete hourly counters before ``before_hour``, per (scope, scope_id) along the primary key, in
        transactions of about ``batch_size`` rows."""
        oldest = self.db.execute_sql(f"SELECT MIN(hour) FROM {table} WHERE scope = 'global' AND scope_id = 0"
                                     ).fetchone()[0]
        if oldest is None or int(oldest) >= before_hour:
            return 0  # every call counts in the global scope: nothing older anywhere
        p = self._p
        delete = f"DELETE FROM {table} WHERE scope = {p} AND scope_id = {p} AND hour < {p}"
        deleted = 0
        for scope in COUNTER_SCOPES:
            ids = self._scope_ids(table, scope)
            more = True
            while more:
                with write_transaction(self.db):
                    pending, more = 0, False
                    for scope_id in ids:
                        pending += max(self.db.execute_sql(delete, (scope, scope_id, before_hour)).rowcount, 0)
                        if pending >= batch_size:
                            more = True
                            break
                deleted += pending
        return deleted

    def _scope_ids(self, table: str, scope: str) -> Iterable[int]:
        """Every scope_id of a scope, one primary-key seek each (no scan of the hours)."""
        p, last = self._p, -1
        while True:
            found = self.db.execute_sql(f"SELECT MIN(scope_id) FROM {table} WHERE scope = {p} AND scope_id > {p}",
                                        (scope, last)).fetchone()[0]
            if found is None:
                return
            last = int(found)
            yield last

    def _time_parser(self):
        if self.dialect == "sqlite":
            return lambda v: None if v is None else datetime.fromisoformat(v).replace(tzinfo=timezone.utc)
        return lambda v: None if v is None else v.replace(tzinfo=timezone.utc)

    def _row_converter(self):
        """Raw SELECT tuple (EXPORT_COLUMNS order) -> Python values: aware UTC times, exact Decimal costs."""
        parse = self._time_parser()
        cost_at, hit_at, reported_at, created_at = (EXPORT_COLUMNS.index(c) for c in (
            "cost_usd", "cache_hit", "usage_reported", "created_at"))

        def convert(raw) -> list:
            row = list(raw)
            cost = row[cost_at]
            if cost is not None:
                row[cost_at] = (cost if isinstance(cost, Decimal) else Decimal(cost)).quantize(Q12)
            row[hit_at] = bool(row[hit_at])
            row[reported_at] = bool(row[reported_at])
            row[created_at] = parse(row[created_at])
            return row
        return convert


@dataclass
class _Source:
    """How to read one span of a query from one table (see :meth:`Reports._source`)."""

    table: str
    clauses: list
    params: list
    column: str | None  # the grouping column (SQL), None for an ungrouped total
    measures: str  # SELECT expressions of the MEASURES
    metric: dict  # "tokens"/"cost" -> the expression a top-N ranks on
    by: str | None
    unique: bool = False  # one rollup bucket: one row per key
    text_keys: bool = False  # rollup keys are text ('' = none)
    fixed_key: object = _ALL  # the key of an ungrouped total (a raw span's day for by="day")
    times: bool = False  # also MIN/MAX(created_at) (sessions)

    def where(self, clauses) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def key(self, value):
        """A stored group value -> the key a report shows."""
        if self.by == "day":
            return date_of_day(int(value))
        if value in ("", NO_ID, None):
            return None
        return int(value) if self.by in ("user", "guild") else value

    def to_db(self, key):
        return str(key) if self.text_keys else key

    def tiebreak(self) -> str:
        # Rollup keys are text: numeric ids sort by length first, so ties fall in id order on every path.
        return f"LENGTH({self.column}), {self.column}" if self.text_keys else self.column


def _filters(user_id=None, guild_id=None, feature=None, model=None) -> dict:
    """The given filters as {dimension: value}, validated."""
    found = {}
    for dim, value in (("user", user_id), ("guild", guild_id)):
        if value is not None:
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{dim}_id must be a non-negative integer id, got {value!r}")
            found[dim] = value
    for dim, value in (("feature", feature), ("model", model)):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{dim} must be a non-empty string, got {value!r}")
            found[dim] = value
    return found


def _filter_kwargs(filters: dict) -> dict:
    return {("user_id" if d == "user" else "guild_id" if d == "guild" else d): v for d, v in filters.items()}


def _sortable(key):
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


# -- export formats -----------------------------------------------------------------------------------------------
class _Anonymizer:
    """Salted HMAC of user/guild/channel ids: stable within one export, unlinkable across exports."""

    def __init__(self):
        self.salt = secrets.token_bytes(32)
        self.positions = [EXPORT_COLUMNS.index(c) for c in ANONYMIZED_COLUMNS]
        self.cache: dict[tuple[int, int], str] = {}

    def hash(self, position: int, value: int) -> str:
        key = (position, value)
        found = self.cache.get(key)
        if found is None:
            if len(self.cache) >= 100_000:
                self.cache.clear()  # bounded memory; the hash itself does not depend on the cache
            message = f"{EXPORT_COLUMNS[position]}:{value}".encode()
            found = self.cache[key] = hmac.new(self.salt, message, hashlib.sha256).hexdigest()[:16]
        return found

    def apply(self, row: list) -> list:
        for position in self.positions:
            if row[position] is not None:
                row[position] = self.hash(position, row[position])
        return row


class _ExportCells:
    """A stored row (EXPORT_COLUMNS order) -> the exported cells: NULL as None, ints and text as stored,
    booleans ``"true"``/``"false"``, times ISO 8601 UTC with microseconds, costs exact decimal text.

    Only those four columns are converted (a few µs per row); the rest go to the writer as the driver returned
    them."""

    cost, cache_hit, reported, created = (EXPORT_COLUMNS.index(c) for c in (
        "cost_usd", "cache_hit", "usage_reported", "created_at"))

    def __init__(self, dialect: str, anonymizer: "_Anonymizer | None"):
        self.sqlite = dialect == "sqlite"
        self.anonymizer = anonymizer

    def convert(self, raw) -> list:
        row = list(raw)
        cost = row[self.cost]
        if cost is not None:
            # SQLite: the double nearest to a 12-place decimal, so 12 places recover it; others: NUMERIC(24,12).
            text = f"{cost:.12f}" if self.sqlite else format(cost, "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            row[self.cost] = text
        row[self.cache_hit] = "true" if row[self.cache_hit] else "false"
        row[self.reported] = "true" if row[self.reported] else "false"
        created = row[self.created]
        if isinstance(created, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS.ffffff'
            row[self.created] = (created[:10] + "T" + created[11:] + "+00:00" if len(created) == 26
                                 else datetime.fromisoformat(created).isoformat(timespec="microseconds") + "+00:00")
        else:
            row[self.created] = created.replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"
        if self.anonymizer is not None:
            self.anonymizer.apply(row)
        return row


class _CsvSink:
    def __init__(self, out, anonymize: bool = False):
        self.writer = csv.writer(out)

    def start(self):
        self.writer.writerow(EXPORT_COLUMNS)

    def rows(self, rows):
        self.writer.writerows(rows)  # None is written as an empty field

    def finish(self):
        pass


_JSON_TEXT = {"call_uuid", "session_id", "feature", "module", "model", "response_model", "cost_source", "error",
              "created_at"}


class _JsonLinesSink:
    """One JSON object per line. Costs are bare JSON numbers with their exact decimal digits (read them back
    with ``json.loads(..., parse_float=Decimal)``); anonymized ids are strings."""

    def __init__(self, out, anonymize: bool = False):
        self.out = out
        text = _JSON_TEXT | (set(ANONYMIZED_COLUMNS) if anonymize else set())
        self.columns = [(json.dumps(c) + ":", c in text) for c in EXPORT_COLUMNS]

    def encode(self, row) -> str:
        quote = encode_basestring
        return "{" + ",".join(
            key + ("null" if value is None else quote(value) if is_text else str(value))
            for (key, is_text), value in zip(self.columns, row)) + "}"

    def start(self):
        pass

    def rows(self, rows):
        encode = self.encode
        self.out.write("".join(encode(row) + "\n" for row in rows))

    def finish(self):
        pass


class _JsonArraySink(_JsonLinesSink):
    """A valid JSON array written incrementally: ``[``, objects separated by commas, ``]``."""

    def start(self):
        self.out.write("[")
        self.separator = "\n"

    def rows(self, rows):
        encode = self.encode
        parts = []
        for row in rows:
            parts.append(self.separator)
            parts.append(encode(row))
            self.separator = ",\n"
        self.out.write("".join(parts))

    def finish(self):
        self.out.write("\n]\n")


_EXPORTERS = {"csv": _CsvSink, "json": _JsonArraySink, "jsonl": _JsonLinesSink}


def read_csv_export(text: str | io.TextIOBase) -> list[dict]:
    """Parse a CSV export back into typed rows (ints, bools, Decimal costs, aware datetimes, None for empty)."""
    stream = io.StringIO(text) if isinstance(text, str) else text
    ints = {"id", "call_index", "user_id", "guild_id", "channel_id", "prompt_tokens", "completion_tokens",
            "total_tokens", "cached_tokens", "reasoning_tokens", "latency_ms"}
    rows = []
    for record in csv.DictReader(stream):
        row = {}
        for column, text_value in record.items():
            if text_value == "":
                row[column] = None
            elif column in ints:
                row[column] = int(text_value) if text_value.lstrip("-").isdigit() else text_value  # anonymized
            elif column in ("cache_hit", "usage_reported"):
                row[column] = text_value == "true"
            elif column == "cost_usd":
                row[column] = Decimal(text_value)
            elif column == "created_at":
                row[column] = datetime.fromisoformat(text_value)
            else:
                row[column] = text_value
        rows.append(row)
    return rows
