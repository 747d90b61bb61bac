"""``reprice`` throughput (rows/s): a dry run, a real run (every priced row changes) and a rerun (nothing
changes), beside a baseline in the same rounds: reading the same rows in id-ordered pages (``Records.usage_row_pages``,
the floor any reprice pays).

    python -m benchmarks.bench_reprice --rows 100000 --backend sqlite --rounds 3
    python -m benchmarks.bench_reprice --rows 100000 --backend postgresql

The rows (200 users, 3 models of which one unpriced, spread over 60 days) are written through ``Store.write_batch``
into a private database (a temporary SQLite file, or ``dspy_tokens_bench_reprice`` on the server, dropped at the
end). Rounds alternate between two models.json prices for gpt-4o-mini and gpt-4o, so each real run changes every
priced row. Not part of ``python -m benchmarks`` (a one-off measurement for the reprice command).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

from dspy_tokens.config import parse_config
from dspy_tokens.ingest.repricing import reprice
from dspy_tokens.pricing import PriceBook
from dspy_tokens.store import Store, UsageRow

from .datagen import drop_database, private_database

NAME = "dspy_tokens_bench_reprice"
MODELS = ("openai/gpt-4o-mini", "openai/gpt-4o", "openai/acme-unpriced")


def rows(count: int, start: datetime) -> list[UsageRow]:
    out = []
    for i in range(count):
        prompt, completion = 200 + i % 997, 20 + i % 113
        out.append(UsageRow(
            call_uuid=str(uuid.UUID(int=i + 1)), session_id=f"s{i // 10}", call_index=i % 10, user_id=1000 + i % 200,
            guild_id=10 + i % 20, channel_id=None, feature=("chat", "search", None)[i % 3], module="Predict",
            model=MODELS[i % 3], response_model=None, prompt_tokens=prompt, completion_tokens=completion,
            total_tokens=prompt + completion, cached_tokens=i % 50, reasoning_tokens=0,
            cost_usd=None if i % 3 == 2 else Decimal("0.0001"), cost_source="unknown" if i % 3 == 2 else "price_map",
            cache_hit=False, usage_reported=True, error=None, latency_ms=100,
            created_at=start + timedelta(seconds=i * 60 * 24 * 60 * 60 // count)))
    return out


def book(scale: int) -> PriceBook:
    return PriceBook(parse_config({"models": [
        {"label": "mini", "name": "gpt-4o-mini", "provider": "openai", "input_cost_per_token": 1e-07 * scale,
         "output_cost_per_token": 4e-07 * scale},
        {"label": "4o", "name": "gpt-4o", "provider": "openai", "input_cost_per_token": 2e-06 * scale,
         "output_cost_per_token": 8e-06 * scale}]}, "models.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "mysql"), default="sqlite")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    url = (f"sqlite:///{Path(scratch.name) / 'reprice.db'}" if args.backend == "sqlite"
           else private_database(args.backend, NAME, recreate=True))
    store = Store(url)
    try:
        start = datetime.now(timezone.utc) - timedelta(days=61)
        made = rows(args.rows, start)
        loaded = time.perf_counter()
        for at in range(0, len(made), 5000):
            store.write_batch(made[at:at + 5000])
        print(f"{args.backend}: {args.rows:,} rows loaded in {time.perf_counter() - loaded:.1f} s")
        books = (book(1), book(2))
        reprice(store, books[1], start)  # warm: every priced row at scale 2, LiteLLM imported
        times: dict[str, list[float]] = {"read pages (baseline)": [], "dry run": [], "real run": [], "rerun": []}
        for i in range(args.rounds):
            prices = books[i % 2]
            began = time.perf_counter()
            read = sum(len(page) for _, page in store.records.usage_row_pages(args.batch_size))
            times["read pages (baseline)"].append(time.perf_counter() - began)
            assert read == args.rows
            for label, dry in (("dry run", True), ("real run", False), ("rerun", False)):
                began = time.perf_counter()
                result = reprice(store, prices, start, dry_run=dry, batch_size=args.batch_size)
                times[label].append(time.perf_counter() - began)
                expected = 0 if label == "rerun" else args.rows - args.rows // 3
                assert result.total.changed == expected, (label, result.total)
        base = statistics.median(times["read pages (baseline)"])
        print(f"{'':24} {'median s':>9} {'min-max s':>14} {'rows/s':>10} {'x baseline':>10}")
        for label, values in times.items():
            median = statistics.median(values)
            print(f"{label:24} {median:9.2f} {min(values):6.2f}-{max(values):<7.2f} {args.rows / median:10,.0f} "
                  f"{median / base:10.1f}")
    finally:
        store.close()
        if args.backend != "sqlite":
            drop_database(args.backend, NAME)
        scratch.cleanup()


if __name__ == "__main__":
    main()
