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
    def rows(self, keys: list[Key]) -> dict[Key, dict]:
        """The override rows of ``keys`` that exist (columns as a dict), and for those with a usage reset the
        reset hour's baseline counters as ``baselines``: {model or "": (tokens, cost_pusd, unpriced, calls)}."""
        if not keys:
            return {}
        o = self.m.LimitOverride
        where = None
        for scope, scope_id in keys:
            clause = (o.scope == scope) & (o.scope_id == scope_id)
            where = clause if where is None else where | clause
        found = {(r["scope"], r["scope_id"]): r for r in o.select().where(where).dicts()}
        reset = [k for k, r in found.items() if r["reset_hour"] is not None]
        for key in reset:
            found[key]["baselines"] = {}
        if reset:
            b = self.m.ResetBaseline
            where = None
            for scope, scope_id in reset:
                clause = (b.scope == scope) & (b.scope_id == scope_id)
                where = clause if where is None else where | clause
            for row in b.select().where(where).dicts():
                found[(row["scope"], row["scope_id"])]["baselines"][row["model"]] = (
                    row["tokens"], row["cost_pusd"], row["unpriced_calls"], row["calls"])
        return found

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
