"""The storage engine: batched, idempotent inserts of usage rows plus their hourly counters in one transaction."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

import peewee as pw

from . import migrations
from .db import dialect, open_database, redact, resolve_url, write_transaction
from .schema import PICO, SCOPE_GLOBAL, SCOPE_GUILD, SCOPE_USER, bind_models

ROW_COLUMNS = (
    "call_uuid", "session_id", "call_index", "user_id", "guild_id", "channel_id", "feature", "module", "model",
    "response_model", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
    "cost_usd", "cost_source", "cache_hit", "usage_reported", "error", "latency_ms", "created_at",
)
COUNTER_COLUMNS = ("calls", "tokens", "cost_pusd", "unpriced_calls")
LOOKUP_CHUNK = 500


def to_pico(usd: Decimal) -> int:
    return int((usd * PICO).to_integral_value(ROUND_HALF_UP))


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def counter_deltas(rows: list[dict]) -> dict[tuple[str, int, int], list[int]]:
    """Sum rows into (scope, scope_id, hour) → [calls, tokens, cost_pusd, unpriced_calls]."""
    deltas: dict[tuple[str, int, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        hour = hour_of(row["created_at"])
        cost = row["cost_usd"]
        delta = (1, row["total_tokens"] or 0, to_pico(cost) if cost is not None else 0,
                 1 if cost is None and row["error"] is None else 0)
        scopes = [(SCOPE_GLOBAL, 0)]
        if row["user_id"] is not None:
            scopes.append((SCOPE_USER, row["user_id"]))
        if row["guild_id"] is not None:
            scopes.append((SCOPE_GUILD, row["guild_id"]))
        for scope, scope_id in scopes:
            acc = deltas[(scope, scope_id, hour)]
            for i, value in enumerate(delta):
                acc[i] += value
    return deltas


class Store:
    """One database: schema, and the write path used by the background writer."""

    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.db = open_database(self.url)
        self.dialect = dialect(self.db)
        self.models = bind_models(self.db)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        p = self.db.param
        cols = ", ".join(ROW_COLUMNS)
        self._insert_sql = f"INSERT INTO token_usage ({cols}) VALUES ({', '.join([p] * len(ROW_COLUMNS))})"
        key = "scope, scope_id, hour"
        values = f"INSERT INTO token_usage_counters ({key}, {', '.join(COUNTER_COLUMNS)}) VALUES ({', '.join([p] * 7)})"
        if self.dialect == "mysql":
            updates = ", ".join(f"{c} = {c} + VALUES({c})" for c in COUNTER_COLUMNS)
            self._counter_sql = f"{values} ON DUPLICATE KEY UPDATE {updates}"
        else:
            updates = ", ".join(f"{c} = token_usage_counters.{c} + excluded.{c}" for c in COUNTER_COLUMNS)
            self._counter_sql = f"{values} ON CONFLICT ({key}) DO UPDATE SET {updates}"
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

    def insert_rows(self, rows: list[dict]) -> int:
        """Insert rows not already stored (by ``call_uuid``) and their counters, atomically. Returns rows added."""
        self.ensure_schema()
        self.db.connect(reuse_if_open=True)
        with write_transaction(self.db):
            unique = {row["call_uuid"]: row for row in rows}
            stored = self.existing_uuids(list(unique))
            fresh = [row for uuid, row in unique.items() if uuid not in stored]
            if not fresh:
                return 0
            cursor = self.db.cursor()
            self._executemany(cursor, self._insert_sql, [self._db_row(r) for r in fresh])
            deltas = counter_deltas(fresh)
            # A fixed key order keeps concurrent writers from deadlocking on counter rows.
            self._executemany(cursor, self._counter_sql,
                              [(*key, *deltas[key]) for key in sorted(deltas)])
        return len(fresh)

    def _executemany(self, cursor, sql: str, params: list[tuple]) -> None:
        if self.dialect == "postgresql":
            from psycopg2.extras import execute_batch
            execute_batch(cursor, sql, params, page_size=500)
        else:
            cursor.executemany(sql, params)

    def close(self) -> None:
        self.reset_connection()
