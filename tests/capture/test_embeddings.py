"""Embeddings: ``dspy.Embedder`` on a hosted model fires no DSPy callback; a tracker registered the usual way
records each request anyway (through LiteLLM's callbacks), attributed, priced and counted by limits, exactly once.
Real ``dspy.Embedder`` calls over HTTP to FakeLLMServer's ``/v1/embeddings``."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import dspy

from dspy_tokens import usage_context
from dspy_tokens.testing import Reply
from tests.support.db import only_row, stored_rows
from tests.support.limits import config

MODEL = "openai/text-embedding-3-small"
RATE = Decimal("2e-08")  # text-embedding-3-small's input price per token in the bundled map (it has no output)


def embedder(server, **kwargs) -> dspy.Embedder:
    kwargs.setdefault("caching", False)
    return dspy.Embedder(MODEL, api_base=server.url, api_key="test", **kwargs)


def test_an_embedder_call_in_a_usage_context_is_one_priced_row_for_the_user(sqlite_tracker, server):
    """One ``Embedder`` call inside ``usage_context(user_id=...)``: one row, request type ``embedding``, the
    server's input tokens (no output tokens), priced from the map, attributed to the user."""
    dspy.configure(callbacks=[sqlite_tracker])
    with usage_context(user_id=111111111111111111, feature="search"):
        vectors = embedder(server)(["what is the capital of France"])
    assert vectors.shape[0] == 1
    (request,) = server.requests
    assert request.path == "/v1/embeddings"
    row = only_row(sqlite_tracker)
    assert (row["request_type"], row["user_id"], row["feature"]) == ("embedding", 111111111111111111, "search")
    assert row["model"] == MODEL and row["usage_reported"] and not row["usage_estimated"]
    prompt = request.usage["prompt_tokens"]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (prompt, 0, prompt)
    assert row["cost_source"] == "price_map" and row["cost_usd"] > 0
    assert row["cost_usd"] == prompt * RATE
    assert sqlite_tracker.summary(user_id=111111111111111111, request_type="embedding").total_tokens == prompt


def test_a_batched_embedder_call_records_each_request(sqlite_tracker, server):
    """Five inputs in batches of two are three requests: three rows whose tokens are what the server reported."""
    with dspy.context(callbacks=[sqlite_tracker]), usage_context(user_id=5):
        vectors = embedder(server, batch_size=2)([f"text number {i}" for i in range(5)])
    assert vectors.shape[0] == 5
    assert len(server.requests) == 3
    rows = stored_rows(sqlite_tracker)
    assert len(rows) == 3 and {r["user_id"] for r in rows} == {5}
    assert sorted(r["prompt_tokens"] for r in rows) == sorted(r.usage["prompt_tokens"] for r in server.requests)
    assert len({r["call_uuid"] for r in rows}) == 3


def test_async_embedder_calls_are_attributed_to_their_own_task(sqlite_tracker, server):
    """``Embedder.acall`` in concurrent tasks, each in its own ``usage_context``: each row has its task's user."""
    lm_embedder = embedder(server)

    async def one(user_id: int, text: str):
        with usage_context(user_id=user_id):
            return await lm_embedder.acall([text])

    async def main():
        with dspy.context(callbacks=[sqlite_tracker]):
            await asyncio.gather(one(1, "alpha beta"), one(2, "gamma delta epsilon"), one(3, "zeta"))

    asyncio.run(main())
    rows = stored_rows(sqlite_tracker)
    assert sorted(r["user_id"] for r in rows) == [1, 2, 3]
    sent = {r.body["input"][0]: r.usage["prompt_tokens"] for r in server.requests}
    words = {1: "alpha beta", 2: "gamma delta epsilon", 3: "zeta"}
    assert {r["user_id"]: r["prompt_tokens"] for r in rows} == {u: sent[t] for u, t in words.items()}
    assert all(r["request_type"] == "embedding" and r["cost_usd"] > 0 for r in rows)


def test_embedding_tokens_count_toward_a_users_limit(make_tracker, sqlite_url, server):
    """A user's embedding tokens are in the window a ``user_limit`` reads."""
    tracker = make_tracker(sqlite_url, config(user_limit=1_000_000))
    with dspy.context(callbacks=[tracker]), usage_context(user_id=9):
        embedder(server)(["one two three four five six"])
    row = only_row(tracker)
    decision = tracker.check(user_id=9, estimate=1)
    assert decision.allowed and decision.rule == "user_limit" and decision.used == row["total_tokens"] > 0


def test_embeddings_without_a_registered_tracker_are_not_recorded_and_each_tracker_records_once(
        make_tracker, sqlite_url, tmp_path, server):
    """A tracker that is not among DSPy's callbacks records nothing; two registered trackers one row each, once,
    however often the embedder is called in between."""
    idle = make_tracker(sqlite_url)
    first, second = make_tracker(f"sqlite:///{tmp_path / 'a.db'}"), make_tracker(f"sqlite:///{tmp_path / 'b.db'}")
    embedder(server)(["nobody records this"])
    with dspy.context(callbacks=[first, second]):
        embedder(server)(["both record this"])
    assert stored_rows(idle) == []
    (a,), (b,) = stored_rows(first), stored_rows(second)
    assert a["call_uuid"] == b["call_uuid"] and a["prompt_tokens"] == b["prompt_tokens"]


def test_a_failed_embedding_request_is_recorded_with_its_error(sqlite_tracker, server):
    """The provider refuses it (400): the request is stored as failed (error, no usage), like a failed LM call."""
    server.enqueue(Reply(status=400))
    with dspy.context(callbacks=[sqlite_tracker]):
        try:
            embedder(server, num_retries=0)(["boom"])
        except Exception:
            pass
    row = only_row(sqlite_tracker)
    assert row["request_type"] == "embedding" and row["error"] and row["prompt_tokens"] is None
