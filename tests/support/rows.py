"""Usage rows built by hand for the report, export and retention tests, stored through ``Store.write_batch``
(the writer's own path, so the counters and rollups are maintained exactly as in production)."""

from __future__ import annotations

import itertools
import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from dspy_tokens.store import ROW_COLUMNS, Store, UsageRow

UTC = timezone.utc
MINI, GPT4O, MYSTERY = "openai/gpt-4o-mini", "openai/gpt-4o", "acme/mystery"
_serial = itertools.count()


def at(*args) -> datetime:
    """A UTC-aware datetime: ``at(2025, 3, 12, 10, 30)``."""
    return datetime(*args, tzinfo=UTC)


def usage_row(created_at: datetime, *, prompt: int | None = 0, completion: int | None = 0, cost="0",
              **overrides) -> dict:
    """A complete ``token_usage`` row (every column of ``ROW_COLUMNS``); ``cost`` is a decimal string or None."""
    n = next(_serial)
    row = {
        "call_uuid": str(uuid.uuid4()), "session_id": f"session-{n}", "call_index": 0, "user_id": None,
        "guild_id": None, "channel_id": None, "feature": None, "module": "Predict", "model": MINI,
        "response_model": None, "prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": None if prompt is None else prompt + completion, "cached_tokens": None if prompt is None else 0,
        "reasoning_tokens": None if completion is None else 0, "cost_usd": None if cost is None else Decimal(cost),
        "cost_source": "price_map" if cost is not None else "unknown", "cache_hit": False, "usage_reported": True,
        "error": None, "latency_ms": 100 + n, "created_at": created_at, "request_type": "chat", "metadata": None,
        "usage_estimated": False,
        "cache_write_tokens": None if prompt is None else 0, "audio_tokens": None if prompt is None else 0,
        "service_tier": None, "price_version": None,
    }
    row.update(overrides)
    assert set(row) == set(ROW_COLUMNS)
    return row


def as_rows(rows: list[dict]) -> list[UsageRow]:
    """Row dicts (every column) as the ``UsageRow`` tuples the store and the writer take."""
    return [UsageRow(**row) for row in rows]


def insert(url: str, rows: list[dict]) -> Store:
    """Store ``rows`` (dicts of every column) through the writer's own path; every row must be new."""
    store = Store(url)
    assert store.write_batch(as_rows(rows)) == len(rows)
    return store


def seed_row(**values) -> dict:
    """A complete row dict describing a priced gpt-4o-mini call made now; pass any column to override it."""
    row = dict(call_uuid=uuid.uuid4().hex, session_id="seed", call_index=0, user_id=None, guild_id=None,
               channel_id=None, feature=None, module=None, model=MINI, response_model=None,
               prompt_tokens=100, completion_tokens=20, total_tokens=None, cached_tokens=0, reasoning_tokens=0,
               cost_usd=Decimal("0.000027"), cost_source="price_map", cache_hit=False, usage_reported=True,
               error=None, latency_ms=10, created_at=datetime.now(timezone.utc), request_type="chat", metadata=None,
               usage_estimated=False, cache_write_tokens=None, audio_tokens=None, service_tier=None,
               price_version=None)
    unknown = set(values) - set(row)
    if unknown:
        raise TypeError(f"seed_row: unknown columns {sorted(unknown)}")
    row.update(values)
    if row["total_tokens"] is None and row["prompt_tokens"] is not None and row["completion_tokens"] is not None:
        row["total_tokens"] = row["prompt_tokens"] + row["completion_tokens"]
    return row


# The clock of the hand-computed tests: Wednesday 2025-03-12 10:30 UTC. Week from Monday 03-10, month from 03-01.
NOW = at(2025, 3, 12, 10, 30)


def hand_rows() -> dict[str, dict]:
    """Ten calls placed on both sides of the today/week/month boundaries (UTC); costs follow the list prices."""
    return {
        # last microsecond of February / first of March
        "A": usage_row(at(2025, 2, 28, 23, 59, 59, 999999), prompt=1000, completion=500, cost="0.00045",
                       user_id=4, guild_id=20, feature="chat", session_id="s-feb"),
        "B": usage_row(at(2025, 3, 1), prompt=200, completion=100, cost="0.00009",
                       user_id=4, guild_id=20, feature="chat", session_id="s-mar"),
        # last microsecond of Sunday 03-09 / first of Monday 03-10
        "C": usage_row(at(2025, 3, 9, 23, 59, 59, 999999), prompt=400, completion=100, cost="0.002",
                       user_id=1, guild_id=10, feature="search", model=GPT4O),
        "D": usage_row(at(2025, 3, 10), prompt=500, completion=20, cost="0.000087",
                       user_id=3, guild_id=20, feature="search"),
        # last microsecond of yesterday / first of today
        "E": usage_row(at(2025, 3, 11, 23, 59, 59, 999999), prompt=300, completion=150, cost="0.000135",
                       user_id=1, guild_id=10, feature="chat", session_id="s-today", call_index=0),
        "F": usage_row(at(2025, 3, 12), prompt=100, completion=50, cost="0.000042", cached_tokens=40,
                       user_id=1, guild_id=10, feature="chat", session_id="s-today", call_index=1),
        "G": usage_row(at(2025, 3, 12, 9), prompt=200, completion=100, cost="0.0014375", cached_tokens=50,
                       reasoning_tokens=20, user_id=2, guild_id=10, feature="search", model=GPT4O),
        # an unpriced model, a DSPy cache hit without attribution, a failed call
        "H": usage_row(at(2025, 3, 12, 9, 30), prompt=70, completion=30, cost=None,
                       user_id=2, guild_id=20, feature="search", model=MYSTERY),
        "I": usage_row(at(2025, 3, 12, 10), cost="0", cache_hit=True, cost_source="cache_hit"),
        "J": usage_row(at(2025, 3, 12, 10, 15), prompt=None, completion=None, cost=None, error="TimeoutError: read",
                       usage_reported=False, cost_source="no_usage", user_id=3, guild_id=20, feature="chat"),
    }


def random_rows(n: int, seed: int = 7, start: datetime = at(2024, 12, 20), end: datetime = NOW) -> list[dict]:
    """Varied rows over ~12 weeks (a few users, guilds, models, features; unpriced, cached and failed calls)."""
    rnd = random.Random(seed)
    seconds = (end - start).total_seconds()
    rows = []
    for i in range(n):
        moment = start + timedelta(seconds=rnd.random() * seconds)
        moment = moment.replace(microsecond=rnd.choice([0, 999999, rnd.randrange(10**6)]))
        failed = rnd.random() < 0.1
        hit = not failed and rnd.random() < 0.1
        if failed:
            prompt, completion = None, None
        elif hit:
            prompt, completion = 0, 0
        else:
            prompt, completion = rnd.randrange(1, 500), rnd.randrange(1, 200)
        if failed:
            cost = None
        elif hit:
            cost = "0"
        else:
            cost = None if rnd.random() < 0.15 else str(Decimal(rnd.randrange(1, 10**7)) / 10**9)
        rows.append(usage_row(
            moment, prompt=prompt, completion=completion, cost=cost, session_id=f"s{rnd.randrange(25)}",
            call_index=i, user_id=rnd.choice([None, 1, 2, 3, 4, 5, 6]), guild_id=rnd.choice([None, 10, 20, 30]),
            channel_id=rnd.choice([None, 77]), feature=rnd.choice([None, "chat", "search", "setup"]),
            model=rnd.choice([MINI, GPT4O, MYSTERY]), cache_hit=hit, error="boom" if failed else None,
            usage_reported=not failed,
            cached_tokens=None if prompt is None else rnd.randrange(0, prompt + 1),
            reasoning_tokens=None if completion is None else rnd.randrange(0, completion + 1)))
    return rows
