"""Pre-aggregated usage for reports, maintained by the writer in the same transaction as the rows.

Two tables (schema version 3), both keeping every measure a report shows:

``token_usage_daily``    (day, user_id, guild_id, model, feature)   the daily cube: answers any combination of
                                                                    filters at one-day resolution
``token_usage_rollups``  (grain, scope, bucket, scope_key)          per-scope totals per UTC day (grain ``d``)
                                                                    and per UTC calendar month (grain ``m``)

Scopes of ``token_usage_rollups``: ``global`` (key ``''``), ``user`` and ``guild`` (key = the id as decimal text),
``model`` and ``feature`` (key = the name). Calls without a user/guild/feature are kept under key ``''`` (and
-1 / ``''`` in the daily cube), so breakdowns still show them as "(none)". A feature of ``''`` counts as no feature.

Buckets are integers: ``day`` = days since 1970-01-01 UTC, month = ``year * 12 + month - 1``.
Measures (:data:`MEASURES`): calls, the five token columns (NULL counts as 0), ``cost_pusd`` (integer
picodollars of the priced calls: exact sums on every backend), ``unpriced_calls`` (no error, but no known cost),
``cache_hits`` and ``errors``.

These tables are never pruned by retention: they are what survives of old usage.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timezone
from types import SimpleNamespace

import peewee as pw

from .counters import to_pico
from .db import executemany, upsert_sql

MEASURES = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
            "cost_pusd", "unpriced_calls", "cache_hits", "errors")
DAILY_KEY = ("day", "user_id", "guild_id", "model", "feature")
ROLLUP_KEY = ("grain", "scope", "bucket", "scope_key")
DAY, MONTH = "d", "m"
DIMENSIONS = ("user", "guild", "model", "feature")  # the scopes besides "global"
NO_ID = -1  # user_id/guild_id of calls without one, in the daily cube (real ids are >= 0)
EPOCH = date(1970, 1, 1)
TOKEN_MEASURES = MEASURES[1:6]


def day_of(moment: datetime) -> int:
    return (moment.astimezone(timezone.utc).date() - EPOCH).days


def month_of(moment: datetime | date) -> int:
    if isinstance(moment, datetime):
        moment = moment.astimezone(timezone.utc)
    return moment.year * 12 + moment.month - 1


def date_of_day(day: int) -> date:
    return date.fromordinal(EPOCH.toordinal() + day)


def day_of_month(month: int) -> int:
    """The first day (epoch days) of a month bucket."""
    return (date(month // 12, month % 12 + 1, 1) - EPOCH).days


# -- tables -----------------------------------------------------------------------------------------------------
class _Measures(pw.Model):
    calls = pw.BigIntegerField(default=0)
    prompt_tokens = pw.BigIntegerField(default=0)
    completion_tokens = pw.BigIntegerField(default=0)
    total_tokens = pw.BigIntegerField(default=0)
    cached_tokens = pw.BigIntegerField(default=0)
    reasoning_tokens = pw.BigIntegerField(default=0)
    cost_pusd = pw.BigIntegerField(default=0)
    unpriced_calls = pw.BigIntegerField(default=0)
    cache_hits = pw.BigIntegerField(default=0)
    errors = pw.BigIntegerField(default=0)


class DailyUsage(_Measures):
    day = pw.IntegerField()
    user_id = pw.BigIntegerField()  # NO_ID when the call had none
    guild_id = pw.BigIntegerField()
    model = pw.CharField(max_length=200)
    feature = pw.CharField(max_length=100)  # '' when the call had none

    class Meta:
        table_name = "token_usage_daily"
        primary_key = pw.CompositeKey(*DAILY_KEY)
        indexes = ((("user_id", "day"), False), (("guild_id", "day"), False))


class UsageRollup(_Measures):
    grain = pw.CharField(max_length=1)
    scope = pw.CharField(max_length=8)
    scope_key = pw.CharField(max_length=200)
    bucket = pw.IntegerField()

    class Meta:
        table_name = "token_usage_rollups"
        # Clustered by bucket (SQLite WITHOUT ROWID, InnoDB): top-N scans one bucket's keys in order;
        # the index serves one user/guild/model/feature over a range of buckets.
        primary_key = pw.CompositeKey(*ROLLUP_KEY)
        indexes = ((("grain", "scope", "scope_key", "bucket"), False),)


def bind(db: pw.Database) -> SimpleNamespace:
    bound = {}
    for base in (DailyUsage, UsageRollup):
        # On SQLite the tables are stored in primary-key order, as InnoDB does: no rowid lookups in range scans.
        meta = type("Meta", (), {"database": db, "table_name": base._meta.table_name,
                                 "without_rowid": isinstance(db, pw.SqliteDatabase)})
        bound[base.__name__] = type(base.__name__, (base,), {"Meta": meta, "__module__": __name__})
    return SimpleNamespace(**bound)


# -- the live path: deltas of one committed batch -------------------------------------------------------------
def measures_of(row: dict) -> tuple[int, ...]:
    cost, error = row["cost_usd"], row["error"]
    return (1, row["prompt_tokens"] or 0, row["completion_tokens"] or 0, row["total_tokens"] or 0,
            row["cached_tokens"] or 0, row["reasoning_tokens"] or 0, to_pico(cost) if cost is not None else 0,
            1 if cost is None and error is None else 0, 1 if row["cache_hit"] else 0, 1 if error is not None else 0)


def rollup_deltas(rows) -> tuple[dict, dict]:
    """Sum rows into (daily cube key -> measures, rollup key -> measures).

    Rows are summed into the daily cube first; every rollup key is a function of a cube key, so the rollups are
    sums of cube cells — a batch from a few users, models and features costs little more than one row.
    """
    width = len(MEASURES)
    daily: dict[tuple, list[int]] = defaultdict(lambda: [0] * width)
    for row in rows:
        user, guild = row["user_id"], row["guild_id"]
        acc = daily[(day_of(row["created_at"]), NO_ID if user is None else user, NO_ID if guild is None else guild,
                     row["model"], row["feature"] or "")]
        acc[:] = [a + b for a, b in zip(acc, measures_of(row))]
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0] * width)
    for (day, user, guild, model, feature), values in daily.items():
        month = month_of(date_of_day(day))
        for scope, key in (("global", ""), ("user", "" if user == NO_ID else str(user)),
                           ("guild", "" if guild == NO_ID else str(guild)), ("model", model),
                           ("feature", feature)):
            for bucket_key in ((DAY, scope, day, key), (MONTH, scope, month, key)):
                acc = totals[bucket_key]
                acc[:] = [a + b for a, b in zip(acc, values)]
    return daily, totals


class RollupWriter:
    """Adds a batch's deltas inside the caller's transaction (keys sorted: no deadlocks between writers)."""

    def __init__(self, db):
        self.db = db
        self.daily_sql = upsert_sql(db, "token_usage_daily", DAILY_KEY, MEASURES)
        self.rollup_sql = upsert_sql(db, "token_usage_rollups", ROLLUP_KEY, MEASURES)

    def write(self, cursor, rows: list[dict]) -> None:
        daily, totals = rollup_deltas(rows)
        for sql, deltas in ((self.daily_sql, daily), (self.rollup_sql, totals)):
            executemany(self.db, cursor, sql, [(*k, *deltas[k]) for k in sorted(deltas)])


# -- SQL pieces per dialect ------------------------------------------------------------------------------------
def pico_sql(dialect: str, column: str = "cost_usd") -> str:
    """``column`` (USD) as exact integer picodollars. On SQLite the stored value is a float: it is the double
    nearest to a 12-place decimal, so rounding ``x * 1e12`` recovers the exact integer (for calls under ~$4,000)
    and the integer SUM is then exact, unlike a float SUM quantized afterwards."""
    integer = {"sqlite": "INTEGER", "postgresql": "BIGINT", "mysql": "SIGNED"}[dialect]
    return f"CAST(ROUND({column} * 1000000000000) AS {integer})"


def raw_measures_sql(dialect: str) -> str:
    """The :data:`MEASURES` of a group of ``token_usage`` rows, as SELECT expressions."""
    return ", ".join([
        "COUNT(*)",
        *(f"COALESCE(SUM({c}), 0)" for c in TOKEN_MEASURES),
        f"COALESCE(SUM({pico_sql(dialect)}), 0)",
        "COALESCE(SUM(CASE WHEN cost_usd IS NULL AND error IS NULL THEN 1 ELSE 0 END), 0)",
        "COALESCE(SUM(CASE WHEN cache_hit THEN 1 ELSE 0 END), 0)",
        "COALESCE(SUM(CASE WHEN error IS NOT NULL THEN 1 ELSE 0 END), 0)",
    ])


def summed_measures_sql() -> str:
    return ", ".join(f"COALESCE(SUM({c}), 0)" for c in MEASURES)


def day_sql(dialect: str, column: str = "created_at") -> str:
    """Epoch days of a stored (naive UTC) timestamp."""
    if dialect == "sqlite":  # fixed-width text 'YYYY-MM-DD HH:MM:SS.ffffff'
        return f"CAST(julianday(substr({column}, 1, 10)) - 2440587.5 AS INTEGER)"
    if dialect == "postgresql":
        return f"(CAST({column} AS DATE) - DATE '1970-01-01')"
    return f"DATEDIFF({column}, '1970-01-01')"


def month_of_day_sql(dialect: str, column: str) -> str:
    """The month bucket of an epoch-day integer column."""
    if dialect == "sqlite":
        text = f"date({column} * 86400, 'unixepoch')"
        return f"(CAST(substr({text}, 1, 4) AS INTEGER) * 12 + CAST(substr({text}, 6, 2) AS INTEGER) - 1)"
    if dialect == "postgresql":
        moment = f"(DATE '1970-01-01' + {column})"
        return (f"(CAST(EXTRACT(YEAR FROM {moment}) AS INTEGER) * 12 "
                f"+ CAST(EXTRACT(MONTH FROM {moment}) AS INTEGER) - 1)")
    moment = f"DATE_ADD('1970-01-01', INTERVAL {column} DAY)"
    return f"(YEAR({moment}) * 12 + MONTH({moment}) - 1)"


def text_sql(dialect: str, column: str) -> str:
    return f"CAST({column} AS {'CHAR' if dialect == 'mysql' else 'TEXT'})"


def rebuild(db, dialect: str) -> dict[str, int]:
    """Recompute both tables from ``token_usage`` with a few INSERT ... SELECT ... GROUP BY statements.

    Used by migration 3 (usage recorded before it) and by the benchmark's bulk load. It replaces the tables'
    contents: after a retention cleanup the raw rows no longer hold old usage, so do not rebuild then.
    Run it inside a write transaction so that writers wait.
    """
    columns = ", ".join(MEASURES)
    sums = summed_measures_sql()
    db.execute_sql("DELETE FROM token_usage_daily")
    db.execute_sql("DELETE FROM token_usage_rollups")
    day = day_sql(dialect)
    db.execute_sql(
        f"INSERT INTO token_usage_daily ({', '.join(DAILY_KEY)}, {columns}) "
        f"SELECT {day}, COALESCE(user_id, {NO_ID}), COALESCE(guild_id, {NO_ID}), model, COALESCE(feature, ''), "
        f"{raw_measures_sql(dialect)} FROM token_usage "
        f"GROUP BY {day}, COALESCE(user_id, {NO_ID}), COALESCE(guild_id, {NO_ID}), model, COALESCE(feature, '')")
    keys = {
        "global": "''",
        "user": f"CASE WHEN user_id = {NO_ID} THEN '' ELSE {text_sql(dialect, 'user_id')} END",
        "guild": f"CASE WHEN guild_id = {NO_ID} THEN '' ELSE {text_sql(dialect, 'guild_id')} END",
        "model": "model",
        "feature": "feature",
    }
    target = f"INSERT INTO token_usage_rollups (grain, scope, scope_key, bucket, {columns})"
    grouped = {"global": "day", "user": "day, user_id", "guild": "day, guild_id", "model": "day, model",
               "feature": "day, feature"}
    for scope, key in keys.items():
        group = grouped[scope]
        db.execute_sql(f"{target} SELECT '{DAY}', '{scope}', {key}, day, {sums} "
                       f"FROM token_usage_daily GROUP BY {group}")
    month = month_of_day_sql(dialect, "bucket")
    db.execute_sql(f"{target} SELECT '{MONTH}', scope, scope_key, {month}, {sums} FROM token_usage_rollups "
                   f"WHERE grain = '{DAY}' GROUP BY scope, scope_key, {month}")
    count = lambda table: db.execute_sql(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: E731
    return {"daily": count("token_usage_daily"), "rollups": count("token_usage_rollups")}


def create_tables(db, dialect: str) -> None:
    """Migration 3: create the tables and fill them from the rows already stored."""
    models = bind(db)
    db.create_tables([models.DailyUsage, models.UsageRollup], safe=True)
    rebuild(db, dialect)
