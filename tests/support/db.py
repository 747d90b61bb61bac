"""Databases for the tests: the server backends (with a private scratch database per run), and reading back
what a tracker stored — through a Store of our own on the same URL, never the tracker's internals."""

from __future__ import annotations

import atexit
import os
import uuid as uuidlib
from collections import defaultdict

import peewee
from playhouse.db_url import parse

from dspy_tokens.store import Store
from dspy_tokens.store._db import open_database
from dspy_tokens.store.units import PICO, feature_scope_id

POSTGRES_URL = os.environ.get("DSPY_TOKENS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("DSPY_TOKENS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
CLOSED_PORT_URL = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1: connection refused
_reachable: dict[str, str | None] = {}
_stores: dict[str, Store] = {}


def server_problem(url: str) -> str | None:
    """None when the server answers, else why not (cached per session)."""
    if url not in _reachable:
        try:
            db = open_database(url)
            db.connect()
            db.close()
            _reachable[url] = None
        except Exception as exc:  # driver missing or server down
            _reachable[url] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _reachable[url]


def scratch_database(url: str) -> str:
    """A private database on the same server, so concurrent test runs never share tables (dropped at exit)."""
    name = f"dspy_tokens_test_{os.getpid()}_{uuidlib.uuid4().hex[:6]}"
    admin = open_database(url)
    if isinstance(admin, peewee.PostgresqlDatabase):
        import psycopg2
        params = parse(url)
        dsn = dict(dbname=params.get("database"), user=params.get("user"), host=params.get("host"),
                   port=params.get("port"), password=params.get("password"))

        def run(sql):
            conn = psycopg2.connect(**{k: v for k, v in dsn.items() if v is not None})
            conn.autocommit = True
            try:
                conn.cursor().execute(sql)
            finally:
                conn.close()
    else:
        def run(sql):
            with admin.connection_context():
                admin.execute_sql(sql)
    run(f"CREATE DATABASE {name}")
    atexit.register(run, f"DROP DATABASE IF EXISTS {name}")
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def drop_all_tables(url: str) -> None:
    """Empty a (private scratch) database: every table, so no test sees another's rows."""
    db = open_database(url)
    with db.connection_context():
        for table in db.get_tables():
            db.execute_sql(f"DROP TABLE IF EXISTS {table}")
    _stores.pop(url, None)


def store_of(target) -> Store:
    """A Store of our own on a tracker's (or a URL's) database."""
    url = target if isinstance(target, str) else target.database_url
    store = _stores.get(url)
    if store is None:
        store = _stores[url] = Store(url)
    return store


def stored_rows(tracker) -> list[dict]:
    """Every stored row after a flush, ordered by time, session and call index."""
    assert tracker.flush(timeout=30), f"writer did not drain: {tracker.stats.last_error}"
    return all_rows(tracker)


def all_rows(target) -> list[dict]:
    """Every stored row (no flush), ordered by time, session and call index."""
    store = store_of(target)
    store.ensure_schema()
    model = store.models.TokenUsage
    with store.db.connection_context():
        return list(model.select().order_by(model.created_at, model.session_id, model.call_index).dicts())


def reservations(target) -> int:
    """How many reservations are stored (active or expired)."""
    store = store_of(target)
    store.ensure_schema()
    with store.db.connection_context():
        return store.models.Reservation.select().count()


def reservation_expiry(target, reservation_id: str) -> float:
    """When a stored reservation expires (a Unix time, from the stored ``expires_at``)."""
    store = store_of(target)
    store.ensure_schema()
    model = store.models.Reservation
    with store.db.connection_context():
        return model.get_by_id(reservation_id).expires_at.timestamp()


def counter_rows(target, table: str = "UsageCounter") -> list[dict]:
    """Every row of one aggregate table (a model name of ``dspy_tokens.store.schema``), as dicts."""
    store = store_of(target)
    store.ensure_schema()
    model = getattr(store.models, table)
    with store.db.connection_context():
        return list(model.select().dicts())


def rows_in(url: str) -> list[dict]:
    """Every row in the database at ``url``, read through a connection of its own ([] before the table exists)."""
    store = Store(url)
    try:
        model = store.models.TokenUsage
        with store.db.connection_context():
            if not store.db.table_exists("token_usage"):
                return []
            return list(model.select().dicts())
    finally:
        store.close()


# -- the hourly limit counters against the raw rows -------------------------------------------------------------

def expected_counters(rows: list[dict]) -> dict[tuple, list[int]]:
    """(scope, scope_id, hour) -> [calls, tokens, cost in picodollars, unpriced calls], summed from raw rows."""
    totals: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in rows:
        hour = int(row["created_at"].timestamp()) // 3600
        cost = row["cost_usd"]
        scopes = [("global", 0)] + [(scope, row[f"{scope}_id"]) for scope in ("user", "guild", "channel")
                                    if row[f"{scope}_id"] is not None]
        if row["feature"]:
            scopes.append(("feature", feature_scope_id(row["feature"])))
        for scope, scope_id in scopes:
            acc = totals[(scope, scope_id, hour)]
            acc[0] += 1
            acc[1] += row["total_tokens"] or 0
            acc[2] += int(cost * PICO) if cost is not None else 0
            acc[3] += cost is None and row["error"] is None
    return dict(totals)


def stored_counters(target) -> dict[tuple, list[int]]:
    """The stored hourly counters in the shape of :func:`expected_counters`."""
    return {(c["scope"], c["scope_id"], c["hour"]): [c["calls"], c["tokens"], c["cost_pusd"], c["unpriced_calls"]]
            for c in counter_rows(target)}


def assert_counters_match_rows(tracker) -> None:
    """After a flush, the hourly counters are exactly the sums of the stored rows."""
    rows = stored_rows(tracker)
    assert stored_counters(tracker) == expected_counters(rows)


def only_row(tracker) -> dict:
    """The one stored row (after a flush); fails showing every row when there is not exactly one."""
    rows = stored_rows(tracker)
    assert len(rows) == 1, rows
    return rows[0]
