"""Reports by request type: from the rollups alone, and from the raw rows when combined with another dimension,
over each backend; the rollups rebuilt from the rows agree with those the writer kept."""

from __future__ import annotations

from dspy_tokens import Reports
from dspy_tokens.store import Store
from tests.support.rows import GPT4O, MINI, NOW, at, insert, usage_row


def typed_rows() -> list[dict]:
    return [
        usage_row(at(2025, 3, 3, 9), prompt=100, completion=10, cost="0.00002", user_id=1, request_type="chat"),
        usage_row(at(2025, 3, 4, 9), prompt=300, completion=0, cost="0.000006", user_id=1, model=GPT4O,
                  request_type="embedding", completion_tokens=None, reasoning_tokens=None),
        usage_row(at(2025, 3, 12, 9), prompt=40, completion=0, cost="0.0000008", user_id=2,
                  request_type="embedding", completion_tokens=None, reasoning_tokens=None),
        usage_row(at(2025, 3, 12, 10), prompt=50, completion=20, cost="0.00001", user_id=2, model=MINI,
                  request_type="responses"),
    ]


def test_breakdown_and_filters_by_request_type(database_url):
    """``breakdown("request_type")`` totals each type (whole days from the rollups, today from the rows);
    ``request_type=`` filters summaries, and combined with a user filter (raw rows) agrees by hand."""
    reports = Reports(insert(database_url, typed_rows()), clock=lambda: NOW)
    groups = {g.key: g for g in reports.breakdown("request_type", "month")}
    assert set(groups) == {"chat", "embedding", "responses"}
    assert groups["embedding"].calls == 2 and groups["embedding"].prompt_tokens == 340
    assert str(groups["embedding"].cost_usd) == "0.0000068"
    assert reports.summary("month", request_type="responses").total_tokens == 70
    both = reports.summary("month", request_type="embedding", user_id=1)
    assert (both.calls, both.prompt_tokens, both.active_users) == (1, 300, 1)
    assert reports.summary("month", request_type="embedding").active_users == 2
    by_user = {g.key: g.calls for g in reports.breakdown("user", "month", request_type="embedding")}
    assert by_user == {1: 1, 2: 1}
    per_day = {(day.day, key): g.calls for g in reports.breakdown(("day", "request_type"), "month")
               for day, key in [g.key]}
    assert per_day == {(3, "chat"): 1, (4, "embedding"): 1, (12, "embedding"): 1, (12, "responses"): 1}
    filtered = reports.breakdown(("day", "model"), "month", request_type="embedding")
    assert [(g.key[0].day, g.key[1], g.calls) for g in filtered] == [(4, GPT4O, 1), (12, MINI, 1)]


def test_request_type_rollups_rebuilt_from_the_rows_match_the_writers(database_url):
    """Rollups rebuilt from the rows (migration 3 on a database that lost them) hold the request-type totals the
    writer kept batch by batch."""
    store = insert(database_url, typed_rows())
    reports = Reports(store, clock=lambda: NOW)
    before = reports.breakdown("request_type", "month"), reports.breakdown("request_type"), reports.summary()
    with store.db.connection_context():
        store.db.execute_sql("DROP TABLE token_usage_daily")
        store.db.execute_sql("DROP TABLE token_usage_rollups")
        store.db.execute_sql("DELETE FROM dspy_tokens_migrations WHERE version = 3")
    fresh = Store(database_url)
    assert [m.version for m in fresh.migrate()] == [3]
    again = Reports(fresh, clock=lambda: NOW)
    assert (again.breakdown("request_type", "month"), again.breakdown("request_type"), again.summary()) == before
