"""Run-time limit changes: per-scope overrides (limits, bypass, usage reset), the reset baselines, and the audit
trail — each change and its audit entry written in one transaction, read by every process at its next check.

Keys are plain ``(scope, scope_id)`` pairs; limits are stored as given (tokens, picodollars, requests, a window
string), never as rules.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ._db import classified, write_transaction

LIMIT_FIELDS = ("tokens", "cost_pusd", "requests", "window")
ScopeKey = tuple  # (scope, scope_id)


class LimitOverrides:
    def __init__(self, store):
        self.store = store
        self.db = store.db

    # -- read at every decision ------------------------------------------------------------------------
    @classified
    def read(self, keys: list[ScopeKey]) -> dict[ScopeKey, dict[str, Any]]:
        """The overrides of these scopes: key -> {tokens, cost_pusd, requests, window, bypass, reset_hour}."""
        if not keys:
            return {}
        m = self.store.models.LimitOverride
        where = None
        for scope, scope_id in keys:
            match = (m.scope == scope) & (m.scope_id == scope_id)
            where = match if where is None else where | match
        return {(r.scope, int(r.scope_id)): {"tokens": r.tokens, "cost_pusd": r.cost_pusd, "requests": r.requests,
                                              "window": r.window, "bypass": bool(r.bypass),
                                              "reset_hour": r.reset_hour}
                for r in m.select().where(where)}

    @classified
    def baselines(self, keys: list[ScopeKey]) -> dict[ScopeKey, dict[str, tuple[int, int, int, int]]]:
        """What the reset hour held at each scope's reset: key -> {model or "": (tokens, cost_pusd,
        unpriced_calls, calls)}, the order of a window sum."""
        if not keys:
            return {}
        b = self.store.models.ResetBaseline
        where = None
        for scope, scope_id in keys:
            match = (b.scope == scope) & (b.scope_id == scope_id)
            where = match if where is None else where | match
        out: dict[ScopeKey, dict[str, tuple[int, int, int, int]]] = {}
        for r in b.select().where(where):
            out.setdefault((r.scope, int(r.scope_id)), {})[r.model] = (
                int(r.tokens), int(r.cost_pusd), int(r.unpriced_calls), int(r.calls))
        return out

    # -- changes (each with its audit entry, in one transaction) ---------------------------------------
    @classified
    def set_limits(self, key: ScopeKey, values: dict[str, Any], *, now: datetime, by: str | None,
                   detail: dict) -> dict:
        """Set the given limit fields (others keep their value); returns the audit entry."""
        with write_transaction(self.db):
            self._upsert(key, values, now, by)
            return self._audit("set", key, now, by, detail)

    @classified
    def clear_limits(self, key: ScopeKey, *, now: datetime, by: str | None, detail: dict) -> dict:
        """Drop the scope's run-time limits (a bypass and a usage reset stay)."""
        with write_transaction(self.db):
            self._upsert(key, dict.fromkeys(LIMIT_FIELDS), now, by)
            self._drop_if_empty(key)
            return self._audit("clear", key, now, by, detail)

    @classified
    def set_bypass(self, key: ScopeKey, on: bool, *, now: datetime, by: str | None, detail: dict) -> dict:
        with write_transaction(self.db):
            self._upsert(key, {"bypass": on}, now, by)
            self._drop_if_empty(key)
            return self._audit("bypass", key, now, by, detail)

    @classified
    def reset(self, key: ScopeKey, hour: int, *, now: datetime, by: str | None, detail: dict) -> dict:
        """Usage before ``now`` stops counting: windows start at ``hour`` from now on, less what that hour's
        counters hold at this moment (per model, and ``""`` for every model)."""
        m = self.store.models
        scope, scope_id = key
        with write_transaction(self.db):
            base = m.ResetBaseline
            base.delete().where((base.scope == scope) & (base.scope_id == scope_id)).execute()
            rows = [{"model": "", **self._counts(m.UsageCounter, scope, scope_id, hour)}]
            counters = m.ModelUsageCounter
            for c in counters.select().where((counters.scope == scope) & (counters.scope_id == scope_id)
                                             & (counters.hour == hour)):
                rows.append({"model": c.model, "calls": c.calls, "tokens": c.tokens, "cost_pusd": c.cost_pusd,
                             "unpriced_calls": c.unpriced_calls})
            base.insert_many([{"scope": scope, "scope_id": scope_id, **row} for row in rows]).execute()
            self._upsert(key, {"reset_hour": hour}, now, by)
            return self._audit("reset", key, now, by, detail)

    @classified
    def changes(self, key: ScopeKey | None = None, scope: str | None = None, limit: int = 50) -> list[dict]:
        """The audit trail, newest first: every scope, one scope kind, or one ``(scope, scope_id)``."""
        c = self.store.models.LimitChange
        query = c.select().order_by(c.id.desc()).limit(limit)
        if key is not None:
            query = query.where((c.scope == key[0]) & (c.scope_id == key[1]))
        elif scope is not None:
            query = query.where(c.scope == scope)
        return [{"id": int(r.id), "changed_at": r.changed_at, "changed_by": r.changed_by, "action": r.action,
                 "scope": r.scope, "scope_id": int(r.scope_id), "detail": json.loads(r.detail)} for r in query]

    # -- helpers ---------------------------------------------------------------------------------------
    @staticmethod
    def _counts(model, scope: str, scope_id: int, hour: int) -> dict:
        row = model.get_or_none((model.scope == scope) & (model.scope_id == scope_id) & (model.hour == hour))
        if row is None:
            return {"calls": 0, "tokens": 0, "cost_pusd": 0, "unpriced_calls": 0}
        return {"calls": row.calls, "tokens": row.tokens, "cost_pusd": row.cost_pusd,
                "unpriced_calls": row.unpriced_calls}

    def _upsert(self, key: ScopeKey, values: dict, now: datetime, by: str | None) -> None:
        o = self.store.models.LimitOverride
        scope, scope_id = key
        changed = {**values, "updated_at": now, "updated_by": by}
        done = o.update(**changed).where((o.scope == scope) & (o.scope_id == scope_id)).execute()
        if not done:
            o.insert(scope=scope, scope_id=scope_id, **changed).execute()

    def _drop_if_empty(self, key: ScopeKey) -> None:
        o = self.store.models.LimitOverride
        scope, scope_id = key
        o.delete().where((o.scope == scope) & (o.scope_id == scope_id) & o.tokens.is_null()
                         & o.cost_pusd.is_null() & o.requests.is_null() & (o.bypass == False)  # noqa: E712
                         & o.reset_hour.is_null()).execute()

    def _audit(self, action: str, key: ScopeKey, now: datetime, by: str | None, detail: dict) -> dict:
        c = self.store.models.LimitChange
        text = json.dumps(detail, sort_keys=True)
        change_id = c.insert(changed_at=now, changed_by=by, action=action, scope=key[0], scope_id=key[1],
                             detail=text).execute()
        return {"id": int(change_id), "changed_at": now, "changed_by": by, "action": action, "scope": key[0],
                "scope_id": int(key[1]), "detail": detail}
