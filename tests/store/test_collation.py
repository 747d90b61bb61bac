"""Text keys compare exactly on every backend: models and features that differ only in case or accents ("Chat",
"chat", "chät") are separate groups in reports and separate per-model counters, including in a MySQL/MariaDB
database created before Migration 6 (whose default collation merged them)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dspy_tokens import Reports
from dspy_tokens.store import Store
from tests.support.db import counter_rows
from tests.support.limits import USER, config
from tests.support.limits import NOW as LIMITS_NOW
from tests.support.rows import NOW, at, insert, usage_row

SPELLINGS = ("Chat", "chat", "chät")
OLD_COLLATION = "utf8mb4_general_ci"  # MariaDB's default, which the tables had before Migration 6


def spelled_rows() -> list[dict]:
    """Per spelling, one call on a day wholly in the rollups and one this morning (raw rows): i+1 × 100 tokens."""
    rows = []
    for i, name in enumerate(SPELLINGS):
        for moment in (at(2025, 3, 3, 12), at(2025, 3, 12, 9)):
            rows.append(usage_row(moment, prompt=100 * (i + 1), completion=0, cost=f"0.00{i + 1}",
                                  model=f"acme/{name}", feature=name, user_id=USER))
    return rows


def assert_split(store: Store) -> None:
    """Three groups per dimension, each with its own totals, whatever span (rollup or raw) serves the period."""
    reports = Reports(store, clock=lambda: NOW)
    for period in ("month", "today"):
        calls = 2 if period == "month" else 1
        by_model = {g.key: (g.calls, g.total_tokens) for g in reports.breakdown("model", period)}
        assert by_model == {f"acme/{n}": (calls, calls * 100 * (i + 1)) for i, n in enumerate(SPELLINGS)}, period
        by_feature = {g.key: (g.calls, g.cost_usd) for g in reports.breakdown("feature", period)}
        assert by_feature == {n: (calls, calls * Decimal(f"0.00{i + 1}")) for i, n in enumerate(SPELLINGS)}, period
    assert reports.summary("month", feature="chat").total_tokens == 400
    per_model = {(r["model"], r["hour"]): r["tokens"] for r in counter_rows(store.url, "ModelUsageCounter")
                 if r["scope"] == "user"}
    assert sorted({model for model, _ in per_model}) == sorted(f"acme/{n}" for n in SPELLINGS)
    assert len(per_model) == 6 and sum(per_model.values()) == 2 * (100 + 200 + 300)


def test_spellings_that_differ_in_case_or_accent_stay_apart(database_url):
    """"Chat", "chat" and "chät" are three models and three features: in breakdowns, filters and counters."""
    assert_split(insert(database_url, spelled_rows()))


def test_a_per_model_limit_counts_only_its_exact_spelling(make_tracker, database_url):
    """A limit on acme/chat sees only acme/chat's usage, not acme/Chat's."""
    cfg = config(models=[{"label": "lower", "name": "chat", "provider": "acme", "user_limit": 1_000},
                         {"label": "upper", "name": "Chat", "provider": "acme"}])
    tracker = make_tracker(database_url, cfg)
    insert(database_url, [usage_row(LIMITS_NOW, prompt=900, completion=0, model="acme/Chat", user_id=USER),
                          usage_row(LIMITS_NOW, prompt=100, completion=0, model="acme/chat", user_id=USER)])
    decision = tracker.check(USER, None, model="acme/chat", estimate=300, now=LIMITS_NOW)
    assert decision.allowed and decision.used == 100, decision.message


def _old_collation(url: str) -> None:
    """Give every table the collation an older version left it with: the server's default."""
    store = Store(url)
    store.migrate()
    with store.db.connection_context():
        for table in store.db.get_tables():
            store.db.execute_sql(f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE {OLD_COLLATION}")


def _forget_migration_6(url: str) -> None:
    store = Store(url)
    with store.db.connection_context():
        store.db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 6")


@pytest.mark.mysql
def test_migration_6_splits_what_the_old_collation_merged(database_url):
    """On MySQL/MariaDB, a database written under the old collation merged the spellings; migrating splits them
    from the stored rows."""
    if not database_url.startswith("mysql"):
        pytest.skip("only MySQL/MariaDB ever merged text keys")
    _old_collation(database_url)
    old = insert(database_url, spelled_rows())
    merged = Reports(old, clock=lambda: NOW).breakdown("model", "month")
    assert len(merged) == 1 and merged[0].calls == 6  # what the old schema did
    _forget_migration_6(database_url)
    assert [m.version for m in Store(database_url).migrate()] == [6]
    fresh = Store(database_url)
    assert_split(fresh)
    with fresh.db.connection_context():
        collations = {r[0] for r in fresh.db.execute_sql(
            "SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
            "AND collation_name IS NOT NULL").fetchall()}
    assert collations == {"utf8mb4_bin"}


def test_migration_6_changes_nothing_where_text_already_compares_exactly(database_url):
    """SQLite, PostgreSQL and a MySQL database created since: Migration 6 is recorded and the data untouched."""
    insert(database_url, spelled_rows())
    before = counter_rows(database_url, "ModelUsageCounter"), counter_rows(database_url, "UsageRollup")
    _forget_migration_6(database_url)
    assert [m.version for m in Store(database_url).migrate()] == [6]
    after = counter_rows(database_url, "ModelUsageCounter"), counter_rows(database_url, "UsageRollup")
    assert sorted(map(sorted_items, after[0])) == sorted(map(sorted_items, before[0]))
    assert sorted(map(sorted_items, after[1])) == sorted(map(sorted_items, before[1]))


def sorted_items(row: dict) -> tuple:
    return tuple(sorted(row.items()))


@pytest.mark.mysql
def test_migration_6_keeps_the_usage_retention_already_deleted(database_url):
    """Days whose rows retention deleted keep their aggregates (merged: nothing is left to split them); the days
    with rows are split, and the month still counts every call."""
    if not database_url.startswith("mysql"):
        pytest.skip("only MySQL/MariaDB ever merged text keys")
    _old_collation(database_url)
    store = insert(database_url, spelled_rows())
    assert store.pruning.delete_rows_before(at(2025, 3, 4), batch_size=100)[0] == 3
    _forget_migration_6(database_url)
    assert [m.version for m in Store(database_url).migrate()] == [6]
    reports = Reports(Store(database_url), clock=lambda: NOW)
    today = {g.key: g.calls for g in reports.breakdown("model", "today")}
    assert today == {f"acme/{n}": 1 for n in SPELLINGS}
    assert reports.summary("month").calls == 6
    assert sum(g.calls for g in reports.breakdown("model", "month")) == 6
