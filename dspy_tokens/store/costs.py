"""Stored costs rewritten in place (``reprice``): rows of a range in id-ordered batches, each batch in one
transaction with its aggregates, so counters, the daily cube and the rollups stay what a rebuild from the rows gives.

The store decides nothing about prices: ``revise(rows)`` (the caller's) returns each row as it should now be, and
only rows whose ``cost_usd``, ``cost_source`` or ``price_version`` differ are written. Each aggregate moves by the
new rows' :func:`~dspy_tokens.store.aggregates.deltas` minus the old rows', through the write path's own upserts.
"""

from __future__ import annotations

import contextlib
from dataclasses import fields
from datetime import datetime
from typing import Callable, Sequence

from . import aggregates
from ._db import classify, write_transaction
from ._sql import executemany
from .rows import EXPORT_COLUMNS, UsageRow

#: The columns a reprice rewrites.
COST_COLUMNS = ("cost_usd", "cost_source", "price_version")


def changed(old: UsageRow, new: UsageRow) -> bool:
    return (old.cost_usd, old.cost_source, old.price_version) != (new.cost_usd, new.cost_source, new.price_version)


def difference(old: Sequence[UsageRow], new: Sequence[UsageRow]) -> aggregates.Deltas:
    """What replacing ``old`` by ``new`` adds to every aggregate (keys that do not move are left out)."""
    out, before = aggregates.deltas(new), aggregates.deltas(old)
    for table in fields(aggregates.Deltas):
        added, removed = getattr(out, table.name), getattr(before, table.name)
        for key, values in removed.items():
            acc = added.setdefault(key, [0] * len(values))
            for i, value in enumerate(values):
                acc[i] -= value
        for key in [k for k, v in added.items() if not any(v)]:
            del added[key]
    return out


class CostRewriter:
    """Reads the rows of a range and rewrites their costs (see the module docstring)."""

    def __init__(self, store):
        self.store = store
        self.db = store.db
        self._kind = store.dialect
        self._lock = "" if self._kind == "sqlite" else " FOR UPDATE"  # SQLite: the IMMEDIATE transaction locks
        p = store.db.param
        if self._kind == "postgresql":  # one statement per batch (execute_values), like the inserts
            self._update = ("UPDATE token_usage AS t SET cost_usd = CAST(v.cost_usd AS NUMERIC), cost_source = "
                            "v.cost_source, price_version = v.price_version FROM (VALUES %s) AS v(id, cost_usd, "
                            "cost_source, price_version) WHERE t.id = v.id")
        else:
            self._update = (f"UPDATE token_usage SET {', '.join(f'{c} = {p}' for c in COST_COLUMNS)} "
                            f"WHERE id = {p}")

    def _where(self, since: datetime, until: datetime | None, model: str | None) -> tuple[str, list]:
        p = self.db.param
        clauses, params = [f"created_at >= {p}"], [self.store.stored_time(since)]
        if until is not None:
            clauses.append(f"created_at < {p}")
            params.append(self.store.stored_time(until))
        if model is not None:
            clauses.append(f"model = {p}")
            params.append(model)
        return " AND ".join(clauses), params

    def count(self, since: datetime, until: datetime | None = None, model: str | None = None) -> int:
        """How many rows the range holds (a progress bar's end)."""
        where, params = self._where(since, until, model)
        try:
            self.store.ensure_schema()
            self.db.connect(reuse_if_open=True)
            return int(self.db.execute_sql(f"SELECT COUNT(*) FROM token_usage WHERE {where}", params).fetchone()[0])
        except Exception as exc:
            self.store.reset_connection()
            raise classify(exc) from exc

    def rewrite(self, since: datetime, until: datetime | None, model: str | None,
                revise: Callable[[list[UsageRow]], list[UsageRow]], *, batch_size: int = 1000,
                dry_run: bool = False, progress: Callable[[int], None] | None = None) -> int:
        """Call ``revise`` on each batch of the range's rows (id order) and, unless ``dry_run``, write the rows it
        changed with their aggregate changes in the batch's transaction (the rows are locked from the read on).
        ``progress(rows_read)`` after each batch. Returns the rows written."""
        where, params = self._where(since, until, model)
        sql = (f"SELECT {', '.join(EXPORT_COLUMNS)} FROM token_usage WHERE id > {self.db.param} AND {where} "
               f"ORDER BY id LIMIT {int(batch_size)}{'' if dry_run else self._lock}")
        last_id, read, written = 0, 0, 0
        try:
            self.store.ensure_schema()
            self.db.connect(reuse_if_open=True)
            while True:
                with contextlib.nullcontext() if dry_run else write_transaction(self.db):
                    page = self.db.execute_sql(sql, (last_id, *params)).fetchall()
                    if not page:
                        break
                    last_id = page[-1][0]
                    old = [self.store.records.usage_row(raw) for raw in page]
                    pairs = [(raw[0], before, after) for raw, before, after in zip(page, old, revise(old))
                             if changed(before, after)]
                    if pairs and not dry_run:
                        self._write(pairs)
                        written += len(pairs)
                read += len(page)
                if progress is not None:
                    progress(read)
                if len(page) < batch_size:
                    break
            return written
        except Exception as exc:
            self.store.reset_connection()
            raise classify(exc) from exc

    def _write(self, pairs: list[tuple[int, UsageRow, UsageRow]]) -> None:
        sqlite = self._kind == "sqlite"
        cursor = self.db.cursor()
        if self._kind == "postgresql":
            executemany(self._kind, cursor, self._update,
                        [(row_id, new.cost_usd, new.cost_source, new.price_version) for row_id, _, new in pairs])
        else:  # sqlite3 cannot bind Decimal
            cursor.executemany(self._update, [(str(new.cost_usd) if sqlite and new.cost_usd is not None
                                               else new.cost_usd, new.cost_source, new.price_version, row_id)
                                              for row_id, _, new in pairs])
        self.store.add_aggregates(cursor, difference([old for _, old, _ in pairs], [new for _, _, new in pairs]))
