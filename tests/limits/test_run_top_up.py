"""Issue case 7: a guarded run cannot spend far beyond its reservation. Before each LM call of the run its
reservation is topped up to what the run spent plus what the call may use (prompt counted + output cap), so other
runs see it; a strict guard stops the run before a call that does not fit — through real DSPy programs."""

from __future__ import annotations

import threading

import dspy
import pytest

from dspy_tokens import TokenLimitExceeded
from dspy_tokens.testing import FakeLLMServer, Reply
from tests.support.db import reservations
from tests.support.limits import USER, config

OUTPUT_CAP = 900


class ThreeSteps(dspy.Module):
    """A program of three LM calls (each answers with the output cap: 3× an estimate of one call)."""

    def __init__(self):
        super().__init__()
        self.step = dspy.Predict("question -> answer")

    def forward(self, question):
        for i in range(3):
            answer = self.step(question=f"{question}, step {i}").answer
        return answer


def replies(server, n):
    server.enqueue(*[Reply(completion_tokens=OUTPUT_CAP) for _ in range(n)])


def test_each_call_tops_up_the_reservation_without_counting_twice(make_tracker, database_url, server):
    """After the first call of a run is committed, used + reserved is what the run holds — the committed call is
    moved out of the reservation, not counted in both."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    replies(server, 1)
    lm = server.lm(max_tokens=OUTPUT_CAP)
    with dspy.context(lm=lm, callbacks=[tracker]):
        with tracker.guard(USER, estimate=10):
            dspy.Predict("question -> answer")(question="one call")
            assert tracker.flush(10)
            seen = tracker.check(USER, estimate=0)
    actual = server.usage_totals()["total_tokens"]
    assert actual > 10 and seen.used == actual
    assert seen.used + seen.reserved >= actual and seen.reserved > 0  # the call's hold grew beyond the 10 asked
    assert tracker.flush(10) and reservations(tracker) == 0


def test_a_strict_guard_stops_before_the_call_that_does_not_fit(make_tracker, database_url, server):
    """3,000 tokens left, calls of ~1,000: the third call is never sent; the block raises TokenLimitExceeded."""
    tracker = make_tracker(database_url, config(user_limit=3_000))
    replies(server, 3)
    with dspy.context(lm=server.lm(max_tokens=OUTPUT_CAP), callbacks=[tracker]):
        with pytest.raises(TokenLimitExceeded) as stopped:
            with tracker.guard(USER, strict=True):
                ThreeSteps()(question="a question")
    assert len(server.requests) == 2
    assert stopped.value.decision.exceeded and not stopped.value.decision.allowed
    assert tracker.flush(10) and reservations(tracker) == 0
    assert tracker.check(USER, estimate=0).used == server.usage_totals()["total_tokens"] <= 3_000
    # the stopped run is one refusal (for /metrics), under the refusing rule and the run's model
    assert [(r.scope, r.metric, r.model, r.refusals) for r in tracker.limit_refusals()] == [
        ("user", "tokens", "openai/gpt-4o-mini", 1)]


def test_without_strict_the_run_finishes_and_others_see_its_hold(make_tracker, sqlite_url, server):
    """Not strict: the run makes all its calls (its hold grows), and a second run asking meanwhile sees it."""
    tracker = make_tracker(sqlite_url, config(user_limit=3_000))
    replies(server, 3)
    with dspy.context(lm=server.lm(max_tokens=OUTPUT_CAP), callbacks=[tracker]):
        with tracker.guard(USER) as held:
            ThreeSteps()(question="a question")
            inside = tracker.check(USER, estimate=1)
    assert held.allowed and len(server.requests) == 3
    assert not inside.allowed


def test_concurrent_strict_runs_never_bill_beyond_the_limit(make_tracker, database_url):
    """12 strict runs of 3 calls (~1,000 tokens each) race for 10,000 tokens: the total billed stays within it."""
    limit = 10_000
    tracker = make_tracker(database_url, config(user_limit=limit))
    start, outcome = threading.Barrier(12), []
    with FakeLLMServer(delay=0.05) as server:
        replies(server, 36)
        lm = server.lm(max_tokens=OUTPUT_CAP)

        def run(i):
            start.wait()
            try:
                with dspy.context(lm=lm, callbacks=[tracker]), tracker.guard(USER, estimate=1_000, strict=True):
                    ThreeSteps()(question=f"run {i}")
                outcome.append("done")
            except TokenLimitExceeded:
                outcome.append("stopped")

        threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        billed = server.usage_totals()["total_tokens"]
    assert len(outcome) == 12 and "stopped" in outcome
    assert billed <= limit
    assert tracker.flush(10) and reservations(tracker) == 0
    assert tracker.check(USER, estimate=0).used == billed


def test_a_call_the_reservation_covers_still_moves_out_of_it_when_committed(make_tracker, database_url, server):
    """A 5,000-token hold covers a ~1,000-token call (no top-up before it): once its row is committed the call
    counts as used and the hold keeps only the rest — never both."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    replies(server, 1)
    with dspy.context(lm=server.lm(max_tokens=OUTPUT_CAP), callbacks=[tracker]):
        with tracker.guard(USER, estimate=5_000):
            dspy.Predict("question -> answer")(question="one covered call")
            assert tracker.flush(10)
            seen = tracker.check(USER, estimate=0)
    actual = server.usage_totals()["total_tokens"]
    assert (seen.used, seen.reserved) == (actual, 5_000 - actual)
    assert tracker.flush(10) and reservations(tracker) == 0


def test_cache_hits_spend_nothing_so_a_strict_run_of_them_finishes(make_tracker, database_url, server):
    """Five cached calls under a limit that fits one call: a strict run makes them all (a hit costs nothing) and
    nothing more is sent to the provider."""
    tracker = make_tracker(database_url, config(user_limit=1_500))
    replies(server, 5)
    lm = server.lm(max_tokens=OUTPUT_CAP, cache=True)
    questions = [f"question {i}" for i in range(5)]
    with dspy.context(lm=lm):  # not tracked: the answers are cached, nothing is counted
        for q in questions:
            dspy.Predict("question -> answer")(question=q)
    sent = len(server.requests)
    with dspy.context(lm=lm, callbacks=[tracker]), tracker.guard(USER, strict=True):
        for q in questions:
            dspy.Predict("question -> answer")(question=q)
    assert len(server.requests) == sent
    assert tracker.flush(10) and reservations(tracker) == 0
    assert tracker.check(USER, estimate=0).used == 0
