"""Case 1 of "loses nothing": a database that answers but cannot take the write — locks, timeouts, read-only,
a revoked grant, a full disk, deadlocks — is the database's state, not bad rows. Calls go on, rows wait and are
written exactly once when the trouble ends; nothing is set aside as rejected.

Every fault is real: another session holding a lock, server settings, a revoked privilege, a file system that is
full or read-only, or an error raised by the server itself from a trigger on ``token_usage``.
"""

from __future__ import annotations

import logging
import threading
import time
from urllib.parse import quote

import dspy
import pytest

from dspy_tokens import usage_context
from dspy_tokens.testing import FakeLLMServer
from tests.support.faults import fail_writes, stop_refusing
from tests.support.mounts import fill, read_only, tmpfs
from tests.support.reliability import assert_exactly_once, figures, report

POSTGRES = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)
MYSQL = pytest.mark.parametrize("database_url", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)


def with_options(url: str, **options: str) -> str:
    """``url`` with driver connection options in its query string (passed on by playhouse.db_url)."""
    query = "&".join(f"{key}={quote(str(value))}" for key, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def calls(tracker, server, n: int, pause: float = 0.0, tag: str = "call") -> None:
    predict, lm = dspy.Predict("question -> answer"), server.lm()
    with dspy.context(lm=lm, callbacks=[tracker]), usage_context(user_id=5, guild_id=6):
        for i in range(n):
            predict(question=f"{tag} {i}")
            time.sleep(pause)


def warm(tracker, server) -> None:
    """One committed call: the schema and this hour's counter rows exist."""
    calls(tracker, server, 1, tag="warm")
    assert tracker.flush(timeout=30), tracker.stats.last_error


def holding(seconds: float, run) -> threading.Thread:
    thread = threading.Thread(target=run, args=(seconds,), daemon=True)
    thread.start()
    time.sleep(0.2)  # the lock is held before the calls start
    return thread


def pg_share_lock(url: str):
    """Another session holding ``LOCK TABLE token_usage IN SHARE MODE`` (what rebuild-counters takes)."""
    import psycopg2

    def run(seconds: float) -> None:
        conn = psycopg2.connect(url)
        conn.cursor().execute("LOCK TABLE token_usage IN SHARE MODE")
        time.sleep(seconds)
        conn.commit()
        conn.close()
    return run


@POSTGRES
@pytest.mark.parametrize("setting, lock_seconds, issue", [
    pytest.param("lock_timeout=200", 5.0, "25 of 140 rejected", id="lock_timeout"),
    pytest.param("statement_timeout=300", 3.0, "9 of 140 rejected", id="statement_timeout"),
])
def test_postgresql_timeouts_behind_a_table_lock_reject_nothing(make_tracker, database_url, tmp_path, setting,
                                                               lock_seconds, issue, caplog):
    """140 calls while another session holds a SHARE lock on token_usage and the tracker's sessions give up
    waiting after 200-300 ms: every row is written exactly once when the lock is released, none rejected."""
    spill = tmp_path / "spill"
    tracker = make_tracker(with_options(database_url, options=f"-c {setting}"), spill_dir=spill)
    with FakeLLMServer() as server, caplog.at_level(logging.WARNING, logger="dspy_tokens"):
        warm(tracker, server)
        holder = holding(lock_seconds, pg_share_lock(database_url))
        calls(tracker, server, 139, pause=0.03)
        holder.join()
        flushed = tracker.flush(timeout=60)
        found = report(f"1 postgres {setting} behind a {lock_seconds:.0f} s SHARE lock (issue: {issue})",
                       figures(database_url, server.answered, spill))
    assert flushed, tracker.stats.last_error
    assert any(code in caplog.text for code in ("55P03", "57014"))  # the writes did time out meanwhile
    assert_exactly_once(found)


@MYSQL
def test_mysql_lock_wait_timeouts_reject_nothing(make_tracker, database_url, tmp_path, caplog):
    """MariaDB: another session holds this hour's counter rows FOR UPDATE for 4 s and the tracker's sessions wait
    1 s (innodb_lock_wait_timeout, error 1205): every row is written exactly once afterwards, none rejected."""
    import pymysql
    from playhouse.db_url import parse

    params = parse(database_url)
    spill = tmp_path / "spill"
    tracker = make_tracker(with_options(database_url, init_command="SET SESSION innodb_lock_wait_timeout=1"),
                           spill_dir=spill)

    def lock_counters(seconds: float) -> None:
        conn = pymysql.connect(host=params["host"], port=params["port"], user=params["user"],
                               database=params["database"])
        conn.begin()
        conn.cursor().execute("SELECT * FROM token_usage_counters FOR UPDATE")
        time.sleep(seconds)
        conn.commit()
        conn.close()

    with FakeLLMServer() as server, caplog.at_level(logging.WARNING, logger="dspy_tokens"):
        warm(tracker, server)
        holder = holding(4.0, lock_counters)
        calls(tracker, server, 60, pause=0.05)
        holder.join()
        flushed = tracker.flush(timeout=60)
        found = report("1 mysql 1205 lock wait timeouts behind FOR UPDATE", figures(database_url, server.answered,
                                                                                     spill))
    assert flushed, tracker.stats.last_error
    assert "1205" in caplog.text  # the writes did wait out innodb_lock_wait_timeout meanwhile
    assert_exactly_once(found)


def _pg_admin(url: str, *statements: str) -> None:
    import psycopg2
    from playhouse.db_url import parse

    params = parse(url)
    conn = psycopg2.connect(host=params["host"], port=params["port"], user=params["user"], dbname="postgres")
    conn.autocommit = True
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


@POSTGRES
def test_a_read_only_postgresql_database_keeps_the_rows(make_tracker, database_url, tmp_path):
    """The database turned read-only (default_transaction_read_only, SQLSTATE 25006) while calls go on: the
    rows wait, and are written exactly once when it is writable again."""
    from playhouse.db_url import parse

    name = parse(database_url)["database"]
    spill = tmp_path / "spill"
    tracker = make_tracker(database_url, spill_dir=spill)
    with FakeLLMServer() as server:
        warm(tracker, server)
        _pg_admin(database_url, f"ALTER DATABASE {name} SET default_transaction_read_only = on",
                  f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' "
                  "AND pid <> pg_backend_pid()")
        try:
            calls(tracker, server, 30)
            waited = not tracker.flush(timeout=1.5)
            error = tracker.stats.last_error
        finally:
            _pg_admin(database_url, f"ALTER DATABASE {name} RESET default_transaction_read_only")
        flushed = tracker.flush(timeout=60)
        found = report("1 postgres read-only database (25006)", figures(database_url, server.answered, spill))
    assert waited and flushed, tracker.stats.last_error
    assert "25006" in error
    assert_exactly_once(found)


@POSTGRES
def test_a_revoked_insert_grant_keeps_the_rows(make_tracker, database_url, tmp_path):
    """The tracker's role loses INSERT on token_usage (SQLSTATE 42501, a psycopg2 ProgrammingError): the rows
    wait instead of being rejected, and are written exactly once when the grant is restored."""
    import os

    from playhouse.db_url import parse

    params = parse(database_url)
    role = f"dspy_tokens_test_{os.getpid()}"
    _pg_admin(database_url, f"DROP ROLE IF EXISTS {role}", f"CREATE ROLE {role} LOGIN")
    spill = tmp_path / "spill"
    try:
        owner = make_tracker(database_url, spill_dir=tmp_path / "owner")  # creates the schema
        assert owner.flush(timeout=30)
        grant = (f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}", f"GRANT ALL ON SCHEMA public TO {role}",
                 f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
        _run_in(database_url, *grant)
        url = f"postgresql://{role}@{params['host']}:{params['port']}/{params['database']}"
        tracker = make_tracker(url, spill_dir=spill)
        with FakeLLMServer() as server:
            warm(tracker, server)
            _run_in(database_url, f"REVOKE INSERT ON token_usage FROM {role}")
            calls(tracker, server, 20)
            waited = not tracker.flush(timeout=1.5)
            error = tracker.stats.last_error
            _run_in(database_url, f"GRANT INSERT ON token_usage TO {role}")
            flushed = tracker.flush(timeout=60)
            found = report("1 postgres revoked INSERT (42501)", figures(database_url, server.answered, spill))
        tracker.close()
    finally:
        _run_in(database_url, f"REASSIGN OWNED BY {role} TO postgres", f"DROP OWNED BY {role}")
        _pg_admin(database_url, f"DROP ROLE IF EXISTS {role}")
    assert waited and flushed, tracker.stats.last_error
    assert "42501" in error
    assert_exactly_once(found)


def _run_in(url: str, *statements: str) -> None:
    from tests.support.db import store_of

    store = store_of(url)
    with store.db.connection_context():
        for statement in statements:
            store.db.execute_sql(statement)


@pytest.mark.parametrize("database_url, code", [
    pytest.param("postgres", "53100", marks=pytest.mark.postgres, id="postgres-disk_full"),
    pytest.param("postgres", "53300", marks=pytest.mark.postgres, id="postgres-too_many_connections"),
    pytest.param("postgres", "40P01", marks=pytest.mark.postgres, id="postgres-deadlock"),
    pytest.param("postgres", "40001", marks=pytest.mark.postgres, id="postgres-serialization"),
    pytest.param("postgres", "57P01", marks=pytest.mark.postgres, id="postgres-admin_shutdown"),
    pytest.param("postgres", "42P01", marks=pytest.mark.postgres, id="postgres-undefined_table"),
    pytest.param("mysql", 1114, marks=pytest.mark.mysql, id="mysql-table_full"),
    pytest.param("mysql", 1021, marks=pytest.mark.mysql, id="mysql-disk_full"),
    pytest.param("mysql", 1290, marks=pytest.mark.mysql, id="mysql-read_only"),
    pytest.param("mysql", 1792, marks=pytest.mark.mysql, id="mysql-read_only_transaction"),
    pytest.param("mysql", 1213, marks=pytest.mark.mysql, id="mysql-deadlock"),
    pytest.param("mysql", 1146, marks=pytest.mark.mysql, id="mysql-no_such_table"),
], indirect=["database_url"])
def test_server_errors_of_the_databases_state_keep_the_rows(make_tracker, database_url, tmp_path, code):
    """The server fails every insert with this error (raised by a trigger, so it is the server's own error on
    the raw cursor) while calls go on: rows wait, none is rejected, all are written once after."""
    spill = tmp_path / "spill"
    tracker = make_tracker(database_url, spill_dir=spill)
    with FakeLLMServer() as server:
        warm(tracker, server)
        fail_writes(database_url, code)
        try:
            calls(tracker, server, 15)
            waited = not tracker.flush(timeout=1.5)
            error = tracker.stats.last_error
        finally:
            stop_refusing(database_url)
        flushed = tracker.flush(timeout=60)
        found = report(f"1 {database_url.split(':')[0]} server error {code}", figures(database_url, server.answered,
                                                                                   spill))
    assert waited and flushed, tracker.stats.last_error
    assert str(code) in error
    assert_exactly_once(found)


@pytest.fixture
def short_sqlite_busy_timeout(monkeypatch):
    import dspy_tokens.store._db as db  # the pragmas every SQLite connection is opened with (no public knob)
    monkeypatch.setattr(db, "SQLITE_PRAGMAS", {**db.SQLITE_PRAGMAS, "busy_timeout": 100})


def calls_until_rows_wait(tracker, server, chunk: int = 20, most: int = 400) -> bool:
    """Calls until rows wait on the database. How many rows still fit on a full disk varies: SQLite first reuses
    the space its database and WAL files already hold."""
    for made in range(0, most, chunk):
        calls(tracker, server, chunk, tag=f"call {made}")
        if not tracker.flush(timeout=1.5):
            return True
    return False


def test_a_full_disk_under_sqlite_keeps_the_rows(make_tracker, tmp_path):
    """The SQLite file's disk fills up ("database or disk is full"): rows wait (spilled elsewhere), none is
    rejected, and all are written once when space is freed."""
    with tmpfs(tmp_path / "disk", "1m") as disk:
        url, spill = f"sqlite:///{disk / 'usage.db'}", tmp_path / "spill"
        tracker = make_tracker(url, spill_dir=spill, max_buffer=10)
        with FakeLLMServer() as server:
            warm(tracker, server)
            fill(disk)
            waited = calls_until_rows_wait(tracker, server)
            error = tracker.stats.last_error
            (disk / "filler").unlink()
            flushed = tracker.flush(timeout=60)
            found = report("1 sqlite full disk", figures(url, server.answered, spill))
        tracker.close()
    assert waited and flushed, tracker.stats.last_error
    assert "full" in error
    assert_exactly_once(found)


def test_a_read_only_sqlite_database_keeps_the_rows(make_tracker, tmp_path, short_sqlite_busy_timeout):
    """The SQLite file's directory is read-only (a read-only bind mount, as a read-only volume): rows wait,
    none is rejected, and all are written once when it is writable again."""
    data = tmp_path / "data"
    data.mkdir()
    url, spill = f"sqlite:///{data / 'usage.db'}", tmp_path / "spill"
    first = make_tracker(url, spill_dir=tmp_path / "first")
    with FakeLLMServer() as server:
        warm(first, server)
        first.close()
        with read_only(data):
            tracker = make_tracker(url, spill_dir=spill)
            calls(tracker, server, 20)
            waited = not tracker.flush(timeout=1.5)
            error = tracker.stats.last_error
        flushed = tracker.flush(timeout=60)
        found = report("1 sqlite read-only database", figures(url, server.answered, spill))
    assert waited and flushed, tracker.stats.last_error
    assert "readonly" in error or "read-only" in error or "unable to open" in error
    assert_exactly_once(found)
