"""Sustained load: 8 threads and 50 asyncio tasks make real DSPy calls for DSPY_TOKENS_SOAK_SECONDS (default 10).

Afterwards the database must hold exactly one row per answered request, with exactly the tokens the server sent,
and the hourly counters must agree with the rows.
"""

from __future__ import annotations

import asyncio
import threading
import time

import dspy
import pytest

from dspy_tokens import usage_context
from dspy_tokens.testing import FakeLLMServer
from tests.support.db import store_of
from tests.support.reliability import SOAK_SECONDS, count_rows, counter_totals, token_sums

THREADS, TASKS = 8, 50

pytestmark = [pytest.mark.slow] if SOAK_SECONDS > 15 else []


def test_sustained_load_stores_exactly_what_the_server_answered(database_url, make_tracker):
    """8 threads + 50 asyncio tasks for SOAK_SECONDS: rows == answered requests and token sums == server log."""
    tracker = make_tracker(database_url)
    with FakeLLMServer(delay=0.002, cached_tokens=7, reasoning_tokens=3) as server:
        lm = server.lm("openai/gpt-4o-mini")
        predict = dspy.Predict("question -> answer")
        deadline = time.monotonic() + SOAK_SECONDS
        failures: list[str] = []
        made = {"threads": 0, "tasks": 0}
        lock = threading.Lock()

        def thread_worker(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                try:
                    with dspy.context(lm=lm, callbacks=[tracker]), \
                            usage_context(user_id=100 + n, guild_id=1 + n % 2, feature="soak-thread"):
                        predict(question=f"thread {n} call {i} " + "word " * (i % 7))
                except Exception as exc:  # the tracker must never break a call
                    failures.append(repr(exc))
                i += 1
            with lock:
                made["threads"] += i

        async def task_worker(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                try:
                    with usage_context(user_id=1000 + n, guild_id=3, feature="soak-task"):
                        await predict.acall(question=f"task {n} call {i} " + "word " * (i % 5))
                except Exception as exc:
                    failures.append(repr(exc))
                i += 1
            made["tasks"] += i

        async def tasks() -> None:
            with dspy.context(lm=lm, callbacks=[tracker]):
                await asyncio.gather(*(task_worker(n) for n in range(TASKS)))

        threads = [threading.Thread(target=thread_worker, args=(n,)) for n in range(THREADS)]
        for t in threads:
            t.start()
        asyncio.run(tasks())
        for t in threads:
            t.join()
        assert tracker.flush(timeout=120), f"writer did not drain: {tracker.stats.last_error}"
        answered, sent = server.answered, server.usage_totals()

    assert not failures, failures[:5]
    rows, distinct = count_rows(tracker)
    print(f"\nsoak {SOAK_SECONDS:.0f}s on {store_of(tracker).dialect}: {made['threads']} thread calls + "
          f"{made['tasks']} task calls, {answered} answered, {rows} rows")
    assert made["threads"] >= THREADS and made["tasks"] >= TASKS  # both kinds of load really ran
    assert rows == distinct == answered == made["threads"] + made["tasks"]
    assert token_sums(tracker) == sent
    assert counter_totals(tracker) == (rows, sent["total_tokens"])
