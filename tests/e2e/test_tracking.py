"""Sessions and call indexes, LM copies and stragglers, proven through real DSPy programs over HTTP.

Every test runs a real ``dspy.LM`` against :class:`FakeLLMServer` and compares the stored rows with the usage the
server actually sent (``server.requests``). Attribution (``usage_context``, ``propagate``) is specified in
tests/capture/test_context.py, the pairing of each call with its own usage in tests/capture/test_callback.py.
"""

from __future__ import annotations

import dspy
import pytest

from dspy_tokens import usage_context
from dspy_tokens.testing import FakeLLMServer, Reply, dspy_reply
from tests.support.db import stored_rows
from tests.support.wire import (
    answered,
    assert_rows_match_requests,
    by_session,
    question,
    sent,
    tokens,
    wait_until,
)


def assert_in_request_order(calls: list[dict], server) -> None:
    """Sequential programs: call index i carries exactly the usage of the i-th request."""
    requests = answered(server)
    assert [c["call_index"] for c in calls] == list(range(len(requests)))
    assert [tokens(c) for c in calls] == [sent(r) for r in requests]


class ThreeSteps(dspy.Module):
    """A custom module calling three sub-modules in sequence."""

    def __init__(self):
        super().__init__()
        self.draft = dspy.Predict("question -> draft")
        self.critique = dspy.ChainOfThought("question, draft -> critique")
        self.final = dspy.Predict("question, draft, critique -> answer")

    def forward(self, question):
        draft = self.draft(question=question).draft
        critique = self.critique(question=question, draft=draft).critique
        return self.final(question=question, draft=draft, critique=critique)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def react_steps(k: int) -> list[Reply]:
    """Replies making ReAct call the ``add`` tool k times, then ``finish``, then extract an answer."""
    steps = [Reply(content=dspy_reply({"next_thought": f"step {i}", "next_tool_name": "add",
                                       "next_tool_args": {"a": i, "b": 1}})) for i in range(k)]
    steps.append(Reply(content=dspy_reply({"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}})))
    steps.append(Reply(content=dspy_reply({"reasoning": "added", "answer": "yes"})))
    return steps


# -- 1. sessions and call indexes -------------------------------------------------------------------------------

class TestSessions:
    """One top-level run is one session, its LM calls indexed 0..n-1 in start order; explicit sessions group runs."""

    @pytest.mark.parametrize("program", [
        pytest.param(lambda: dspy.Predict("question -> answer"), id="Predict"),
        pytest.param(lambda: dspy.ChainOfThought("question -> answer"), id="ChainOfThought"),
        pytest.param(ThreeSteps, id="custom-module-3-submodules"),
    ])
    def test_one_run_is_one_session_indexed_in_start_order(self, sqlite_tracker, server, program):
        """All LM calls of one top-level run share one session with call_index 0..n-1 in start order."""
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            program()(question="what is the capital of France")
        rows = stored_rows(sqlite_tracker)
        assert len(rows) == len(answered(server)) >= 1
        sessions = by_session(rows)
        assert len(sessions) == 1
        assert_in_request_order(next(iter(sessions.values())), server)

    @pytest.mark.parametrize("k", [0, 1, 3])
    def test_react_with_k_tool_calls_is_k_plus_2_calls_in_one_session(self, sqlite_tracker, server, k):
        """ReAct picking a tool k times makes k+2 LM calls, all in one session indexed 0..k+1."""
        server.enqueue(*react_steps(k))
        react = dspy.ReAct("question -> answer", tools=[add])
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            react(question="add some numbers")
        rows = stored_rows(sqlite_tracker)
        assert len(answered(server)) == k + 2
        sessions = by_session(rows)
        assert len(sessions) == 1
        calls = next(iter(sessions.values()))
        assert_in_request_order(calls, server)
        assert calls[0]["module"] == "ReAct>Predict"
        assert calls[-1]["module"] == "ReAct>ChainOfThought>Predict"

    def test_two_top_level_runs_are_two_sessions(self, sqlite_tracker, server):
        """Two top-level runs of one program are two sessions, each indexed from 0."""
        program = ThreeSteps()
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            program(question="first run")
            program(question="second run")
        sessions = by_session(stored_rows(sqlite_tracker))
        assert len(sessions) == 2
        assert sorted([c["call_index"] for c in calls] for calls in sessions.values()) == [[0, 1, 2]] * 2

    def test_explicit_session_id_groups_two_runs(self, sqlite_tracker, server):
        """usage_context(session_id=...) around two runs makes one session indexed 0..n-1 across both."""
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(session_id="abc"):
            ThreeSteps()(question="first run")
            dspy.Predict("question -> answer")(question="second run")
        rows = stored_rows(sqlite_tracker)
        assert {r["session_id"] for r in rows} == {"abc"}
        assert_in_request_order(sorted(rows, key=lambda r: r["call_index"]), server)

    def test_explicit_session_id_indexes_concurrent_calls_without_gaps_or_duplicates(self, sqlite_tracker, server):
        """An explicit session around dspy.Parallel (8 threads) numbers its 16 calls exactly 0..15."""
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(session_id="interaction-1"):
            dspy.Parallel(num_threads=8, disable_progress_bar=True)(
                [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(16)])
        rows = stored_rows(sqlite_tracker)
        assert {r["session_id"] for r in rows} == {"interaction-1"}
        assert sorted(r["call_index"] for r in rows) == list(range(16))

    def test_a_nested_explicit_session_has_its_own_indexes(self, sqlite_tracker, server):
        """A usage_context with a new session_id inside another starts its own indexes; the outer one resumes after."""
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(session_id="outer", user_id=1):
            predict(question=question(0))
            with usage_context(session_id="inner"):
                predict(question=question(1))
                predict(question=question(2))
            predict(question=question(3))
        got = {(r["session_id"], r["call_index"], r["user_id"]) for r in stored_rows(sqlite_tracker)}
        assert got == {("outer", 0, 1), ("inner", 0, 1), ("inner", 1, 1), ("outer", 1, 1)}

    async def test_acall_of_a_multi_call_module_is_one_session(self, sqlite_tracker, server):
        """A top-level acall (ReAct.aforward with one tool call) is one session indexed in start order."""
        server.enqueue(*react_steps(1))
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            await dspy.ReAct("question -> answer", tools=[add]).acall(question="add asynchronously")
        sessions = by_session(stored_rows(sqlite_tracker))
        assert len(sessions) == 1
        assert_in_request_order(next(iter(sessions.values())), server)

    def test_top_level_parallel_items_are_separate_sessions_but_parallel_inside_a_module_is_one(self, sqlite_tracker,
                                                                                                server):
        """dspy.Parallel at top level gives one session per item; inside a Module it is one session."""
        predict = dspy.Predict("question -> answer")

        class Fanout(dspy.Module):
            def forward(self, questions):
                return dspy.Parallel(num_threads=4)(
                    [(predict, dspy.Example(question=q).with_inputs("question")) for q in questions])

        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            with usage_context(feature="top"):
                dspy.Parallel(num_threads=4)(
                    [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(4)])
            with usage_context(feature="inside"):
                Fanout()(questions=[question(i) for i in range(4, 8)])
        rows = stored_rows(sqlite_tracker)
        top = by_session([r for r in rows if r["feature"] == "top"])
        inside = by_session([r for r in rows if r["feature"] == "inside"])
        assert len(top) == 4 and all([c["call_index"] for c in calls] == [0] for calls in top.values())
        assert len(inside) == 1
        assert sorted(c["call_index"] for c in next(iter(inside.values()))) == [0, 1, 2, 3]
        assert_rows_match_requests(rows, server)


# -- 2. LM copies and per-predictor LMs ------------------------------------------------------------------------

class TestLmCopies:
    """Calls made on LM copies (BestOfN, Refine) and on a predictor's own LM are all recorded."""

    def test_best_of_n_records_every_lm_copy(self, sqlite_tracker, server):
        """dspy.BestOfN(N=3) calls three LM copies: three rows, one per HTTP request, in one session."""
        best = dspy.BestOfN(module=dspy.Predict("question -> answer"), N=3, reward_fn=lambda args, pred: 0.0,
                            threshold=1.0)
        lm = server.lm()
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            best(question="pick the best")
        rows = stored_rows(sqlite_tracker)
        assert len(answered(server)) == 3 and len(rows) == 3
        assert len(lm.history) == 0  # the configured LM never saw the calls: only its copies did
        assert len(by_session(rows)) == 1
        assert_rows_match_requests(rows, server)

    def test_refine_records_every_attempt(self, sqlite_tracker, server):
        """dspy.Refine's attempts and feedback calls on LM copies are all recorded, one row per request."""
        refine = dspy.Refine(module=dspy.ChainOfThought("question -> answer"), N=2, reward_fn=lambda args, pred: 0.0,
                             threshold=1.0)
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            refine(question="refine this")
        rows = stored_rows(sqlite_tracker)
        assert len(rows) == len(answered(server)) >= 3
        assert len(by_session(rows)) == 1
        assert all(r["usage_reported"] for r in rows)
        assert_rows_match_requests(rows, server)

    def test_predictor_with_its_own_lm_is_recorded_under_that_model(self, sqlite_tracker, server):
        """predict.lm = other_lm: the call is recorded on the other LM's model, in the same session."""
        program = ThreeSteps()
        program.critique.predict.lm = server.lm("openai/gpt-4.1-mini")
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            program(question="which model")
        rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
        assert [r["model"] for r in rows] == ["openai/gpt-4o-mini", "openai/gpt-4.1-mini", "openai/gpt-4o-mini"]
        assert [r["response_model"] for r in rows] == [r.model for r in answered(server)]
        assert_in_request_order(rows, server)


# -- 3. straggler resubmission -----------------------------------------------------------------------------------

def assert_every_straggler_recorded(sqlite_tracker, server):
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        results = dspy.Parallel(num_threads=4, timeout=1, straggler_limit=3, disable_progress_bar=True)(
            [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(2)])
    assert all(r is not None for r in results)

    def settled():  # the duplicates are still in flight when Parallel returns
        requests = server.requests
        return all(r.finished for r in requests) and len(stored_rows(sqlite_tracker)) == len(requests)

    assert wait_until(settled, timeout=10)
    rows = stored_rows(sqlite_tracker)
    assert len(server.requests) > 2  # the scenario really duplicated requests
    assert len(rows) == server.answered == len(server.requests)
    assert_rows_match_requests(rows, server)


class TestStragglers:
    """dspy.Parallel's resubmitted stragglers are billed, so they are recorded."""

    @pytest.mark.slow
    def test_parallel_straggler_duplicates_are_all_recorded(self, sqlite_tracker):
        """dspy.Parallel resubmits stragglers without cancelling them: every answered (billed) request has a row."""
        with FakeLLMServer(delay=1.5) as server:  # slower than the timeout: both items are resubmitted
            assert_every_straggler_recorded(sqlite_tracker, server)
