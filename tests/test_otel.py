"""OpenTelemetry GenAI metrics from a real DSPy program, read back through the SDK's in-memory reader."""

from __future__ import annotations

import logging

import dspy
import pytest

from dspy_tokens.otel import instrument
from dspy_tokens.testing import Reply
from tests.support.db import stored_rows
from tests.support.wire import answered

sdk_metrics = pytest.importorskip("opentelemetry.sdk.metrics", reason="the [otel] extra's SDK is not installed")
from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: E402


@pytest.fixture
def reader_and_tracker(sqlite_tracker):
    reader = InMemoryMetricReader()
    provider = sdk_metrics.MeterProvider(metric_readers=[reader])
    instrument(sqlite_tracker, meter_provider=provider)
    yield reader, sqlite_tracker
    provider.shutdown()


def points(reader, name):
    data = reader.get_metrics_data()
    return [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics if m.name == name
            for p in m.data.data_points]


def test_each_call_adds_its_input_and_output_tokens_under_the_gen_ai_names(reader_and_tracker, server):
    reader, tracker = reader_and_tracker
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="one")
        dspy.ChainOfThought("question -> answer")(question="two")
    rows = stored_rows(tracker)
    assert len(rows) == 2 == len(answered(server))
    found = {p.attributes["gen_ai.token.type"]: p for p in points(reader, "gen_ai.client.token.usage")}
    assert set(found) == {"input", "output"}
    assert found["input"].count == 2 and found["input"].sum == sum(r["prompt_tokens"] for r in rows)
    assert found["output"].sum == sum(r["completion_tokens"] for r in rows)
    attributes = found["input"].attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "openai/gpt-4o-mini"
    assert not any("user" in key or "guild" in key for key in attributes)
    duration, = points(reader, "gen_ai.client.operation.duration")
    assert duration.count == 2 and duration.sum == pytest.approx(sum(r["latency_ms"] for r in rows) / 1000)


def test_a_failed_call_adds_a_duration_with_its_error_type_and_no_tokens(reader_and_tracker, server):
    reader, tracker = reader_and_tracker
    server.enqueue(Reply(status=400))
    with dspy.context(lm=server.lm(num_retries=0), callbacks=[tracker]), pytest.raises(Exception):  # noqa: B017 (the client's own error type)
        dspy.Predict("question -> answer")(question="fails")
    row, = stored_rows(tracker)
    assert row["error"]
    duration, = points(reader, "gen_ai.client.operation.duration")
    assert duration.count == 1 and duration.attributes["error.type"]
    assert points(reader, "gen_ai.client.token.usage") == []


def test_cache_hits_reached_no_model_and_add_nothing(reader_and_tracker, server):
    reader, tracker = reader_and_tracker
    with dspy.context(lm=server.lm(cache=True), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question="cached once")
        dspy.Predict("question -> answer")(question="cached once")
    assert len(stored_rows(tracker)) == 2 and len(answered(server)) == 1
    duration, = points(reader, "gen_ai.client.operation.duration")
    assert duration.count == 1


def test_a_failing_listener_is_logged_and_the_row_still_recorded(sqlite_tracker, server, caplog):
    caplog.set_level(logging.ERROR, logger="dspy_tokens")
    sqlite_tracker.on_row(lambda row: 1 / 0)
    with dspy.context(lm=server.lm(), callbacks=[sqlite_tracker]):
        dspy.Predict("question -> answer")(question="kept")
    assert len(stored_rows(sqlite_tracker)) == 1
    assert any("row listener" in r.getMessage() for r in caplog.records)


def test_a_reader_refuses_a_row_listener(sqlite_url):
    from dspy_tokens import TokenTracker

    with pytest.raises(TypeError, match="read-only"):
        TokenTracker.reader(sqlite_url).on_row(print)
