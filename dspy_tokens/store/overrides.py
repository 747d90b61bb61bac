"""Run-time limit overrides, bypasses and usage resets per (scope, scope_id), with their audit trail: one row per
scope in ``token_limit_overrides``, every change in ``token_limit_changes`` in the same transaction. Every
process reads them at each decision, so a change holds everywhere at the next check."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ._db import classified, write_transaction

Key = tuple  # (scope, scope_id)
LIMIT_FIELDS = ("tokens", "cost_pusd", "requests", "window")


class OverrideTable:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self.m = store.models

    @classified
    def row(self, key: Key) -> dict | None:
        """The override row of ``key`` (columns as a dict), None when there is none. Decisions read the rows and
        their reset baselines inside their own statement (:mod:`.reading`)."""
        o = self.m.LimitOverride
        return o.select().where((o.scope == key[0]) & (o.scope_id == key[1])).dicts().first()

    @classified
    def change(self, scope: str, scope_id: int, action: str, values: dict[str, Any], *, by: str | None,
               now: datetime, detail: dict, reset_hour: int | None = None) -> int:
        """Set ``values`` (columns of the override row) and record the change, in one transaction; the change's
        id. With
        ``reset_hour``, the counters of that hour are kept as the baseline to subtract while it is in a window."""
        o = self.m.LimitOverride
        self.store.ensure_schema()
        with write_transaction(self.db):
            values = {**values, "updated_at": now, "updated_by": by}
            if reset_hour is not None:
                values["reset_hour"] = reset_hour
                self._take_baseline(scope, scope_id, reset_hour)
            key = (o.scope == scope) & (o.scope_id == scope_id)
            if not o.update(**values).where(key).execute():
                o.insert(scope=scope, scope_id=scope_id, **values).execute()
            row = o.get(key)
            if not row.bypass and row.reset_hour is None and all(getattr(row, f) is None for f in LIMIT_FIELDS):
                o.delete().where(key).execute()  # nothing left to override
            return int(self.m.LimitChange.insert(changed_at=now, changed_by=by, action=action, scope=scope,
                                                 scope_id=scope_id, detail=json.dumps(detail, sort_keys=True))
                       .execute())

    def _take_baseline(self, scope: str, scope_id: int, hour: int) -> None:
        b, total, per_model = self.m.ResetBaseline, self.m.UsageCounter, self.m.ModelUsageCounter
        b.delete().where((b.scope == scope) & (b.scope_id == scope_id)).execute()
        rows = [("", r) for r in total.select().where((total.scope == scope) & (total.scope_id == scope_id)
                                                      & (total.hour == hour))]
        rows += [(r.model, r) for r in per_model.select().where(
            (per_model.scope == scope) & (per_model.scope_id == scope_id) & (per_model.hour == hour))]
        for model, r in rows:
            b.insert(scope=scope, scope_id=scope_id, model=model, calls=r.calls, tokens=r.tokens,
                     cost_pusd=r.cost_pusd, unpriced_calls=r.unpriced_calls).execute()

    @classified
    def changes(self, scope: str | None = None, scope_id: int | None = None, *, limit: int = 20) -> list[dict]:
        """The latest changes first (of one scope, or one scope id, when given)."""
        c = self.m.LimitChange
        query = c.select()
        if scope is not None:
            query = query.where(c.scope == scope)
        if scope_id is not None:
            query = query.where(c.scope_id == scope_id)
        rows = list(query.order_by(c.id.desc()).limit(int(limit)).dicts())
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows
