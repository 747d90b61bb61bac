"""Calls whose history entries are not chat-completions shaped: the Responses API (``model_type="responses"``),
``dspy.experimental.TypeSafe`` decision calls (no messages, no prompt, no uuid), and test doubles reporting
all-zero usage. Real DSPy programs over HTTP to FakeLLMServer."""

from __future__ import annotations

import logging
import uuid

import dspy
import dspy.experimental
import pytest
from dspy.utils import DummyLM

from dspy_tokens import usage_context
from tests.support.db import only_row, stored_rows
from tests.support.wire import GPT4O_MINI, hand_cost, tokens


def responses_sent(request) -> dict:
    """The Responses API usage one request carried, as the five stored token columns."""
    usage = request.usage
    return {"prompt_tokens": usage["input_tokens"], "completion_tokens": usage["output_tokens"],
            "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            "cached_tokens": usage["input_tokens_details"]["cached_tokens"],
            "reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"]}


class Spam(dspy.Signature):
    """A decision signature: TypeSafe answers it through System One."""

    text: str = dspy.InputField()
    is_spam: bool = dspy.OutputField(desc="Is this message spam?")


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_responses_api_calls_are_recorded_with_their_real_tokens_and_priced(sqlite_tracker, server, engine):
    """``model_type="responses"``: input/output tokens (and cached, reasoning details) become the row's prompt and
    completion tokens on both engines, priced at gpt-4o-mini's rates, not stored as unknown."""
    server.defaults.update(cached_tokens=4, reasoning_tokens=3)
    lm = server.lm("openai/gpt-4o-mini", model_type="responses", engine=engine)
    with dspy.context(lm=lm, callbacks=[sqlite_tracker]), usage_context(user_id=7):
        assert dspy.Predict("question -> answer")(question="Who wrote Hamlet?").answer.startswith("Answer to:")
    (request,) = server.requests
    assert request.path == "/v1/responses" and "input_tokens" in request.usage
    row = only_row(sqlite_tracker)
    expected = responses_sent(request)
    assert tokens(row) == expected and expected["cached_tokens"] == 4 and expected["reasoning_tokens"] == 3
    assert row["usage_reported"] and row["cost_source"] == "price_map"
    assert row["cost_usd"] == hand_cost(expected, GPT4O_MINI)


def typesafe(server, **kwargs):
    return dspy.experimental.TypeSafe(api_key="test", base_url=server.url.removesuffix("/v1"), **kwargs)


def test_typesafe_calls_are_paired_with_their_history_entry(sqlite_tracker, server):
    """A TypeSafe call reaches the LM callbacks with neither messages nor prompt (its entry has no uuid either): it
    is still paired with its own entry, so its input/output tokens are stored; a repeat from DSPy's cache is a
    flagged hit with zero tokens."""
    lm = typesafe(server, cache=True)
    with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
        first = dspy.Predict(Spam)(text="Buy cheap pills now")
        second = dspy.Predict(Spam)(text="Buy cheap pills now")
        dspy.Predict(Spam)(text="Lunch at noon?")
    assert first.is_spam is True and second.is_spam is True
    assert [r.path for r in server.requests] == ["/v1/systemone"] * 2  # the repeat came from DSPy's cache
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 3 and all(r["model"] == "jev-latest" for r in rows)
    fresh = [r for r in rows if not r["cache_hit"]]
    (hit,) = [r for r in rows if r["cache_hit"]]
    sent = [r.usage for r in server.requests]
    assert sorted((r["prompt_tokens"], r["completion_tokens"]) for r in fresh) == sorted(
        (u["input_tokens"], u["output_tokens"]) for u in sent)
    assert all(r["usage_reported"] and r["total_tokens"] == r["prompt_tokens"] + r["completion_tokens"]
               for r in fresh)
    assert hit["prompt_tokens"] == hit["completion_tokens"] == 0 and hit["cost_source"] == "cache_hit"


def test_all_zero_usage_warns_once_per_model_not_per_call_nor_per_tracker(make_tracker, sqlite_url, tmp_path,
                                                                         caplog):
    """DSPy's DummyLM reports all-zero usage on every call: across two trackers and six calls the model gets one
    warning (the rest are debug lines); each call is still recorded, as unreported usage."""
    model = f"dummy-{uuid.uuid4().hex[:8]}"
    trackers = [make_tracker(sqlite_url), make_tracker(f"sqlite:///{tmp_path / 'other.db'}")]
    with caplog.at_level(logging.DEBUG, logger="dspy_tokens"):
        for tracker in trackers:
            lm = DummyLM([{"answer": "ok"}] * 3)
            lm.model = model
            with dspy.context(lm=lm, callbacks=[tracker]):
                for i in range(3):
                    dspy.Predict("question -> answer")(question=f"q{i}")
            rows = stored_rows(tracker)
            assert len(rows) == 3 and not any(r["usage_reported"] for r in rows)
    said = [r for r in caplog.records if "all-zero usage" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.WARNING] + [logging.DEBUG] * 5


def test_each_call_records_its_request_type_and_reports_group_by_it(sqlite_tracker, server):
    """A chat LM, a Responses API LM and a TypeSafe decision client store ``chat``, ``responses`` and
    ``decision``; ``breakdown("request_type")`` and ``summary(request_type=...)`` count them apart."""
    chat = server.lm("openai/gpt-4o-mini")
    responses = server.lm("openai/gpt-4o-mini", model_type="responses")
    with dspy.context(callbacks=[sqlite_tracker]):
        with dspy.context(lm=chat):
            dspy.Predict("question -> answer")(question="one?")
            dspy.Predict("question -> answer")(question="two?")
        with dspy.context(lm=responses):
            dspy.Predict("question -> answer")(question="three?")
        with dspy.context(lm=typesafe(server)):
            dspy.Predict(Spam)(text="Buy cheap pills now")
    sqlite_tracker.flush()
    assert sorted(r["request_type"] for r in stored_rows(sqlite_tracker)) == ["chat", "chat", "decision",
                                                                            "responses"]
    groups = {g.key: g.calls for g in sqlite_tracker.breakdown("request_type")}
    assert groups == {"chat": 2, "responses": 1, "decision": 1}
    (responses_row,) = [r for r in stored_rows(sqlite_tracker) if r["request_type"] == "responses"]
    assert sqlite_tracker.summary(request_type="responses").total_tokens == responses_row["total_tokens"] > 0
