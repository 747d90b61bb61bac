"""Refusals counted in the database (``token_limit_refusals``): one row per refusing rule's scope and metric and
the refused run's model and feature, so every process adds to, and reads, the same totals."""

from __future__ import annotations

from datetime import datetime

from ._db import classified
from ._sql import db_now_sql

RefusalKey = tuple  # (scope, metric, model, feature); '' for a run without a model or feature


class RefusalCounter:
    def __init__(self, store):
        self.store = store
        self.db = store.db

    @classified
    def add(self, key: RefusalKey) -> None:
        """One more refusal under ``key`` (at the database's time)."""
        p, kind = self.db.param, self.store.dialect
        insert = (f"INSERT INTO token_limit_refusals (scope, metric, model, feature, refusals, last_refused_at) "
                  f"VALUES ({p}, {p}, {p}, {p}, 1, {db_now_sql(kind)})")
        if kind == "mysql":
            sql = insert + " ON DUPLICATE KEY UPDATE refusals = refusals + 1, last_refused_at = VALUES(last_refused_at)"
        else:
            sql = (insert + " ON CONFLICT (scope, metric, model, feature) DO UPDATE SET refusals = "
                   "token_limit_refusals.refusals + 1, last_refused_at = excluded.last_refused_at")
        with self.db.atomic():
            self.db.execute_sql(sql, list(key))

    @classified
    def totals(self) -> list[tuple[str, str, str, str, int, datetime]]:
        """Every (scope, metric, model, feature, refusals, last refused at), in key order."""
        self.store.connect()
        model = self.store.models.LimitRefusal
        query = model.select().order_by(model.scope, model.metric, model.model, model.feature)
        return [(r.scope, r.metric, r.model, r.feature, int(r.refusals), r.last_refused_at) for r in query]
