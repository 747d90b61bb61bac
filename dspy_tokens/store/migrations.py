"""Versioned schema migrations, recorded in ``dspy_tokens_migrations``; safe when several processes start at once.

To change the schema, append a ``Migration`` to ``MIGRATIONS``; never edit an applied one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import peewee as pw

from . import collation, rebuild
from ._db import dialect, write_transaction
from .units import MEASURES, ROLLUP_SCOPES


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[pw.Database, object], None]


def _initial(db, models) -> None:
    db.create_tables([models.TokenUsage, models.UsageCounter], safe=True)


def _limits(db, models) -> None:
    db.create_tables([models.ModelUsageCounter, models.Reservation, models.LimitLock], safe=True)
    rebuild.rebuild_counters(db, models, tables=("model",))  # per-model counters start from the stored rows


def _rollups(db, models) -> None:
    # Report rollups (daily cube, per-scope day/month totals), filled from the rows already stored.
    db.create_tables([models.DailyUsage, models.UsageRollup], safe=True)
    rebuild.rebuild_rollups(db, dialect(db))


def _covering_counter_indexes(db, models) -> None:
    # A limit check sums up to 24 × days + 1 counter rows per rule: read them from the index alone.
    kind = dialect(db)
    if kind == "mysql":
        return  # InnoDB tables are clustered on their primary key: the counters already are that index
    for table, key in (("token_usage_counters", "scope, scope_id, hour"),
                       ("token_usage_model_counters", "scope, scope_id, model, hour")):
        columns = "tokens, cost_pusd, unpriced_calls"
        spec = f"({key}) INCLUDE ({columns})" if kind == "postgresql" else f"({key}, {columns})"
        db.execute_sql(f"CREATE INDEX IF NOT EXISTS {table}_window ON {table} {spec}")


def _budgets(db, models) -> None:
    # Run-time limits, their audit trail, alerts fired once, and reservations that follow a run call by call.
    db.create_tables([models.ReservationCall, models.LimitOverride, models.ResetBaseline, models.LimitChange,
                      models.AlertSent], safe=True)
    present = {c.name for c in db.get_columns("token_reservations")}
    defaults = {"channel_id": " NULL", "feature_id": " NULL", "calls": " NOT NULL DEFAULT 1"}
    for column in ("channel_id", "feature_id", "calls", "committed_tokens", "committed_cost_pusd", "committed_calls"):
        if column not in present:
            default = defaults.get(column, " NOT NULL DEFAULT 0")
            db.execute_sql(f"ALTER TABLE token_reservations ADD COLUMN {column} BIGINT{default}")
    rebuild.rebuild_counters(db, models)  # channel and feature counters start from the stored rows


def _exact_text_keys(db, models) -> None:
    # MySQL/MariaDB's default collation merged "Chat", "chat" and "chät": compare byte for byte, then split the
    # aggregates it merged by recomputing them from the raw rows (which kept every spelling).
    # Days and hours that retention already emptied keep their (merged) aggregates: no row is left to split them.
    if not collation.make_exact(db, [m._meta.table_name for m in vars(models).values()]):
        return  # SQLite and PostgreSQL already compare exactly; so does a MySQL database created since
    rebuild.rebuild_counters(db, models)
    kind = dialect(db)
    with write_transaction(db):
        first = rebuild.first_complete_day(db, kind, models)
        if first is not None:
            rebuild.rebuild_rollups(db, kind, from_day=first)


def _refusals(db, models) -> None:
    # Refusals counted in the database, so /metrics sums every process's (none are known from before).
    db.create_tables([models.LimitRefusal], safe=True)


def _request_types(db, models) -> None:
    # Per call: what kind of request it was, the usage_context metadata, whether its tokens are our estimate; and
    # the estimated calls among every aggregate's measures (none were estimated before this version).
    kind = dialect(db)
    false = "FALSE" if kind == "postgresql" else "0"
    wanted = {"token_usage": {"request_type": "VARCHAR(20) NOT NULL DEFAULT 'chat'", "metadata": "TEXT NULL",
                              "usage_estimated": f"BOOLEAN NOT NULL DEFAULT {false}"},
              "token_usage_daily": {"estimated_calls": "BIGINT NOT NULL DEFAULT 0"},
              "token_usage_rollups": {"estimated_calls": "BIGINT NOT NULL DEFAULT 0"}}
    typed = "request_type" in {c.name for c in db.get_columns("token_usage")}
    for table, columns in wanted.items():
        present = {c.name for c in db.get_columns(table)}
        for column, spec in columns.items():
            if column not in present:  # a database created by this version has them from its first migration
                db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {column} {spec}")
    if not typed:  # every call stored so far was recorded as a chat: its request-type rollups are the global ones
        measures = ", ".join(MEASURES)
        db.execute_sql(f"INSERT INTO token_usage_rollups (grain, scope, bucket, scope_key, {measures}) "
                       f"SELECT grain, '{ROLLUP_SCOPES['request_type']}', bucket, 'chat', {measures} "
                       "FROM token_usage_rollups WHERE scope = 'global'")


#: Migration 7's columns of token_usage: what was priced (cache writes, audio, the tier served, which prices).
PRICED_COLUMNS = {"cache_write_tokens": "BIGINT NULL", "audio_tokens": "BIGINT NULL",
                  "service_tier": "VARCHAR(32) NULL", "price_version": "VARCHAR(64) NULL"}


def _priced_dimensions(db, models) -> None:
    present = {c.name for c in db.get_columns("token_usage")}
    for column, kind in PRICED_COLUMNS.items():
        if column not in present:
            db.execute_sql(f"ALTER TABLE token_usage ADD COLUMN {column} {kind}")


def _hour_rollups(db, models) -> None:
    # Hour buckets beside the day and month ones (overall, per model, feature and request type): a range's partial
    # days are read from them and the raw rows of at most two partial hours, not from a partial day's raw rows.
    rebuild.rebuild_hour_rollups(db, dialect(db))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "token_usage with hourly usage counters", _initial),
    Migration(2, "limits: per-model counters, reservations, scope locks", _limits),
    Migration(3, "reports: daily usage cube and per-scope day/month rollups", _rollups),
    Migration(4, "limits: covering indexes for window sums", _covering_counter_indexes),
    Migration(5, "budgets: overrides, audit, alerts, channel/feature scopes, reservation top-ups", _budgets),
    Migration(6, "text keys compare exactly (binary collation on MySQL/MariaDB); split merged aggregates",
              _exact_text_keys),
    Migration(7, "pricing: cache-write and audio tokens, service tier, price version per call", _priced_dimensions),
    Migration(8, "calls: request type, metadata, estimated usage", _request_types),
    Migration(9, "limits: refusals counted by rule scope, metric, model and feature", _refusals),
    Migration(10, "reports: hour rollups for the partial days of a range", _hour_rollups),
)
LATEST = MIGRATIONS[-1].version


@contextlib.contextmanager
def _migration_lock(db):
    """Serialise migrators across processes; the loser then sees the versions the winner applied."""
    kind = dialect(db)
    if kind == "mysql":  # MySQL DDL commits implicitly, so a transaction cannot hold the lock
        db.execute_sql("SELECT GET_LOCK('dspy_tokens_migrate', 60)")
        try:
            yield
        finally:
            db.execute_sql("SELECT RELEASE_LOCK('dspy_tokens_migrate')")
        return
    with db.atomic("IMMEDIATE") if kind == "sqlite" else db.atomic():
        if kind == "postgresql":
            db.execute_sql("SELECT pg_advisory_xact_lock(7412790104)")
        yield


def applied_versions(db, models) -> dict[int, datetime]:
    if not models.SchemaMigration.table_exists():
        return {}
    return {m.version: m.applied_at for m in models.SchemaMigration.select()}


def migrate(db, models) -> list[Migration]:
    """Apply every pending migration; returns those applied by this call."""
    done: list[Migration] = []
    with db.connection_context():
        db.create_tables([models.SchemaMigration], safe=True)
        if set(applied_versions(db, models)) >= {m.version for m in MIGRATIONS}:
            return done
        with _migration_lock(db):
            applied = applied_versions(db, models)
            for migration in MIGRATIONS:
                if migration.version in applied:
                    continue
                migration.apply(db, models)
                models.SchemaMigration.create(version=migration.version, name=migration.name,
                                              applied_at=datetime.now(timezone.utc))
                done.append(migration)
    return done


def status(db, models) -> list[tuple[Migration, datetime | None]]:
    with db.connection_context():
        applied = applied_versions(db, models)
    return [(m, applied.get(m.version)) for m in MIGRATIONS]
