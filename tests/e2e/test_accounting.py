"""What each row says a call used and cost: cache hits, cached/reasoning tokens, prices, unknown models,
failures, missing or partial usage, n>1, streaming, and the tracker's summary of it all.

Real DSPy programs over HTTP to FakeLLMServer; expected numbers are computed from ``server.requests``.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import dspy
import pytest

from dspy_tokens import Config, usage_context
from dspy_tokens.testing import FakeLLMServer, Reply, dspy_reply
from tests.support.db import only_row, stored_rows
from tests.support.wire import GPT4O, GPT4O_MINI, answered, assert_rows_match_requests, hand_cost, sent, tokens

ENGINES = [pytest.param("auto", id="native"), pytest.param("litellm", id="litellm")]


def price_warnings(caplog, model: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dspy_tokens" and "no price known" in r.getMessage()
            and repr(model) in r.getMessage()]


# -- 1. cached and reasoning tokens, price-map pricing -----------------------------------------------------------------

class TestTokensAndCost:
    """Cached and reasoning tokens stay inside their totals and are priced by bucket, on both engines."""

    def test_cached_and_reasoning_tokens_are_inside_their_totals_and_priced_by_bucket(self, sqlite_tracker, server):
        """Cached tokens stay inside prompt_tokens and are priced at the cache-read rate; reasoning stays inside
        completion_tokens at the output rate; the cost matches a hand computation and DSPy's own estimate."""
        server.enqueue(Reply(cached_tokens=40, reasoning_tokens=3))
        lm = server.lm()
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            dspy.ChainOfThought("question -> answer")(question="what is cached")
        row = only_row(sqlite_tracker)
        usage = sent(answered(server)[0])
        assert usage["cached_tokens"] == 40 and usage["reasoning_tokens"] == 3  # the scenario sent both buckets
        assert tokens(row) == usage
        assert row["cost_source"] == "price_map"
        assert row["cost_usd"] == hand_cost(usage, GPT4O_MINI)
        assert row["cost_usd"] < hand_cost({**usage, "cached_tokens": 0}, GPT4O_MINI)  # the discount applied
        assert float(row["cost_usd"]) == pytest.approx(lm.history[-1]["cost"], rel=1e-9)

    def test_cached_prompt_tokens_from_a_shared_system_prompt(self, sqlite_tracker, server):
        """A second call reporting cached tokens (shared system prompt) is discounted; the first is not."""
        server.enqueue(Reply(cached_tokens=0), Reply(cached_tokens=64))
        lm = server.lm()
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            predict(question="first question")
            predict(question="second question")
        rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["created_at"])
        for row, request, entry in zip(rows, answered(server), lm.history):
            assert tokens(row) == sent(request)
            assert row["cost_usd"] == hand_cost(sent(request), GPT4O_MINI)
            assert float(row["cost_usd"]) == pytest.approx(entry["cost"], rel=1e-9)
        assert [r["cached_tokens"] for r in rows] == [0, 64]

    @pytest.mark.parametrize("engine", ENGINES)
    def test_basic_call_tokens_and_cost(self, sqlite_tracker, server, engine):
        """A plain Predict call stores exactly the usage sent and its price-map cost, on both engines."""
        lm = server.lm(engine=engine)
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question=f"basic on {engine}")
        row = only_row(sqlite_tracker)
        usage = sent(answered(server)[0])
        assert tokens(row) == usage
        assert row["usage_reported"] is True and row["cache_hit"] is False and row["error"] is None
        assert row["cost_usd"] == hand_cost(usage, GPT4O_MINI)
        assert float(row["cost_usd"]) == pytest.approx(lm.history[-1]["cost"], rel=1e-9)
        assert row["response_model"] == answered(server)[0].model == "gpt-4o-mini-2024-07-18"


# -- 2. DSPy cache hits ------------------------------------------------------------------------------------------------

class TestDspyCacheHits:
    """A DSPy cache hit is recorded with 0 tokens and cost 0; a miss is billed."""

    @pytest.mark.parametrize("cache", ["memory", "disk"])
    @pytest.mark.parametrize("engine", ENGINES)
    def test_dspy_cache_hit_is_recorded_with_zero_tokens_and_zero_cost(self, sqlite_tracker, server, engine, cache,
                                                                       tmp_path):
        """Same question twice with cache=True: one HTTP request, two rows, the second a cache hit with 0 tokens, cost 0
        (DSPy keeps the stale cost in its entry) — on both engines, from the memory and the disk cache."""
        if cache == "disk":  # a hit read back from disk only: the memory layer is off
            dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=False, disk_cache_dir=str(tmp_path / "c"))
        lm = server.lm(cache=True, engine=engine)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            first = predict(question=f"cached question on {engine}")
            second = predict(question=f"cached question on {engine}")
        assert first.answer == second.answer
        assert len(server.requests) == 1
        assert lm.history[-1]["usage"] == {} and lm.history[-1]["cost"]  # DSPy's entry: no usage, stale cost
        miss, hit = sorted(stored_rows(sqlite_tracker), key=lambda r: r["cache_hit"])
        assert (miss["cache_hit"], hit["cache_hit"]) == (False, True)
        assert tokens(miss) == sent(server.requests[0])
        assert miss["cost_usd"] == hand_cost(sent(server.requests[0]), GPT4O_MINI)
        assert tokens(hit) == dict.fromkeys(tokens(hit), 0)
        assert hit["cost_usd"] == 0 and hit["cost_source"] == "cache_hit"
        assert hit["usage_reported"] is True

    def test_cache_hit_with_n_3_is_a_hit_not_missing_usage(self, sqlite_tracker, server):
        """n=3 with cache=True asked twice: the native entry's response is a tuple; the second call is still a cache hit
        (0 tokens, cost 0), not a call without usage."""
        lm = server.lm(cache=True, n=3, temperature=1.0)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            predict(question="three cached candidates")
            predict(question="three cached candidates")
        assert len(answered(server)) == 3 and isinstance(lm.history[-1]["response"], tuple)
        miss, hit = sorted(stored_rows(sqlite_tracker), key=lambda r: r["cache_hit"])
        assert miss["total_tokens"] == sum(sent(r)["total_tokens"] for r in answered(server))
        assert hit["cache_hit"] is True and hit["usage_reported"] is True
        assert hit["total_tokens"] == 0 and hit["cost_usd"] == 0

    async def test_async_cache_hit(self, sqlite_tracker, server):
        """The same acall twice with cache=True: one request, the second row a cache hit."""
        lm = server.lm(cache=True)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            await predict.acall(question="async twice")
            await predict.acall(question="async twice")
        assert len(server.requests) == 1
        assert sorted(r["cache_hit"] for r in stored_rows(sqlite_tracker)) == [False, True]

    async def test_sync_then_async_with_same_input_is_two_requests_and_no_hit(self, sqlite_tracker, server):
        """DSPy keys sync and async calls differently: a sync call then acall with the same input are two billed
        calls."""
        lm = server.lm(cache=True)
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            predict(question="same input")
            await predict.acall(question="same input")
        rows = stored_rows(sqlite_tracker)
        assert len(server.requests) == 2 and len(rows) == 2
        assert not any(r["cache_hit"] for r in rows)
        assert_rows_match_requests(rows, server)


# -- 3. prices: unknown models, models.json, the response model --------------------------------------------------------

def write_models_json(tmp_path, entries: list[dict]) -> str:
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"default": entries[0]["label"], "models": entries}))
    return str(path)


class TestPrices:
    """Which price a call gets: the price map, models.json, the model that answered, or unknown (NULL, warned once)."""

    def test_unknown_model_has_null_cost_and_warns_once_per_model(self, sqlite_tracker, server, caplog):
        """A model no price source knows: cost_usd NULL, cost_source 'unknown', one warning per model however many
        calls."""
        caplog.set_level(logging.WARNING, logger="dspy_tokens")
        predict = dspy.Predict("question -> answer")
        for model in ("openai/my-finetune-xyz", "openai/my-other-finetune"):
            with dspy.context(lm=server.lm(model), callbacks=[sqlite_tracker]):
                for i in range(3):
                    predict(question=f"question {i}")
        rows = stored_rows(sqlite_tracker)
        assert len(rows) == 6
        assert all(r["cost_usd"] is None and r["cost_source"] == "unknown" for r in rows)
        assert all(r["usage_reported"] for r in rows)  # tokens are known, only the price is not
        assert_rows_match_requests(rows, server)
        assert len(price_warnings(caplog, "openai/my-finetune-xyz")) == 1
        assert len(price_warnings(caplog, "openai/my-other-finetune")) == 1

    def test_models_json_prices_take_precedence_over_the_price_map(self, make_tracker, sqlite_url, server, tmp_path):
        """A price in models.json wins over the bundled price map (cost_source 'models.json')."""
        ours = {"input": Decimal("0.000001"), "output": Decimal("0.000002"), "cache_read": Decimal("0.0000005")}
        config = write_models_json(tmp_path, [{
            "label": "mini", "name": "gpt-4o-mini", "provider": "openai",
            "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002,
            "cache_read_input_token_cost": 0.0000005}])
        tracker = make_tracker(sqlite_url, config)
        server.enqueue(Reply(cached_tokens=20))
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            dspy.Predict("question -> answer")(question="which price")
        row = only_row(tracker)
        usage = sent(answered(server)[0])
        assert row["cost_source"] == "models.json"
        assert row["cost_usd"] == hand_cost(usage, ours) != hand_cost(usage, GPT4O_MINI)

    def test_models_json_prices_an_unknown_model(self, make_tracker, sqlite_url, server, tmp_path, caplog):
        """A fine-tune unknown to the price map is priced from its models.json entry, without a warning."""
        caplog.set_level(logging.WARNING, logger="dspy_tokens")
        rates = {"input": Decimal("0.000003"), "output": Decimal("0.000012"), "cache_read": Decimal("0.000003")}
        config = write_models_json(tmp_path, [{"label": "ft", "name": "my-finetune-xyz", "provider": "openai",
                                               "input_cost_per_token": 3e-06, "output_cost_per_token": 1.2e-05}])
        tracker = make_tracker(sqlite_url, config)
        with dspy.context(lm=server.lm("openai/my-finetune-xyz"), callbacks=[tracker]):
            dspy.Predict("question -> answer")(question="fine tuned")
        row = only_row(tracker)
        assert row["cost_source"] == "models.json"
        assert row["cost_usd"] == hand_cost(sent(answered(server)[0]), rates)
        assert not price_warnings(caplog, "openai/my-finetune-xyz")

    def test_response_model_is_priced_first(self, sqlite_tracker, server):
        """When the provider answers with another model than requested, the call is priced as the model that
        answered."""
        server.enqueue(Reply(model="gpt-4o-2024-08-06"))
        lm = server.lm("openai/gpt-4o-mini")
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question="rerouted")
        row = only_row(sqlite_tracker)
        usage = sent(answered(server)[0])
        assert row["model"] == "openai/gpt-4o-mini" and row["response_model"] == "gpt-4o-2024-08-06"
        assert row["cost_usd"] == hand_cost(usage, GPT4O)
        assert float(row["cost_usd"]) == pytest.approx(lm.history[-1]["cost"], rel=1e-9)  # DSPy agrees

    def test_unpriced_response_model_falls_back_to_the_configured_model(self, sqlite_tracker, server):
        """A response model without a price (a proxy alias) falls back to the configured model's price."""
        server.enqueue(Reply(model="my-proxy-alias"))
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question="aliased")
        row = only_row(sqlite_tracker)
        assert row["response_model"] == "my-proxy-alias"
        assert row["cost_usd"] == hand_cost(sent(answered(server)[0]), GPT4O_MINI)


# -- 4. failures -------------------------------------------------------------------------------------------------------

def _react_step(i: int) -> Reply:
    return Reply(content=dspy_reply({"next_thought": f"step {i}", "next_tool_name": "flaky",
                                     "next_tool_args": {"n": i}}))


def flaky(n: int) -> int:
    """Fails on its second use."""
    if n == 1:
        raise RuntimeError("tool broke")
    return n


class TestFailures:
    """Failed, retried and unparseable calls: every billed request is recorded, errors included."""

    def test_server_error_is_recorded_and_the_program_raises(self, sqlite_tracker, server):
        """An HTTP 500 with num_retries=0: the program raises, and a row records the error with usage unreported."""
        server.enqueue(Reply(status=500))
        with dspy.context(lm=server.lm(num_retries=0), callbacks=[sqlite_tracker]), usage_context(user_id=7):
            with pytest.raises(Exception, match="server had an error"):
                dspy.Predict("question -> answer")(question="fails")
        row = only_row(sqlite_tracker)
        assert "server had an error" in row["error"]
        assert row["usage_reported"] is False and row["prompt_tokens"] is None and row["cost_usd"] is None
        assert row["user_id"] == 7

    def test_retried_rate_limits_are_one_row(self, sqlite_tracker, server):
        """429, 429, 200 (Retry-After 0) is one LM call: one row carrying the successful request's usage."""
        server.enqueue(Reply(status=429, headers={"Retry-After": "0"}), Reply(status=429, headers={"Retry-After": "0"}),
                       Reply())
        with dspy.context(lm=server.lm(num_retries=3), callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question="rate limited")
        assert [r.status for r in server.requests] == [429, 429, 200]
        row = only_row(sqlite_tracker)
        assert row["error"] is None and tokens(row) == sent(answered(server)[0])

    def test_adapter_parse_failure_records_both_billed_calls(self, sqlite_tracker, server):
        """Unparseable replies: ChatAdapter then its JSON fallback are both billed and recorded, then
        AdapterParseError reaches the program."""
        server.enqueue("this is not a DSPy reply", "neither is this")
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            with pytest.raises(dspy.utils.exceptions.AdapterParseError):
                dspy.Predict("question -> answer")(question="garbage please")
        rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
        assert len(answered(server)) == 2
        assert [r["call_index"] for r in rows] == [0, 1] and len({r["session_id"] for r in rows}) == 1
        assert [tokens(r) for r in rows] == [sent(r) for r in answered(server)]
        assert all(r["error"] is None and r["cost_usd"] == hand_cost(tokens(r), GPT4O_MINI) for r in rows)

    def test_react_whose_tool_raises_keeps_every_call(self, sqlite_tracker, server):
        """A ReAct tool raising mid-way does not lose the run's calls: every request has its row in one session."""
        finish = Reply(content=dspy_reply({"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}}))
        server.enqueue(_react_step(0), _react_step(1), _react_step(2), finish)
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            dspy.ReAct("question -> answer", tools=[flaky])(question="use the flaky tool")
        rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
        assert len(rows) == len(answered(server)) == 5
        assert [tokens(r) for r in rows] == [sent(r) for r in answered(server)]
        assert len({r["session_id"] for r in rows}) == 1

    def test_react_whose_later_call_fails_keeps_its_earlier_calls(self, sqlite_tracker, server):
        """A ReAct whose third LM call gets a 500 raises, but its first two calls and the failed one are stored."""
        server.enqueue(_react_step(0), _react_step(2), Reply(status=500))
        with dspy.context(lm=server.lm(num_retries=0), callbacks=[sqlite_tracker]):
            with pytest.raises(Exception, match="server had an error"):
                dspy.ReAct("question -> answer", tools=[flaky])(question="fail later")
        rows = sorted(stored_rows(sqlite_tracker), key=lambda r: r["call_index"])
        assert [r["call_index"] for r in rows] == [0, 1, 2] and len({r["session_id"] for r in rows}) == 1
        assert [tokens(r) for r in rows[:2]] == [sent(r) for r in answered(server)]
        assert rows[2]["error"] and rows[2]["usage_reported"] is False


# -- 5. missing and partial usage --------------------------------------------------------------------------------------

class TestMissingUsage:
    """No usage is stored as unreported (NULL, never 0); partial usage gets its total recomputed."""

    @pytest.mark.parametrize("engine", ENGINES)
    def test_no_usage_from_the_provider_is_stored_as_unreported(self, make_tracker, sqlite_url, server, engine):
        """``estimate_usage: false`` and a provider sending no usage: usage_reported False, tokens and cost NULL —
        never zero (LiteLLM's zeros included)."""
        tracker = make_tracker(sqlite_url, Config(estimate_usage=False))
        server.enqueue(Reply(usage="none"))
        lm = server.lm(engine=engine)
        with dspy.context(lm=lm, callbacks=[tracker]):
            dspy.Predict("question -> answer")(question=f"no usage on {engine}")
        assert server.requests[0].usage is None
        row = only_row(tracker)
        assert row["usage_estimated"] is False
        assert row["usage_reported"] is False
        assert tokens(row) == dict.fromkeys(tokens(row), None)
        assert row["cost_usd"] is None and row["cost_source"] == "no_usage"
        assert row["error"] is None

    @pytest.mark.parametrize("engine", ENGINES)
    def test_no_usage_is_estimated_with_litellms_tokenizer_flagged_and_counted_apart(self, sqlite_tracker, server,
                                                                                    engine):
        """By default a call without usage is counted with LiteLLM's tokenizer: the prompt as sent, the answer as
        received; stored ``usage_estimated``, priced with ``cost_source`` ``estimated:...``, never reported as
        the provider's, and counted apart in ``Summary.estimated_calls``."""
        import litellm

        server.enqueue(Reply(usage="none"))
        with dspy.context(lm=server.lm(engine=engine), callbacks=[sqlite_tracker]):
            answer = dspy.Predict("question -> answer")(question=f"estimate me on {engine}")
        (request,) = server.requests
        assert request.usage is None and answer.answer
        row = only_row(sqlite_tracker)
        prompt = litellm.token_counter(model="openai/gpt-4o-mini", messages=request.body["messages"])
        completion = litellm.token_counter(model="openai/gpt-4o-mini", text=request.content[0])
        assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt, completion) and prompt > 0
        assert row["usage_estimated"] is True and row["usage_reported"] is False
        assert row["cost_source"] == "estimated:price_map"
        assert row["cost_usd"] == prompt * GPT4O_MINI["input"] + completion * GPT4O_MINI["output"]
        summary = sqlite_tracker.summary()
        assert (summary.calls, summary.estimated_calls, summary.total_tokens) == (1, 1, prompt + completion)

    @pytest.mark.parametrize("engine", ENGINES)
    def test_partial_usage_recomputes_the_total(self, sqlite_tracker, server, engine):
        """Usage with only prompt/completion tokens: the total is recomputed as their sum (LiteLLM reports 0)."""
        server.enqueue(Reply(usage="partial"))
        lm = server.lm(engine=engine)
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question=f"partial usage on {engine}")
        usage = server.requests[0].usage
        assert set(usage) == {"prompt_tokens", "completion_tokens"}
        row = only_row(sqlite_tracker)
        assert row["usage_reported"] is True
        assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["prompt_tokens"], usage["completion_tokens"])
        assert row["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert row["cost_usd"] == hand_cost({**usage, "cached_tokens": 0}, GPT4O_MINI)


# -- 6. n > 1 and streaming --------------------------------------------------------------------------------------------

class TestNAndStreaming:
    """n > 1 and streamed calls: one row with all the usage sent, or unreported when none was."""

    def test_n_3_is_one_row_with_the_usage_of_all_three_requests(self, sqlite_tracker, server):
        """n=3: DSPy sends three requests and writes one entry; the one row sums the usage of all three."""
        lm = server.lm(n=3, temperature=1.0)
        with dspy.context(lm=lm, callbacks=[sqlite_tracker]):
            dspy.Predict("question -> answer")(question="three candidates")
        requests = answered(server)
        assert len(requests) == 3
        row = only_row(sqlite_tracker)
        for column in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"):
            assert row[column] == sum(sent(r)[column] for r in requests), column
        assert row["cost_usd"] == sum(hand_cost(sent(r), GPT4O_MINI) for r in requests)

    async def test_streamify_records_usage(self, sqlite_tracker, server):
        """A dspy.streamify program (native engine) records the usage sent in the final stream chunk."""
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            # streamify snapshots settings.callbacks when it wraps: wrap inside the context that registers the tracker
            program = dspy.streamify(dspy.Predict("question -> answer"))
            chunks = [chunk async for chunk in program(question="stream me")]
        assert isinstance(chunks[-1], dspy.Prediction)
        assert server.requests[0].stream and server.requests[0].usage
        row = only_row(sqlite_tracker)
        assert tokens(row) == sent(server.requests[0])
        assert row["cost_usd"] == hand_cost(sent(server.requests[0]), GPT4O_MINI)

    async def test_streamify_built_outside_the_context_needs_a_per_lm_callback(self, sqlite_tracker, server):
        """streamify snapshots dspy.context callbacks when it wraps; a tracker given to the LM itself still records the
        streamed call."""
        program = dspy.streamify(dspy.Predict("question -> answer"))  # built before any callback is registered
        with dspy.context(lm=server.lm(callbacks=[sqlite_tracker])):
            [chunk async for chunk in program(question="stream me later")]
        row = only_row(sqlite_tracker)
        assert tokens(row) == sent(server.requests[0])

    async def test_streamify_on_litellm_without_usage_is_never_a_silent_zero(self, sqlite_tracker, server):
        """streamify on the LiteLLM engine without track_usage: the server sends no usage, and what DSPy then gets
        depends on LiteLLM — all-zero usage, or (where LiteLLM's stream chunk builder counts the tokens itself, as on
        some machines with the same package versions) its own estimate. Either way the call is recorded exactly once
        and never as a free call: unreported (every token count and the cost NULL), or positive, self-consistent
        counts (prompt > 0, total = prompt + completion) — never zeros."""
        with dspy.context(lm=server.lm(engine="litellm"), callbacks=[sqlite_tracker]):
            program = dspy.streamify(dspy.Predict("question -> answer"))
            [chunk async for chunk in program(question="stream on litellm")]
        assert server.requests[0].stream and server.requests[0].usage is None  # include_usage was not asked for
        row = only_row(sqlite_tracker)
        if row["usage_reported"]:  # LiteLLM estimated the usage: counts must be real, never zero
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] is not None
            assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
            assert row["cost_usd"] is None or row["cost_usd"] > 0
        else:
            assert tokens(row) == dict.fromkeys(tokens(row), None) and row["cost_usd"] is None

    async def test_streaming_server_ignoring_include_usage_is_unreported(self, sqlite_tracker, server):
        """A streaming server that ignores include_usage: the call is stored with usage unreported."""
        server.enqueue(Reply(ignore_include_usage=True))
        with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
            program = dspy.streamify(dspy.Predict("question -> answer"))
            [chunk async for chunk in program(question="stream without usage")]
        row = only_row(sqlite_tracker)
        assert row["usage_reported"] is False and row["usage_estimated"] is True  # counted by our tokenizer


# -- 7. the tracker's own reports of a real program --------------------------------------------------------------------

class TestTrackerReports:
    """The tracker's reports of a real program agree with what the server sent."""

    def test_tracker_summary_equals_the_usage_the_server_sent(self, tracker):
        """End to end: a real DSPy program against the local server, then ``tracker.summary()``, ``breakdown``,
        ``top`` and ``session`` agree with the usage the server sent, on every backend."""
        class Pipeline(dspy.Module):
            def __init__(self):
                super().__init__()
                self.classify = dspy.Predict("question -> topic")
                self.answer = dspy.ChainOfThought("question, topic -> answer")

            def forward(self, question):
                return self.answer(question=question, topic=self.classify(question=question).topic)

        program = Pipeline()
        with FakeLLMServer(cached_tokens=8, reasoning_tokens=3) as server:
            with dspy.context(lm=server.lm(), callbacks=[tracker]):
                for user in (1, 2, 3):
                    with usage_context(user_id=user, guild_id=9, feature="qa"):
                        program(question=f"question from user {user} " + "why " * user)
            assert tracker.flush(timeout=30)
            sent = server.usage_totals()
            answered = server.answered
        summary = tracker.summary()
        assert summary.calls == answered == 6
        assert {k: getattr(summary, k) for k in sent} == sent
        assert summary.active_users == 3 and summary.unknown_cost_calls == 0 and summary.cost_usd > 0
        per_user = tracker.breakdown("user")
        assert sum((g.cost_usd for g in per_user), Decimal(0)) == summary.cost_usd
        assert [g.key for g in tracker.top(3)] == [g.key for g in sorted(per_user, key=lambda g: -g.total_tokens)]
        assert tracker.top(3)[0].key == 3  # the longest question
        sessions = tracker.breakdown("session")
        assert len(sessions) == 3 and all(g.calls == 2 for g in sessions)
        assert [c["call_index"] for c in tracker.session(sessions[0].key)] == [0, 1]
