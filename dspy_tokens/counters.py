"""Hourly rollups of usage rows, kept in the same transaction as the rows, and rebuilt from them on demand.

``token_usage_counters``       (scope, scope_id, hour)         -> calls, tokens, cost_pusd, unpriced_calls
``token_usage_model_counters`` (scope, scope_id, model, hour)  -> the same, per configured model

Scopes are ``user``, ``guild`` and ``global`` (scope_id 0). A call counts its ``total_tokens`` (0 for cache hits
and for calls whose usage was not reported); its cost in integer picodollars; ``unpriced_calls`` counts calls
whose cost is unknown (no price, or no usage) — cost limits cannot see those dollars.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from .schema import PICO, SCOPE_GLOBAL, SCOPE_GUILD, SCOPE_USER

COUNTER_COLUMNS = ("calls", "tokens", "cost_pusd", "unpriced_calls")
SCOPE_KEY = ("scope", "scope_id", "hour")
MODEL_KEY = ("scope", "scope_id", "model", "hour")
REBUILD_PAGE = 20_000


def to_pico(usd: Decimal) -> int:
    return int((Decimal(usd) * PICO).to_integral_value(ROUND_HALF_UP))


def hour_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 3600


def _scopes(user_id, guild_id):
    yield SCOPE_GLOBAL, 0
    if user_id is not None:
        yield SCOPE_USER, user_id
    if guild_id is not None:
        yield SCOPE_GUILD, guild_id


def counter_deltas(rows) -> tuple[dict, dict]:
    """Sum rows into scope counters and per-model counters: key -> [calls, tokens, cost_pusd, unpriced_calls]."""
    scoped: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    by_model: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        hour = hour_of(row["created_at"])
        cost = row["cost_usd"]
        delta = (1, row["total_tokens"] or 0, to_pico(cost) if cost is not None else 0,
                 1 if cost is None and row["error"] is None else 0)
        for scope, scope_id in _scopes(row["user_id"], row["guild_id"]):
            for acc in (scoped[(scope, scope_id, hour)], by_model[(scope, scope_id, row["model"], hour)]):
                for i, value in enumerate(delta):
                    acc[i] += value
    return scoped, by_model


def rebuild(db, models, tables=("scope", "model")) -> dict[str, int]:
    """Recompute counters from the raw rows, inside one write transaction (writers wait meanwhile).

    Hours before the oldest stored row are left alone: retention deleted their rows (it deletes whole hours),
    and the counters are then the only record of that usage.
    """
    from .db import dialect, executemany, upsert_sql, write_transaction

    kind = dialect(db)
    usage = models.TokenUsage
    fields = [usage.id, usage.created_at, usage.user_id, usage.guild_id, usage.model, usage.total_tokens,
              usage.cost_usd, usage.error]
    db.connect(reuse_if_open=True)
    with write_transaction(db):
        if kind == "postgresql":
            db.execute_sql("LOCK TABLE token_usage IN SHARE ROW EXCLUSIVE MODE")
        oldest = usage.select(usage.created_at).order_by(usage.created_at).limit(1).scalar()
        first_hour = hour_of(oldest) if oldest is not None else None
        scoped: dict = defaultdict(lambda: [0, 0, 0, 0])
        by_model: dict = defaultdict(lambda: [0, 0, 0, 0])
        last_id, rows = 0, 0
        while True:  # keyset pagination: constant memory whatever the table size
            page = list(usage.select(*fields).where(usage.id > last_id).order_by(usage.id)
                        .limit(REBUILD_PAGE).dicts())
            if not page:
                break
            last_id = page[-1]["id"]
            rows += len(page)
            page_scoped, page_model = counter_deltas(page)
            for target, source in ((scoped, page_scoped), (by_model, page_model)):
                for key, values in source.items():
                    acc = target[key]
                    for i, value in enumerate(values):
                        acc[i] += value
        written = {}
        for name, table, model, key, deltas in (
                ("scope", "token_usage_counters", models.UsageCounter, SCOPE_KEY, scoped),
                ("model", "token_usage_model_counters", models.ModelUsageCounter, MODEL_KEY, by_model)):
            if name not in tables:
                continue
            if first_hour is not None:
                model.delete().where(model.hour >= first_hour).execute()
            params = [(*k, *deltas[k]) for k in sorted(deltas)]
            executemany(db, db.cursor(), upsert_sql(db, table, key, COUNTER_COLUMNS), params)
            written[name] = len(params)
        written["rows"] = rows
    return written
