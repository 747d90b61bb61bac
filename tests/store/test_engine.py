"""The store's write path: rows are written once by ``call_uuid`` (a batch written again adds nothing), and every
aggregate written with them — the hourly limit counters, per scope and per model — equals what the raw rows
sum to, and what a rebuild from the raw rows gives."""

from __future__ import annotations

from datetime import timedelta

import dspy
import pytest

from dspy_tokens import usage_context
from dspy_tokens.testing import Reply
from tests.support.db import all_rows, counter_rows, expected_counters, store_of, stored_counters, stored_rows
from tests.support.limits import GUILD, NOW, USER, config, seed
from tests.support.rows import as_rows, insert, random_rows, usage_row
from tests.support.wire import question

AGGREGATES = ("UsageCounter", "ModelUsageCounter", "DailyUsage", "UsageRollup")


def aggregates(target) -> dict[str, list]:
    """Every aggregate table's rows, in a stable order."""
    return {table: sorted(tuple(sorted(row.items())) for row in counter_rows(target, table)) for table in AGGREGATES}


# -- idempotent writes ----------------------------------------------------------------------------------------------

def test_a_batch_written_again_adds_no_row_and_changes_no_aggregate(database_url):
    """``write_batch`` skips rows whose ``call_uuid`` is stored (a replay after a crash): writing the same batch
    again adds nothing, and a batch mixing stored and new rows adds only the new ones, to rows and aggregates."""
    rows = random_rows(60, seed=11)
    store = insert(database_url, rows)
    before = aggregates(database_url)
    assert store.write_batch(as_rows(rows)) == 0
    assert aggregates(database_url) == before
    extra = usage_row(NOW, prompt=5, completion=5, cost="0.00001", user_id=1)
    assert store.write_batch(as_rows([*rows[:10], extra, extra])) == 1  # twice in one batch: stored once
    stored = all_rows(database_url)
    assert sorted(r["call_uuid"] for r in stored) == sorted(r["call_uuid"] for r in [*rows, extra])
    assert stored_counters(database_url) == expected_counters(stored)


# -- aggregates == rows == rebuild ------------------------------------------------------------------------------------

def test_counters_sum_exactly_to_the_raw_rows(tracker, server):
    """token_usage_counters (user, guild, global per hour) equal the sums of the raw rows: calls, tokens, cost in
    picodollars, unpriced calls — across users, guilds, unknown models, cache hits and failures."""
    predict = dspy.Predict("question -> answer")
    cached = server.lm(cache=True)
    server.enqueue(Reply(cached_tokens=30, reasoning_tokens=2))
    with dspy.context(lm=server.lm(), callbacks=[tracker]):
        with usage_context(user_id=1, guild_id=100):
            predict(question=question(0))
            predict(question=question(1))
        with usage_context(user_id=2, guild_id=100):
            predict(question=question(2))
            with dspy.context(lm=cached):
                predict(question=question(3))
                predict(question=question(3))  # a cache hit
        with usage_context(user_id=3):
            with dspy.context(lm=server.lm("openai/my-finetune-xyz")):
                predict(question=question(4))  # unknown price
            server.enqueue(Reply(status=500))
            with dspy.context(lm=server.lm(num_retries=0)), pytest.raises(Exception):  # noqa: B017 (any LM error)
                predict(question=question(5))  # a failed call
        predict(question=question(6))  # no user, no guild
    rows = stored_rows(tracker)
    assert len(rows) == 8
    counters = stored_counters(tracker)
    assert counters == expected_counters(rows)
    hour = next(iter(counters))[2]
    assert counters[("global", 0, hour)][0] == 8  # the scenario covered every kind of call
    assert counters[("global", 0, hour)][3] == 1  # only the unknown model is unpriced (the failure has an error)
    assert counters[("guild", 100, hour)][0] == 5


def test_rebuild_counters_restores_them_from_rows(make_tracker, database_url):
    """Counters wiped or corrupted are rebuilt exactly from the raw rows (the audit path)."""
    tracker = make_tracker(database_url, config(user_limit=100_000))
    seed(tracker, *[dict(user_id=USER + i % 3, guild_id=GUILD, prompt_tokens=100 * i, completion_tokens=i,
                         created_at=NOW - timedelta(hours=5 * i)) for i in range(1, 30)])
    store = store_of(tracker)
    counters = store.models.UsageCounter

    def snapshot():
        with store.db.connection_context():
            return sorted(counters.select().tuples())

    before = snapshot()
    with store.db.connection_context():
        counters.update(tokens=counters.tokens + 1).execute()
    assert snapshot() != before
    with store.db.connection_context():
        store.rebuild_counters()
    assert snapshot() == before
