"""Retention deletes: raw rows in short batches, hourly limit counters and hour rollups along their primary keys."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Callable, Iterable

from ._db import write_transaction
from .units import COUNTER_SCOPES, GRAIN_HOUR, HOUR_SCOPES

COUNTER_TABLES = ("token_usage_counters", "token_usage_model_counters")


class Pruner:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self._p = store.db.param

    def count_rows_before(self, cutoff: datetime) -> int:
        return self._scalar(f"SELECT COUNT(*) FROM token_usage WHERE created_at < {self._p}",
                            (self.store.stored_time(cutoff),))

    def count_counters_before(self, hour: int) -> int:
        return sum(self._scalar(f"SELECT COUNT(*) FROM {t} WHERE hour < {self._p}", (hour,))
                   for t in self._counter_tables())

    def delete_rows_before(self, cutoff: datetime, batch_size: int,
                           progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Delete raw rows created before ``cutoff``, ``batch_size`` ids (oldest first, through the created_at
        index) per short transaction. Returns (rows, batches)."""
        p = self._p
        select = f"SELECT id FROM token_usage WHERE created_at < {p} ORDER BY created_at LIMIT {int(batch_size)}"
        stored = self.store.stored_time(cutoff)
        rows = batches = 0
        while True:
            ids = [r[0] for r in self.db.execute_sql(select, (stored,)).fetchall()]
            if not ids:
                break
            with write_transaction(self.db):
                cursor = self.db.execute_sql(f"DELETE FROM token_usage WHERE id IN ({', '.join([p] * len(ids))})",
                                             ids)
                rows += max(cursor.rowcount, 0)
            batches += 1
            if progress is not None:
                progress(rows)
            if len(ids) < batch_size:
                break
            time.sleep(0)  # let the writer in between batches
        return rows, batches

    def count_hour_rollups_before(self, hour: int) -> int:
        return self._scalar(f"SELECT COUNT(*) FROM token_usage_rollups WHERE grain = '{GRAIN_HOUR}' AND bucket < "
                            f"{self._p}", (hour,))

    def delete_hour_rollups_before(self, hour: int) -> int:
        """Delete the hour rollups before ``hour`` (their raw rows are gone: the hours of a partial day that old
        are not known either way): a primary-key range per scope, a few rows per hour each."""
        p = self._p
        delete = f"DELETE FROM token_usage_rollups WHERE grain = '{GRAIN_HOUR}' AND scope = {p} AND bucket < {p}"
        with write_transaction(self.db):
            return sum(max(self.db.execute_sql(delete, (scope, hour)).rowcount, 0) for scope in HOUR_SCOPES)

    def delete_counters_before(self, hour: int, batch_size: int) -> int:
        return sum(self._prune_counters(t, hour, batch_size) for t in self._counter_tables())

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

    def _scalar(self, sql: str, params=()) -> int:
        value = self.db.execute_sql(sql, params).fetchone()[0]
        return int(value or 0)


#: The tables a cleanup shrinks (the raw rows, the hourly counters, the hour rollups), and whose size is reported.
RECLAIMED = ("token_usage", *COUNTER_TABLES, "token_usage_rollups")


def reclaim_space(db, kind: str) -> tuple[int | None, int | None]:
    """Return the space of deleted rows (see :meth:`~dspy_tokens.store.Store.reclaim_space`); the bytes of our
    tables before and after."""
    db.connect(reuse_if_open=True)
    present = set(db.get_tables())
    tables = [t for t in RECLAIMED if t in present]
    before = _size(db, kind, tables)
    if kind == "sqlite":
        db.execute_sql("VACUUM")  # rewrites the file without its free pages
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # and hands the write-ahead log's pages back too
    elif kind == "postgresql":
        for table in tables:  # outside a transaction: Peewee runs statements in autocommit mode
            db.execute_sql(f"VACUUM ANALYZE {table}")
    else:
        for table in tables:
            db.execute_sql(f"OPTIMIZE TABLE {table}").fetchall()
    return before, _size(db, kind, tables)


def _size(db, kind: str, tables: list[str]) -> int | None:
    if not tables:
        return 0
    if kind == "sqlite":  # the whole file: SQLite keeps every table in it
        pages = db.execute_sql("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(db.execute_sql("PRAGMA page_size").fetchone()[0])
    marks = ", ".join([db.param] * len(tables))
    if kind == "postgresql":
        sql = f"SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c WHERE c.relkind = 'r' " \
              f"AND c.relnamespace = current_schema()::regnamespace AND c.relname IN ({marks})"
    else:
        sql = f"SELECT SUM(data_length + index_length) FROM information_schema.tables " \
              f"WHERE table_schema = DATABASE() AND table_name IN ({marks})"
    value = db.execute_sql(sql, tables).fetchone()[0]
    return None if value is None else int(value)
