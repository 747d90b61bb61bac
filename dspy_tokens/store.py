"""The storage engine: batched, idempotent inserts of usage rows plus their hourly counters in one transaction."""

from __future__ import annotations

import threading

from . import migrations
from .counters import COUNTER_COLUMNS, MODEL_KEY, SCOPE_KEY, counter_deltas
from .db import (dialect, executemany, insert_sql, open_database, redact, resolve_url, upsert_sql,
                 write_transaction)
from .rollups import RollupWriter
from .schema import bind_models

ROW_COLUMNS = (
    "call_uuid", "session_id", "call_index", "user_id", "guild_id", "channel_id", "feature", "module", "model",
    "response_model", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
    "cost_usd", "cost_source", "cache_hit", "usage_reported", "error", "latency_ms", "created_at",
)
LOOKUP_CHUNK = 500


class Store:
    """One database: schema, and the write path used by the background writer."""

    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.db = open_database(self.url)
        self.dialect = dialect(self.db)
        self.models = bind_models(self.db)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._insert_sql = insert_sql(self.db, "token_usage", ROW_COLUMNS)
        self._counter_sql = upsert_sql(self.db, "token_usage_counters", SCOPE_KEY, COUNTER_COLUMNS)
        self._model_counter_sql = upsert_sql(self.db, "token_usage_model_counters", MODEL_KEY, COUNTER_COLUMNS)
        self._rollups = RollupWriter(self.db)
        created = self.models.TokenUsage.created_at
        self._created_db_value = created.db_value

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    def ensure_schema(self) -> None:
        """Create or migrate the schema once per process (idempotent, safe across processes)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrations.migrate(self.db, self.models)
                self._schema_ready = True

    def ping(self) -> bool:
        try:
            self.db.connect(reuse_if_open=True)
            self.db.execute_sql("SELECT 1")
            return True
        except Exception:
            self.reset_connection()
            return False

    def reset_connection(self) -> None:
        try:
            self.db.close()
        except Exception:
            pass

    def _db_row(self, row: dict) -> tuple:
        values = []
        for column in ROW_COLUMNS:
            value = row[column]
            if column == "created_at":
                value = self._created_db_value(value)
            elif column == "cost_usd" and value is not None and self.dialect == "sqlite":
                value = str(value)  # sqlite3 cannot bind Decimal
            values.append(value)
        return tuple(values)

    def existing_uuids(self, uuids: list[str]) -> set[str]:
        found: set[str] = set()
        p = self.db.param
        for start in range(0, len(uuids), LOOKUP_CHUNK):
            chunk = uuids[start:start + LOOKUP_CHUNK]
            cursor = self.db.execute_sql(
                f"SELECT call_uuid FROM token_usage WHERE call_uuid IN ({', '.join([p] * len(chunk))})", chunk)
            found.update(r[0] for r in cursor.fetchall())
        return found

    def insert_rows(self, rows: list[dict], release: list[str] = ()) -> int:
        """Insert rows not already stored (by ``call_uuid``) with their counters, and delete the reservations
        in ``release`` (settled by these rows), in one transaction. Returns the number of rows added."""
        self.ensure_schema()
        self.db.connect(reuse_if_open=True)
        with write_transaction(self.db):
            fresh = []
            if rows:
                unique = {row["call_uuid"]: row for row in rows}
                stored = self.existing_uuids(list(unique))
                fresh = [row for uuid, row in unique.items() if uuid not in stored]
            cursor = self.db.cursor()
            if fresh:
                executemany(self.db, cursor, self._insert_sql, [self._db_row(r) for r in fresh])
                scoped, by_model = counter_deltas(fresh)
                # A fixed key order keeps concurrent writers from deadlocking on counter rows.
                executemany(self.db, cursor, self._counter_sql, [(*k, *scoped[k]) for k in sorted(scoped)])
                executemany(self.db, cursor, self._model_counter_sql, [(*k, *by_model[k]) for k in sorted(by_model)])
                self._rollups.write(cursor, fresh)  # report rollups, in the same transaction
            if release:
                reservation = self.models.Reservation
                reservation.delete().where(reservation.id.in_(list(release))).execute()
        return len(fresh)

    def close(self) -> None:
        self.reset_connection()
