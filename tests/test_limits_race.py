"""Check-then-act races across processes sharing one database: reservations keep the limit exact."""

from __future__ import annotations

import multiprocessing

from dspy_tokens.testing import usage_row
from conftest import stored_rows

import race_worker

LIMIT, USED, ESTIMATE = 100_000, 94_000, 5_000


def test_two_processes_eight_threads_each_cannot_overshoot(make_tracker, database_url, tmp_path):
    """2 processes x 8 concurrent guarded requests at 94,000/100,000 asking 5,000: one admitted, limit held."""
    config = {"user_limit": LIMIT}
    tracker = make_tracker(database_url, config=None)
    tracker.store.insert_rows([usage_row(user_id=42, prompt_tokens=USED, completion_tokens=0)])
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(16), ctx.Queue()
    procs = [ctx.Process(target=race_worker.run,
                         args=(database_url, config, 8, barrier, results, str(tmp_path / f"spill{i}")))
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
    with tracker.store.db.connection_context():
        assert tracker.store.models.Reservation.select().count() == 0
