"""Check-then-act races, between threads of one process and across processes sharing one database:
reservations keep the limit exact."""

from __future__ import annotations

import multiprocessing
import threading

from dspy_tokens import TokenLimitExceeded
from tests.support.db import reservations, stored_rows
from tests.support.limits import USER, config, seed
from tests.support.rows import insert, seed_row
from tests.support.workers import race_worker

LIMIT, USED, ESTIMATE = 100_000, 94_000, 5_000


def test_concurrent_guards_in_threads_admit_only_what_fits(make_tracker, database_url):
    """8 threads at 94,000/100,000 asking 5,000 each: exactly one is admitted (reserve happens atomically)."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    seed(tracker, dict(user_id=USER, prompt_tokens=94_000, completion_tokens=0))
    start, decided, admitted, refused = threading.Barrier(8), threading.Barrier(8), [], []

    def request():
        start.wait()
        try:
            with tracker.guard(USER, estimate=5_000):
                admitted.append(1)
                decided.wait(timeout=30)  # the "LLM" runs until every other request has been decided
        except TokenLimitExceeded:
            refused.append(1)
            decided.wait(timeout=30)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(admitted), len(refused)) == (1, 7)


def test_two_processes_eight_threads_each_cannot_overshoot(make_tracker, database_url, tmp_path):
    """2 processes x 8 concurrent guarded requests at 94,000/100,000 asking 5,000: one admitted, limit held."""
    document = {"user_limit": LIMIT}  # the workers' models.json
    tracker = make_tracker(database_url, config=None)
    insert(tracker.database_url, [seed_row(user_id=42, prompt_tokens=USED, completion_tokens=0)])
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(16), ctx.Queue()
    procs = [ctx.Process(target=race_worker.run,
                         args=(database_url, document, 8, barrier, results, str(tmp_path / f"spill{i}")))
             for i in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    admitted = sum(o[0] for o in outcomes)
    billed = sum(o[2] for o in outcomes)
    assert admitted == 1 and sum(o[1] for o in outcomes) == 15
    rows = stored_rows(tracker)
    final = sum(r["total_tokens"] for r in rows if r["user_id"] == 42)
    assert final == USED + billed
    # The admitted request's actual usage equals its estimate here, so the bound is the limit itself.
    assert final <= LIMIT + max(0, billed - ESTIMATE * admitted)
    assert reservations(tracker) == 0
