"""``Store``: one database — its schema, the batched idempotent write path, and the readers built on it.

Every failure leaves this package as a :class:`~dspy_tokens.StorageError` (``StorageUnavailable``: keep the data
and retry; ``StorageRejected``: the data itself was refused), with the driver's exception as its cause.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, Sequence

from . import aggregates, migrations, prune, rebuild
from ._db import classify, dialect, open_database, redact, resolve_url, sqlite_path, storage_errors
from ._sql import copy_rows, executemany, insert_sql, upsert_sql
from .alerts import AlertLedger
from .costs import CostRewriter
from .overrides import OverrideTable
from .prune import Pruner
from .records import Records
from .refusals import RefusalCounter
from .rows import ROW_COLUMNS, UsageRow
from .schema import bind_models
from .spans import SpanReader
from .units import COUNTER_MEASURES, MEASURES, stored_time, to_pico
from .windows import LimitWindows

LOOKUP_CHUNK = 500
_CREATED_AT = ROW_COLUMNS.index("created_at")
_COST = ROW_COLUMNS.index("cost_usd")


class Store:
    """One database, by URL (default: ``$DSPY_TOKENS_DATABASE_URL``, else ``sqlite:///dspy_tokens.db``)."""

    def __init__(self, url: str | None = None):
        self.url = resolve_url(url)
        self.db = open_database(self.url)
        self.dialect = dialect(self.db)
        self.models = bind_models(self.db)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # call_uuid -> reservation id of this process's guarded calls, until their rows are committed: a call the
        # reservation already covers is tied to it here, with no database round trip before the call.
        self._call_owners: dict[str, str] = {}
        self._owners_lock = threading.Lock()
        # Bound once, so the write path runs no helper of ours to open its transaction (IMMEDIATE on SQLite).
        self._transaction = (functools.partial(self.db.atomic, "IMMEDIATE") if self.dialect == "sqlite"
                             else self.db.atomic)
        kind, p = self.dialect, self.db.param
        self._insert_sql = insert_sql(kind, p, "token_usage", ROW_COLUMNS)
        self._upserts = (
            ("counters", upsert_sql(kind, p, "token_usage_counters", ("scope", "scope_id", "hour"),
                                    COUNTER_MEASURES)),
            ("model_counters", upsert_sql(kind, p, "token_usage_model_counters",
                                          ("scope", "scope_id", "model", "hour"), COUNTER_MEASURES)),
            ("daily", upsert_sql(kind, p, "token_usage_daily", ("day", "user_id", "guild_id", "model", "feature"),
                                 MEASURES)),
            ("rollups", upsert_sql(kind, p, "token_usage_rollups", ("grain", "scope", "bucket", "scope_key"),
                                   MEASURES)),
        )

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"

    @property
    def redacted_url(self) -> str:
        return redact(self.url)

    # -- readers (SQL for limits, reports and records lives in their own modules) -------------------------
    @functools.cached_property
    def windows(self) -> LimitWindows:
        """Limit windows, locks and reservations."""
        return LimitWindows(self)

    @functools.cached_property
    def refusals(self) -> RefusalCounter:
        """Refusals of guarded runs, counted for every process."""
        return RefusalCounter(self)

    @functools.cached_property
    def spans(self) -> SpanReader:
        """Report aggregates per span."""
        return SpanReader(self)

    @functools.cached_property
    def records(self) -> Records:
        """Per-call reads: sessions, recent calls, export pages."""
        return Records(self)

    @functools.cached_property
    def costs(self) -> CostRewriter:
        """Stored costs rewritten in place (reprice)."""
        return CostRewriter(self)

    @functools.cached_property
    def overrides(self) -> OverrideTable:
        """Run-time limits, bypasses, usage resets and their audit trail."""
        return OverrideTable(self)

    @functools.cached_property
    def alerts(self) -> AlertLedger:
        """Budget alerts already fired (each once)."""
        return AlertLedger(self)

    @functools.cached_property
    def pruning(self) -> Pruner:
        """Retention deletes."""
        return Pruner(self)

    # -- schema and connection ------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create or migrate the schema once per process (idempotent, safe across processes)."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                try:
                    migrations.migrate(self.db, self.models)
                except Exception as exc:
                    self.reset_connection()
                    raise classify(exc) from exc
                self._schema_ready = True

    def migrate(self) -> list[migrations.Migration]:
        """Apply pending migrations now; returns those applied."""
        applied = migrations.migrate(self.db, self.models)
        self._schema_ready = True
        return applied

    def migration_status(self):
        return migrations.status(self.db, self.models)

    def has_schema(self) -> bool:
        """Whether this database holds dspy-tokens data (its ``token_usage`` table), asked without creating
        anything: not the schema, and not the file of a SQLite URL. Read-only tools use it to refuse a database
        that is not ours instead of filling it with empty tables."""
        path = sqlite_path(self.url)
        if path is not None and not path.exists():
            return False
        with storage_errors():
            self.db.connect(reuse_if_open=True)
            return self.db.table_exists("token_usage")

    def rebuild_counters(self, *, check: bool = False,
                         progress: Callable[[int, int], None] | None = None) -> rebuild.CounterAudit:
        """Recompute the hourly limit counters from the raw rows (writers wait meanwhile) and report how the
        stored ones drifted; with ``check`` only report (nothing is written). ``progress(rows_read, rows)``."""
        self.ensure_schema()
        with storage_errors():
            return rebuild.rebuild_counters(self.db, self.models, check=check, progress=progress)

    def reclaim_space(self) -> tuple[int | None, int | None]:
        """Give the space of deleted rows back after a cleanup: ``VACUUM`` on SQLite (the file shrinks; it needs
        up to the file's size free on disk meanwhile), ``VACUUM ANALYZE`` on PostgreSQL (the space is reused by
        new rows; the files shrink only by ``VACUUM FULL``, which locks the tables, so it is not run), ``OPTIMIZE
        TABLE`` on MySQL/MariaDB (InnoDB rebuilds the tables). Returns the bytes our tables took before and after
        (``None`` when the database cannot say)."""
        with storage_errors():
            return prune.reclaim_space(self.db, self.dialect)

    def connect(self) -> None:
        """Make sure the schema exists and this thread has a connection."""
        self.ensure_schema()
        with storage_errors():
            self.db.connect(reuse_if_open=True)

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

    def close(self) -> None:
        self.reset_connection()

    def stored_time(self, moment):
        """A UTC-aware datetime as this database stores it (for comparisons in SQL)."""
        return stored_time(moment, self.dialect == "sqlite")

    # -- the write path -------------------------------------------------------------------------------
    def write_batch(self, rows: Sequence[UsageRow], settled: Sequence[str] = ()) -> int:
        """Insert the rows not already stored (by ``call_uuid``) with every aggregate, and delete the
        reservations in ``settled`` (whose usage these rows are), in one transaction. Returns the rows added.

        Raises :class:`~dspy_tokens.StorageError` (classified) on failure; nothing of the batch is kept then.
        """
        try:
            self.ensure_schema()
            self.db.connect(reuse_if_open=True)
            charged: list[str] = []
            with self._transaction():
                fresh = self._fresh(rows) if rows else []
                if fresh:
                    cursor = self.db.cursor()
                    values = [self._db_row(r) for r in fresh]
                    if self.dialect == "postgresql":  # COPY: ~2x faster than execute_values' per-row formatting
                        copy_rows(cursor, "token_usage", ROW_COLUMNS, values)
                    else:
                        executemany(self.dialect, cursor, self._insert_sql, values)
                    self.add_aggregates(cursor, aggregates.deltas(fresh))
                    charged = self._charge_reservations(fresh)
                if settled:
                    reservation, calls = self.models.Reservation, self.models.ReservationCall
                    reservation.delete().where(reservation.id.in_(list(settled))).execute()
                    calls.delete().where(calls.reservation_id.in_(list(settled))).execute()
            if fresh or settled:
                self._forget_owners(charged, settled)
            return len(fresh)
        except Exception as exc:
            self.reset_connection()
            raise classify(exc) from exc

    def add_aggregates(self, cursor, found: aggregates.Deltas) -> None:
        """Add ``found`` to every aggregate table, inside the caller's write transaction."""
        for name, sql in self._upserts:
            # Sorted keys: concurrent writers take the aggregate rows' locks in the same order.
            table = getattr(found, name)
            executemany(self.dialect, cursor, sql, [(*k, *table[k]) for k in sorted(table)])

    def note_reserved_call(self, call_uuid: str, reservation_id: str) -> None:
        """Tie a guarded call to its run's reservation (in memory: this process's writer commits its row)."""
        with self._owners_lock:
            self._call_owners[call_uuid] = reservation_id

    def _forget_owners(self, charged, settled: Sequence[str]) -> None:
        with self._owners_lock:
            for uuid in charged:
                self._call_owners.pop(uuid, None)
            if settled:
                gone = set(settled)
                for uuid in [u for u, rid in self._call_owners.items() if rid in gone]:
                    del self._call_owners[uuid]

    def _charge_reservations(self, rows: Sequence[UsageRow]) -> list[str]:
        """Move the usage of guarded runs' calls from their reservation's hold to ``used``: the reservation keeps
        holding only what its run has not committed yet (see ``LimitWindows.top_up``). Returns the calls found in
        memory (forgotten once the transaction commits)."""
        p = self.db.param
        with self._owners_lock:
            owner = {row.call_uuid: self._call_owners[row.call_uuid] for row in rows
                     if row.call_uuid in self._call_owners}
        charged = list(owner)
        uuids = [row.call_uuid for row in rows if row.call_uuid not in owner]
        if uuids and self.db.execute_sql("SELECT 1 FROM token_reservation_calls LIMIT 1").fetchone() is None:
            uuids = []  # no guarded call anywhere: one probe instead of a lookup per chunk of rows
        for start in range(0, len(uuids), LOOKUP_CHUNK):
            chunk = uuids[start:start + LOOKUP_CHUNK]
            owner.update(self.db.execute_sql(
                "SELECT call_uuid, reservation_id FROM token_reservation_calls WHERE call_uuid IN "
                f"({', '.join([p] * len(chunk))})", chunk).fetchall())
        if not owner:
            return charged
        charges: dict[str, list[int]] = {}
        for row in rows:
            rid = owner.get(row.call_uuid)
            if rid is not None:
                charge = charges.setdefault(rid, [0, 0, 0])
                charge[0] += row.total_tokens or 0
                charge[1] += to_pico(row.cost_usd) if row.cost_usd is not None else 0
                charge[2] += 1
        for rid in sorted(charges):
            self.db.execute_sql(
                f"UPDATE token_reservations SET committed_tokens = committed_tokens + {p}, committed_cost_pusd = "
                f"committed_cost_pusd + {p}, committed_calls = committed_calls + {p} WHERE id = {p}",
                [*charges[rid], rid])
        return charged

    def existing_uuids(self, uuids: list[str]) -> set[str]:
        found: set[str] = set()
        p = self.db.param
        for start in range(0, len(uuids), LOOKUP_CHUNK):
            chunk = uuids[start:start + LOOKUP_CHUNK]
            cursor = self.db.execute_sql(
                f"SELECT call_uuid FROM token_usage WHERE call_uuid IN ({', '.join([p] * len(chunk))})", chunk)
            found.update(r[0] for r in cursor.fetchall())
        return found

    def _fresh(self, rows: Sequence[UsageRow]) -> list[UsageRow]:
        unique = {row.call_uuid: row for row in rows}
        stored = self.existing_uuids(list(unique))
        return [row for uuid, row in unique.items() if uuid not in stored]

    def _db_row(self, row: UsageRow) -> tuple:
        values = list(row)
        values[_CREATED_AT] = stored_time(row.created_at, self.dialect == "sqlite")
        if self.dialect == "sqlite" and row.cost_usd is not None:
            values[_COST] = str(row.cost_usd)  # sqlite3 cannot bind Decimal
        return tuple(values)
