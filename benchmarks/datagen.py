"""Synthetic usage databases for the scale benchmarks (``check()`` latency, reports).

The rows are generated inside the database server (a recursive CTE on SQLite, ``generate_series`` on PostgreSQL,
a cross join of a digit table on MariaDB) with the indexes dropped, then the indexes are rebuilt and the hourly
limit counters (``token_usage_counters``, ``token_usage_model_counters``) are computed with ``GROUP BY`` — the
same numbers :func:`dspy_tokens.counters.rebuild` would compute, much faster. Report rollups are filled with
:func:`dspy_tokens.rollups.rebuild` when asked.

Shape (``GENERATOR_VERSION``): ``USERS`` users, each in one of ``GUILDS`` guilds, rows spread evenly over the
last ``DAYS`` days (so some of them are outside a 30-day window), one configured model, prompt 100–999 and
completion 20–319 tokens, priced like gpt-4o-mini. User ids are a multiplicative hash of the row number, so every
user has about ``rows / USERS`` rows and every guild ``rows / GUILDS``.

Databases are cached: SQLite files under ``cache_dir``, PostgreSQL/MariaDB databases named
``dspy_tokens_bench_<rows>``; a table ``bench_meta`` records the generator and schema versions and when the rows
were made, and a database is rebuilt when those differ or it is older than ``MAX_AGE_HOURS``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from playhouse.db_url import parse

GENERATOR_VERSION = 1
USERS, GUILDS, DAYS = 10_000, 500, 35
MODEL, RESPONSE_MODEL = "openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18"
INPUT_RATE, OUTPUT_RATE = "0.00000015", "0.0000006"  # gpt-4o-mini, USD per token
MAX_AGE_HOURS = 12
HASH_MULT, HASH_MOD = 2654435761, 4294967296


@dataclass
class Dataset:
    backend: str
    rows: int
    url: str
    built_seconds: float | None  # None when reused from the cache
    generated_at: int  # unix seconds: rows span [generated_at - DAYS days, generated_at)


def user_of(i: int) -> int:
    return 1 + (i * HASH_MULT % HASH_MOD) % USERS


def guild_of(user_id: int) -> int:
    return 1 + user_id % GUILDS


def server_url(backend: str) -> str:
    if backend == "postgresql":
        return os.environ.get("DSPY_TOKENS_BENCH_POSTGRES_URL",
                              os.environ.get("DSPY_TOKENS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    if backend == "mysql":
        return os.environ.get("DSPY_TOKENS_BENCH_MYSQL_URL",
                              os.environ.get("DSPY_TOKENS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
    raise ValueError(backend)


def _connect_raw(url: str, database: str | None = None):
    """A DB-API connection (autocommit) to ``url``'s server, to ``database`` if given."""
    params = parse(url)
    if url.startswith("postgres"):
        import psycopg2
        conn = psycopg2.connect(dbname=database or params.get("database"), user=params.get("user"),
                                host=params.get("host"), port=params.get("port"), password=params.get("password"),
                                connect_timeout=5)
        conn.autocommit = True
        return conn
    import pymysql
    return pymysql.connect(host=params.get("host") or "127.0.0.1", port=int(params.get("port") or 3306),
                           user=params.get("user"), password=params.get("password") or "",
                           database=database or params.get("database"), autocommit=True, connect_timeout=5,
                           charset="utf8mb4")


def server_available(backend: str) -> str | None:
    """None when the backend's server answers, else why not."""
    if backend == "sqlite":
        return None
    try:
        _connect_raw(server_url(backend)).close()
        return None
    except Exception as exc:  # driver missing or server down
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def private_database(backend: str, name: str, recreate: bool = False) -> str:
    """URL of database ``name`` on the backend's server, created if missing (dropped first if ``recreate``)."""
    url = server_url(backend)
    conn = _connect_raw(url)
    try:
        cur = conn.cursor()
        if recreate:
            if backend == "postgresql":
                cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
        if backend == "postgresql":
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {name}")
        else:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS {name} CHARACTER SET utf8mb4")
    finally:
        conn.close()
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def drop_database(backend: str, name: str) -> None:
    conn = _connect_raw(server_url(backend))
    try:
        force = " WITH (FORCE)" if backend == "postgresql" else ""
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}{force}")
    finally:
        conn.close()


# -- the generator, per dialect --------------------------------------------------------------------------------

COLUMNS = ("id", "call_uuid", "session_id", "call_index", "user_id", "guild_id", "channel_id", "feature", "module",
           "model", "response_model", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
           "reasoning_tokens", "cost_usd", "cost_source", "cache_hit", "usage_reported", "error", "latency_ms",
           "created_at")


def _row_exprs(dialect: str) -> list[str]:
    """SELECT expressions for COLUMNS over a subquery exposing i (row number), h (hash), t (unix seconds)."""
    user = f"(1 + h % {USERS})"
    prompt, completion = "(100 + (h / 256) % 900)", "(20 + (h / 65536) % 300)"
    if dialect == "sqlite":
        uuid = "printf('%032x', i)"
        session = "('s' || (i / 3))"
        created = "(strftime('%Y-%m-%d %H:%M:%S', t, 'unixepoch') || printf('.%06d', (i * 7919) % 1000000))"
        cost = f"round({prompt} * {INPUT_RATE} + {completion} * {OUTPUT_RATE}, 12)"
        false, true = "0", "1"
    elif dialect == "postgresql":
        uuid = "lpad(to_hex(i), 32, '0')"
        session = "('s' || (i / 3))"
        created = "(to_timestamp(t) AT TIME ZONE 'UTC' + ((i * 7919) % 1000000) * interval '1 microsecond')"
        cost = f"round({prompt} * {INPUT_RATE}::numeric + {completion} * {OUTPUT_RATE}::numeric, 12)"
        false, true = "false", "true"
        user = f"(1 + h % {USERS})::bigint"
    else:
        uuid = "LPAD(HEX(i), 32, '0')"
        session = "CONCAT('s', i DIV 3)"
        created = "(FROM_UNIXTIME(t) + INTERVAL ((i * 7919) % 1000000) MICROSECOND)"
        prompt, completion = "(100 + (h DIV 256) % 900)", "(20 + (h DIV 65536) % 300)"
        cost = f"ROUND({prompt} * {INPUT_RATE} + {completion} * {OUTPUT_RATE}, 12)"
        false, true = "0", "1"
    guild = f"(1 + {user} % {GUILDS})"
    return [
        "i + 1", uuid, session, "i % 3", user, guild, f"({guild} * 100 + i % 5)", "'chat'", "'Predict'",
        f"'{MODEL}'", f"'{RESPONSE_MODEL}'", prompt, completion, f"({prompt} + {completion})", "0", "0", cost,
        "'price_map'", false, true, "NULL", "(200 + i % 800)", created,
    ]


def _fill_sql(dialect: str, start: int, count: int, total: int, t0: int) -> str:
    span = DAYS * 86400
    t = f"({t0} + (i * {span}) / {total})"
    h = f"((i * {HASH_MULT}) % {HASH_MOD})"
    cols = ", ".join(COLUMNS)
    exprs = ", ".join(_row_exprs(dialect))
    if dialect == "sqlite":
        return (f"WITH RECURSIVE seq(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM seq WHERE i < {start + count - 1}) "
                f"INSERT INTO token_usage ({cols}) SELECT {exprs} FROM "
                f"(SELECT i, {h} AS h, {t} AS t FROM seq)")
    if dialect == "postgresql":
        return (f"INSERT INTO token_usage ({cols}) SELECT {exprs} FROM "
                f"(SELECT i, {h} AS h, {t} AS t FROM generate_series({start}::bigint, {start + count - 1}) AS g(i)) s")
    t = f"({t0} + (i * {span}) DIV {total})"
    # MariaDB: the sequence engine (seq_0_to_N) generates the numbers.
    return (f"INSERT INTO token_usage ({cols}) SELECT {exprs} FROM "
            f"(SELECT seq AS i, {h} AS h, {t} AS t FROM seq_{start}_to_{start + count - 1}) s")


def _hour_sql(dialect: str) -> str:
    if dialect == "sqlite":
        return "(CAST(strftime('%s', substr(created_at, 1, 19)) AS INTEGER) / 3600)"
    if dialect == "postgresql":
        return "(CAST(floor(extract(epoch FROM created_at) / 3600) AS BIGINT))"
    return "(UNIX_TIMESTAMP(created_at) DIV 3600)"


def _counter_sql(dialect: str) -> list[str]:
    from dspy_tokens.rollups import pico_sql

    hour = _hour_sql(dialect)
    pico = pico_sql(dialect)
    unpriced = "SUM(CASE WHEN cost_usd IS NULL AND error IS NULL THEN 1 ELSE 0 END)"
    measures = f"COUNT(*), COALESCE(SUM(total_tokens), 0), COALESCE(SUM({pico}), 0), {unpriced}"
    out = []
    for scope, key in (("global", "0"), ("user", "user_id"), ("guild", "guild_id")):
        where = "" if scope == "global" else f" WHERE {key} IS NOT NULL"
        group = f"{key}, {hour}" if scope != "global" else hour
        out.append(f"INSERT INTO token_usage_counters (scope, scope_id, hour, calls, tokens, cost_pusd, "
                   f"unpriced_calls) SELECT '{scope}', {key}, {hour}, {measures} FROM token_usage{where} "
                   f"GROUP BY {group}")
        group_m = f"{key}, model, {hour}" if scope != "global" else f"model, {hour}"
        out.append(f"INSERT INTO token_usage_model_counters (scope, scope_id, model, hour, calls, tokens, "
                   f"cost_pusd, unpriced_calls) SELECT '{scope}', {key}, model, {hour}, {measures} "
                   f"FROM token_usage{where} GROUP BY {group_m}")
    return out


# -- building and caching --------------------------------------------------------------------------------------

def _signature() -> dict:
    from dspy_tokens import migrations
    return {"generator": GENERATOR_VERSION, "schema": migrations.LATEST, "users": USERS, "guilds": GUILDS,
            "days": DAYS}


def _read_meta(db) -> dict | None:
    try:
        row = db.execute_sql("SELECT value FROM bench_meta WHERE name = 'dataset'").fetchone()
    except Exception:
        return None
    return json.loads(row[0]) if row else None


class _Exec:
    """Runs SQL on a raw DB-API connection, logging slow steps."""

    def __init__(self, conn, say):
        self.conn, self.say = conn, say

    def __call__(self, sql: str, label: str | None = None):
        started = time.perf_counter()
        cur = self.conn.cursor()
        cur.execute(sql)
        if label:
            self.say(f"      {label}: {time.perf_counter() - started:.1f}s")
        return cur


def ensure_dataset(backend: str, rows: int, cache_dir: Path, *, fresh: bool = False, rollups: bool = False,
                   say: Callable[[str], None] = print) -> Dataset:
    """A database holding ``rows`` synthetic usage rows with counters, built or reused from the cache."""
    from dspy_tokens.store import Store

    wanted = {**_signature(), "rows": rows, "rollups": rollups}
    if backend == "sqlite":
        cache_dir.mkdir(parents=True, exist_ok=True)
        path = cache_dir / f"usage-{rows}.db"
        url = f"sqlite:///{path}"
    else:
        url = private_database(backend, f"dspy_tokens_bench_{rows}")
    store = Store(url)
    if not fresh:
        with store.db.connection_context():
            meta = _read_meta(store.db)
        if meta and all(meta.get(k) == v for k, v in wanted.items()) and \
                time.time() - meta["generated_at"] < MAX_AGE_HOURS * 3600:
            store.close()
            return Dataset(backend, rows, url, None, meta["generated_at"])
    store.close()
    # Start from nothing.
    if backend == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        url = private_database(backend, f"dspy_tokens_bench_{rows}", recreate=True)
    say(f"    building {rows:,} rows on {backend} ...")
    started = time.perf_counter()
    store = Store(url)
    store.ensure_schema()
    store.close()
    t0 = int(time.time()) - DAYS * 86400
    if backend == "sqlite":
        import sqlite3
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-400000")
        conn.execute("PRAGMA temp_store=MEMORY")
        indexes = [r[0] for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'token_usage' AND sql IS NOT NULL")]
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'token_usage' AND sql IS NOT NULL")]
    else:
        conn = _connect_raw(url)
        if backend == "postgresql":
            cur = conn.cursor()
            cur.execute("SET synchronous_commit = off")
            cur.execute("SET maintenance_work_mem = '1GB'")
            cur.execute("SET work_mem = '256MB'")
            cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'token_usage' "
                        "AND indexname NOT LIKE '%%pkey'")
            found = cur.fetchall()
        else:
            cur = conn.cursor()
            cur.execute("SET SESSION unique_checks = 0")
            cur.execute("SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
                        "AND TABLE_NAME = 'token_usage' AND INDEX_NAME <> 'PRIMARY'")
            index_names = [r[0] for r in cur.fetchall()]
            cur.execute("SHOW CREATE TABLE token_usage")
            create = cur.fetchone()[1]
            found = [(name, _mysql_index_def(create, name)) for name in index_names]
        names, indexes = [f[0] for f in found], [f[1] for f in found]
    run = _Exec(conn, say)
    dialect = backend
    for name in names:
        run(f"DROP INDEX {name}" + (" ON token_usage" if backend == "mysql" else ""))
    chunk = 1_000_000 if backend != "mysql" else 250_000
    fill_started = time.perf_counter()
    if backend == "sqlite":
        run("BEGIN")
    for start in range(0, rows, chunk):
        run(_fill_sql(dialect, start, min(chunk, rows - start), rows, t0))
    if backend == "sqlite":
        run("COMMIT")
    say(f"      rows: {time.perf_counter() - fill_started:.1f}s")
    for sql in indexes:
        run(sql)
    say(f"      rows + indexes: {time.perf_counter() - fill_started:.1f}s")
    counters_started = time.perf_counter()
    if backend == "sqlite":
        run("BEGIN")
    for sql in _counter_sql(dialect):
        run(sql)
    if rollups:
        from dspy_tokens import rollups as rollup_module
        from dspy_tokens.db import open_database
        if backend == "sqlite":
            run("COMMIT")
        db = open_database(url)
        with db.connection_context(), db.atomic():
            rollup_module.rebuild(db, dialect)
        if backend == "sqlite":
            run("BEGIN")
    meta = {**wanted, "generated_at": t0 + DAYS * 86400}
    run("CREATE TABLE IF NOT EXISTS bench_meta (name VARCHAR(32) PRIMARY KEY, value TEXT)")
    run("DELETE FROM bench_meta")
    value = json.dumps(meta).replace("'", "''")
    run(f"INSERT INTO bench_meta (name, value) VALUES ('dataset', '{value}')")
    if backend == "sqlite":
        run("COMMIT")
    say(f"      counters{' + rollups' if rollups else ''}: {time.perf_counter() - counters_started:.1f}s")
    if backend == "sqlite":
        run("ANALYZE")
        run("PRAGMA wal_checkpoint(TRUNCATE)")
    elif backend == "postgresql":
        for table in ("token_usage", "token_usage_counters", "token_usage_model_counters"):
            run(f"VACUUM (ANALYZE) {table}")
    else:
        run("ANALYZE TABLE token_usage, token_usage_counters, token_usage_model_counters").fetchall()
    conn.close()
    built = time.perf_counter() - started
    say(f"    built {rows:,} rows on {backend} in {built:.1f}s")
    return Dataset(backend, rows, url, built, meta["generated_at"])


def _mysql_index_def(create_table: str, name: str) -> str:
    for line in create_table.splitlines():
        line = line.strip().rstrip(",")
        if f"KEY `{name}`" in line:
            return f"ALTER TABLE token_usage ADD {line}"
    raise ValueError(f"index {name} not found")


def check_targets(dataset: Dataset, count: int) -> list[tuple[int, int]]:
    """``count`` (user_id, guild_id) pairs of users that have rows, spread over the id space."""
    pairs = []
    for k in range(count):
        i = (k * 7_368_787) % max(dataset.rows, 1)
        user = user_of(i)
        pairs.append((user, guild_of(user)))
    return pairs
