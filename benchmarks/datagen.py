"""Synthetic usage databases for the scale benchmarks (``check()`` latency, reports).

SQLite and PostgreSQL. The rows are generated inside the database (a recursive CTE on SQLite, ``generate_series``
on PostgreSQL) with the table's secondary indexes dropped, which are then rebuilt with their original definitions.
The hourly limit counters (``token_usage_counters``, ``token_usage_model_counters``) are computed with ``GROUP BY``
from the same generator — the numbers :func:`dspy_tokens.counters.rebuild` computes from the rows (verified at
build time against the rows' totals), much faster. Report rollups are filled with
:func:`dspy_tokens.rollups.rebuild` when asked.

Shape (``GENERATOR_VERSION``): ``USERS`` users, each in one of ``GUILDS`` guilds, rows spread evenly over the
last ``DAYS`` days (so some of them are outside a 30-day window), one configured model, prompt 100–999 and
completion 20–319 tokens, priced like gpt-4o-mini. User ids are a multiplicative hash of the row number, so every
user has about ``rows / USERS`` rows and every guild ``rows / GUILDS``.

Databases are cached: SQLite files under ``cache_dir``, PostgreSQL databases named
``dspy_tokens_bench_<rows>``; a table ``bench_meta`` records the generator and schema versions and when the rows
were made, and a database is rebuilt when those differ or it is older than ``MAX_AGE_HOURS``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from decimal import Decimal
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
    raise ValueError(dialect)


def _generator(dialect: str, total: int, t0: int) -> str:
    """A subquery of (user_id, hour, tokens, pusd), one per generated row, computed exactly as the rows are
    (no table scan, no timestamp parsing): a row's hour is ``t // 3600`` and its cost in picodollars is
    ``prompt * 150,000 + completion * 600,000`` (gpt-4o-mini's rates times 10^12)."""
    span = DAYS * 86400
    h = f"((i * {HASH_MULT}) % {HASH_MOD})"
    prompt, completion = "(100 + (h / 256) % 900)", "(20 + (h / 65536) % 300)"
    pico_in, pico_out = int(Decimal(INPUT_RATE) * 10**12), int(Decimal(OUTPUT_RATE) * 10**12)
    inner = f"SELECT i, {h} AS h, ({t0} + (i * {span}) / {total}) / 3600 AS hour"
    if dialect == "sqlite":
        source = (f"(WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < {total - 1}) "
                  f"{inner} FROM seq)")
    elif dialect == "postgresql":
        source = f"({inner} FROM generate_series(0::bigint, {total - 1}) AS g(i))"
    else:
        raise ValueError(dialect)
    return (f"(SELECT 1 + h % {USERS} AS user_id, hour, {prompt} + {completion} AS tokens, "
            f"{prompt} * {pico_in} + {completion} * {pico_out} AS pusd FROM {source} gen_inner)")


def _counter_statements(dialect: str, total: int, t0: int) -> list[str]:
    """Fill both counter tables for the generated rows: per user, per guild, global (one model)."""
    temp = "TEMPORARY TABLE"
    counters = "INSERT INTO token_usage_counters (scope, scope_id, hour, calls, tokens, cost_pusd, unpriced_calls)"
    model_counters = ("INSERT INTO token_usage_model_counters (scope, scope_id, model, hour, calls, tokens, "
                      "cost_pusd, unpriced_calls)")
    out = [
        f"CREATE {temp} bench_uc AS SELECT user_id AS scope_id, hour, COUNT(*) AS calls, SUM(tokens) AS tokens, "
        f"SUM(pusd) AS pusd FROM {_generator(dialect, total, t0)} g GROUP BY user_id, hour",
        f"CREATE {temp} bench_gc AS SELECT 1 + scope_id % {GUILDS} AS scope_id, hour, SUM(calls) AS calls, "
        f"SUM(tokens) AS tokens, SUM(pusd) AS pusd FROM bench_uc GROUP BY 1 + scope_id % {GUILDS}, hour",
        f"CREATE {temp} bench_all AS SELECT 0 AS scope_id, hour, SUM(calls) AS calls, SUM(tokens) AS tokens, "
        f"SUM(pusd) AS pusd FROM bench_gc GROUP BY hour",
    ]
    for scope, table in (("global", "bench_all"), ("guild", "bench_gc"), ("user", "bench_uc")):
        cols = f"scope_id, hour, calls, tokens, pusd, 0 FROM {table} ORDER BY scope_id, hour"
        out.append(f"{counters} SELECT '{scope}', {cols}")
        out.append(f"{model_counters} SELECT '{scope}', scope_id, '{MODEL}', hour, calls, tokens, pusd, 0 "
                   f"FROM {table} ORDER BY scope_id, hour")
    out += ["DROP TABLE bench_uc", "DROP TABLE bench_gc", "DROP TABLE bench_all"]
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

    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"datasets are built on sqlite or postgresql, not {backend}")
    wanted = {**_signature(), "rows": rows, "rollups": rollups}
    name = f"dspy_tokens_bench_{rows}"
    path = cache_dir / f"usage-{rows}.db"
    url = f"sqlite:///{path}" if backend == "sqlite" else private_database(backend, name)
    if backend == "sqlite":
        cache_dir.mkdir(parents=True, exist_ok=True)
    if not fresh:
        store = Store(url)
        with store.db.connection_context():
            meta = _read_meta(store.db)
        store.close()
        if meta and all(meta.get(k) == v for k, v in wanted.items()) and \
                time.time() - meta["generated_at"] < MAX_AGE_HOURS * 3600:
            return Dataset(backend, rows, url, None, meta["generated_at"])
    if backend == "sqlite":  # start from nothing
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        url = private_database(backend, name, recreate=True)
    say(f"    building {rows:,} rows on {backend} ...")
    started = time.perf_counter()
    store = Store(url)
    store.ensure_schema()  # the library's own schema, every migration applied
    store.close()
    t0 = int(time.time()) - DAYS * 86400
    if backend == "sqlite":
        import sqlite3
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=OFF", "cache_size=-400000", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                               "AND tbl_name = 'token_usage' AND sql IS NOT NULL").fetchall()
        keys = []
    else:
        conn = _connect_raw(url)
        cur = conn.cursor()
        for setting in ("synchronous_commit = off", "maintenance_work_mem = '1GB'", "work_mem = '512MB'"):
            cur.execute(f"SET {setting}")
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'token_usage' "
                    "AND indexname NOT LIKE '%%pkey'")
        indexes = cur.fetchall()
        # The counters' primary keys are rebuilt after the load too (inserting into them row by row is slow).
        cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE contype = 'p' AND conrelid::regclass::text IN "
                    "('token_usage_counters', 'token_usage_model_counters')")
        keys = cur.fetchall()
    run = _Exec(conn, say)
    for index, _ in indexes:
        run(f"DROP INDEX {index}")
    for table, constraint, _ in keys:
        run(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
    step = time.perf_counter()
    if backend == "sqlite":
        run("BEGIN")
    chunk = 1_000_000
    for start in range(0, rows, chunk):
        run(_fill_sql(backend, start, min(chunk, rows - start), rows, t0))
    for sql in _counter_statements(backend, rows, t0):
        run(sql)
    meta = {**wanted, "generated_at": t0 + DAYS * 86400}
    run("CREATE TABLE IF NOT EXISTS bench_meta (name VARCHAR(32) PRIMARY KEY, value TEXT)")
    run("DELETE FROM bench_meta")
    value = json.dumps(meta).replace("'", "''")
    run(f"INSERT INTO bench_meta (name, value) VALUES ('dataset', '{value}')")
    if backend == "sqlite":
        run("COMMIT")
    say(f"      rows and counters: {time.perf_counter() - step:.1f}s")
    step = time.perf_counter()
    for _, sql in indexes:
        run(sql)
    for table, constraint, definition in keys:
        run(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {definition}")
    say(f"      indexes: {time.perf_counter() - step:.1f}s")
    _verify(run, rows)
    if rollups:
        from dspy_tokens import rollups as rollup_module
        from dspy_tokens.db import open_database
        step = time.perf_counter()
        db = open_database(url)
        with db.connection_context(), db.atomic():
            rollup_module.rebuild(db, backend)
        db.close()
        say(f"      rollups: {time.perf_counter() - step:.1f}s")
    if backend == "sqlite":
        run("ANALYZE")
        run("PRAGMA wal_checkpoint(TRUNCATE)")
    else:
        for table in ("token_usage", "token_usage_counters", "token_usage_model_counters"):
            run(f"VACUUM (ANALYZE) {table}")
    conn.close()
    built = time.perf_counter() - started
    say(f"    built {rows:,} rows on {backend} in {built:.1f}s")
    return Dataset(backend, rows, url, built, meta["generated_at"])


def _verify(run, rows: int) -> None:
    """The counters must say what the rows say (calls, tokens, picodollars), per scope."""
    from dspy_tokens.rollups import pico_sql

    dialect = "sqlite" if "sqlite3" in type(run.conn).__module__ else "postgresql"
    stored = tuple(int(v) for v in run(f"SELECT COUNT(*), SUM(total_tokens), SUM({pico_sql(dialect)}) "
                                       f"FROM token_usage").fetchone())
    for table in ("token_usage_counters", "token_usage_model_counters"):
        for scope in ("global", "user", "guild"):
            counted = tuple(int(v) for v in run(f"SELECT SUM(calls), SUM(tokens), SUM(cost_pusd) FROM {table} "
                                                f"WHERE scope = '{scope}'").fetchone())
            if counted != stored or stored[0] != rows:
                raise AssertionError(f"{table}/{scope}: counters say {counted}, rows say {stored}")


def check_targets(dataset: Dataset, count: int) -> list[tuple[int, int]]:
    """``count`` (user_id, guild_id) pairs of users that have rows, spread over the id space."""
    pairs = []
    for k in range(count):
        i = (k * 7_368_787) % max(dataset.rows, 1)
        user = user_of(i)
        pairs.append((user, guild_of(user)))
    return pairs
