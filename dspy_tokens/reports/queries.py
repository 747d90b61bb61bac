"""``Reports``: summaries, breakdowns, top spenders, sessions and recent calls over one database.

    reports = Reports("sqlite:///usage.db")             # or tracker.summary(...), tracker.top(...), ...
    reports.summary("month")                            # Summary(calls=..., cost_usd=Decimal(...), ...)
    reports.breakdown("feature", "week")                # [Group(key="setup_help", ...), ...]
    reports.top(10, by="cost", period="month")          # the ten users who cost most this month

Every method reads the database on the calling thread: they are reports, not the LM hot path. From async code
use ``await asyncio.to_thread(tracker.summary, "today")``. Periods are UTC (:mod:`~dspy_tokens.reports.periods`).

Money: costs are ``Decimal`` everywhere and sums are exact (the aggregates keep integer picodollars). Calls with
no known price are never counted as $0: ``cost_usd`` is the cost of the priced calls and ``unknown_cost_calls``
says how many calls are missing from it (failed calls are counted in ``errors``).

Speed: a range is cut into whole months, whole days and partial days (:func:`plan_spans`), each read whichever
way reads less (a month bucket minus the days outside the range, a day bucket minus the raw rows outside it);
totals and breakdowns by model, feature or request type read a partial day as hour buckets plus at most two
partial hours of raw rows (:data:`~dspy_tokens.store.units.HOUR_DIMENSIONS`). Buckets come from the rollups the
writer keeps in the same transaction as the rows (see :mod:`dspy_tokens.store.spans`). A top-N over several spans
first ranks the keys on the one measure it sorts by, in one statement, then reads every measure for the N winners
only. Measured at 10M rows on SQLite: ``summary("month")`` ~0.6 ms and ``top(10, period="month")`` ~1 ms, where a
GROUP BY over the month's raw rows takes 0.3–1.6 s.
"""

from __future__ import annotations

import operator
import os
from datetime import datetime
from typing import Any, Callable, Mapping, TextIO

from .._ids import optional_id
from .._metadata import check_key, value_text
from ..store import Store
from ..store.spans import ALL, RAW, Span
from ..store.units import CUBE_DIMENSIONS, DIMENSIONS, HOUR_DIMENSIONS, MEASURES, METADATA_PREFIX
from . import export as _export
from . import retention
from .periods import IdFilter, Moment, Period, period_bounds, plan_spans, utc_now
from .results import CallRecord, CleanupResult, Group, Summary, totals_fields

BREAKDOWNS = (*DIMENSIONS, "day", "session")
#: Sessions :meth:`Reports.recent_sessions` looks for among the latest calls (an index walk, never a scan).
RECENT_SESSIONS_SCAN = 5000


def _filters(user_id: IdFilter = None, guild_id: IdFilter = None, feature: str | None = None,
             model: str | None = None, request_type: str | None = None,
             metadata: Mapping[str, Any] | None = None) -> dict:
    """The given filters as {dimension: value}, validated; ``metadata={"team": "a"}`` is ``{"metadata:team": "a"}``."""
    found: dict[str, int | str | None] = {}
    for dim, value in (("user", user_id), ("guild", guild_id)):
        if value is not None:
            try:
                found[dim] = optional_id(value)
            except ValueError as exc:
                raise ValueError(f"{dim}_id {exc}") from None
    for dim, value in (("feature", feature), ("model", model), ("request_type", request_type)):
        if value is not None:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{dim} must be a non-empty string, got {value!r}")
            found[dim] = value
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not metadata:
            raise ValueError(f"metadata must be a non-empty mapping of keys to values, got {metadata!r}")
        for key, value in metadata.items():
            found[METADATA_PREFIX + check_key(key)] = value_text(value)
    return found


def _dimension(by: Any) -> bool:
    """``by`` names one dimension: a stored one, or ``metadata:<key>``."""
    if isinstance(by, str) and by.startswith(METADATA_PREFIX):
        check_key(by[len(METADATA_PREFIX):])
        return True
    return by in DIMENSIONS


def _sortable(key: Any) -> tuple[int, Any, str]:
    return (0, key, "") if isinstance(key, int) else (1, 0, str(key))


class Reports:
    """Reports over one database: a :class:`~dspy_tokens.store.Store` or its URL.

    ``clock`` returns the current UTC time (tests pin it).
    """

    def __init__(self, store: Store | str | None = None, clock: Callable[[], datetime] | None = None):
        self.store = store if isinstance(store, Store) else Store(store)
        self.clock = clock or utc_now
        self._spans = self.store.spans

    def __repr__(self) -> str:
        return f"Reports({self.store!r})"

    def bounds(self, period: Period = None, since: Moment = None,
               until: Moment = None) -> tuple[datetime | None, datetime | None]:
        return period_bounds(period, since, until, self.clock())

    def summary(self, period: Period = None, *, since: Moment = None, until: Moment = None,
                user_id: IdFilter = None, guild_id: IdFilter = None, feature: str | None = None,
                model: str | None = None, request_type: str | None = None,
                metadata: Mapping[str, Any] | None = None) -> Summary:
        """Totals of a period (default: everything), optionally for one user/guild/feature/model/request type, or
        the calls whose ``usage_context`` metadata has the given values (``metadata={"team": "a"}``)."""
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model, request_type, metadata)
        self.store.connect()
        found = self._collect(None, filters, since, until).get(ALL)
        values = found[0] if found else [0] * len(MEASURES)
        if "user" in filters:
            active = 1 if values[0] else 0
        elif not set(filters) <= set(CUBE_DIMENSIONS):  # only the raw rows know both the users and this filter
            active = self._spans.active_users([Span(RAW, since, until)], filters)
        else:
            # Filtered: the daily cube, where a subtracted span would group every user of every day it holds.
            active = self._spans.active_users(plan_spans(since, until, months=not filters, now=self.clock(),
                                                         subtract=not filters), filters)
        return Summary(active_users=active, since=since, until=until, **totals_fields(values))

    def breakdown(self, by: str | tuple[str, str], period: Period = None, *, since: Moment = None,
                  until: Moment = None, user_id: IdFilter = None, guild_id: IdFilter = None,
                  feature: str | None = None, model: str | None = None,
                  request_type: str | None = None, metadata: Mapping[str, Any] | None = None,
                  limit: int | None = None) -> list[Group]:
        """Totals per user, guild, model, feature, request type, day or session, or per value of one
        ``usage_context`` metadata key (``"metadata:team"``; calls without the key are the ``None`` group). Ordered
        by day for ``"day"``, latest first for ``"session"``, else by cost then tokens (largest first). Metadata,
        and a request type combined with another dimension, are read from the raw rows (no rollup holds them).

        ``by=("day", dimension)`` splits each day by one of those dimensions: keys are ``(date, key)``
        pairs, ordered by day, then by cost and tokens (a daily chart stacked by model is
        ``breakdown(("day", "model"), "month")``); it reads the same day rollups as ``by="day"``."""
        if isinstance(by, list):
            by = tuple(by)
        if not (by in BREAKDOWNS or _dimension(by) or (isinstance(by, tuple) and len(by) == 2 and by[0] == "day"
                                                          and _dimension(by[1]))):
            raise ValueError(f"by={by!r}: breakdowns are by {', '.join(BREAKDOWNS)} or \"metadata:<key>\", or a "
                             f"pair (\"day\", dimension) with a dimension among {', '.join(DIMENSIONS)} or "
                             "\"metadata:<key>\"")
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model, request_type, metadata)
        self.store.connect()
        groups = self._collect(by, filters, since, until)
        items = [Group(by=by, key=key, first_at=extra[0], last_at=extra[1], **totals_fields(values))
                 for key, (values, extra) in groups.items()]
        if by == "day":
            items.sort(key=operator.attrgetter("key"))  # dates
        elif isinstance(by, tuple):
            items.sort(key=lambda g: (g.key[0], -g.cost_usd, -g.total_tokens, g.key[1] is None,
                                      _sortable(g.key[1])))
        elif by == "session":
            items.sort(key=lambda g: (g.first_at, g.key), reverse=True)
        else:
            items.sort(key=lambda g: (-g.cost_usd, -g.total_tokens, g.key is None, _sortable(g.key)))
        return items[:limit] if limit is not None else items

    def top(self, n: int = 10, by: str = "tokens", scope: str = "user", period: Period = None, *,
            since: Moment = None, until: Moment = None, user_id: IdFilter = None, guild_id: IdFilter = None,
            feature: str | None = None, model: str | None = None, request_type: str | None = None,
            metadata: Mapping[str, Any] | None = None) -> list[Group]:
        """The ``n`` users (or guilds) with the most tokens (or cost). Calls without one are left out."""
        if by not in ("tokens", "cost"):
            raise ValueError(f"by={by!r}: top spenders are ranked by tokens or cost")
        if scope not in ("user", "guild"):
            raise ValueError(f"scope={scope!r}: top spenders are users or guilds")
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model, request_type, metadata)
        self.store.connect()
        groups = self._collect(scope, filters, since, until, rank=by, limit=n)
        metric = MEASURES.index("total_tokens" if by == "tokens" else "cost_pusd")
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0][metric], kv[0]))[:n]
        return [Group(by=scope, key=key, **totals_fields(values)) for key, (values, _) in ranked]

    def session(self, session_id: str) -> list[CallRecord]:
        """Every stored call of a session, in call order (dicts with the table's columns)."""
        self.store.connect()
        return self.store.records.session(session_id)  # type: ignore[return-value]

    def recent_sessions(self, limit: int = 10, *, user_id: IdFilter = None, guild_id: IdFilter = None,
                        feature: str | None = None, model: str | None = None, request_type: str | None = None,
            metadata: Mapping[str, Any] | None = None) -> list[Group]:
        """The ``limit`` sessions with the latest calls (among the last few thousand calls), latest first, each
        with the totals and first/last call times of all its calls (like ``breakdown("session")``)."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        filters = _filters(user_id, guild_id, feature, model, request_type, metadata)
        self.store.connect()
        where, params = self._spans.raw_where(filters, None, None)
        ids = self.store.records.latest_sessions(where, params, limit, RECENT_SESSIONS_SCAN)
        if not ids:
            return []
        route = self._spans.route("session", {})
        found = {key: (values, extra) for key, values, extra in self._spans.read(
            Span(RAW, None, None), route, "session", {}, keys=ids)}
        return [Group(by="session", key=key, first_at=found[key][1][0], last_at=found[key][1][1],
                      **totals_fields(found[key][0])) for key in ids if key in found]

    def recent_calls(self, user_id: int, guild_id: int | None = None, limit: int = 10) -> list[CallRecord]:
        """A user's last ``limit`` calls (in one guild, if given), newest first."""
        filters = _filters(user_id, guild_id)
        self.store.connect()
        return self.store.records.recent(filters["user"], filters.get("guild"), limit)  # type: ignore[return-value]

    def export(self, fmt: str = "csv", out: str | os.PathLike[str] | TextIO | None = None, *,
               anonymize: bool = False, period: Period = None, since: Moment = None, until: Moment = None,
               user_id: IdFilter = None, guild_id: IdFilter = None, feature: str | None = None,
               model: str | None = None, request_type: str | None = None,
               metadata: Mapping[str, Any] | None = None, batch_size: int = 5000,
               progress: Callable[[int], None] | None = None) -> int:
        """Stream the raw rows (id order) to ``out`` as CSV, a JSON array or JSON lines; see
        :func:`dspy_tokens.reports.export.export`."""
        since, until = self.bounds(period, since, until)
        filters = _filters(user_id, guild_id, feature, model, request_type, metadata)
        self.store.connect()
        return _export.export(self.store, fmt, out, filters=filters, since=since, until=until, anonymize=anonymize,
                              batch_size=batch_size, progress=progress)

    def cleanup(self, older_than_days: int = 90, *, batch_size: int = 5000, dry_run: bool = False,
                keep_counters_days: int = retention.DEFAULT_KEEP_COUNTERS_DAYS,
                progress: Callable[[int], None] | None = None) -> CleanupResult:
        """Delete raw rows older than ``older_than_days``; see :func:`dspy_tokens.reports.retention.cleanup`."""
        self.store.connect()
        return retention.cleanup(self.store, older_than_days, now=self.clock(), batch_size=batch_size,
                                 dry_run=dry_run, keep_counters_days=keep_counters_days, progress=progress)

    # -- one query over the spans of a range ------------------------------------------------------------
    def _collect(self, by: Any, filters: dict, since: datetime | None, until: datetime | None,
                 rank: str | None = None, limit: int | None = None) -> dict:
        """key -> (measures, (first_at, last_at)), merged over the spans of ``[since, until)``.

        With ``rank`` ("tokens"/"cost") and ``limit`` this is a top-N, without the calls that have no key. It
        ranks the keys on that one measure first (ten aggregates over every key cost several times more), then
        reads every measure of the ``limit`` winners only; one bucket of one rollup needs neither: its rows are
        read in rank order directly."""
        route = self._spans.route(by, filters)
        spans = [Span(RAW, since, until)] if route.raw_only else plan_spans(
            since, until, months=route.months, now=self.clock(), hours=route.scope in HOUR_DIMENSIONS)
        exclude = bool(rank)
        keys = None
        if rank:
            if limit is None:
                raise ValueError("a ranked read needs a limit")
            if len(spans) == 1 and self._spans.is_unique(spans[0], route):
                return {key: (values, extra) for key, values, extra in self._spans.read(
                    spans[0], route, by, filters, exclude_none=True, rank=rank, limit=limit)}
            keys = [key for key, _ in self._spans.ranked(spans, route, by, filters, rank, limit)]
            if not keys:
                return {}
        merged: dict = {}
        for span in spans:
            for key, values, extra in self._spans.read(span, route, by, filters, exclude_none=exclude, keys=keys):
                if key not in merged:
                    merged[key] = ([span.sign * v for v in values], extra)
                    continue
                acc, (first, last) = merged[key]
                for i, value in enumerate(values):
                    acc[i] += span.sign * value
                if extra[0] is not None:
                    merged[key] = (acc, (min(first, extra[0]), max(last, extra[1])))
        # A key only in the subtracted days of a month had no calls in the range.
        return {key: found for key, found in merged.items() if found[0][0] > 0}

