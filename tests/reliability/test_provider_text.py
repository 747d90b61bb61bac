"""Case 5 of "loses nothing": what a provider sends must never make a call unstorable, nor count wrongly toward
limits. Real DSPy calls over HTTP to the fake provider, on every backend: a model name or an error message with a
NUL (PostgreSQL refuses it) or a lone surrogate (no driver can encode it) is stored cleaned; usage without
``prompt_tokens`` still counts; a ``total_tokens`` far above prompt + completion is not charged."""

from __future__ import annotations

import dspy

from dspy_tokens import usage_context
from dspy_tokens.config import parse_config
from dspy_tokens.testing import FakeLLMServer, Reply
from tests.support.db import all_rows
from tests.support.reliability import figures, report

BAD = "bad\x00text \ud800 end"
LIMITS = {"user_limit": 10**6}


def call(tracker, lm, user_id: int) -> str | None:
    """One tracked call; the exception's type name if it failed (a failed call is recorded too)."""
    try:
        with dspy.context(lm=lm, callbacks=[tracker]), usage_context(user_id=user_id):
            dspy.Predict("question -> answer")(question=f"user {user_id}")
    except Exception as exc:  # noqa: BLE001 - the provider's error reaches the program, and must be recorded
        return type(exc).__name__
    return None


def test_provider_text_no_database_can_store_is_cleaned(make_tracker, database_url):
    """A response model with NUL and a lone surrogate, a configured model name with a NUL, a provider error
    message with both, and a configured model with a lone surrogate (DSPy refuses to send that request): every
    call is stored, cleaned, so its tokens reach the counters and the limits."""
    tracker = make_tracker(database_url, parse_config(LIMITS, "provider text"))
    with FakeLLMServer() as server:
        server.enqueue(Reply(model=f"gpt-4o-mini-{BAD}"))
        call(tracker, server.lm(num_retries=0), 1)
        call(tracker, server.lm("openai/gpt-4o-mini\x00", num_retries=0), 2)
        server.enqueue(Reply(status=400, error_body={"error": {"message": f"refused: {BAD}",
                                                               "type": "invalid_request_error"}}))
        failed = [call(tracker, server.lm(num_retries=0), 3),
                  call(tracker, server.lm("openai/gpt-4o-mini-\ud800", num_retries=0), 4)]
        assert tracker.flush(timeout=30), tracker.stats.last_error
        found = report("5 provider text with NUL and a lone surrogate (issue: such calls rejected)",
                       figures(tracker, 4, tracker.stats.spill_dir))
        used = [tracker.check(user_id=user).used for user in (1, 2)]
    rows = {row["user_id"]: row for row in all_rows(tracker)}
    assert all(failed) and found == {**found, "stored": 4, "lost": 0, "duplicated": 0, "rejected": 0,
                                     "counters_equal_rows": True}
    assert rows[1]["response_model"] == "gpt-4o-mini-badtext \ufffd end"
    assert rows[2]["model"] == "openai/gpt-4o-mini"
    assert "badtext \ufffd end" in rows[3]["error"] and "\x00" not in rows[3]["error"]
    assert rows[4]["model"] == "openai/gpt-4o-mini-\ufffd" and rows[4]["error"]
    assert used == [rows[1]["total_tokens"], rows[2]["total_tokens"]] and all(used)


def test_usage_is_made_self_consistent_before_it_counts(make_tracker, database_url):
    """Usage {"completion_tokens": 50} (no prompt) counts 50 toward the user's limit; a 15-token call reporting
    total_tokens 999,999,999 counts 15."""
    tracker = make_tracker(database_url, parse_config(LIMITS, "usage"))
    with FakeLLMServer() as server:
        server.enqueue(Reply(usage={"completion_tokens": 50}))
        call(tracker, server.lm(num_retries=0), 1)
        server.enqueue(Reply(usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 999_999_999}))
        call(tracker, server.lm(num_retries=0), 2)
        assert tracker.flush(timeout=30), tracker.stats.last_error
        used = {user: tracker.check(user_id=user).used for user in (1, 2)}
    report("5 usage without prompt_tokens / an implausible total (issue: counted 0 / 999,999,999)",
           {"prompt_less_counted": used[1], "implausible_total_counted": used[2]})
    rows = {row["user_id"]: row for row in all_rows(tracker)}
    assert used == {1: 50, 2: 15}
    assert (rows[1]["prompt_tokens"], rows[1]["completion_tokens"], rows[1]["total_tokens"]) == (None, 50, 50)
    assert rows[1]["usage_reported"] and rows[1]["cost_usd"] is None  # no prompt count: the cost is unknown, not $0
    assert (rows[2]["prompt_tokens"], rows[2]["completion_tokens"], rows[2]["total_tokens"]) == (10, 5, 15)
