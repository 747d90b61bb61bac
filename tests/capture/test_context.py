"""Attribution: ``usage_context`` and ``propagate`` carry user, guild, channel and feature to every LM call made
inside them — across threads, dspy.Parallel workers, gathered acalls, asyncify and to_thread — and validate ids
where they are written. Real DSPy programs over HTTP; the stored rows say who made each call."""

from __future__ import annotations

import asyncio
import threading

import dspy
import pytest

from dspy_tokens import ConfigurationError, propagate, usage_context
from tests.support.db import stored_rows
from tests.support.wire import by_session, marker, question, request_for, sent, tokens

USER, GUILD, CHANNEL = 111111111111111111, 222222222222222222, 333333333333333333


def attribution(row: dict) -> tuple:
    return row["user_id"], row["guild_id"], row["channel_id"], row["feature"]


# -- ids are checked where they are written ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, field", [
    ({"user_id": "alice"}, "user_id"), ({"guild_id": -1}, "guild_id"), ({"channel_id": 2**63}, "channel_id"),
    ({"user_id": True}, "user_id"),
])
def test_usage_context_rejects_bad_ids_where_they_are_written(kwargs, field):
    """usage_context validates ids when created, naming the argument and the bad value."""
    with pytest.raises(ConfigurationError) as raised:
        usage_context(**kwargs)
    assert raised.value.field == field and raised.value.value == kwargs[field]


# -- attribution reaches every call ------------------------------------------------------------------------------------

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
