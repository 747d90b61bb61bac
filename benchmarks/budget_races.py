"""Budgets under races, against the real limiter: ``python -m benchmarks.budget_races [--processes P]
[--threads T] [--backends sqlite,postgresql,mysql]``.

Every case runs P processes × T threads (spawned, sharing one database: a fresh one per case), on each backend
whose server answers (the others are skipped with the reason):

* case 2 — a per-model limit that fits 20 estimates; each thread holds 3 guards naming the model by its label or
  its bare name (alternating): how many are admitted, against the 20 that fit;
* case 3 — a user limit that fits 16 estimates; process 0's clock runs 700 s ahead (beyond the reservations' TTL);
  each thread holds 2 guards: admitted against 16;
* case 7 — runs of 3 LM calls (a real DSPy program on a local fake provider, 900 output tokens per call) guarded
  with an estimate of one call (so each spends 3× it), against a 10,000-token limit: billed tokens beyond the
  limit (overshoot, % of the limit), non-strict and strict, and how many strict runs complete.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

USER, ESTIMATE, OUTPUT_CAP, RUN_LIMIT = 42, 5_000, 900, 10_000
MINI = {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}
CASES = {
    "2": ({"models": [{**MINI, "user_limit": 20 * ESTIMATE}]}, 3, 20),
    "3": ({"user_limit": 16 * ESTIMATE}, 2, 16),
    "7": ({"user_limit": RUN_LIMIT}, 1, None),
    "7 strict": ({"user_limit": RUN_LIMIT}, 1, None),
}
DB_NAME = "dspy_tokens_bench_races"


class _Ahead(datetime):
    """This host's clock, 700 s ahead of the others."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(seconds=700)


def _hold_guards(tracker, case: str, holds: int, thread: int, barrier, counts: list) -> None:
    from dspy_tokens import TokenLimitExceeded

    held = []
    for _ in range(holds):
        model = ("mini" if thread % 2 else "gpt-4o-mini") if case == "2" else None
        guard = tracker.guard(USER, model=model, estimate=ESTIMATE)
        try:
            guard.__enter__()
            held.append(guard)
            counts[0] += 1
        except TokenLimitExceeded:
            counts[1] += 1
    barrier.wait(timeout=300)  # every guard of every process is decided before any is released
    for guard in reversed(held):
        guard.__exit__(None, None, None)


def _run_program(tracker, server_url: str, strict: bool, counts: list) -> None:
    import dspy

    from dspy_tokens import TokenLimitExceeded

    lm = dspy.LM("openai/gpt-4o-mini", api_base=server_url, api_key="bench", cache=False, max_tokens=OUTPUT_CAP)
    step = dspy.Predict("question -> answer")
    try:
        with dspy.context(lm=lm, callbacks=[tracker]), tracker.guard(USER, estimate=OUTPUT_CAP + 100, strict=strict):
            for i in range(3):
                step(question=f"step {i}")
        counts[0] += 1  # completed
    except TokenLimitExceeded:
        counts[1] += 1  # refused, or stopped before a call


def worker(index: int, urls: dict, threads: int, server_url: str, barrier, cases_barrier, results,
           spill: str) -> None:
    import dspy_tokens.limits.limiter as limiter_module
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config

    for case, (document, holds, _) in CASES.items():
        tracker = TokenTracker(urls[case], parse_config(document, "models.json"), spill_dir=f"{spill}/{index}-{case}")
        if case == "3" and index == 0:
            limiter_module.datetime = _Ahead  # type: ignore[misc]
        counts_by_thread = [[0, 0] for _ in range(threads)]

        def work(t: int) -> None:
            barrier.wait(timeout=300)
            if case.startswith("7"):
                _run_program(tracker, server_url, case == "7 strict", counts_by_thread[t])
            else:
                _hold_guards(tracker, case, holds, t, barrier, counts_by_thread[t])

        pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        limiter_module.datetime = datetime  # type: ignore[misc]
        tracker.close(timeout=60)
        results.put((case, sum(c[0] for c in counts_by_thread), sum(c[1] for c in counts_by_thread)))
        cases_barrier.wait(timeout=300)  # the next case starts together


def race(backend: str, processes: int, threads: int, work: Path) -> dict:
    from benchmarks.datagen import drop_database, private_database
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config
    from dspy_tokens.store import Store
    from dspy_tokens.testing import FakeLLMServer, Reply

    urls = {}
    for i, case in enumerate(CASES):
        urls[case] = (f"sqlite:///{work / f'{backend}-{i}.db'}" if backend == "sqlite"
                      else private_database(backend, f"{DB_NAME}_{i}", recreate=True))
    for url in urls.values():  # migrated before the processes start, as `dspy-tokens db migrate` does
        store = Store(url)
        store.ensure_schema()
        store.close()
    ctx = multiprocessing.get_context("spawn")
    barrier, cases_barrier, results = ctx.Barrier(processes * threads), ctx.Barrier(processes), ctx.Queue()
    out: dict = {}
    try:
        with FakeLLMServer(delay=0.05) as server:
            server.enqueue(*[Reply(completion_tokens=OUTPUT_CAP) for _ in range(6 * processes * threads)])
            procs = [ctx.Process(target=worker, args=(i, urls, threads, server.url, barrier,
                                                      cases_barrier, results, str(work / f"spill-{backend}")))
                     for i in range(processes)]
            for p in procs:
                p.start()
            for _ in range(processes * len(CASES)):
                case, done, refused = results.get(timeout=600)
                got = out.setdefault(case, [0, 0])
                got[0] += done
                got[1] += refused
            for p in procs:
                p.join(timeout=60)
        for case in ("7", "7 strict"):
            reader = TokenTracker.reader(urls[case], parse_config(CASES[case][0], "models.json"))
            billed = reader.check(USER, estimate=0).used
            reader.close()
            out[case].append(billed)
    finally:
        if backend != "sqlite":
            for i in range(len(CASES)):
                drop_database(backend, f"{DB_NAME}_{i}")
    return out


def main() -> None:
    from benchmarks.datagen import server_available

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--backends", default="sqlite,postgresql,mysql")
    args = parser.parse_args()
    n = args.processes * args.threads
    print(f"{args.processes} processes × {args.threads} threads")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            problem = server_available(backend)
            if problem:
                print(f"{backend}: skipped ({problem})")
                continue
            out = race(backend, args.processes, args.threads, Path(tmp))
            for case in ("2", "3"):
                _, holds, fit = CASES[case]
                print(f"{backend:<11} case {case}: admitted {out[case][0]} of {n * holds} asked, {fit} fit")
            for case in ("7", "7 strict"):
                done, stopped, billed = out[case]
                print(f"{backend:<11} case {case}: billed {billed:,} of {RUN_LIMIT:,} "
                      f"(overshoot {100 * (billed - RUN_LIMIT) / RUN_LIMIT:+.1f}%), "
                      f"{done} of {n} runs completed, {stopped} refused or stopped", flush=True)


if __name__ == "__main__":
    main()
