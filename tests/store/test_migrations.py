"""Migrations: a database written by an older version is brought up to date, keeping (and completing from) the
usage it already holds."""

from __future__ import annotations

from dspy_tokens import Reports
from dspy_tokens.store import Store
from tests.support.rows import NOW, insert, random_rows


def test_migration_3_fills_the_rollups_from_rows_stored_before_it(database_url):
    """A database written before the rollups existed gets them from its rows when it migrates."""
    rows = random_rows(150, seed=3)
    live = insert(database_url, rows)
    reports = Reports(live, clock=lambda: NOW)
    before = (reports.summary("month"), reports.breakdown("model"), reports.top(5, "cost"))
    db = live.db
    with db.connection_context():
        db.execute_sql("DROP TABLE token_usage_daily")
        db.execute_sql("DROP TABLE token_usage_rollups")
        db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 3")
    fresh = Store(database_url)
    applied = fresh.migrate()
    assert [m.version for m in applied] == [3]
    again = Reports(fresh, clock=lambda: NOW)
    assert (again.summary("month"), again.breakdown("model"), again.top(5, "cost")) == before
