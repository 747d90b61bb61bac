"""Sessions, call indexes, attribution and pairing, proven through real DSPy programs over HTTP.

Every test runs a real ``dspy.LM`` against :class:`FakeLLMServer` and compares the stored rows with the usage the
server actually sent (``server.requests``).
"""

from __future__ import annotations

import asyncio
import threading

import dspy
import pytest

from dspy_tokens import propagate, usage_context
from dspy_tokens.testing import FakeLLMServer, Reply, dspy_reply
from helpers import (
    Tagged, answered, assert_rows_match_requests, by_session, marker, question, request_for, sent, stored_rows,
    tokens, wait_until,
)

USER, GUILD, CHANNEL = 111111111111111111, 222222222222222222, 333333333333333333


def attribution(row: dict) -> tuple:
    return row["user_id"], row["guild_id"], row["channel_id"], row["feature"]


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

@pytest.mark.parametrize("program", [
    pytest.param(lambda: dspy.Predict("question -> answer"), id="Predict"),
    pytest.param(lambda: dspy.ChainOfThought("question -> answer"), id="ChainOfThought"),
    pytest.param(ThreeSteps, id="custom-module-3-submodules"),
])
def test_one_run_is_one_session_indexed_in_start_order(sqlite_tracker, server, program):
    """All LM calls of one top-level run share one session with call_index 0..n-1 in start order."""
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        program()(question="what is the capital of France")
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == len(answered(server)) >= 1
    sessions = by_session(rows)
    assert len(sessions) == 1
    assert_in_request_order(next(iter(sessions.values())), server)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_react_with_k_tool_calls_is_k_plus_2_calls_in_one_session(sqlite_tracker, server, k):
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


def test_two_top_level_runs_are_two_sessions(sqlite_tracker, server):
    """Two top-level runs of one program are two sessions, each indexed from 0."""
    program = ThreeSteps()
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        program(question="first run")
        program(question="second run")
    sessions = by_session(stored_rows(sqlite_tracker))
    assert len(sessions) == 2
    assert sorted([c["call_index"] for c in calls] for calls in sessions.values()) == [[0, 1, 2]] * 2


def test_explicit_session_id_groups_two_runs(sqlite_tracker, server):
    """usage_context(session_id=...) around two runs makes one session indexed 0..n-1 across both."""
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(session_id="abc"):
        ThreeSteps()(question="first run")
        dspy.Predict("question -> answer")(question="second run")
    rows = stored_rows(sqlite_tracker)
    assert {r["session_id"] for r in rows} == {"abc"}
    assert_in_request_order(sorted(rows, key=lambda r: r["call_index"]), server)


def test_explicit_session_id_indexes_concurrent_calls_without_gaps_or_duplicates(sqlite_tracker, server):
    """An explicit session around dspy.Parallel (8 threads) numbers its 16 calls exactly 0..15."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(session_id="interaction-1"):
        dspy.Parallel(num_threads=8, disable_progress_bar=True)(
            [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(16)])
    rows = stored_rows(sqlite_tracker)
    assert {r["session_id"] for r in rows} == {"interaction-1"}
    assert sorted(r["call_index"] for r in rows) == list(range(16))


def test_a_nested_explicit_session_has_its_own_indexes(sqlite_tracker, server):
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


async def test_acall_of_a_multi_call_module_is_one_session(sqlite_tracker, server):
    """A top-level acall (ReAct.aforward with one tool call) is one session indexed in start order."""
    server.enqueue(*react_steps(1))
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        await dspy.ReAct("question -> answer", tools=[add]).acall(question="add asynchronously")
    sessions = by_session(stored_rows(sqlite_tracker))
    assert len(sessions) == 1
    assert_in_request_order(next(iter(sessions.values())), server)


def test_top_level_parallel_items_are_separate_sessions_but_parallel_inside_a_module_is_one(sqlite_tracker, server):
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


# -- 2. attribution ----------------------------------------------------------------------------------------------

WHO = dict(user_id=USER, guild_id=GUILD, channel_id=CHANNEL, feature="ask")
WHO_ROW = (USER, GUILD, CHANNEL, "ask")


def test_attribution_reaches_parallel_worker_threads(sqlite_tracker, server):
    """usage_context attribution reaches calls made in dspy.Parallel worker threads."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(**WHO):
        dspy.Parallel(num_threads=4)(
            [(predict, dspy.Example(question=question(i)).with_inputs("question")) for i in range(6)])
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 6
    assert {attribution(r) for r in rows} == {WHO_ROW}


async def test_attribution_reaches_gathered_acalls(sqlite_tracker, server):
    """usage_context attribution reaches every acall of an asyncio.gather."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(**WHO):
        await asyncio.gather(*(predict.acall(question=question(i)) for i in range(4)))
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 4 and {attribution(r) for r in rows} == {WHO_ROW}


async def test_attribution_reaches_asyncify_and_to_thread(sqlite_tracker, server):
    """usage_context attribution reaches programs run through dspy.asyncify and asyncio.to_thread."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]), usage_context(**WHO):
        await dspy.asyncify(predict)(question=question(0))
        await asyncio.to_thread(predict, question=question(1))
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 2 and {attribution(r) for r in rows} == {WHO_ROW}


def test_nested_usage_context_refines_the_outer_one(sqlite_tracker, server):
    """A nested usage_context overrides only the fields it gives; leaving it restores the outer values."""
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        with usage_context(user_id=1, guild_id=2, feature="outer"):
            predict(question=question(0))
            with usage_context(feature="inner", channel_id=3):
                predict(question=question(1))
                with usage_context(user_id="4"):
                    predict(question=question(2))
            predict(question=question(3))
        predict(question=question(4))
    rows = stored_rows(sqlite_tracker)
    by_question = {i: next(r for r in rows if tokens(r) == sent(request_for(server, marker(i)))) for i in range(5)}
    assert [attribution(by_question[i]) for i in range(5)] == [
        (1, 2, None, "outer"), (1, 2, 3, "inner"), (4, 2, 3, "inner"), (1, 2, None, "outer"), (None, None, None, None)]


async def test_usage_context_as_decorator_on_sync_and_async_functions(sqlite_tracker, server):
    """usage_context decorates sync and async functions, attributing the calls made inside them."""
    predict = dspy.Predict("question -> answer")

    @usage_context(user_id=5, feature="sync")
    def ask_sync(q):
        return predict(question=q)

    @usage_context(user_id=6, feature="async")
    async def ask_async(q):
        return await predict.acall(question=q)

    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        ask_sync(question(0))
        await ask_async(question(1))
        predict(question=question(2))  # outside both: no attribution
    got = sorted((r["user_id"] or 0, r["feature"] or "") for r in stored_rows(sqlite_tracker))
    assert got == [(0, ""), (5, "sync"), (6, "async")]


def test_raw_thread_loses_attribution_unless_propagated(sqlite_tracker, server):
    """A raw threading.Thread starts with no attribution; wrapping its target with propagate() keeps it."""
    lm = server.lm(callbacks=[sqlite_tracker])  # per-LM callback: no dspy.context needed in the raw thread
    predict = dspy.Predict("question -> answer")
    predict.lm = lm

    def ask(tag):
        predict(question=tag)

    with usage_context(**WHO):
        raw = threading.Thread(target=ask, args=(question(0),))
        wrapped = threading.Thread(target=propagate(ask), args=(question(1),))
        raw.start(), wrapped.start()
        raw.join(), wrapped.join()
    rows = stored_rows(sqlite_tracker)
    by_tokens = {r["prompt_tokens"]: attribution(r) for r in rows}
    assert by_tokens[sent(request_for(server, marker(0)))["prompt_tokens"]] == (None, None, None, None)
    assert by_tokens[sent(request_for(server, marker(1)))["prompt_tokens"]] == WHO_ROW


def test_propagated_thread_inside_a_module_joins_its_session(sqlite_tracker, server):
    """A propagate()-wrapped thread started inside a module run stays in that run's session; a raw one does not."""
    lm = server.lm(callbacks=[sqlite_tracker])
    predict = dspy.Predict("question -> answer")
    predict.lm = lm

    class Threads(dspy.Module):
        def __init__(self, wrap):
            super().__init__()
            self.wrap = wrap

        def forward(self, question):
            predict(question=question)
            t = threading.Thread(target=self.wrap(lambda: predict(question=question + " again")))
            t.start()
            t.join()
            return predict(question=question + " last")

    with dspy.context(callbacks=[sqlite_tracker]):
        Threads(propagate)(question="propagated")
        Threads(lambda f: f)(question="raw")
    sessions = sorted(len(calls) for calls in by_session(stored_rows(sqlite_tracker)).values())
    # propagated: one session of 3 calls; raw: the module's 2 calls plus an orphan session of 1
    assert sessions == [1, 2, 3]


# -- 3. pairing: each row carries its own request's usage ---------------------------------------------------------

def assert_each_tag_has_its_own_usage(rows: list[dict], server, n: int) -> None:
    """Row tagged item<i> carries exactly the usage of the request whose prompt contains item<i>."""
    assert len(rows) == n == len(answered(server))
    by_tag = {r["feature"]: r for r in rows}
    assert len(by_tag) == n
    for i in range(n):
        assert tokens(by_tag[marker(i).strip()]) == sent(request_for(server, marker(i))), i
    assert len({r["prompt_tokens"] for r in rows}) == n  # the check above could tell the rows apart


async def test_pairing_under_gather_when_completion_order_differs(sqlite_tracker, server):
    """Under asyncio.gather of one shared module's acall, each row gets its own request's usage, whatever order
    the requests complete in."""
    n = 6
    # The first request to arrive is answered last: completion order is the reverse of arrival order.
    server.enqueue(*(Reply(delay=0.03 * (n - i)) for i in range(n)))
    predict = dspy.Predict("question -> answer")

    async def ask(i):
        with usage_context(feature=marker(i).strip()):
            return await predict.acall(question=question(i))

    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        await asyncio.gather(*(ask(i) for i in range(n)))
    requests = server.requests
    arrival = [r.index for r in sorted(requests, key=lambda r: r.started)]
    completion = [r.index for r in sorted(requests, key=lambda r: r.finished)]
    assert arrival != completion  # the scenario really reorders completions
    assert_each_tag_has_its_own_usage(stored_rows(sqlite_tracker), server, n)


def test_pairing_under_parallel_with_8_threads(sqlite_tracker, server):
    """Under dspy.Parallel with 8 threads over one shared module, each row gets its own request's usage."""
    n = 16
    server.enqueue(*(Reply(delay=0.002 * (n - i)) for i in range(n)))
    program = Tagged(dspy.Predict("question -> answer"))
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        dspy.Parallel(num_threads=8)([
            (program, dspy.Example(question=question(i), tag=marker(i).strip()).with_inputs("question", "tag"))
            for i in range(n)])
    assert_each_tag_has_its_own_usage(stored_rows(sqlite_tracker), server, n)


def test_pairing_with_history_capped_at_one_and_16_threads(sqlite_tracker, server, caplog):
    """With max_history_size=1 and 16 threads, every call still finds its own history entry."""
    n = 32
    program = Tagged(dspy.Predict("question -> answer"))
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker], max_history_size=1):
        dspy.Parallel(num_threads=16)([
            (program, dspy.Example(question=question(i), tag=marker(i).strip()).with_inputs("question", "tag"))
            for i in range(n)])
    rows = stored_rows(sqlite_tracker)
    assert all(r["usage_reported"] for r in rows)
    assert_each_tag_has_its_own_usage(rows, server, n)


def test_best_of_n_records_every_lm_copy(sqlite_tracker, server):
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


def test_refine_records_every_attempt(sqlite_tracker, server):
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


def test_predictor_with_its_own_lm_is_recorded_under_that_model(sqlite_tracker, server):
    """predict.lm = other_lm: the call is recorded on the other LM's model, in the same session."""
    program = ThreeSteps()
    program.critique.predict.lm = server.lm("openai/gpt-4.1-mini")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        program(question="which model")
    rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
    assert [r["model"] for r in rows] == ["openai/gpt-4o-mini", "openai/gpt-4.1-mini", "openai/gpt-4o-mini"]
    assert [r["response_model"] for r in rows] == [r.model for r in answered(server)]
    assert_in_request_order(rows, server)


# -- 10. straggler resubmission ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_parallel_straggler_duplicates_are_all_recorded(sqlite_tracker):
    """dspy.Parallel resubmits stragglers without cancelling them: every answered (billed) request has a row."""
    with FakeLLMServer(delay=1.5) as server:  # slower than the timeout: both items are resubmitted
        assert_every_straggler_recorded(sqlite_tracker, server)


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


def test_direct_lm_calls_are_recorded_as_their_own_sessions(sqlite_tracker, server):
    """Calling the LM directly — a prompt string, or an lm15 Request (DSPy's non-deprecated API) positionally or by
    keyword — records each call as its own session, paired with its own usage."""
    lm = server.lm()
    lm15 = dspy.lm15

    def request(text):
        return lm15.Request(model=lm.model, messages=(lm15.Message(role="user", parts=(lm15.TextPart(text=text),)),))

    with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
        lm("a plain prompt string")
        lm(request("an lm15 request passed positionally"))
        lm(request=request("an lm15 request passed by keyword, the longest prompt of the three"))
    rows = stored_rows(sqlite_tracker)
    assert len(by_session(rows)) == 3 and all(r["call_index"] == 0 and r["module"] is None for r in rows)
    assert all(r["usage_reported"] for r in rows)
    assert_rows_match_requests(rows, server)
