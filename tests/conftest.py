"""Shared fixtures: a database per backend (SQLite always; PostgreSQL/MariaDB when reachable), a local
OpenAI-compatible server, and trackers that are closed after each test."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before dspy is imported: pricing stays offline

import dspy  # noqa: E402
import pytest  # noqa: E402

from dspy_tokens import Config, TokenTracker  # noqa: E402
from dspy_tokens.testing import FakeLLMServer  # noqa: E402

POSTGRES_URL = os.environ.get("DSPY_TOKENS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("DSPY_TOKENS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
OUR_TABLES = ("token_usage", "token_usage_counters", "token_reservations", "token_usage_daily",
              "dspy_tokens_migrations")
_reachable: dict[str, str | None] = {}


def _server_problem(url: str) -> str | None:
    """None when the server answers, else why not (cached per session)."""
    if url not in _reachable:
        from dspy_tokens.db import open_database
        try:
            db = open_database(url)
            db.connect()
            db.close()
            _reachable[url] = None
        except Exception as exc:  # driver missing or server down
            _reachable[url] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _reachable[url]


def _scratch_database(url: str) -> str:
    """A private database on the same server, so concurrent test runs never share tables (dropped at exit)."""
    import atexit
    import uuid as uuidlib

    from playhouse.db_url import parse

    from dspy_tokens.db import open_database

    name = f"dspy_tokens_test_{os.getpid()}_{uuidlib.uuid4().hex[:6]}"
    admin = open_database(url)
    if isinstance(admin, __import__("peewee").PostgresqlDatabase):
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


_scratch: dict[str, str] = {}


def drop_our_tables(url: str) -> None:
    from dspy_tokens.db import open_database
    db = open_database(url)
    with db.connection_context():
        # The scratch database is private: drop every table, including ones added after OUR_TABLES was written
        # (counters per model, rollups, locks), so no test sees another's rows.
        for table in set(OUR_TABLES) | set(db.get_tables()):
            db.execute_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture(params=[
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
])
def database_url(request, tmp_path):
    """A fresh, empty database of each backend; server backends are skipped with the reason when absent."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'usage.db'}"
        return
    server_url = POSTGRES_URL if request.param == "postgres" else MYSQL_URL
    problem = _server_problem(server_url)
    if problem:
        pytest.skip(f"{request.param} server not reachable at {server_url}: {problem}")
    if server_url not in _scratch:
        _scratch[server_url] = _scratch_database(server_url)
    url = _scratch[server_url]
    drop_our_tables(url)
    yield url
    drop_our_tables(url)


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'usage.db'}"


@pytest.fixture
def make_tracker(tmp_path):
    """Build trackers that are closed (and their writers stopped) at the end of the test."""
    made = []

    def make(database: str, config=None, **kwargs) -> TokenTracker:
        kwargs.setdefault("spill_dir", tmp_path / f"spill{len(made)}")
        # No config means no config: never the example ./models.json at the repository root (the tests' cwd).
        tracker = TokenTracker(database, config if config is not None else Config(), **kwargs)
        made.append(tracker)
        return tracker

    yield make
    for tracker in made:
        tracker.close(timeout=5)


@pytest.fixture
def tracker(make_tracker, database_url):
    return make_tracker(database_url)


@pytest.fixture
def sqlite_tracker(make_tracker, sqlite_url):
    return make_tracker(sqlite_url)


@pytest.fixture
def server():
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _fresh_dspy_cache(tmp_path):
    """Every test gets its own empty DSPy cache, so cache hits happen only where a test makes them.

    In memory only: a fresh disk cache (16 SQLite shards) costs 0.2-1 s per test; tests of the disk cache
    configure one themselves."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    yield


def stored_rows(tracker: TokenTracker) -> list[dict]:
    """Every stored row after a flush, ordered by session and call index."""
    assert tracker.flush(timeout=30), f"writer did not drain: {tracker.writer.last_error}"
    model = tracker.store.models.TokenUsage
    with tracker.store.db.connection_context():
        return list(model.select().order_by(model.created_at, model.session_id, model.call_index).dicts())
