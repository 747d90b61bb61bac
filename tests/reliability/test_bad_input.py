"""Bad input, end to end: each is a clear error where it is written, or is stored as what it is — never a lost
call, a dead writer, or silently "unlimited".

The unit tests of the parsers live in tests/test_config.py and tests/capture/test_usage.py; these drive the same inputs
through a live tracker, its writer and a real database (SQLite, PostgreSQL, MariaDB).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

import dspy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dspy_tokens import ConfigurationError, TokenLimitExceeded, usage_context
from dspy_tokens.capture import Attribution, ObservedCall
from dspy_tokens.capture.usage import MAX_TOKENS_PER_CALL, normalize_usage
from dspy_tokens.config import parse_config
from dspy_tokens.testing import FakeLLMServer, Reply
from tests.support.db import all_rows, store_of
from tests.support.reliability import count_rows, counter_totals, spill_files


def observed(usage, *, user_id=5, model="openai/gpt-4o-mini", feature="bad-input") -> ObservedCall:
    """A finished LM call as the callback would hand it to the writer, carrying ``usage`` verbatim."""
    entry = {"usage": usage, "response_model": "gpt-4o-mini-2024-07-18", "uuid": uuid.uuid4().hex}
    return ObservedCall(call_uuid=uuid.uuid4().hex, session_id="bad", call_index=0,
                        attribution=Attribution(user_id=user_id, guild_id=9, feature=feature), module="Predict",
                        model=model, entry=entry, error=None, latency_ms=1, created_at=datetime.now(timezone.utc))


def stored(tracker, call_uuids) -> dict:
    """The stored rows of these calls, by call_uuid."""
    store = store_of(tracker)
    model = store.models.TokenUsage
    with store.db.connection_context():
        return {r["call_uuid"]: r for r in model.select().where(model.call_uuid.in_(list(call_uuids))).dicts()}


# -- provider usage: property-based, through the writer into the database ----------------------------------------

NUMBER = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["12", " 7 ", "-3", "1e3", "abc", "", "١٢"]), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
USAGE = st.one_of(
    st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2), st.integers(),
    st.fixed_dictionaries({}, optional={
        "prompt_tokens": NUMBER, "completion_tokens": NUMBER, "total_tokens": NUMBER,
        "prompt_tokens_details": st.one_of(NUMBER, st.fixed_dictionaries({}, optional={"cached_tokens": NUMBER})),
        "completion_tokens_details": st.one_of(NUMBER, st.fixed_dictionaries(
            {}, optional={"reasoning_tokens": NUMBER})),
        "junk": NUMBER,
    }),
)


def test_malformed_provider_usage_never_loses_a_call(database_url, make_tracker):
    """Hypothesis: usage with None/strings/negatives/NaN/huge/missing fields → one row per call, exact counts."""
    tracker = make_tracker(database_url)
    total = {"rows": 0, "tokens": 0}

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(USAGE, min_size=1, max_size=12))
    def batch(usages):
        calls = [observed(u) for u in usages]
        for call in calls:
            tracker.emit(call)
        assert tracker.flush(timeout=30), tracker.stats.last_error
        rows = stored(tracker, [c.call_uuid for c in calls])
        assert len(rows) == len(calls)  # nothing lost
        for call, usage in zip(calls, usages):
            row, counts = rows[call.call_uuid], normalize_usage(usage)
            assert row["usage_reported"] == counts.reported
            assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == \
                   (counts.prompt, counts.completion, counts.total)
            if not counts.reported:
                assert row["cost_usd"] is None  # unknown, never a silent 0
            total["tokens"] += counts.total or 0
        total["rows"] += len(calls)

    batch()
    assert tracker.stats.last_error is None
    assert count_rows(tracker) == (total["rows"], total["rows"])
    assert counter_totals(tracker) == (total["rows"], total["tokens"])
    assert not [p for p in spill_files(tracker.stats.spill_dir) if p.name.startswith("rejected-")]


@pytest.mark.parametrize("usage", [
    pytest.param({"prompt_tokens": "12", "completion_tokens": None}, id="string-and-none"),
    pytest.param({"prompt_tokens": -5, "completion_tokens": 3, "total_tokens": -2}, id="negative"),
    pytest.param({"prompt_tokens": 10**30, "completion_tokens": 10**30}, id="absurd"),
    pytest.param({"total_tokens": "abc"}, id="garbage-total"),
    pytest.param({"prompt_tokens": 1.5, "completion_tokens": 2}, id="fractional"),
    pytest.param({}, id="empty"),
])
def test_a_real_call_with_malformed_usage_is_recorded_once(database_url, make_tracker, usage):
    """Malformed usage from the server: one row per LM call, with the usable counts or as a failed call."""
    tracker = make_tracker(database_url)
    raised = None
    with FakeLLMServer() as server:
        server.enqueue(*[Reply(usage=usage)] * 5)
        with dspy.context(lm=server.lm(num_retries=0), callbacks=[tracker]):
            try:
                dspy.Predict("question -> answer")(question="usage from a broken proxy")
            except Exception as exc:  # DSPy validates some usage itself (e.g. "input_tokens must be an int")
                raised = exc
        assert tracker.flush(timeout=30)
        assert server.answered == 1
    assert count_rows(tracker) == (1, 1)
    (row,) = all_rows(tracker)
    if raised is None:
        assert row["error"] is None and row["usage_reported"] == normalize_usage(usage).reported
    else:
        assert row["error"] and type(raised).__name__ in row["error"]
        assert row["usage_reported"] is False and row["total_tokens"] is None


def test_absurd_token_counts_are_stored_as_unreported_and_the_maximum_exactly(database_url, make_tracker):
    """Counts beyond MAX_TOKENS_PER_CALL are stored as unreported; the largest accepted count is stored exactly."""
    tracker = make_tracker(database_url)
    absurd = observed({"prompt_tokens": 10**15, "completion_tokens": 10**15, "total_tokens": 2 * 10**15})
    biggest = observed({"prompt_tokens": MAX_TOKENS_PER_CALL, "completion_tokens": 1,
                        "total_tokens": MAX_TOKENS_PER_CALL + 1})
    for call in (absurd, biggest):
        tracker.emit(call)
    assert tracker.flush(timeout=30), tracker.stats.last_error
    rows = stored(tracker, [absurd.call_uuid, biggest.call_uuid])
    assert rows[absurd.call_uuid]["usage_reported"] is False
    assert rows[absurd.call_uuid]["total_tokens"] is None
    assert rows[biggest.call_uuid]["prompt_tokens"] == MAX_TOKENS_PER_CALL
    assert rows[biggest.call_uuid]["total_tokens"] == MAX_TOKENS_PER_CALL + 1


def test_many_calls_at_the_maximum_count_in_one_hour_all_land(database_url, make_tracker):
    """100 priced calls at MAX_TOKENS_PER_CALL in one hour all land (hourly cost counters do not overflow)."""
    tracker = make_tracker(database_url)
    calls = [observed({"prompt_tokens": MAX_TOKENS_PER_CALL, "completion_tokens": 1}) for _ in range(100)]
    for call in calls:
        tracker.emit(call)
    assert tracker.flush(timeout=60), tracker.stats.last_error
    assert count_rows(tracker) == (100, 100)
    assert not [p for p in spill_files(tracker.stats.spill_dir) if p.name.startswith("rejected-")]


# -- ids --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["alice", "12abc", -1, 2**63, 1.5, True, "", [42]])
def test_non_numeric_ids_are_refused_where_they_are_written(database_url, make_tracker, bad):
    """usage_context, guard() and check() refuse a bad id with a ConfigurationError naming it, before any DB work."""
    tracker = make_tracker(database_url, parse_config({"user_limit": 1000}, "ids"))
    with pytest.raises(ConfigurationError, match="user_id"):
        usage_context(user_id=bad)
    with pytest.raises(ConfigurationError, match="user_id"):
        tracker.guard(user_id=bad)
    with pytest.raises(ConfigurationError, match="user_id"):
        tracker.check(user_id=bad)
    with pytest.raises(ConfigurationError, match="guild_id"):
        tracker.check(user_id=1, guild_id=bad)


def test_digit_string_ids_mean_the_same_user_everywhere(database_url, make_tracker, tmp_path):
    """A Discord id given as a digit string ("42") is user 42 for recording, limits and the bypass list."""
    bypass = tmp_path / "token_bypasses.json"
    bypass.write_text(json.dumps({"users": [42]}))
    tracker = make_tracker(database_url, parse_config({"user_limit": 100}, "ids"), bypasses=str(bypass))
    assert tracker.check(user_id="42", estimate=10_000).bypassed
    assert not tracker.check(user_id="43", estimate=10_000).allowed
    with FakeLLMServer() as server:
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            with tracker.guard(user_id="42", estimate=10_000):
                dspy.Predict("question -> answer")(question="who am i")
    assert tracker.flush(timeout=30)
    (row,) = all_rows(tracker)
    assert row["user_id"] == 42


# -- names with quotes and SQL ---------------------------------------------------------------------------------

NASTY = "chat'); DROP TABLE token_usage; -- \"quoted\" \\ back`tick` 💥 %s ?"


def test_feature_and_session_with_quotes_and_sql_are_stored_verbatim(database_url, make_tracker):
    """A feature and session id full of quotes, SQL, backslashes and emoji are stored and reported verbatim."""
    tracker = make_tracker(database_url)
    session = "s'; DELETE FROM token_usage; --"
    with FakeLLMServer() as server:
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            with usage_context(user_id=3, feature=NASTY, session_id=session):
                dspy.Predict("question -> answer")(question="first")
            with usage_context(user_id=3, feature="plain"):
                dspy.Predict("question -> answer")(question="second")
    assert tracker.flush(timeout=30)
    rows = {r["feature"]: r for r in all_rows(tracker)}
    assert set(rows) == {NASTY, "plain"}
    assert rows[NASTY]["session_id"] == session
    features = {g.key for g in tracker.breakdown("feature")}
    assert NASTY in features


# -- configuration files at runtime -------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    pytest.param('{"user_limit": 1000,}', id="trailing-comma"),
    pytest.param('{"user_limit": -1000}', id="negative-limit"),
    pytest.param('{"user_limit": "1000"}', id="string-limit"),
    pytest.param('{"user_limit": 1000, "enforcement": "maybe"}', id="unknown-mode"),
    pytest.param('[]', id="not-an-object"),
    pytest.param('{"user_limit": 1000, "models": [{"label": "a", "name": "x"}, {"label": "a", "name": "y"}]}',
                 id="contradictory-duplicate-labels"),
])
def test_a_broken_models_json_on_reload_keeps_the_limits_in_force(database_url, make_tracker, tmp_path, text):
    """reload_config() on a malformed models.json raises naming the file; the previous limits stay enforced."""
    path = tmp_path / "models.json"
    path.write_text('{"user_limit": 1000}')
    tracker = make_tracker(database_url, str(path))
    assert not tracker.check(user_id=1, estimate=5000).allowed
    path.write_text(text)
    with pytest.raises(ConfigurationError, match="models.json"):
        tracker.reload_config()
    decision = tracker.check(user_id=1, estimate=5000)
    assert not decision.allowed and decision.limit == 1000
    with pytest.raises(TokenLimitExceeded):
        with tracker.guard(user_id=1, estimate=5000):
            pass


@pytest.mark.parametrize("text", ['{"users": [42,]}', '{"users": ["@42"]}', '{"users": 42}', '{"user": [42]}',
                                  '{"users": [-42]}', '["42"]'])
def test_a_broken_bypass_file_on_reload_keeps_the_previous_list(database_url, make_tracker, tmp_path, text):
    """reload_config() on a malformed token_bypasses.json raises, naming the file; the previous bypasses stay."""
    models, bypass = tmp_path / "models.json", tmp_path / "token_bypasses.json"
    models.write_text('{"user_limit": 1000}')
    bypass.write_text('{"users": [42]}')
    tracker = make_tracker(database_url, str(models), bypasses=str(bypass))
    bypass.write_text(text)
    with pytest.raises(ConfigurationError, match="token_bypasses.json"):
        tracker.reload_config()
    assert tracker.check(user_id=42, estimate=5000).bypassed
    assert not tracker.check(user_id=43, estimate=5000).allowed


def test_a_bypassed_user_over_every_limit_is_admitted_and_recorded(database_url, make_tracker, tmp_path):
    """A bypassed user over the user, guild and global limits is admitted and still recorded."""
    bypass = tmp_path / "token_bypasses.json"
    bypass.write_text('{"users": [7]}')
    tracker = make_tracker(database_url, parse_config({"user_limit": 1, "guild_limit": 1, "global_limit": 1},
                                                      "contradictory"), bypasses=str(bypass))
    with FakeLLMServer() as server:
        with dspy.context(lm=server.lm(), callbacks=[tracker]):
            for _ in range(2):
                with tracker.guard(user_id=7, guild_id=8, estimate=50) as decision:
                    assert decision.bypassed
                    dspy.Predict("question -> answer")(question="bypassed")
        answered = server.answered
    assert tracker.flush(timeout=30)
    assert count_rows(tracker) == (answered, answered) and answered == 2
    assert not tracker.check(user_id=8, guild_id=8, estimate=50).allowed  # everyone else is over
