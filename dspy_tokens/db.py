"""Opening the database from a URL, with the settings each backend needs for a multi-process deployment."""

from __future__ import annotations

import os
from pathlib import Path

import peewee
from playhouse import db_url

DEFAULT_URL = "sqlite:///dspy_tokens.db"
ENV_VAR = "DSPY_TOKENS_DATABASE_URL"
SQLITE_PRAGMAS = {
    "journal_mode": "wal",  # readers never block the writer; other processes keep working
    "synchronous": "normal",  # durable at WAL checkpoints; ~20k commits/s instead of ~1.4k
    "busy_timeout": 5000,  # wait for a lock instead of failing with "database is locked"
}


def resolve_url(url: str | None = None) -> str:
    return url or os.environ.get(ENV_VAR) or DEFAULT_URL


def open_database(url: str | None = None) -> peewee.Database:
    """A Peewee database for ``url`` (any ``playhouse.db_url`` scheme). Does not connect yet."""
    url = resolve_url(url)
    scheme = url.split(":", 1)[0].lower()
    options: dict = {}
    if scheme.startswith("sqlite"):
        options["pragmas"] = SQLITE_PRAGMAS
        options["timeout"] = 5
        path = db_url.parse(url).get("database")
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif scheme.startswith("postgres"):
        options["connect_timeout"] = 5
    elif scheme.startswith("mysql"):
        options.update(connect_timeout=5, charset="utf8mb4")
    try:
        return db_url.connect(url, **options)
    except Exception as exc:
        raise ValueError(f"database URL {redact(url)!r} is not usable ({exc}); expected e.g. "
                         "sqlite:///usage.db, postgresql://user@host:5432/db or mysql://user@host:3306/db") from exc


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parsed = db_url.urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@", 1)
    return url


def dialect(db: peewee.Database) -> str:
    if isinstance(db, peewee.SqliteDatabase):
        return "sqlite"
    if isinstance(db, peewee.PostgresqlDatabase):
        return "postgresql"
    if isinstance(db, peewee.MySQLDatabase):
        return "mysql"
    raise ValueError(f"unsupported database {type(db).__name__}; use SQLite, PostgreSQL or MySQL/MariaDB")


def write_transaction(db: peewee.Database):
    """A transaction that takes the write lock up front on SQLite (a DEFERRED one fails under contention)."""
    if isinstance(db, peewee.SqliteDatabase):
        return db.atomic("IMMEDIATE")
    return db.atomic()


def insert_sql(db: peewee.Database, table: str, columns: tuple[str, ...]) -> str:
    """A batch INSERT for :func:`executemany` (PostgreSQL: one ``%s`` that ``execute_values`` expands)."""
    values = "%s" if dialect(db) == "postgresql" else f"({', '.join([db.param] * len(columns))})"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}"


def upsert_sql(db: peewee.Database, table: str, key: tuple[str, ...], measures: tuple[str, ...]) -> str:
    """A batch INSERT that adds ``measures`` to an existing row with the same ``key``."""
    insert = insert_sql(db, table, (*key, *measures))
    if dialect(db) == "mysql":
        return insert + " ON DUPLICATE KEY UPDATE " + ", ".join(f"{c} = {c} + VALUES({c})" for c in measures)
    return (insert + f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET "
            + ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in measures))


def executemany(db: peewee.Database, cursor, sql: str, params: list[tuple]) -> None:
    """Run a batch statement from :func:`insert_sql`/:func:`upsert_sql` as few round trips as the driver allows:
    multi-row statements on PostgreSQL (``execute_values``) and MySQL (pymysql rewrites ``executemany``); SQLite
    has no round trips. Keys in one upsert batch must be unique."""
    if not params:
        return
    if dialect(db) == "postgresql":
        from psycopg2.extras import execute_values
        execute_values(cursor, sql, params, page_size=1000)
    else:
        cursor.executemany(sql, params)
