"""Recompute the aggregates from the raw rows: migrations (usage stored before a table existed), the
``db rebuild-counters`` audit, and bulk loads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import aggregates
from ._db import dialect, write_transaction
from ._sql import (
    day_sql,
    executemany,
    hour_sql,
    month_of_day_sql,
    raw_measures_sql,
    summed_measures_sql,
    text_sql,
    upsert_sql,
)
from .units import (
    COUNTER_MEASURES,
    GRAIN_DAY,
    GRAIN_HOUR,
    GRAIN_MONTH,
    HOUR_DIMENSIONS,
    HOUR_SCOPES,
    MEASURES,
    NO_ID,
    ROLLUP_SCOPES,
    date_of_day,
    day_of,
    day_of_month,
    hour_of,
    month_of,
    usd,
)

REBUILD_PAGE = 20_000
COUNTER_TABLES = {"scope": ("token_usage_counters", ("scope", "scope_id", "hour")),
                  "model": ("token_usage_model_counters", ("scope", "scope_id", "model", "hour"))}
DAILY_KEY = ("day", "user_id", "guild_id", "model", "feature")


@dataclass(frozen=True)
class CounterDrift:
    """How one counter table differed from what its raw rows say, summed over the hours the rows cover."""

    table: str  # "scope" (token_usage_counters) or "model" (token_usage_model_counters)
    counters: int  # counter rows the raw rows give
    added: int  # counter rows that were missing
    removed: int  # counter rows no raw row backs
    changed: int  # counter rows whose numbers were wrong
    before: dict  # calls, tokens, cost_usd (Decimal), unpriced_calls: the stored counters of those hours, summed
    after: dict  # ... and as the raw rows give them

    @property
    def drifted(self) -> bool:
        return bool(self.added or self.removed or self.changed)


@dataclass(frozen=True)
class CounterAudit:
    """What :meth:`~dspy_tokens.store.Store.rebuild_counters` found (and, unless ``checked_only``, fixed)."""

    rows: int
    tables: tuple[CounterDrift, ...]
    checked_only: bool

    @property
    def drifted(self) -> bool:
        return any(t.drifted for t in self.tables)


def rebuild_counters(db, models, tables=("scope", "model"), *, check: bool = False,
                     progress: Callable[[int, int], None] | None = None) -> CounterAudit:
    """Recompute the hourly counters from the raw rows, inside one write transaction (writers wait meanwhile),
    and say how the stored ones differed. With ``check`` nothing is written. ``progress(rows_read, rows)`` is
    called per page of rows read.

    Hours before the oldest stored row are left alone: retention deleted their rows (it deletes whole hours),
    and the counters are then the only record of that usage.
    """
    kind = dialect(db)
    usage = models.TokenUsage
    fields = [usage.id, usage.created_at, usage.user_id, usage.guild_id, usage.channel_id, usage.model, usage.feature,
              usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_tokens,
              usage.reasoning_tokens, usage.cost_usd, usage.cache_hit, usage.error]
    db.connect(reuse_if_open=True)
    with write_transaction(db) as transaction:
        if kind == "postgresql":
            db.execute_sql("LOCK TABLE token_usage IN SHARE ROW EXCLUSIVE MODE")
        oldest = usage.select(usage.created_at).order_by(usage.created_at).limit(1).scalar()
        first_hour = hour_of(oldest) if oldest is not None else None
        count = usage.select().count() if progress is not None else 0
        total = aggregates.Deltas()
        last_id, rows = 0, 0
        while True:  # keyset pagination: constant memory whatever the table size
            page = list(usage.select(*fields).where(usage.id > last_id).order_by(usage.id)
                        .limit(REBUILD_PAGE).namedtuples())
            if not page:
                break
            last_id = page[-1].id
            rows += len(page)
            total.merge(aggregates.deltas(page, rollups=False))
            if progress is not None:
                progress(rows, count)
        drifts = []
        for name, deltas, model in (("scope", total.counters, models.UsageCounter),
                                    ("model", total.model_counters, models.ModelUsageCounter)):
            if name not in tables:
                continue
            table, key = COUNTER_TABLES[name]
            drifts.append(_drift(name, _stored_counters(db, table, key, first_hour), deltas))
            if check:
                continue
            if first_hour is not None:
                model.delete().where(model.hour >= first_hour).execute()
            params = [(*k, *deltas[k]) for k in sorted(deltas)]
            executemany(kind, db.cursor(), upsert_sql(kind, db.param, table, key, COUNTER_MEASURES), params)
        if check:
            transaction.rollback()
    return CounterAudit(rows, tuple(drifts), check)


def _stored_counters(db, table: str, key: tuple[str, ...], first_hour: int | None) -> dict[tuple, list[int]]:
    """The stored counters of the hours the raw rows cover (all of them when there are no rows)."""
    where = "" if first_hour is None else f" WHERE hour >= {int(first_hour)}"
    cursor = db.execute_sql(f"SELECT {', '.join(key)}, {', '.join(COUNTER_MEASURES)} FROM {table}{where}")
    width = len(key)
    whole = [column in ("scope_id", "hour") for column in key]
    return {tuple(int(v) if is_int else v for v, is_int in zip(r[:width], whole)): [int(v) for v in r[width:]]
            for r in cursor.fetchall()}


def _drift(name: str, stored: dict[tuple, list[int]], wanted: dict[tuple, list[int]]) -> CounterDrift:
    def summed(table) -> dict:
        sums = {m: sum(v[i] for v in table.values()) for i, m in enumerate(COUNTER_MEASURES)}
        sums["cost_usd"] = usd(sums.pop("cost_pusd"))
        return sums
    return CounterDrift(
        table=name, counters=len(wanted), added=len(wanted.keys() - stored.keys()),
        removed=len(stored.keys() - wanted.keys()),
        changed=sum(1 for k in wanted.keys() & stored.keys() if list(wanted[k]) != stored[k]),
        before=summed(stored), after=summed(wanted))


def rebuild_rollups(db, kind: str, from_day: int | None = None) -> dict[str, int]:
    """Recompute the daily cube and the rollups from ``token_usage`` with a few INSERT ... SELECT ... GROUP BY
    statements (the same rules as :func:`~dspy_tokens.store.aggregates.measures_of`, in SQL).

    Without ``from_day`` it replaces the tables' contents: after a retention cleanup the raw rows no longer hold
    old usage, so then pass :func:`first_complete_day` (older days, and the months' sums of them, are kept).
    Run it inside a write transaction so that writers wait.
    """
    # Migration 3 rebuilds from a token_usage that migration 8 has not reached yet (no usage_estimated column)
    present = {c.name for c in db.get_columns("token_usage")}
    estimated = "usage_estimated" in present
    columns = ", ".join(MEASURES)
    sums = summed_measures_sql()
    day = day_sql(kind)
    month = month_of_day_sql(kind, "bucket")
    raw_days = days = buckets = months = month_buckets = ""
    if from_day is not None:
        start, first_month = int(from_day), month_of(date_of_day(int(from_day)))
        raw_days, days, buckets = f" WHERE {day} >= {start}", f" WHERE day >= {start}", f" AND bucket >= {start}"
        months, month_buckets = f" AND bucket >= {day_of_month(first_month)}", f" AND bucket >= {first_month}"
    db.execute_sql(f"DELETE FROM token_usage_daily{days}")
    db.execute_sql(f"DELETE FROM token_usage_rollups WHERE grain = '{GRAIN_DAY}'{buckets}")
    db.execute_sql(f"DELETE FROM token_usage_rollups WHERE grain = '{GRAIN_MONTH}'{month_buckets}")
    db.execute_sql(
        f"INSERT INTO token_usage_daily ({', '.join(DAILY_KEY)}, {columns}) "
        f"SELECT {day}, COALESCE(user_id, {NO_ID}), COALESCE(guild_id, {NO_ID}), model, COALESCE(feature, ''), "
        f"{raw_measures_sql(kind, estimated)} FROM token_usage{raw_days} "
        f"GROUP BY {day}, COALESCE(user_id, {NO_ID}), COALESCE(guild_id, {NO_ID}), model, COALESCE(feature, '')")
    keys = {
        "global": "''",
        "user": f"CASE WHEN user_id = {NO_ID} THEN '' ELSE {text_sql(kind, 'user_id')} END",
        "guild": f"CASE WHEN guild_id = {NO_ID} THEN '' ELSE {text_sql(kind, 'guild_id')} END",
        "model": "model",
        "feature": "feature",
    }
    target = f"INSERT INTO token_usage_rollups (grain, scope, scope_key, bucket, {columns})"
    grouped = {"global": "day", "user": "day, user_id", "guild": "day, guild_id", "model": "day, model",
               "feature": "day, feature"}
    for scope, key in keys.items():
        db.execute_sql(f"{target} SELECT '{GRAIN_DAY}', '{scope}', {key}, day, {sums} "
                       f"FROM token_usage_daily{days} GROUP BY {grouped[scope]} ORDER BY day")  # in time order
    if "request_type" in present:  # the request type is not in the cube: its rollups come from the rows
        db.execute_sql(f"{target} SELECT '{GRAIN_DAY}', '{ROLLUP_SCOPES['request_type']}', request_type, {day}, "
                       f"{raw_measures_sql(kind, estimated)} FROM token_usage{raw_days} GROUP BY {day}, request_type")
    db.execute_sql(f"{target} SELECT '{GRAIN_MONTH}', scope, scope_key, {month}, {sums} FROM token_usage_rollups "
                   f"WHERE grain = '{GRAIN_DAY}'{months} GROUP BY scope, scope_key, {month}")

    rebuild_hour_rollups(db, kind, from_day)

    def count(table: str) -> int:
        return db.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    return {"daily": count("token_usage_daily"), "rollups": count("token_usage_rollups")}


def rebuild_hour_rollups(db, kind: str, from_day: int | None = None) -> None:
    """Recompute the hour rollups (``from_day`` on) from ``token_usage``: one GROUP BY per scope of
    :data:`~dspy_tokens.store.units.HOUR_DIMENSIONS`."""
    present = {c.name for c in db.get_columns("token_usage")}
    # SQLite groups by the text of the hour ('YYYY-MM-DD HH', about twice as fast as computing the hour per row).
    hour, bucket = ("substr(created_at, 1, 13)", hour_sql(kind, "hour_key")) if kind == "sqlite" else \
        (hour_sql(kind), "hour_key")
    raw_hours = buckets = ""
    if from_day is not None:
        raw_hours, buckets = f" WHERE {day_sql(kind)} >= {int(from_day)}", f" AND bucket >= {int(from_day) * 24}"
    db.execute_sql(f"DELETE FROM token_usage_rollups WHERE grain = '{GRAIN_HOUR}'{buckets}")
    if kind == "postgresql" and db.in_transaction():  # group in memory, not in batches spilled to disk
        db.execute_sql("SET LOCAL work_mem = '256MB'")
    of_rows = {"global": "''", "model": "model", "feature": "COALESCE(feature, '')", "request_type": "request_type"}
    keys = {scope: of_rows[dim] for dim, scope in zip(HOUR_DIMENSIONS, HOUR_SCOPES)
            if dim != "request_type" or "request_type" in present}  # migration 3 runs before 8 added it
    measures = raw_measures_sql(kind, "usage_estimated" in present, named=True)
    columns = ", ".join(MEASURES)
    for scope, key in keys.items():
        db.execute_sql(f"INSERT INTO token_usage_rollups (grain, scope, scope_key, bucket, {columns}) "
                       f"SELECT '{GRAIN_HOUR}', '{scope}', scope_key, {bucket}, {columns} FROM ("
                       f"SELECT {hour} AS hour_key, {key} AS scope_key, {measures} "
                       f"FROM token_usage{raw_hours} GROUP BY {hour}{'' if scope == 'global' else f', {key}'}) hours "
                       "ORDER BY hour_key")  # stored in time order, as the writer adds them: an hour's rows together


def first_complete_day(db, kind: str, models) -> int | None:
    """The first day whose raw rows are all still stored (None when there are none). Retention deletes every row
    before a cutoff, so only the oldest row's day can be partial: it is complete when the daily cube counts no
    more calls that day than there are rows."""
    usage = models.TokenUsage
    oldest = usage.select(usage.created_at).order_by(usage.created_at).limit(1).scalar()
    if oldest is None:
        return None
    first = day_of(oldest)
    rows = db.execute_sql(f"SELECT COUNT(*) FROM token_usage WHERE {day_sql(kind)} = {first}").fetchone()[0]
    cube = db.execute_sql(f"SELECT COALESCE(SUM(calls), 0) FROM token_usage_daily WHERE day = {first}").fetchone()[0]
    return first if int(cube) <= int(rows) else first + 1
