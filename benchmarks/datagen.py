"""Synthetic usage databases for the scale benchmarks (``check()`` latency; reports can reuse them).

SQLite and PostgreSQL, with the library's own schema (created by its migrations). The fastest paths found:

* rows: generated inside the database engine (a recursive CTE on SQLite, ``generate_series`` on PostgreSQL) with
  the table's secondary indexes dropped; the indexes are then rebuilt from their original definitions;
* hourly limit counters (``token_usage_counters``, ``token_usage_model_counters``): computed with numpy from the
  same formulas as the rows (grouped per scope and hour), bulk-inserted (``executemany`` on SQLite, ``COPY`` on
  PostgreSQL with the primary keys rebuilt afterwards), and checked against the rows' own totals per scope —
  the numbers :meth:`dspy_tokens.store.Store.rebuild_counters` computes from the rows (compared row for row at 10k rows on
  SQLite), in a fraction of the time;
* SQLite loads with ``journal_mode=OFF`` (the tracker turns WAL back on when it opens the file) and is not
  ``ANALYZE``d, like a user's file; PostgreSQL's three usage tables are ``UNLOGGED`` (no WAL while loading) and
  ``VACUUM ANALYZE``d, as autovacuum would. Neither changes how a read is served: same pages, same indexes.
  Report rollups are filled with :func:`dspy_tokens.store.rebuild.rebuild_rollups` on request.

Shape (``GENERATOR_VERSION``): ``USERS`` users, each in one of ``GUILDS`` guilds, rows spread evenly over the
last ``DAYS`` days (some of them outside a 30-day window), one configured model, prompt 100–999 and completion
20–319 tokens, priced like gpt-4o-mini. Every user is active ``ACTIVE_HOURS`` consecutive hours a day (users'
daily hours are staggered), so a user has about ``rows / USERS`` rows in ~``6 x DAYS`` hourly counters, while each
guild (20 users) is active around the clock: a check reads ~180 counter rows for the user and ~720 for the guild
at 1M rows and up — the most a 30-day window can hold.

The datasets keep the two indexes the naive baseline needs, ``(user_id, created_at)`` and ``(guild_id,
created_at)``; the three others (``call_uuid``, ``(session_id, call_index)``, ``created_at``), which neither
``check()`` nor the naive query touches, are built only with ``full_schema=True`` (they are half the build time at
10M rows).

Databases are cached between invocations: SQLite files under ``cache_dir``, PostgreSQL databases named
``dspy_tokens_bench_<rows>``. Table ``bench_meta`` records the generator and schema versions and when the rows
were made; a database is rebuilt when those differ, when it is older than ``MAX_AGE_HOURS`` (the window moves),
or with ``fresh=True``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from playhouse.db_url import parse

GENERATOR_VERSION = 5
USERS, GUILDS, DAYS = 10_000, 500, 35
ACTIVE_HOURS = 6
NEEDED_INDEXES = ("tokenusage_user_id_created_at", "tokenusage_guild_id_created_at")
MODEL, RESPONSE_MODEL = "openai/gpt-4o-mini", "gpt-4o-mini-2024-07-18"
INPUT_RATE, OUTPUT_RATE = "0.00000015", "0.0000006"  # gpt-4o-mini, USD per token
MAX_AGE_HOURS = 12
HASH_MULT, HASH_MOD = 2654435761, 4294967296
CHUNK = 1_000_000


@dataclass
class Dataset:
    backend: str
    rows: int
    url: str
    built_seconds: float | None  # None when reused from the cache
    generated_at: int  # unix seconds: rows span [generated_at - DAYS days, generated_at)


def user_of(h: int, hour: int) -> int:
    """The user of a row with hash ``h`` in absolute hour ``hour``: one of the users active at that hour."""
    slot = (h % ACTIVE_HOURS + 24 - hour % 24) % 24
    return 1 + (slot + 24 * ((h // ACTIVE_HOURS) % 417)) % USERS


def guild_of(user_id: int) -> int:
    return 1 + user_id % GUILDS


def _pico(rate: str) -> int:
    return int(Decimal(rate) * 10**12)


# -- servers and private databases ------------------------------------------------------------------------------

def server_url(backend: str) -> str:
    if backend == "postgresql":
        return os.environ.get("DSPY_TOKENS_BENCH_POSTGRES_URL", os.environ.get(
            "DSPY_TOKENS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    if backend == "mysql":
        return os.environ.get("DSPY_TOKENS_BENCH_MYSQL_URL", os.environ.get(
            "DSPY_TOKENS_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"))
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
            cur.execute(f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgresql" else ""))
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
        conn.cursor().execute(f"DROP DATABASE IF EXISTS {name}" + (" WITH (FORCE)" if backend == "postgresql" else ""))
    finally:
        conn.close()


OUR_DATABASES = re.compile(r"^dspy_tokens_bench_(\d+|writer|eventloop|reports_\d+)$")


def cached_databases(backend: str) -> list[str]:
    """Names of the databases these benchmarks created on the backend's server."""
    conn = _connect_raw(server_url(backend))
    try:
        cur = conn.cursor()
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dspy_tokens_bench_%%'")
        return [r[0] for r in cur.fetchall() if OUR_DATABASES.match(r[0])]
    finally:
        conn.close()


# -- rows, generated by the database ---------------------------------------------------------------------------

COLUMNS = ("id", "call_uuid", "session_id", "call_index", "user_id", "guild_id", "channel_id", "feature", "module",
           "model", "response_model", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
           "reasoning_tokens", "cost_usd", "cost_source", "cache_hit", "usage_reported", "error", "latency_ms",
           "created_at", "request_type", "usage_estimated")
PROMPT, COMPLETION = "(100 + (h / 256) % 900)", "(20 + (h / 65536) % 300)"


def _user_sql(dialect: str) -> str:
    """The user of row (h, t): one of the users active in t's hour (see :func:`user_of`)."""
    slot = f"((h % {ACTIVE_HOURS} + 24 - (t / 3600) % 24) % 24)"
    user = f"(1 + ({slot} + 24 * ((h / {ACTIVE_HOURS}) % 417)) % {USERS})"
    return f"CAST({user} AS BIGINT)" if dialect == "postgresql" else user


def _row_exprs(dialect: str) -> list[str]:
    """SELECT expressions for COLUMNS over a subquery exposing i (row number), t (unix seconds), u (user),
    p and c (prompt and completion tokens)."""
    pico = f"(p * {_pico(INPUT_RATE)} + c * {_pico(OUTPUT_RATE)})"
    if dialect == "sqlite":
        uuid = "hex(i)"  # unique: the hex of i's decimal text
        created = "(datetime(t, 'unixepoch') || '.' || substr(CAST(1000000 + (i * 7919) % 1000000 AS TEXT), 2))"
        cost = f"({pico} / 1e12)"  # REAL, as the library's rows are stored on SQLite
        false, true = "0", "1"
    elif dialect == "postgresql":
        uuid = "to_hex(i)"
        created = "(timestamp '1970-01-01' + (t * 1000000 + (i * 7919) % 1000000) * interval '1 microsecond')"
        cost = f"CAST({pico} / 1e12 AS NUMERIC(24, 12))"
        false, true = "false", "true"
    else:
        raise ValueError(dialect)
    guild = f"(1 + u % {GUILDS})"
    return [
        "i + 1", uuid, "('s' || (i / 3))", "i % 3", "u", guild, f"({guild} * 100 + i % 5)", "'chat'", "'Predict'",
        f"'{MODEL}'", f"'{RESPONSE_MODEL}'", "p", "c", "(p + c)", "0", "0", cost, "'price_map'", false, true, "NULL",
        "(200 + i % 800)", created, "'chat'", false,
    ]


def _fill_sql(dialect: str, start: int, count: int, total: int, t0: int) -> str:
    t = f"({t0} + (i * {DAYS * 86400}) / {total})"
    h = f"((i * {HASH_MULT}) % {HASH_MOD})"
    if dialect == "sqlite":
        numbers = (f"(WITH RECURSIVE seq(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM seq "
                   f"WHERE i < {start + count - 1}) SELECT i FROM seq)")
        fence = "LIMIT -1 OFFSET 0"  # keeps the planner from inlining u, p, c (computed once per row)
    else:
        numbers = f"(SELECT i FROM generate_series({start}::bigint, {start + count - 1}) AS g(i))"
        fence = "OFFSET 0"
    base = f"SELECT i, {h} AS h, {t} AS t FROM {numbers} n"
    inner = f"SELECT i, t, {_user_sql(dialect)} AS u, {PROMPT} AS p, {COMPLETION} AS c FROM ({base}) b {fence}"
    return (f"INSERT INTO token_usage ({', '.join(COLUMNS)}) SELECT {', '.join(_row_exprs(dialect))} "
            f"FROM ({inner}) r")


# -- counters, computed with numpy -----------------------------------------------------------------------------

def _sum_by_key(keys, *weights):
    """(sorted unique keys, count per key, integer sum of each weight per key)."""
    import numpy as np

    unique, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse, minlength=len(unique))
    # Sums stay below 2**53, so float accumulation is exact.
    sums = [np.rint(np.bincount(inverse, weights=w, minlength=len(unique))).astype(np.int64) for w in weights]
    return unique, counts, *sums


def counter_rows(total: int, t0: int) -> dict[str, tuple]:
    """Per scope: (scope_ids, hours, calls, tokens, pusd) arrays, sorted by (scope_id, hour) — exactly what the
    rows generated by :func:`_fill_sql` sum to per hour (a row's hour is ``t // 3600``)."""
    import numpy as np

    span = DAYS * 86400
    first_hour = t0 // 3600
    hours = (t0 + ((total - 1) * span) // total) // 3600 - first_hour + 1
    parts = []
    for start in range(0, total, CHUNK):
        i = np.arange(start, min(total, start + CHUNK), dtype=np.int64)
        h = (i * HASH_MULT) % HASH_MOD
        absolute = (t0 + (i * span) // total) // 3600
        slot = (h % ACTIVE_HOURS + 24 - absolute % 24) % 24
        key = ((slot + 24 * ((h // ACTIVE_HOURS) % 417)) % USERS) * hours + (absolute - first_hour)
        prompt, completion = 100 + (h // 256) % 900, 20 + (h // 65536) % 300
        pusd = prompt * _pico(INPUT_RATE) + completion * _pico(OUTPUT_RATE)
        parts.append(_sum_by_key(key, prompt + completion, pusd))
    keys, calls, tokens, pusd = (np.concatenate([p[k] for p in parts]) for k in range(4))
    keys, _, calls, tokens, pusd = _sum_by_key(keys, calls, tokens, pusd)  # merge the chunks
    users, hour = keys // hours + 1, keys % hours
    out = {"user": (users, hour + first_hour, calls, tokens, pusd)}
    gkeys, _, *g = _sum_by_key((users % GUILDS) * hours + hour, calls, tokens, pusd)  # guild = 1 + user % GUILDS
    out["guild"] = (gkeys // hours + 1, gkeys % hours + first_hour, *g)
    hkeys, _, *a = _sum_by_key(hour, calls, tokens, pusd)
    out["global"] = (np.zeros(len(hkeys), np.int64), hkeys + first_hour, *a)
    return out


def _load_counters(backend: str, conn, counters: dict) -> None:
    scope_cols = "scope, scope_id, hour, calls, tokens, cost_pusd, unpriced_calls"
    model_cols = "scope, scope_id, model, hour, calls, tokens, cost_pusd, unpriced_calls"
    if backend == "sqlite":
        from itertools import repeat
        cur = conn.cursor()
        for scope in ("global", "guild", "user"):  # primary-key order: B-tree appends
            ids, hours, calls, tokens, pusd = (a.tolist() for a in counters[scope])
            cur.executemany(f"INSERT INTO token_usage_counters ({scope_cols}) VALUES (?, ?, ?, ?, ?, ?, 0)",
                            zip(repeat(scope), ids, hours, calls, tokens, pusd))
        cur.execute(f"INSERT INTO token_usage_model_counters ({model_cols}) SELECT scope, scope_id, '{MODEL}', "
                    f"hour, calls, tokens, cost_pusd, unpriced_calls FROM token_usage_counters "
                    f"ORDER BY scope, scope_id, hour")
        return
    cur = conn.cursor()
    for scope, arrays in counters.items():
        columns = [a.tolist() for a in arrays]
        for start in range(0, len(columns[0]), CHUNK):
            part = [c[start:start + CHUNK] for c in columns]
            text = "".join(f"{scope}\t{i}\t{h}\t{c}\t{t}\t{p}\t0\n" for i, h, c, t, p in zip(*part))
            cur.copy_expert(f"COPY token_usage_counters ({scope_cols}) FROM STDIN", io.StringIO(text))
    cur.execute(f"INSERT INTO token_usage_model_counters ({model_cols}) SELECT scope, scope_id, '{MODEL}', hour, "
                f"calls, tokens, cost_pusd, unpriced_calls FROM token_usage_counters")


# -- building and caching --------------------------------------------------------------------------------------

def _signature() -> dict:
    from dspy_tokens.store import migrations
    return {"generator": GENERATOR_VERSION, "schema": migrations.LATEST, "users": USERS, "guilds": GUILDS,
            "days": DAYS}


def _read_meta(db) -> dict | None:
    try:
        row = db.execute_sql("SELECT value FROM bench_meta WHERE name = 'dataset'").fetchone()
    except Exception:
        return None
    return json.loads(row[0]) if row else None


def ensure_dataset(backend: str, rows: int, cache_dir: Path, *, fresh: bool = False, full_schema: bool = False,
                   rollups: bool = False, say: Callable[[str], None] = print) -> Dataset:
    """A database holding ``rows`` synthetic usage rows with their counters, built or reused from the cache.

    ``full_schema``: also build the indexes the check benchmark does not need; ``rollups``: fill the report
    rollups. A cached database built with more than asked is reused."""
    from dspy_tokens.store import Store

    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"datasets are built on sqlite or postgresql, not {backend}")
    wanted = {**_signature(), "rows": rows}
    extras = {"full_schema": full_schema, "rollups": rollups}
    name, path = f"dspy_tokens_bench_{rows}", cache_dir / f"usage-{rows}.db"
    if backend == "sqlite":
        cache_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{path}"
    else:
        url = private_database(backend, name)
    if not fresh:
        store = Store(url)
        try:
            with store.db.connection_context():
                meta = _read_meta(store.db)
        finally:
            store.close()
        if meta and all(meta.get(k) == v for k, v in wanted.items()) and \
                all(meta.get(k) or not v for k, v in extras.items()) and \
                time.time() - meta["generated_at"] < MAX_AGE_HOURS * 3600:
            return Dataset(backend, rows, url, None, meta["generated_at"])
    if backend == "sqlite":  # start from nothing
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        url = private_database(backend, name, recreate=True)
    say(f"    building {rows:,} rows on {backend} (cached for later runs) ...")
    started = time.perf_counter()
    store = Store(url)
    store.ensure_schema()  # the library's own schema, every migration applied
    store.close()
    t0 = int(time.time()) - DAYS * 86400
    if backend == "sqlite":
        import sqlite3
        conn = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000", "temp_store=MEMORY"):
            conn.execute(f"PRAGMA {pragma}")
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                               "AND tbl_name = 'token_usage' AND sql IS NOT NULL").fetchall()
        keys = []
    else:
        conn = _connect_raw(url)
        cur = conn.cursor()
        for setting in ("synchronous_commit = off", "maintenance_work_mem = '1GB'", "work_mem = '256MB'"):
            cur.execute(f"SET {setting}")
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'token_usage' "
                    "AND indexname NOT LIKE '%%pkey'")
        indexes = cur.fetchall()
        cur.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE contype = 'p' AND conrelid::regclass::text IN "
                    "('token_usage_counters', 'token_usage_model_counters')")
        keys = cur.fetchall()

    def run(sql: str):
        cur = conn.cursor()
        cur.execute(sql)
        return cur

    for index, _ in indexes:
        run(f"DROP INDEX {index}")
    if backend == "postgresql":
        for table, constraint, _ in keys:
            run(f"ALTER TABLE {table} DROP CONSTRAINT {constraint}")
        for table in ("token_usage", "token_usage_counters", "token_usage_model_counters"):
            run(f"ALTER TABLE {table} SET UNLOGGED")
    step = time.perf_counter()
    if backend == "sqlite":
        run("BEGIN")
    for start in range(0, rows, CHUNK):
        run(_fill_sql(backend, start, min(CHUNK, rows - start), rows, t0))
    fill = time.perf_counter() - step
    step = time.perf_counter()
    _load_counters(backend, conn, counter_rows(rows, t0))
    meta = {**wanted, **extras, "generated_at": t0 + DAYS * 86400}
    run("CREATE TABLE IF NOT EXISTS bench_meta (name VARCHAR(32) PRIMARY KEY, value TEXT)")
    run("DELETE FROM bench_meta")
    if backend == "sqlite":
        run("COMMIT")
    counters = time.perf_counter() - step
    step = time.perf_counter()
    for index, sql in indexes:
        if full_schema or index in NEEDED_INDEXES:
            run(sql)
    for table, constraint, definition in keys:
        run(f"ALTER TABLE {table} ADD CONSTRAINT {constraint} {definition}")
    index_seconds = time.perf_counter() - step
    _verify(run, backend, rows)
    if rows <= 20_000 and backend == "sqlite":  # compare with the library's own rebuild, row for row (the
        _compare_with_rebuild(url)              # numpy code is the same for both backends)
    if rollups:
        from dspy_tokens.store import Store
        from dspy_tokens.store.rebuild import rebuild_rollups
        db = Store(url).db
        with db.connection_context(), db.atomic():
            rebuild_rollups(db, backend)
        db.close()
    if backend == "postgresql":  # what autovacuum would do after such a load; SQLite is left un-ANALYZEd, as a
        for table in ("token_usage", "token_usage_counters", "token_usage_model_counters"):  # user's file would be
            run(f"VACUUM (ANALYZE) {table}")
    # Written last: an interrupted build is never mistaken for a complete one.
    value = json.dumps(meta).replace("'", "''")
    run(f"INSERT INTO bench_meta (name, value) VALUES ('dataset', '{value}')")
    conn.close()
    built = time.perf_counter() - started
    say(f"    built {rows:,} rows on {backend} in {built:.0f}s (rows {fill:.0f}s, counters {counters:.0f}s, "
        f"indexes {index_seconds:.0f}s)")
    return Dataset(backend, rows, url, built, meta["generated_at"])


def _verify(run, backend: str, rows: int) -> None:
    """The counters must say what the rows say (calls, tokens, picodollars), per scope and table."""
    from dspy_tokens.store._sql import pico_sql

    stored = tuple(int(v) for v in run(f"SELECT COUNT(*), SUM(total_tokens), SUM({pico_sql(backend)}) "
                                       f"FROM token_usage").fetchone())
    for table in ("token_usage_counters", "token_usage_model_counters"):
        for scope in ("global", "user", "guild"):
            counted = tuple(int(v) for v in run(f"SELECT SUM(calls), SUM(tokens), SUM(cost_pusd) FROM {table} "
                                                f"WHERE scope = '{scope}'").fetchone())
            if counted != stored or stored[0] != rows:
                raise AssertionError(f"{table}/{scope}: counters say {counted}, rows say {stored}")


def _compare_with_rebuild(url: str) -> None:
    from dspy_tokens.store import Store

    store = Store(url)
    # Channel and feature counters are not generated: no benchmark's limit reads them.
    query = "SELECT * FROM {} WHERE scope IN ('global', 'guild', 'user') ORDER BY 1, 2, 3, 4"
    try:
        with store.db.connection_context():
            ours = [store.db.execute_sql(query.format(t)).fetchall()
                    for t in ("token_usage_counters", "token_usage_model_counters")]
            store.rebuild_counters()
            theirs = [store.db.execute_sql(query.format(t)).fetchall()
                      for t in ("token_usage_counters", "token_usage_model_counters")]
    finally:
        store.close()
    if ours != theirs:
        raise AssertionError("generated counters differ from Store.rebuild_counters()")


def check_targets(dataset: Dataset, count: int) -> list[tuple[int, int]]:
    """``count`` (user_id, guild_id) pairs of users that have rows, spread over the id space."""
    t0, span, pairs = dataset.generated_at - DAYS * 86400, DAYS * 86400, []
    for k in range(count):
        i = (k * 7_368_787) % max(dataset.rows, 1)
        user = user_of(i * HASH_MULT % HASH_MOD, (t0 + i * span // dataset.rows) // 3600)
        pairs.append((user, guild_of(user)))
    return pairs
