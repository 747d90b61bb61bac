"""7. ``dspy-tokens copy``: rows/s from a SQLite database (the default backend) into each backend.

Ours: :func:`dspy_tokens.ingest.copy_rows` into a fresh database — pages of 5,000 rows read in id order, each
written in one transaction through ``Store.write_batch`` (rows, hourly counters, daily cube, rollups). Then the
same copy again, which adds nothing (every ``call_uuid`` is already there): what resuming an interrupted copy
costs per row already copied.

Baseline, time-boxed, in the same run and on the same server: the script one writes without ``copy`` — read the
rows, and hand each one to ``Store.write_batch([row])`` (one transaction per row, aggregates included).

Every copy is checked: the target's ``summary()`` equals the source's, to the token and the picodollar.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from .common import Context, Figure, Stat

MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "anthropic/claude-3-5-haiku-20241022")


def synthetic_rows(n: int, seed: int = 11) -> list:
    """``n`` varied stored calls over the last 60 days: 500 users in 25 guilds, three models, some unpriced calls,
    cache hits and errors."""
    from dspy_tokens.store import UsageRow

    rnd = random.Random(seed)
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(n):
        user = rnd.randrange(500)
        failed, hit = rnd.random() < 0.03, rnd.random() < 0.05
        prompt, completion = (None, None) if failed else (0, 0) if hit else (rnd.randrange(50, 4000),
                                                                             rnd.randrange(10, 800))
        cost = (None if failed or rnd.random() < 0.05 else Decimal(0) if hit
                else Decimal(rnd.randrange(1, 10**7)) / 10**9)
        rows.append(UsageRow(
            call_uuid=str(uuid.UUID(int=rnd.getrandbits(128), version=4)), session_id=f"s{i // 3}",
            call_index=i % 3, user_id=10**17 + user, guild_id=10**17 + user % 25, channel_id=10**17 + user % 50,
            feature=rnd.choice(("chat", "search", None)), module="Predict", model=rnd.choice(MODELS),
            response_model=None, prompt_tokens=prompt, completion_tokens=completion,
            total_tokens=None if prompt is None else prompt + completion, cached_tokens=None if failed else 0,
            reasoning_tokens=None if failed else 0, cost_usd=cost,
            cost_source="no_usage" if failed else "cache_hit" if hit else "price_map" if cost is not None
            else "unknown", cache_hit=hit, usage_reported=not failed, error="TimeoutError" if failed else None,
            latency_ms=rnd.randrange(100, 5000), created_at=now - timedelta(seconds=rnd.randrange(60 * 86400))))
    return rows


def _target(ctx: Context, backend: str, name: str) -> str:
    from .datagen import private_database

    if backend == "sqlite":
        path = ctx.work_dir / f"{name}.db"
        for leftover in ctx.work_dir.glob(f"{name}.db*"):  # the last round's file, with its WAL
            leftover.unlink()
        return f"sqlite:///{path}"
    return private_database(backend, f"dspy_tokens_bench_{name}", recreate=True)


def _drop(backend: str, name: str) -> None:
    from .datagen import drop_database

    if backend != "sqlite":
        drop_database(backend, f"dspy_tokens_bench_{name}")


def _row_by_row(source, target, budget: float) -> float:
    """Rows/s of the naive script: every row in its own ``write_batch`` transaction, for ``budget`` seconds."""
    done, start = 0, time.perf_counter()
    for _, page in source.records.usage_row_pages(1000):
        for row in page:
            target.write_batch([row])
            done += 1
            if time.perf_counter() - start >= budget:
                return done / (time.perf_counter() - start)
    return done / (time.perf_counter() - start)


def run(ctx: Context) -> list[Figure]:
    from dspy_tokens import Reports
    from dspy_tokens.ingest import copy_rows
    from dspy_tokens.store import Store

    n = 5_000 if ctx.quick else 50_000
    rounds = 1 if ctx.quick else 3
    budget = 1.0 if ctx.quick else 3.0
    source = Store(f"sqlite:///{ctx.work_dir / 'copy-source.db'}")
    rows = synthetic_rows(n)
    for start in range(0, n, 5000):
        source.write_batch(rows[start:start + 5000])
    expected = Reports(source).summary()
    figures = []
    for backend in ("sqlite", "postgresql", "mysql"):
        if not ctx.usable(backend):
            ctx.say(f"    {backend}: skipped ({ctx.backends[backend]})")
            continue
        ours, again, base = [], [], []
        try:
            for _ in range(rounds):
                target = Store(_target(ctx, backend, "copy"))
                begun = time.perf_counter()
                result = copy_rows(source, target)
                ours.append(result.read / (time.perf_counter() - begun))
                assert result.added == n and Reports(target).summary() == expected, "the copy differs"
                begun = time.perf_counter()
                assert copy_rows(source, target).added == 0, "a second copy added rows"
                again.append(n / (time.perf_counter() - begun))
                target.close()
                naive = Store(_target(ctx, backend, "copy_naive"))
                base.append(_row_by_row(source, naive, budget))
                naive.close()
        finally:
            _drop(backend, "copy")
            _drop(backend, "copy_naive")
        figures.append(Figure("copy", f"sqlite → {backend}: {n:,} rows", "rows/s", Stat(ours), Stat(base),
                              "write_batch([row]) per row", better="higher",
                              notes=f"second copy (adds nothing): {Stat(again).median:,.0f} rows/s"))
        ctx.say(f"    sqlite → {backend}: ours {Stat(ours).median:,.0f} rows/s, row by row "
                f"{Stat(base).median:,.0f} rows/s, a second copy {Stat(again).median:,.0f} rows/s")
    source.close()
    return figures
