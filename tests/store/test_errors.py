"""The one classification of driver errors (``store/_errors.py``), fed with real errors from real servers: the
database's state (keep the rows, retry), contention (retry now), or a row's data (reject that row). PostgreSQL
raises any SQLSTATE from PL/pgSQL and MariaDB any error number from ``SIGNAL``, so every class is produced by the
server itself, through the same raw cursor the write path uses; SQLite's are produced by real conditions."""

from __future__ import annotations

import sqlite3

import pytest

from dspy_tokens.errors import StorageConflict, StorageRejected, StorageUnavailable
from dspy_tokens.store import Store
from dspy_tokens.store._db import classify

UNAVAILABLE, CONFLICT, REJECTED = StorageUnavailable, StorageConflict, StorageRejected
POSTGRES = pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)],
                                   indirect=True)
MYSQL = pytest.mark.parametrize("database_url", [pytest.param("mysql", marks=pytest.mark.mysql)], indirect=True)


def raised(run) -> BaseException:
    """The exception ``run()`` raises (the test fails if it raises none)."""
    try:
        run()
    except Exception as exc:  # noqa: BLE001 - what the driver raised is the subject of the test
        return exc
    raise AssertionError("nothing was raised")


def kind(exc: BaseException) -> type:
    """The exact StorageError class the classification gives (a conflict is also 'unavailable')."""
    return type(classify(exc))


@POSTGRES
@pytest.mark.parametrize("sqlstate, expected", [
    ("53100", UNAVAILABLE),  # disk_full
    ("53200", UNAVAILABLE),  # out_of_memory
    ("53300", UNAVAILABLE),  # too_many_connections
    ("57014", UNAVAILABLE),  # query_canceled (statement_timeout)
    ("25006", UNAVAILABLE),  # read_only_sql_transaction (a psycopg2 InternalError)
    ("57P01", UNAVAILABLE),  # admin_shutdown
    ("08006", UNAVAILABLE),  # connection_failure
    ("42501", UNAVAILABLE),  # insufficient_privilege (a ProgrammingError: a revoked grant, not the row)
    ("42P01", UNAVAILABLE),  # undefined_table
    ("58030", UNAVAILABLE),  # io_error
    ("40001", CONFLICT),  # serialization_failure
    ("40P01", CONFLICT),  # deadlock_detected
    ("55P03", CONFLICT),  # lock_not_available (lock_timeout)
    ("23505", CONFLICT),  # unique_violation: another writer stored the same call first
    ("22021", REJECTED),  # character_not_in_repertoire
    ("22P05", REJECTED),  # untranslatable_character
    ("22003", REJECTED),  # numeric_value_out_of_range
    ("23502", REJECTED),  # not_null_violation
    ("23514", REJECTED),  # check_violation
])
def test_postgresql_errors_are_classified_by_their_sqlstate(database_url, sqlstate, expected):
    """A real PostgreSQL error of each SQLSTATE, raised on the raw cursor (as batch inserts are) and through
    Peewee, is classified by its SQLSTATE: only data and integrity errors reject a row."""
    store = Store(database_url)
    statement = f"DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{sqlstate}'; END $$"
    with store.db.connection_context():
        raw = raised(lambda: store.db.cursor().execute(statement))
        store.db.rollback()
        wrapped = raised(lambda: store.db.execute_sql(statement))
    assert type(raw).__module__.startswith("psycopg2") and raw.pgcode == sqlstate
    assert kind(raw) is expected and kind(wrapped) is expected
    assert sqlstate in str(classify(raw))  # the message names the code


@MYSQL
@pytest.mark.parametrize("errno, expected", [
    (1290, UNAVAILABLE),  # ER_OPTION_PREVENTS_STATEMENT (--read-only)
    (1792, UNAVAILABLE),  # ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION
    (1114, UNAVAILABLE),  # ER_RECORD_FILE_FULL (table full)
    (1021, UNAVAILABLE),  # ER_DISK_FULL
    (1040, UNAVAILABLE),  # ER_CON_COUNT_ERROR (too many connections)
    (1969, UNAVAILABLE),  # ER_STATEMENT_TIMEOUT (MariaDB max_statement_time)
    (3024, UNAVAILABLE),  # ER_QUERY_TIMEOUT (MySQL max_execution_time)
    (1142, UNAVAILABLE),  # ER_TABLEACCESS_DENIED_ERROR
    (1146, UNAVAILABLE),  # ER_NO_SUCH_TABLE (a ProgrammingError)
    (1205, CONFLICT),  # ER_LOCK_WAIT_TIMEOUT
    (1213, CONFLICT),  # ER_LOCK_DEADLOCK
    (1062, CONFLICT),  # ER_DUP_ENTRY
    (1366, REJECTED),  # incorrect string value
    (1406, REJECTED),  # data too long
    (1048, REJECTED),  # column cannot be null
    (1264, REJECTED),  # out of range value
])
def test_mysql_errors_are_classified_by_their_error_number(database_url, errno, expected):
    """A real MariaDB error of each number (SIGNAL ... MYSQL_ERRNO), raw and through Peewee, is classified by its
    number: only data errors reject a row."""
    store = Store(database_url)
    statement = f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected', MYSQL_ERRNO = {errno}"
    with store.db.connection_context():
        raw = raised(lambda: store.db.cursor().execute(statement))
        wrapped = raised(lambda: store.db.execute_sql(statement))
    assert type(raw).__module__.startswith("pymysql") and raw.args[0] == errno
    assert kind(raw) is expected and kind(wrapped) is expected
    assert str(errno) in str(classify(raw))


def test_sqlite_locked_read_only_and_refused_rows(tmp_path):
    """SQLite: a write lock held elsewhere is contention; a read-only database is its state; a constraint or a
    trigger refusing a row is the row's data; a value no driver can encode is the row's data."""
    path = tmp_path / "t.db"
    setup = sqlite3.connect(path)
    setup.executescript("""
        CREATE TABLE t (v TEXT NOT NULL);
        CREATE TRIGGER refuse BEFORE INSERT ON t WHEN NEW.v = 'refuse' BEGIN SELECT RAISE(ABORT, 'refused'); END;
    """)
    setup.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    locked = raised(lambda: sqlite3.connect(path, timeout=0.05).execute("INSERT INTO t VALUES ('x')"))
    holder.execute("COMMIT")
    read_only = raised(lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("INSERT INTO t VALUES ('x')"))
    conn = sqlite3.connect(path)
    trigger = raised(lambda: conn.execute("INSERT INTO t VALUES ('refuse')"))
    not_null = raised(lambda: conn.execute("INSERT INTO t VALUES (NULL)"))
    surrogate = raised(lambda: conn.execute("INSERT INTO t VALUES (?)", ("lone \ud800",)))
    too_big = raised(lambda: conn.execute("INSERT INTO t VALUES (?)", (2**70,)))
    assert "locked" in str(locked) and kind(locked) is CONFLICT
    assert "readonly" in str(read_only) and kind(read_only) is UNAVAILABLE
    assert kind(trigger) is REJECTED and kind(not_null) is REJECTED
    assert isinstance(surrogate, UnicodeEncodeError) and kind(surrogate) is REJECTED
    assert isinstance(too_big, OverflowError) and kind(too_big) is REJECTED


@POSTGRES
def test_a_nul_in_a_string_is_refused_by_psycopg2_before_the_server(database_url):
    """psycopg2 refuses a NUL in a string parameter itself (a ValueError): that row's data."""
    store = Store(database_url)
    with store.db.connection_context():
        nul = raised(lambda: store.db.cursor().execute("SELECT %s", ("bad\x00feature",)))
    assert isinstance(nul, ValueError) and kind(nul) is REJECTED


def test_an_unreachable_server_is_unavailable():
    """A refused connection (nothing listens) is the database's state."""
    store = Store("postgresql://postgres@127.0.0.1:1/test")
    refused = raised(store.db.connect)
    assert kind(refused) is UNAVAILABLE
