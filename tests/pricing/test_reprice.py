"""``tracker.reprice``: stored costs recomputed from today's prices after a models.json change, with the counters,
the daily cube and the rollups moved in the same transactions, so reports, limits and a rebuild from the rows all
agree. Rows are recorded by real DSPy calls against the local server, on every backend."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import dspy
import pytest

from dspy_tokens import TokenTracker
from dspy_tokens.store import rebuild
from tests.support.db import counter_rows, expected_counters, store_of, stored_counters, stored_rows
from tests.support.limits import config
from tests.support.rows import insert, seed_row
from tests.support.wire import GPT4O_MINI, ask, question

MINI = "openai/gpt-4o-mini"
UNKNOWN = "openai/my-finetune-xyz"
OLD = {"input": Decimal("1e-06"), "output": Decimal("2e-06")}
NEW = {"input": Decimal("3e-06"), "output": Decimal("5e-06")}
AGGREGATES = ("UsageCounter", "ModelUsageCounter", "DailyUsage", "UsageRollup")
LONG_AGO = datetime(2026, 1, 1, tzinfo=timezone.utc)


def priced(rates: dict):
    """models.json pricing gpt-4o-mini at ``rates`` (cache reads keep the map's rate), with a user cost limit."""
    return config(user_cost_limit=100, models=[{
        "label": "mini", "name": "gpt-4o-mini", "provider": "openai",
        "input_cost_per_token": float(rates["input"]), "output_cost_per_token": float(rates["output"])}])


def cost_at(row: dict, rates: dict) -> Decimal:
    cached = row["cached_tokens"] or 0
    return ((row["prompt_tokens"] - cached) * rates["input"] + cached * GPT4O_MINI["cache_read"]
            + row["completion_tokens"] * rates["output"])


def aggregates(target) -> dict[str, list]:
    return {table: sorted(tuple(sorted(row.items())) for row in counter_rows(target, table)) for table in AGGREGATES}


def rebuilt(target) -> dict[str, list]:
    """Every aggregate as a full rebuild from the raw rows gives it."""
    store = store_of(target)
    with store.db.connection_context():
        store.rebuild_counters()
        with store.db.atomic():
            rebuild.rebuild_rollups(store.db, store.dialect)
    return aggregates(target)


@pytest.fixture
def recorded(make_tracker, database_url, server):
    """Calls priced at OLD: user 1 (3 calls), then user 2 (2), then an unknown model; plus two older rows (other
    days and months) stored through the write path. Returns (url, moments between the groups)."""
    tracker = make_tracker(database_url, priced(OLD))
    moments = [datetime.now(timezone.utc)]
    ask(tracker, server, 3, user_id=1, guild_id=10, feature="a")
    moments.append(datetime.now(timezone.utc))
    ask(tracker, server, 2, start=3, user_id=2)
    moments.append(datetime.now(timezone.utc))
    with dspy.context(lm=server.lm(UNKNOWN), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question=question(9))
    rows = stored_rows(tracker)
    assert [r["cost_usd"] == cost_at(r, OLD) for r in rows if r["model"] == MINI] == [True] * 5
    insert(database_url, [seed_row(created_at=LONG_AGO + timedelta(days=40 * i, hours=i), user_id=1,
                                   cost_usd=cost_at(dict(prompt_tokens=100, completion_tokens=20, cached_tokens=0),
                                                    OLD)) for i in range(2)])
    return database_url, moments


def reader(url: str, rates: dict) -> TokenTracker:
    return TokenTracker.reader(url, priced(rates))


def test_reprice_applies_todays_prices_to_rows_reports_limits_and_aggregates(recorded):
    """After the price change every gpt-4o-mini row costs the new price; summary, breakdown, check() and the
    counters show the new totals; every aggregate equals a full rebuild from the rows."""
    url, _ = recorded
    tracker = reader(url, NEW)
    result = tracker.reprice(LONG_AGO)
    rows = stored_rows(tracker)
    mini = [r for r in rows if r["model"] == MINI]
    assert len(mini) == 7 and all(r["cost_usd"] == cost_at(r, NEW) for r in mini)
    assert all(r["price_version"] == result.price_version for r in mini)
    assert (result.total.rows, result.total.changed, result.written) == (8, 7, 7)
    new_total = sum(cost_at(r, NEW) for r in mini)
    assert result.total.new_cost_usd == new_total
    assert result.total.difference_usd == new_total - sum(cost_at(r, OLD) for r in mini)
    assert tracker.summary().cost_usd == new_total
    by_model = {g.key: g.cost_usd for g in tracker.breakdown("model")}
    assert by_model[MINI] == new_total
    user_1 = sum(r["cost_usd"] for r in mini if r["user_id"] == 1 and r["created_at"] > LONG_AGO + timedelta(60))
    assert tracker.check(user_id=1).used == user_1
    assert stored_counters(url) == expected_counters(rows)
    assert aggregates(url) == rebuilt(url)
    tracker.close()


def test_a_dry_run_changes_nothing_and_reports_what_the_run_then_applies(recorded):
    """The dry run writes nothing (rows and aggregates as they were) and its figures are the real run's."""
    url, _ = recorded
    tracker = reader(url, NEW)
    rows, before = stored_rows(tracker), aggregates(url)
    dry = tracker.reprice(LONG_AGO, dry_run=True)
    assert stored_rows(tracker) == rows and aggregates(url) == before
    assert dry.dry_run and dry.written == 0 and dry.total.changed == 7
    real = tracker.reprice(LONG_AGO)
    assert (real.models, real.total) == (dry.models, dry.total)
    tracker.close()


def test_model_since_and_until_limit_what_is_touched(recorded):
    """--since/--until select by creation time (half-open), --model by model: other rows keep their cost."""
    url, (_, after_user_1, after_user_2) = recorded
    tracker = reader(url, NEW)
    result = tracker.reprice(after_user_1, after_user_2)
    assert result.total.changed == 2
    for row in stored_rows(tracker):
        if row["model"] == MINI:
            inside = after_user_1 <= row["created_at"] < after_user_2
            assert row["cost_usd"] == cost_at(row, NEW if inside else OLD)
            assert row["user_id"] == (2 if inside else 1)
    assert tracker.reprice(LONG_AGO, model=UNKNOWN).total.changed == 0
    assert tracker.reprice(LONG_AGO, model=MINI).total.changed == 5
    assert aggregates(url) == rebuilt(url)
    tracker.close()


def test_an_unknown_model_stays_unknown_and_is_counted(recorded):
    """A model no price covers keeps cost NULL (counted as unpriced); rerunning changes nothing."""
    url, _ = recorded
    tracker = reader(url, NEW)
    first = tracker.reprice(LONG_AGO)
    unknown = {g.model: g for g in first.models}[UNKNOWN]
    assert (unknown.rows, unknown.changed, unknown.unpriced) == (1, 0, 1)
    assert first.total.unpriced == 1
    assert [r["cost_usd"] for r in stored_rows(tracker) if r["model"] == UNKNOWN] == [None]
    again = tracker.reprice(LONG_AGO)
    assert (again.total.changed, again.written, again.total.difference_usd) == (0, 0, 0)
    tracker.close()


def test_a_row_priced_unknown_before_is_priced_now_and_counted(make_tracker, database_url, server):
    """A model first recorded without a price, then given one in models.json: its rows are priced (unknown →
    priced), its unpriced counters go to zero."""
    tracker = make_tracker(database_url, config())
    with dspy.context(lm=server.lm("openai/acme-model"), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question=question(1))
    assert stored_rows(tracker)[0]["cost_usd"] is None
    later = TokenTracker.reader(database_url, config(models=[{
        "label": "acme", "name": "acme-model", "provider": "openai", "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06}]))
    result = later.reprice(LONG_AGO)
    assert (result.total.changed, result.total.newly_priced, result.total.unpriced) == (1, 1, 0)
    row = stored_rows(later)[0]
    assert row["cost_usd"] == row["prompt_tokens"] * Decimal("1e-06") + row["completion_tokens"] * Decimal("2e-06")
    assert row["cost_source"] == "models.json"
    assert later.summary().unknown_cost_calls == 0
    assert aggregates(database_url) == rebuilt(database_url)
    later.close()


def test_a_row_whose_cost_depends_on_an_unstored_split_keeps_it(make_tracker, sqlite_url, server):
    """Audio tokens are stored as one number (in + out): when their input and output rates differ the new cost
    cannot be known, so the row keeps its cost and is counted as ambiguous."""
    from dspy_tokens.testing import Reply

    tracker = make_tracker(sqlite_url, config())
    server.enqueue(Reply(usage={
        "prompt_tokens": 1000, "completion_tokens": 60, "total_tokens": 1060,
        "prompt_tokens_details": {"audio_tokens": 30}, "completion_tokens_details": {"audio_tokens": 20}}))
    with dspy.context(lm=server.lm("openai/gpt-audio", engine="litellm"), callbacks=[tracker]):
        dspy.Predict("question -> answer")(question=question(1))
    stored = stored_rows(tracker)[0]
    assert stored["audio_tokens"] == 50 and stored["cost_usd"] is not None
    result = TokenTracker.reader(sqlite_url, config(models=[{
        "label": "audio", "name": "gpt-audio", "provider": "openai", "input_cost_per_token": 1e-05}])).reprice(
        LONG_AGO)
    assert (result.total.ambiguous, result.total.changed) == (1, 0)
    assert stored_rows(tracker)[0]["cost_usd"] == stored["cost_usd"]


def test_estimated_rows_keep_their_flag_and_cache_hits_and_calls_without_usage_are_left_alone(database_url):
    """An estimated row is priced again with its source still saying it was estimated; a cache hit stays $0 and a
    call without usage stays unknown (counted as unpriced)."""
    now = datetime.now(timezone.utc)
    insert(database_url, [
        seed_row(created_at=now, usage_reported=False, usage_estimated=True, cost_source="estimated:price_map"),
        seed_row(created_at=now, cache_hit=True, cost_usd=Decimal(0), cost_source="cache_hit"),
        seed_row(created_at=now, prompt_tokens=None, completion_tokens=None, cached_tokens=None,
                 reasoning_tokens=None, usage_reported=False, cost_usd=None, cost_source="no_usage")])
    tracker = reader(database_url, NEW)
    result = tracker.reprice(now - timedelta(hours=1))
    assert (result.total.rows, result.total.changed, result.total.unpriced) == (3, 1, 1)
    rows = {r["cost_source"].split(":")[0]: r for r in stored_rows(tracker)}
    assert set(rows) == {"estimated", "cache_hit", "no_usage"}
    assert rows["estimated"]["cost_source"].startswith("estimated:models.js")  # cost_source holds 20 characters
    assert rows["estimated"]["cost_usd"] == 100 * NEW["input"] + 20 * NEW["output"]
    assert rows["estimated"]["usage_estimated"] is True
    assert (rows["cache_hit"]["cost_usd"], rows["no_usage"]["cost_usd"]) == (0, None)
    assert aggregates(database_url) == rebuilt(database_url)
    tracker.close()


def test_a_row_already_at_todays_prices_is_left_alone(recorded):
    """A row whose price_version is today's keeps its cost even when its stored columns would give another (what
    rows do not store, such as image tokens, priced it): no price changed, so no cost does."""
    url, moments = recorded
    tracker = reader(url, NEW)
    version = tracker.reprice(LONG_AGO, dry_run=True).price_version
    insert(url, [seed_row(created_at=moments[-1], cost_usd=Decimal("0.5"), price_version=version)])
    result = tracker.reprice(LONG_AGO)
    assert result.total.changed == 7
    assert [r["cost_usd"] for r in stored_rows(tracker) if r["price_version"] == version and r["cost_usd"] > 0.1] \
        == [Decimal("0.5")]
    tracker.close()
