"""dspy_tokens.testing.FakeLLMServer: real DSPy programs (native and LiteLLM engines) and plain HTTP against it —
scripted replies, usage modes, errors, retries, streaming, delays and concurrency. The ``server`` fixture is the
one of tests/conftest.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request

import dspy
import pytest

from dspy_tokens.testing import FakeLLMServer, Reply, count_tokens, dspy_reply


def post(url, body):
    """POST JSON with the standard library; returns (status, headers, text)."""
    req = urllib.request.Request(url + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def compare_usage(history_usage, sent):
    """The fields DSPy records must equal what the server sent."""
    assert history_usage["prompt_tokens"] == sent["prompt_tokens"]
    assert history_usage["completion_tokens"] == sent["completion_tokens"]
    assert history_usage["total_tokens"] == sent["total_tokens"]
    assert history_usage["prompt_tokens_details"]["cached_tokens"] == sent["prompt_tokens_details"]["cached_tokens"]
    assert (history_usage["completion_tokens_details"]["reasoning_tokens"]
            == sent["completion_tokens_details"]["reasoning_tokens"])


def test_predict_returns_expected_field(server):
    """A native-engine Predict gets the default responder's answer via /v1/chat/completions."""
    lm = server.lm("openai/gpt-4o-mini")
    with dspy.context(lm=lm):
        pred = dspy.Predict("question -> answer")(question="What is the capital of France?")
    assert pred.answer == "Answer to: What is the capital of France?"
    (req,) = server.requests
    assert req.path == "/v1/chat/completions" and req.status == 200
    assert req.body["model"] == "gpt-4o-mini"
    assert req.model == "gpt-4o-mini-2024-07-18" == lm.history[-1]["response_model"]
    assert req.usage["prompt_tokens"] == count_tokens(req.body["messages"])
    assert server.answered == 1


def test_api_base_without_v1_posts_to_chat_completions(server):
    """An api_base without /v1 makes the client post to /chat/completions, which is accepted too."""
    lm = dspy.LM("openai/gpt-4o-mini", api_base=server.url.removesuffix("/v1"), api_key="test", cache=False)
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="hi").answer == "Answer to: hi"
    assert server.requests[0].path == "/chat/completions"


def test_chain_of_thought_typed_output(server):
    """ChainOfThought gets a reasoning field and a parsed int answer from the default responder."""
    with dspy.context(lm=server.lm("openai/gpt-4o-mini")):
        pred = dspy.ChainOfThought("question -> answer: int")(question="How many legs does a cat have?")
    assert pred.answer == 42
    assert pred.reasoning.startswith("Answer to: How many legs")


def test_react_scripted_tool_call_runs_tool(server):
    """A scripted ReAct step calls the tool once, then the default responder finishes."""
    calls = []

    def lookup(query: str) -> str:
        """Look up a fact."""
        calls.append(query)
        return f"fact about {query}"

    server.enqueue(Reply(content=dspy_reply({
        "next_thought": "I should look it up.", "next_tool_name": "lookup", "next_tool_args": {"query": "paris"},
    })))
    with dspy.context(lm=server.lm("openai/gpt-4o-mini")):
        pred = dspy.ReAct("question -> answer", tools=[lookup])(question="What is Paris?")
    assert calls == ["paris"]
    assert pred.trajectory["observation_0"] == "fact about paris"
    assert pred.trajectory["tool_name_1"] == "finish"
    assert pred.answer == "Answer to: What is Paris?"
    assert len(server.requests) == 3 and server.pending == 0  # step, finish step, extract


def test_history_usage_matches_server_log(server):
    """DSPy's history usage equals the usage the server logged, cached and reasoning details included."""
    server.enqueue(Reply(prompt_tokens=200, completion_tokens=50, cached_tokens=64, reasoning_tokens=20),
                   Reply(cached_tokens=10_000, reasoning_tokens=10_000))  # clamped to prompt / completion
    lm = server.lm("openai/gpt-4o-mini")
    with dspy.context(lm=lm):
        dspy.Predict("question -> answer")(question="first")
        dspy.Predict("question -> answer")(question="second question is longer")
    first, second = server.requests
    assert first.usage["prompt_tokens_details"]["cached_tokens"] == 64
    assert second.usage["prompt_tokens_details"]["cached_tokens"] == second.usage["prompt_tokens"]
    assert second.usage["completion_tokens_details"]["reasoning_tokens"] == second.usage["completion_tokens"]
    for entry, req in zip(lm.history, server.requests):
        compare_usage(entry["usage"], req.usage)
    totals = server.usage_totals()
    assert totals["prompt_tokens"] == 200 + second.usage["prompt_tokens"]
    assert totals["cached_tokens"] == 64 + second.usage["prompt_tokens"]
    assert totals["total_tokens"] == totals["prompt_tokens"] + totals["completion_tokens"]


def test_usage_none_gives_empty_history_usage():
    """usage="none" omits the usage key, and DSPy's native engine records an empty usage."""
    with FakeLLMServer(usage="none") as srv:
        lm = srv.lm("openai/gpt-4o-mini")
        with dspy.context(lm=lm):
            assert dspy.Predict("question -> answer")(question="hi").answer == "Answer to: hi"
        assert lm.history[-1]["usage"] == {}
        assert srv.requests[0].usage is None and srv.answered == 1
        assert srv.usage_totals()["prompt_tokens"] == 0


def test_status_500_raises(server):
    """A scripted 500 with num_retries=0 raises a DSPy LM error after one request."""
    server.enqueue(Reply(status=500))
    lm = server.lm("openai/gpt-4o-mini", num_retries=0)
    with dspy.context(lm=lm), pytest.raises(dspy.LMError):
        dspy.Predict("question -> answer")(question="hi")
    assert [r.status for r in server.requests] == [500]
    assert server.answered == 0 and lm.history == []


def test_rate_limit_retries_end_in_one_history_entry(server):
    """429, 429, 200 with Retry-After: 0 and num_retries=3 gives 1 history entry and 3 logged requests."""
    limited = Reply(status=429, headers={"Retry-After": "0"})
    server.enqueue(limited, limited, Reply())
    lm = server.lm("openai/gpt-4o-mini", num_retries=3)
    start = time.monotonic()
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="hi").answer == "Answer to: hi"
    assert time.monotonic() - start < 1.0  # the Retry-After hint was honoured, no exponential backoff
    assert len(lm.history) == 1
    assert [r.status for r in server.requests] == [429, 429, 200]
    assert server.answered == 1
    compare_usage(lm.history[0]["usage"], server.requests[-1].usage)


@pytest.mark.parametrize("ignore", [False, True])
def test_streamify_usage(server, ignore):
    """dspy.streamify gets usage when include_usage is honoured and none when the server ignores it."""
    server.enqueue(Reply(cached_tokens=4, ignore_include_usage=ignore))
    lm = server.lm("openai/gpt-4o-mini")
    program = dspy.streamify(dspy.Predict("question -> answer"))

    async def run():
        chunks, final = 0, None
        async for value in program(question="Tell me a joke"):
            if isinstance(value, dspy.Prediction):
                final = value
            else:
                chunks += 1
        return chunks, final

    with dspy.context(lm=lm):
        chunks, final = asyncio.run(run())
    assert final.answer == "Answer to: Tell me a joke" and chunks >= 2
    (req,) = server.requests
    assert req.stream and req.body["stream_options"] == {"include_usage": True}
    if ignore:
        assert req.usage is None and lm.history[-1]["usage"] == {}
    else:
        assert req.usage["prompt_tokens_details"]["cached_tokens"] == 4
        compare_usage(lm.history[-1]["usage"], req.usage)


def test_litellm_engine_predict_and_n(server):
    """engine="litellm" works for Predict (usage matches) and sends n in one request."""
    server.enqueue(Reply(cached_tokens=5, reasoning_tokens=2))
    lm = server.lm("openai/gpt-4o-mini", engine="litellm")
    with dspy.context(lm=lm):
        assert dspy.Predict("question -> answer")(question="hi there").answer == "Answer to: hi there"
        compare_usage(lm.history[-1]["usage"], server.requests[0].usage)
        pred = dspy.Predict("question -> answer", n=3)(question="pick")
    assert len(pred.completions) == 3
    last = server.requests[-1]
    assert last.path == "/v1/chat/completions" and last.body["n"] == 3 and len(last.content) == 3


def test_native_n_sends_one_request_per_candidate(server):
    """The native engine fans n=3 out as three single-choice requests."""
    with dspy.context(lm=server.lm("openai/gpt-4o-mini")):
        pred = dspy.Predict("question -> answer", n=3)(question="pick")
    assert len(pred.completions) == 3
    assert len(server.requests) == 3 and all("n" not in r.body for r in server.requests)


def test_wire_usage_modes_and_errors(server):
    """partial, dict and none usage are sent as specified; errors use OpenAI's envelope and headers."""
    body = {"model": "my-local-model", "messages": [{"role": "user", "content": "one two three"}]}
    server.enqueue(Reply(content="a b", usage="partial"), Reply(usage={"prompt_tokens": "x"}),
                   Reply(usage="none", model="custom"), Reply(status=429, headers={"Retry-After": "7"}))
    partial = json.loads(post(server.url, body)[2])
    assert partial["usage"] == {"prompt_tokens": 7, "completion_tokens": 2}
    assert partial["model"] == "my-local-model"  # unknown models are echoed
    assert json.loads(post(server.url, body)[2])["usage"] == {"prompt_tokens": "x"}
    none = json.loads(post(server.url, body)[2])
    assert "usage" not in none and none["model"] == "custom"
    status, headers, text = post(server.url, body)
    assert status == 429 and headers["Retry-After"] == "7"
    assert json.loads(text)["error"]["code"] == "rate_limit_exceeded"
    assert [r.usage for r in server.requests][:3] == [partial["usage"], {"prompt_tokens": "x"}, None]
    assert server.usage_totals() == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 0,
                                     "cached_tokens": 0, "reasoning_tokens": 0}
    server.reset()
    assert server.requests == [] and server.pending == 0


def test_delay_and_concurrent_fifo(server):
    """Replies are consumed in arrival order and delays shape completion order."""
    server.enqueue(Reply(content="slow", delay=0.4), Reply(content="fast"))
    results = {}

    def call(name):
        results[name] = json.loads(post(server.url, {"model": "gpt-4o", "messages": []})[2])

    slow = threading.Thread(target=call, args=("first",))
    slow.start()
    while not server.requests:
        time.sleep(0.01)
    call("second")
    slow.join()
    assert results["first"]["choices"][0]["message"]["content"] == "slow"
    assert results["second"]["choices"][0]["message"]["content"] == "fast"
    first, second = server.requests
    assert second.finished < first.finished and first.finished - first.started >= 0.4


def test_default_responder_json_adapter(server):
    """The default responder answers JSONAdapter prompts with a JSON object of typed values."""
    with dspy.context(lm=server.lm("openai/gpt-4o-mini"), adapter=dspy.JSONAdapter()):
        pred = dspy.Predict("question -> answer, score: float, ok: bool, tags: list[str]")(question="rate this")
    assert (pred.answer, pred.score, pred.ok, pred.tags) == ("Answer to: rate this", 42.0, True, [])
    assert json.loads(server.requests[0].content[0])["ok"] is True


def post_to(url, path, body):
    """POST JSON to ``url + path``; returns (status, decoded body)."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def test_responses_and_embeddings_endpoints_report_their_apis_usage_shapes(server):
    """/v1/responses answers with input/output tokens and their details; /v1/embeddings with prompt/total tokens
    and one vector per input (base64 float32 when asked, as the OpenAI SDK asks by default)."""
    import base64
    import struct

    server.defaults.update(cached_tokens=2, reasoning_tokens=1)
    status, body = post_to(server.url, "/responses", {"model": "gpt-4o-mini", "input": "say hi to me"})
    assert status == 200 and body["object"] == "response" and body["model"] == "gpt-4o-mini-2024-07-18"
    assert body["output"][0]["content"][0]["type"] == "output_text"
    usage = body["usage"]
    assert usage["input_tokens"] == 4 + 4 and usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_tokens_details"] == {"cached_tokens": 2}
    assert usage["output_tokens_details"]["reasoning_tokens"] == 1
    status, body = post_to(server.url, "/embeddings", {"model": "text-embedding-3-small", "input": ["a b c", "d"]})
    assert status == 200 and [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4} == server.requests[-1].usage
    _, packed = post_to(server.url, "/embeddings", {"model": "m", "input": "a b c", "encoding_format": "base64"})
    raw = base64.b64decode(packed["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(body["data"][0]["embedding"], abs=1e-6)
