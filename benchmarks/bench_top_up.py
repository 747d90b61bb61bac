"""The caller's time per LM call in a guarded run (``tracker.guard``), beside the same calls unguarded.

``python -m benchmarks.bench_top_up [--calls N] [--rounds R] [--backends sqlite,postgresql,mysql]``

Each round runs a program of N cached LM calls (DSPy's memory cache, primed first: no HTTP, so what is measured is
DSPy plus the callback) inside ``usage_context`` (unguarded) and inside ``tracker.guard`` (a user limit applies,
so every call of the run may need its reservation topped up before it is sent), sync and async (``acall``). The
figures are the wall time of each call on the caller's thread: median and p99 in µs, and the guarded/unguarded
ratio of the medians. Backends whose server does not answer are skipped with the reason.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from dspy_tokens import TokenTracker, usage_context  # noqa: E402
from dspy_tokens.config import parse_config  # noqa: E402
from dspy_tokens.testing import FakeLLMServer  # noqa: E402

from .datagen import drop_database, private_database, server_available  # noqa: E402

USER = 42
DB_NAME = f"dspy_tokens_top_up_{os.getpid()}"  # private to this run


def percentile(samples: list[float], q: float) -> float:
    data = sorted(samples)
    return data[min(len(data) - 1, max(0, round(q / 100 * len(data)) - 1))]


def measure(tracker: TokenTracker, lm, calls: int, guarded: bool, use_async: bool) -> list[float]:
    """Seconds per call, on the caller's thread, of ``calls`` cached calls in one run."""
    predict = dspy.Predict("question -> answer")
    samples: list[float] = []
    block = tracker.guard(USER) if guarded else usage_context(user_id=USER)

    async def run_async():
        async with block:
            for i in range(calls):
                start = time.perf_counter()
                await predict.acall(question=f"q{i}")
                samples.append(time.perf_counter() - start)

    with dspy.context(lm=lm, callbacks=[tracker]):
        if use_async:
            asyncio.run(run_async())
        else:
            with block:
                for i in range(calls):
                    start = time.perf_counter()
                    predict(question=f"q{i}")
                    samples.append(time.perf_counter() - start)
    return samples


def bench(backend: str, url: str, calls: int, rounds: int, work: Path) -> list[tuple]:
    config = parse_config({"user_limit": 10**12}, "models.json")
    tracker = TokenTracker(url, config, spill_dir=work / f"spill-{backend}")
    rows = []
    try:
        with FakeLLMServer() as server:
            lm = server.lm(cache=True)
            with dspy.context(lm=lm):  # prime the cache: every measured call is a hit
                for i in range(calls):
                    dspy.Predict("question -> answer")(question=f"q{i}")
            for use_async in (False, True):
                plain, guarded = [], []
                for _ in range(rounds):
                    plain += measure(tracker, lm, calls, False, use_async)
                    guarded += measure(tracker, lm, calls, True, use_async)
                    tracker.flush(30)
                base, ours = statistics.median(plain), statistics.median(guarded)
                rows.append((backend, "async" if use_async else "sync", ours * 1e6, percentile(guarded, 99) * 1e6,
                             base * 1e6, percentile(plain, 99) * 1e6, ours / base))
    finally:
        tracker.close(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    print(f"{args.calls} cached LM calls per run, {args.rounds} rounds; µs per call on the caller's thread")
    print(f"{'backend':<11}{'mode':<6}{'guarded p50':>12}{'p99':>9}{'plain p50':>11}{'p99':>9}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            problem = server_available(backend)
            if problem:
                print(f"{backend:<11}skipped: {problem}")
                continue
            url = f"sqlite:///{Path(tmp) / 'usage.db'}" if backend == "sqlite" else private_database(
                backend, DB_NAME, recreate=True)
            try:
                for row in bench(backend, url, args.calls, args.rounds, Path(tmp)):
                    print(f"{row[0]:<11}{row[1]:<6}{row[2]:>12.0f}{row[3]:>9.0f}{row[4]:>11.0f}{row[5]:>9.0f}"
                          f"{row[6]:>7.2f}×", flush=True)
            finally:
                if backend != "sqlite":
                    drop_database(backend, DB_NAME)


if __name__ == "__main__":
    main()
