"""The DSPy callback (``CallRecorder``): each LM call is paired with its own history entry — whatever order calls
complete in, however many threads share a module, with the LM's history capped, off or disabled — and a failure
inside the callback never reaches the program. Real DSPy programs over HTTP to FakeLLMServer."""

from __future__ import annotations

import asyncio
import logging

import dspy

from dspy_tokens import usage_context
from dspy_tokens.testing import Reply
from tests.support.db import only_row, stored_rows
from tests.support.wire import (
    Tagged,
    answered,
    assert_rows_match_requests,
    by_session,
    marker,
    question,
    request_for,
    sent,
    tokens,
)

# -- pairing: each row carries its own request's usage -----------------------------------------------------------------

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


# -- history off or capped ---------------------------------------------------------------------------------------------

def test_disabled_history_still_records_the_call_without_usage_and_warns(sqlite_tracker, server, caplog):
    """disable_history=True: the call is still recorded, with usage_reported False, and a warning says why."""
    caplog.set_level(logging.WARNING, logger="dspy_tokens")
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker], disable_history=True):
        dspy.Predict("question -> answer")(question="no history")
        dspy.Predict("question -> answer")(question="still no history")
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 2 == len(answered(server))
    assert all(r["usage_reported"] is False and r["prompt_tokens"] is None and r["error"] is None for r in rows)
    warnings = [r.getMessage() for r in caplog.records if "disable_history" in r.getMessage()]
    assert len(warnings) == 1


def test_max_history_size_zero_still_records_usage(sqlite_tracker, server):
    """max_history_size=0 (no per-LM history) still pairs each call with its entry in DSPy's global history."""
    lm = server.lm()
    with dspy.context(lm=lm, callbacks=[sqlite_tracker], max_history_size=0):
        dspy.ChainOfThought("question -> answer")(question="global history only")
    assert lm.history == []
    row = only_row(sqlite_tracker)
    assert tokens(row) == sent(answered(server)[0])


# -- calls made on the LM directly -------------------------------------------------------------------------------------

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


# -- our own failures never reach the program --------------------------------------------------------------------------

def test_an_inline_callback_failure_never_reaches_the_program(sqlite_tracker, server, monkeypatch):
    """If pairing a call with its history entry blows up, the program still gets its result and the call is still
    recorded (without usage); other calls keep their usage."""
    real = type(sqlite_tracker)._find_entry
    calls = []

    def exploding(self, started):
        calls.append(started)
        if len(calls) == 2:
            raise KeyError("internal bug")
        return real(self, started)

    monkeypatch.setattr(type(sqlite_tracker), "_find_entry", exploding)
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        result = ThreeStepsLite()(question="robust")
    assert result.answer == "Answer to: robust"
    rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
    assert [r["call_index"] for r in rows] == [0, 1, 2]
    assert [r["usage_reported"] for r in rows] == [True, False, True]
    assert [tokens(rows[i]) for i in (0, 2)] == [sent(answered(server)[i]) for i in (0, 2)]


class ThreeStepsLite(dspy.Module):
    def __init__(self):
        super().__init__()
        self.steps = [dspy.Predict("question -> answer") for _ in range(3)]

    def forward(self, question):
        for step in self.steps:
            result = step(question=question)
        return result
