"""Report aggregates over one *span* of time, read from the cheapest table that answers it.

A span is raw rows in ``[lo, hi)`` (datetimes), or hour/day/month buckets in ``[lo, hi)`` (integers; None:
unbounded). Which table answers depends on the filters and the grouping (:meth:`SpanReader.route`):

* no filter, or one filter, grouped by nothing, by that same dimension or by day: ``token_usage_rollups``. One
  bucket (an hour, a calendar day or month) holds one row per key, so it needs no aggregation at all;
* two or more dimensions among filters and grouping: the daily cube ``token_usage_daily`` (days only);
* ``by="session"``, the partial hours of a range, and the partial days of the cube: the raw rows.

``by`` may also be a pair ``("day", dimension)``: one group per day and key, read like ``by=dimension`` over day
buckets (the rollups hold one row per day and key, so it needs no aggregation either) and the hours of one day.

Results are ``(key, measures, (first_at, last_at))``: ``key`` as a report shows it (an int id, a name, a ``date``,
a session id, a ``(date, key)`` pair; ``None`` for calls without one; :data:`ALL` for an ungrouped total), measures
in :data:`~dspy_tokens.store.units.MEASURES` order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Iterable, Iterator

from ._sql import day_sql, metadata_sql, pico_sql, raw_measures_sql, summed_measures_sql, text_sql
from .units import (
    CUBE_DIMENSIONS,
    DIMENSIONS,
    GRAIN_DAY,
    GRAIN_HOUR,
    GRAIN_MONTH,
    MEASURES,
    METADATA_PREFIX,
    NO_ID,
    ROLLUP_SCOPES,
    date_of_day,
    day_of,
)

ALL = object()  # the key of an ungrouped result
RAW = "raw"
SPAN_KINDS = (RAW, GRAIN_HOUR, GRAIN_DAY, GRAIN_MONTH)
COLUMN = {"user": "user_id", "guild": "guild_id", "model": "model", "feature": "feature",
          "request_type": "request_type"}


@dataclass(frozen=True)
class Span:
    """A piece of a range: raw rows in ``[lo, hi)`` (datetimes), or hour/day/month buckets in ``[lo, hi)``."""

    kind: str  # RAW, GRAIN_HOUR, GRAIN_DAY or GRAIN_MONTH
    lo: Any = None  # None: unbounded; a datetime for RAW, else an int bucket
    hi: Any = None
    sign: int = 1  # -1: subtracted (a month bucket minus the days of it outside the range)

    @property
    def single_bucket(self) -> bool:
        return self.kind != RAW and self.lo is not None and self.hi == self.lo + 1


@dataclass(frozen=True)
class Route:
    """Where whole days and months are read: a rollup scope (``global`` or a dimension), or the cube (None)."""

    scope: str | None
    months: bool  # whether month buckets can answer (the cube and by-day groupings have days only)
    raw_only: bool = False  # sessions, metadata, a request type with another dimension: only the raw rows know


@dataclass
class _Source:
    """How to read one span from one table."""

    table: str
    clauses: list
    params: list
    column: str | None  # the grouping column (SQL), None for an ungrouped total
    measures: str  # SELECT expressions of the MEASURES
    metric: dict  # "tokens"/"cost" -> the expression a top-N ranks on
    by: str | None
    unique: bool = False  # one rollup bucket: one row per key
    text_keys: bool = False  # rollup keys are text ('' = none)
    fixed_key: object = ALL  # the key of an ungrouped total (a raw span's day for by="day")
    times: bool = False  # also MIN/MAX(created_at) (sessions)
    per_day: bool = False  # by ("day", dimension): keys are (date, key); the day is the first column ...
    fixed_day: date | None = None  # ... or, for a raw span (within one day), this day

    def where(self, clauses) -> str:
        return f" WHERE {' AND '.join(clauses)}" if clauses else ""

    def key(self, value):
        """A stored group value -> the key a report shows."""
        if self.by == "day":
            return date_of_day(int(value))
        if value in ("", NO_ID, None):
            return None
        return int(value) if self.by in ("user", "guild") else value

    def key_of(self, row) -> tuple[object, int]:
        """The key of a result row and how many of its leading columns it took."""
        if not self.per_day:
            return self.key(row[0]), 1
        if self.fixed_day is not None:
            return (self.fixed_day, self.key(row[0])), 1
        return (date_of_day(int(row[0])), self.key(row[1])), 2

    def to_db(self, key):
        return str(key) if self.text_keys else key

    def tiebreak(self) -> str | None:
        # Rollup keys are text: numeric ids sort by length first, so ties fall in id order on every path.
        return f"LENGTH({self.column}), {self.column}" if self.text_keys else self.column


class SpanReader:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self.dialect = store.dialect
        self._p = store.db.param
        self._raw_measures = raw_measures_sql(self.dialect)
        self._pico = pico_sql(self.dialect)
        self._sums = summed_measures_sql()

    @staticmethod
    def route(by, filters: dict) -> Route:
        per_day, dim = (True, by[1]) if isinstance(by, tuple) else (by == "day", by)
        dims = set(filters) | ({dim} if dim in DIMENSIONS or str(dim).startswith(METADATA_PREFIX) else set())
        if by == "session" or any(d.startswith(METADATA_PREFIX) for d in dims) or (
                len(dims) > 1 and not dims <= set(CUBE_DIMENSIONS)):
            return Route(None, False, raw_only=True)
        scope = next(iter(dims), "global") if len(dims) <= 1 else None
        return Route(scope, scope is not None and not per_day)

    def column(self, dim: str) -> str:
        """The ``token_usage`` expression of a dimension (``metadata:<key>``: that key's value as text)."""
        if dim.startswith(METADATA_PREFIX):
            return metadata_sql(self.dialect, dim[len(METADATA_PREFIX):])
        return COLUMN[dim]

    def read(self, span: Span, route: Route, by: str | None, filters: dict, *, exclude_none: bool = False,
             keys=None, rank: str | None = None, limit: int | None = None) -> Iterator[tuple]:
        """Every group of one span (``keys``: only those). With ``rank`` and ``limit`` (one rollup bucket only,
        see :meth:`is_unique`): its ``limit`` largest groups by that measure, largest first."""
        source = self._source(span, route, by, filters, exclude_none)
        clauses, params = list(source.clauses), list(source.params)
        if keys is not None:
            clauses.append(f"{source.column} IN ({', '.join([self._p] * len(keys))})")
            params += [source.to_db(k) for k in keys]
        column = source.column
        extra = ", MIN(created_at), MAX(created_at)" if source.times else ""
        sql = (f"SELECT {column + ', ' if column else ''}{source.measures}{extra} FROM {source.table}"
               f"{source.where(clauses)}")
        if column and not source.unique:
            sql += f" GROUP BY {column}"
        if rank:
            if limit is None:
                raise ValueError("a ranked read needs a limit")
            sql += f" ORDER BY {source.metric[rank]} DESC, {source.tiebreak()} LIMIT {int(limit)}"
        parse = self._time_parser()
        for row in self.db.execute_sql(sql, params).fetchall():
            if column is None:
                key, rest = source.fixed_key, row
            else:
                key, used = source.key_of(row)
                rest = row[used:]
            values = [int(v) for v in rest[:len(MEASURES)]]
            if values[0] == 0:
                continue  # an ungrouped aggregate over no rows
            yield key, values, (parse(rest[-2]), parse(rest[-1])) if extra else (None, None)

    def is_unique(self, span: Span, route: Route) -> bool:
        """One rollup bucket: one row per key, already in the table (no aggregation)."""
        return span.single_bucket and route.scope is not None

    def ranked(self, spans: list[Span], route: Route, by: str, filters: dict, rank: str, limit: int) -> list[tuple]:
        """(key, total) of the ``limit`` keys with the largest total of one measure over the spans (subtracted
        spans count negatively), largest first, ties in key order, in one statement: the cheap first pass of a
        top-N (calls without a key left out)."""
        parts, params = [], []
        text_keys = False
        for span in spans:
            source = self._source(span, route, by, filters, exclude_none=True)
            text_keys = text_keys or source.text_keys
            # COALESCE: a key whose calls are all unpriced sums to NULL, which PostgreSQL sorts first in DESC.
            metric = source.metric[rank] if source.unique else f"COALESCE(SUM({source.metric[rank]}), 0)"
            parts.append((source, metric))
        selects = []
        for span, (source, metric) in zip(spans, parts):
            assert source.column is not None  # a ranked dimension
            key = text_sql(self.dialect, source.column) if text_keys and not source.text_keys else source.column
            group = "" if source.unique else " GROUP BY 1"  # by the key as selected, never an index's order
            calls = "COUNT(*)" if span.kind == RAW else "calls" if source.unique else "SUM(calls)"
            selects.append(f"SELECT {key} AS k, {metric} * {span.sign} AS s, {calls} * {span.sign} AS c "
                           f"FROM {source.table}{source.where(source.clauses)}{group}")
            params += source.params
        tiebreak = "LENGTH(k), k" if text_keys else "k"
        # HAVING on calls: a key whose calls all lie in subtracted days is not in the range at all.
        sql = (f"SELECT k, SUM(s) FROM ({' UNION ALL '.join(selects)}) scored GROUP BY k HAVING SUM(c) > 0 "
               f"ORDER BY SUM(s) DESC, {tiebreak} LIMIT {int(limit)}")
        return [(parts[0][0].key(key), int(total or 0)) for key, total in self.db.execute_sql(sql, params).fetchall()]

    def active_users(self, spans: Iterable[Span], filters: dict) -> int:
        """Distinct users with calls over the spans (``filters`` without a user filter)."""
        p = self._p
        spans = list(spans)
        queries = []
        for span in spans:
            if span.kind == RAW:
                where, params = self.raw_where(filters, span.lo, span.hi)
                queries.append(("user_id", f"FROM token_usage WHERE {where + ' AND ' if where else ''}"
                                           "user_id IS NOT NULL", params, False, "COUNT(*)"))
            elif not filters:
                clauses, params = [f"grain = {p}", "scope = 'user'", "scope_key <> ''"], [span.kind]
                self._bucket_where("bucket", span, clauses, params)
                # Keys are unique within one bucket: nothing to aggregate there.
                queries.append(("scope_key", f"FROM token_usage_rollups WHERE {' AND '.join(clauses)}", params,
                                span.single_bucket, "calls" if span.single_bucket else "SUM(calls)"))
            else:
                clauses, params = [f"user_id <> {NO_ID}"], []
                self._bucket_where("day", span, clauses, params)
                for dim, value in filters.items():
                    clauses.append(f"{COLUMN[dim]} = {p}")
                    params.append(value)
                queries.append(("user_id", f"FROM token_usage_daily WHERE {' AND '.join(clauses)}", params, False,
                                "SUM(calls)"))
        if not queries:
            return 0
        signs = [span.sign for span in spans]
        # A bucket minus some of it: the users whose calls in the range add up to more than 0. Grouped by the
        # text of the id (GROUP BY 1): grouping by user_id lets SQLite walk the cube's user index over every day.
        if min(signs) < 0:
            parts = [f"SELECT {column if column == 'scope_key' else text_sql(self.dialect, column)} AS u, "
                     f"{count} * {sign} AS c {body}{'' if unique else ' GROUP BY 1'}"
                     for (column, body, _, unique, count), sign in zip(queries, signs)]
            return self._scalar(f"SELECT COUNT(*) FROM (SELECT u FROM ({' UNION ALL '.join(parts)}) signed "
                                "GROUP BY u HAVING SUM(c) > 0) active",
                                [value for _, _, params, _, _ in queries for value in params])
        if len(queries) == 1:
            column, body, params, unique, _ = queries[0]
            return self._scalar(f"SELECT {'COUNT(*)' if unique else f'COUNT(DISTINCT {column})'} {body}", params)
        # Several spans: one UNION (which removes duplicates) of the ids (as text beside rollup keys), counted in
        # the database.
        text = any(column == "scope_key" for column, *_ in queries)
        parts = [f"SELECT {text_sql(self.dialect, column) if text and column != 'scope_key' else column} AS u {body}"
                 for column, body, _, _, _ in queries]
        return self._scalar(f"SELECT COUNT(*) FROM ({' UNION '.join(parts)}) active",
                            [value for _, _, params, _, _ in queries for value in params])

    # -- SQL pieces ------------------------------------------------------------------------------------
    def raw_where(self, filters: dict, since, until) -> tuple[str, list]:
        p, clauses, params = self._p, [], []
        if since is not None:
            clauses.append(f"created_at >= {p}")
            params.append(self.store.stored_time(since))
        if until is not None:
            clauses.append(f"created_at < {p}")
            params.append(self.store.stored_time(until))
        for dim, value in filters.items():
            clauses.append(f"{self.column(dim)} = {p}")
            params.append(value)
        return " AND ".join(clauses), params

    def _bucket_where(self, column: str, span: Span, clauses: list, params: list) -> None:
        p = self._p
        if span.single_bucket:
            clauses.append(f"{column} = {p}")
            params.append(span.lo)
            return
        if span.lo is not None:
            clauses.append(f"{column} >= {p}")
            params.append(span.lo)
        if span.hi is not None:
            clauses.append(f"{column} < {p}")
            params.append(span.hi)

    def _source(self, span: Span, route: Route, by, filters: dict, exclude_none: bool) -> _Source:
        """The SQL pieces that read one span: raw rows, the daily cube (route scope None), or one rollup scope."""
        if isinstance(by, tuple):  # ("day", dimension): grouped by the dimension, then split by day
            source = self._source(span, route, by[1], filters, exclude_none)
            source.per_day = True
            if route.raw_only:  # the whole range from the raw rows: grouped by day too
                source.column = f"{day_sql(self.dialect)}, {source.column}"
            elif span.kind == RAW:
                source.fixed_day = date_of_day(day_of(span.lo))  # raw spans lie within one day
            elif span.kind == GRAIN_HOUR:
                source.fixed_day = date_of_day(span.lo // 24)  # so do hour spans
            elif route.scope is not None:  # the rollups hold one row per (day, key): nothing to aggregate
                source.column = f"bucket, {source.column}"
                source.measures, source.unique = ", ".join(MEASURES), True
            else:
                source.column = f"day, {source.column}"
            return source
        p, clauses = self._p, []
        params: list[Any] = []
        if span.kind == RAW:
            where, params = self.raw_where(filters, span.lo, span.hi)
            clauses = [where] if where else []
            column = {"session": "session_id", "feature": "COALESCE(feature, '')"}.get(by)
            if column is None and by is not None and by != "day":
                column = self.column(by)
            if exclude_none and column:
                clauses.append(f"{column} IS NOT NULL")
            total_key = ALL
            if by == "day" and route.raw_only:  # the whole range from the raw rows
                column = day_sql(self.dialect)
            elif by == "day":
                total_key = date_of_day(day_of(span.lo))  # raw spans of a planned range lie within one day
            return _Source("token_usage", clauses, params, column, self._raw_measures,
                           {"tokens": "total_tokens", "cost": self._pico}, by, fixed_key=total_key,
                           times=by == "session")
        if route.scope is None:
            self._bucket_where("day", span, clauses, params)
            for dim, value in filters.items():
                clauses.append(f"{COLUMN[dim]} = {p}")
                params.append(value)
            column = "day" if by == "day" else COLUMN.get(by)
            if exclude_none:
                clauses.append(f"{column} <> {NO_ID}" if by in ("user", "guild") else f"{column} <> ''")
            return _Source("token_usage_daily", clauses, params, column, self._sums,
                           {"tokens": "total_tokens", "cost": "cost_pusd"}, by)
        clauses, params = [f"grain = {p}", f"scope = {p}"], [span.kind, ROLLUP_SCOPES.get(route.scope, route.scope)]
        if filters:
            clauses.append(f"scope_key = {p}")
            params.append(str(filters[route.scope]))
        self._bucket_where("bucket", span, clauses, params)
        if exclude_none:
            clauses.append("scope_key <> ''")
        column = "bucket" if by == "day" else "scope_key" if by is not None else None
        fixed_key: object = ALL
        if by == "day" and span.kind == GRAIN_HOUR:  # hour spans lie within one day: that day is their key
            column, fixed_key = None, date_of_day(span.lo // 24)
        unique = span.single_bucket
        return _Source("token_usage_rollups", clauses, params, column,
                       ", ".join(MEASURES) if unique else self._sums, {"tokens": "total_tokens", "cost": "cost_pusd"},
                       by, unique=unique, text_keys=True, fixed_key=fixed_key)

    def _scalar(self, sql: str, params=()) -> int:
        value = self.db.execute_sql(sql, params).fetchone()[0]
        return int(value or 0)

    def _time_parser(self):
        if self.dialect == "sqlite":
            return lambda v: None if v is None else datetime.fromisoformat(v).replace(tzinfo=timezone.utc)
        return lambda v: None if v is None else v.replace(tzinfo=timezone.utc)
