"""``tracker.guard``: refuse before the LLM runs, reserve the estimate for the block, settle to the real usage at
its end — with ``with`` and ``async with``, on exceptions, and when the task is cancelled mid-decision."""

from __future__ import annotations

import asyncio
import time

import dspy
import pytest

from dspy_tokens import TokenLimitExceeded
from dspy_tokens.limits import Limiter
from tests.support.db import reservations, stored_rows
from tests.support.limits import GUILD, USER, config, seed


def test_guard_refuses_before_the_llm_runs(make_tracker, sqlite_url, server):
    """A refused guard raises TokenLimitExceeded carrying the decision, and no HTTP request is made."""
    tracker = make_tracker(sqlite_url, config(user_limit=1_000))
    seed(tracker, dict(user_id=USER, prompt_tokens=990, completion_tokens=0))
    with pytest.raises(TokenLimitExceeded) as refused:
        with dspy.context(lm=server.lm(), callbacks=[tracker]), tracker.guard(USER, estimate=50):
            dspy.Predict("question -> answer")(question="never sent")
    assert refused.value.decision.scope == "user" and refused.value.decision.used == 990
    assert str(refused.value) == refused.value.decision.message
    assert server.requests == []


def test_guard_reserves_then_settles_to_actual_usage(make_tracker, database_url, server):
    """Inside the block the estimate is held; after it the hold is gone and only the real usage counts."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        with tracker.guard(USER, GUILD, channel_id=9, feature="chat", estimate=5_000) as held:
            assert held.reservation_id and tracker.check(USER, estimate=0).reserved == 5_000
            dspy.ChainOfThought("question -> answer")(question="how much did this cost?")
    assert tracker.flush(10)
    assert reservations(tracker) == 0
    actual = server.usage_totals()["total_tokens"]
    after = tracker.check(USER, estimate=0)
    assert (after.used, after.reserved) == (actual, 0)
    [row] = stored_rows(tracker)
    assert (row["user_id"], row["guild_id"], row["channel_id"], row["feature"]) == (USER, GUILD, 9, "chat")


async def test_async_guard_settles_and_releases_on_exception(make_tracker, sqlite_url, server):
    """async with guard works with acall, and a block that raises still releases its reservation."""
    tracker = make_tracker(sqlite_url, config(user_limit=100_000))
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        async with tracker.guard(USER, estimate=3_000):
            await dspy.Predict("question -> answer").acall(question="async")
        with pytest.raises(RuntimeError):
            async with tracker.guard(USER, estimate=3_000):
                raise RuntimeError("handler failed")
    assert tracker.flush(10)
    decision = tracker.check(USER, estimate=0)
    assert decision.reserved == 0 and decision.used == server.usage_totals()["total_tokens"]


async def test_cancelled_async_guard_releases_what_it_reserved(make_tracker, sqlite_url, monkeypatch):
    """A task cancelled while its guard is deciding does not leave the reservation held until the TTL."""
    tracker = make_tracker(sqlite_url, config(user_limit=10_000))
    reserve = Limiter.reserve

    def slow_reserve(limiter, *args, **kwargs):
        time.sleep(0.3)
        return reserve(limiter, *args, **kwargs)

    monkeypatch.setattr(Limiter, "reserve", slow_reserve)  # every limiter's decision takes 0.3 s

    async def handler():
        async with tracker.guard(USER, estimate=9_000):
            pytest.fail("the block must not run")

    task = asyncio.create_task(handler())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)  # the decision thread finishes and its reservation is handed back
    assert tracker.flush(10)
    assert tracker.check(USER, estimate=9_000).allowed
