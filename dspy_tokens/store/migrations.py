"""Versioned schema migrations, recorded in ``dspy_tokens_migrations``; safe when several processes start at once.

To change the schema, append a ``Migration`` to ``MIGRATIONS``; never edit an applied one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import peewee as pw

from . import rebuild
from ._db import dialect


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


#: Migration 7's columns of token_usage: what was priced (cache writes, audio, the tier served, which prices).
PRICED_COLUMNS = {"cache_write_tokens": "BIGINT NULL", "audio_tokens": "BIGINT NULL",
                  "service_tier": "VARCHAR(32) NULL", "price_version": "VARCHAR(64) NULL"}


def _priced_dimensions(db, models) -> None:
    present = {c.name for c in db.get_columns("token_usage")}
    for column, kind in PRICED_COLUMNS.items():
        if column not in present:
            db.execute_sql(f"ALTER TABLE token_usage ADD COLUMN {column} {kind}")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "token_usage with hourly usage counters", _initial),
    Migration(2, "limits: per-model counters, reservations, scope locks", _limits),
    Migration(3, "reports: daily usage cube and per-scope day/month rollups", _rollups),
    Migration(4, "limits: covering indexes for window sums", _covering_counter_indexes),
    Migration(5, "budgets: overrides, audit, alerts, channel/feature scopes, reservation top-ups", _budgets),
    Migration(7, "pricing: cache-write and audio tokens, service tier, price version per call", _priced_dimensions),
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
