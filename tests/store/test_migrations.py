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


def test_migration_8_adds_request_types_metadata_and_estimates_to_a_database_without_them(database_url):
    """A database written before version 8 (no request_type, metadata, usage_estimated, estimated_calls) gets the
    columns; its calls read back as chats, its reports are unchanged, and breakdown("request_type") answers from the
    rollups with every stored call as a chat."""
    rows = random_rows(120, seed=8)
    live = insert(database_url, rows)
    db = live.db
    with db.connection_context():
        for table, column in (("token_usage", "request_type"), ("token_usage", "metadata"),
                              ("token_usage", "usage_estimated"), ("token_usage_daily", "estimated_calls"),
                              ("token_usage_rollups", "estimated_calls")):
            db.execute_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute_sql("DELETE FROM token_usage_rollups WHERE scope = 'request'")
        db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 8")
    fresh = Store(database_url)
    assert [m.version for m in fresh.migrate()] == [8]
    reports = Reports(fresh, clock=lambda: NOW)
    month = reports.summary("month")
    assert month.calls > 0 and month.estimated_calls == 0
    (chat,) = reports.breakdown("request_type", "month")
    assert chat.key == "chat" and chat.calls == month.calls and chat.cost_usd == month.cost_usd
    assert reports.summary("month", request_type="chat") == month
    assert reports.summary("month", request_type="embedding").calls == 0
    assert Reports(fresh, clock=lambda: NOW).summary() == reports.summary(request_type="chat")
    exported = {r["call_uuid"]: r for r in fresh.records.session(rows[0]["session_id"])}
    assert {r["request_type"] for r in exported.values()} == {"chat"}
    assert not any(r["usage_estimated"] or r["metadata"] for r in exported.values())


def test_migration_7_adds_the_priced_dimensions_to_a_table_without_them(database_url):
    """A token_usage table from before migration 7 gets cache_write_tokens, audio_tokens, service_tier and
    price_version (NULL for old rows), keeps its rows, and stores the new columns of new rows."""
    rows = random_rows(5, seed=7)
    live = insert(database_url, rows)
    db = live.db
    columns = ("cache_write_tokens", "audio_tokens", "service_tier", "price_version")
    with db.connection_context():
        if live.dialect == "sqlite":  # SQLite before 3.35 has no DROP COLUMN; rebuild the table without them
            kept = [c.name for c in db.get_columns("token_usage") if c.name not in columns]
            db.execute_sql(f"CREATE TABLE usage_old AS SELECT {', '.join(kept)} FROM token_usage")
            db.execute_sql("DROP TABLE token_usage")
            db.execute_sql("ALTER TABLE usage_old RENAME TO token_usage")
        else:
            for column in columns:
                db.execute_sql(f"ALTER TABLE token_usage DROP COLUMN {column}")
        db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 7")
        assert not set(columns) & {c.name for c in db.get_columns("token_usage")}
    fresh = Store(database_url)
    assert [m.version for m in fresh.migrate()] == [7]
    with fresh.db.connection_context():
        present = {c.name for c in fresh.db.get_columns("token_usage")}
        assert set(columns) <= present
        stored = fresh.db.execute_sql("SELECT COUNT(*), COUNT(price_version) FROM token_usage").fetchone()
    assert tuple(stored) == (5, 0)


def test_migration_10_fills_the_hour_rollups_the_writer_would_have_kept(database_url):
    """A database written before hour rollups existed gets them from its rows, exactly as the writer keeps them
    batch by batch (every scope, key and measure), and rolling reports read them."""
    live = insert(database_url, random_rows(300, seed=10))
    hours = "SELECT scope, scope_key, bucket, calls, total_tokens, cost_pusd, unpriced_calls, cache_hits, errors " \
            "FROM token_usage_rollups WHERE grain = 'h' ORDER BY scope, scope_key, bucket"
    db = live.db
    with db.connection_context():
        kept = [tuple(r) for r in db.execute_sql(hours).fetchall()]
        db.execute_sql("DELETE FROM token_usage_rollups WHERE grain = 'h'")
        db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 10")
    assert len(kept) > 300
    fresh = Store(database_url)
    assert [m.version for m in fresh.migrate()] == [10]
    with fresh.db.connection_context():
        assert [tuple(r) for r in fresh.db.execute_sql(hours).fetchall()] == kept
    assert Reports(fresh, clock=lambda: NOW).summary("7d") == Reports(live, clock=lambda: NOW).summary("7d")
