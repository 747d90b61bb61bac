"""2. Writer throughput: records/s from ``TokenTracker.emit`` to committed rows, per backend.

Ours: N synthetic :class:`~dspy_tokens.capture.ObservedCall` objects (built beforehand, each carrying an
OpenAI-style history entry, ~200 users in 20 guilds) are handed to ``tracker.emit`` as fast as the loop goes;
the clock stops when ``flush()`` returns, i.e. when every row, its hourly counters and its report rollups are
committed by the background writer (pricing included).

Baselines, time-boxed, in the same run and on the same database server, with the stdlib/driver connection:

* GePeTo style (the prior art): for every record connect, INSERT one row into a table of GePeTo's shape and
  indexes, commit, close. On SQLite with the default rollback journal, as GePeTo ships.
* one commit per row on an open connection (SQLite in WAL mode with ``synchronous=NORMAL``, as the library opens
  it): what batching alone buys, without the cost of connecting (35 ms per connection to MariaDB here).
* driver batch insert (ceiling): the same rows, already built and priced, with their counter and rollup upserts
  already summed, written into the same schema on the same server by the driver alone (``executemany`` on SQLite
  and MariaDB; on PostgreSQL ``COPY`` for the rows, ``execute_values`` for the upserts), 1,000 rows per
  transaction: what the database
  itself takes, with none of our Python (row building, journal, aggregation) on the way.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

from .common import Context, Figure, Stat

GEPETO_TABLE = """CREATE TABLE IF NOT EXISTS gepeto_usage (
    id {serial}, user_id BIGINT, guild_id BIGINT, channel_id BIGINT, session_id VARCHAR(64), call_index INTEGER,
    model VARCHAR(200) NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, total_tokens INTEGER,
    timestamp VARCHAR(32) NOT NULL)"""
GEPETO_INDEXES = ("CREATE INDEX {ine}gepeto_user_time ON gepeto_usage (user_id, timestamp)",
                  "CREATE INDEX {ine}gepeto_guild_time ON gepeto_usage (guild_id, timestamp)",
                  "CREATE INDEX {ine}gepeto_session ON gepeto_usage (session_id, call_index)")


def synthetic_calls(n: int, offset: int = 0) -> list:
    from dspy_tokens.capture import Attribution, ObservedCall

    people = [Attribution(user_id=1000 + u, guild_id=100 + u % 20, channel_id=5000 + u % 40, feature="chat")
              for u in range(200)]
    calls = []
    now = datetime.now(timezone.utc)
    for i in range(offset, offset + n):
        prompt, completion = 200 + i % 700, 30 + i % 200
        entry = {"usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                           "total_tokens": prompt + completion,
                           "prompt_tokens_details": {"cached_tokens": 64 if i % 4 == 0 else 0},
                           "completion_tokens_details": {"reasoning_tokens": 0}},
                 "response_model": "gpt-4o-mini-2024-07-18", "cost": None, "uuid": uuid.uuid4().hex}
        calls.append(ObservedCall(call_uuid=uuid.uuid4().hex, session_id=f"s{i // 3}", call_index=i % 3,
                                  attribution=people[i % len(people)], module="Predict", model="openai/gpt-4o-mini",
                                  entry=entry, error=None, latency_ms=500, created_at=now))
    return calls


class _Gepeto:
    """One row per connect/insert/commit/close, as the prior art does."""

    def __init__(self, backend: str, target):
        self.backend, self.target = backend, target
        serial = {"sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT", "postgresql": "BIGSERIAL PRIMARY KEY",
                  "mysql": "BIGINT AUTO_INCREMENT PRIMARY KEY"}[backend]
        conn = self.connect()
        cur = conn.cursor()
        cur.execute(GEPETO_TABLE.format(serial=serial))
        for sql in GEPETO_INDEXES:
            try:
                cur.execute(sql.format(ine="IF NOT EXISTS " if backend != "mysql" else ""))
            except Exception:  # MariaDB: already exists
                pass
        conn.commit()
        conn.close()
        self.param = "?" if backend == "sqlite" else "%s"

    def connect(self):
        if self.backend == "sqlite":
            import sqlite3
            return sqlite3.connect(self.target, timeout=30)  # default rollback journal, as GePeTo
        from .datagen import _connect_raw
        conn = _connect_raw(self.target)
        if self.backend == "postgresql":
            conn.autocommit = False
        else:
            conn.autocommit(False)
        return conn

    def insert(self, conn, i: int) -> None:
        p = self.param
        conn.cursor().execute(
            f"INSERT INTO gepeto_usage (user_id, guild_id, channel_id, session_id, call_index, model, "
            f"prompt_tokens, completion_tokens, total_tokens, timestamp) VALUES ({', '.join([p] * 10)})",
            (1000 + i % 200, 100 + i % 20, 5000 + i % 40, f"s{i // 3}", i % 3, "openai/gpt-4o-mini",
             200 + i % 700, 30 + i % 200, 230 + i % 700 + i % 200, datetime.now().isoformat()))
        conn.commit()

    def record(self, i: int) -> None:
        """GePeTo: a connection per record."""
        conn = self.connect()
        try:
            self.insert(conn, i)
        finally:
            conn.close()

    def open(self):
        """An open connection for the one-commit-per-row baseline (SQLite: WAL + synchronous=NORMAL)."""
        conn = self.connect()
        if self.backend == "sqlite":
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn


class _Ceiling:
    """The driver's own batch insert of prepared rows and aggregate upserts, into our schema."""

    def __init__(self, backend: str, url: str, path: str | None):
        from dspy_tokens.store import Store
        from dspy_tokens.store._sql import insert_sql, upsert_sql
        from dspy_tokens.store.rows import ROW_COLUMNS
        from dspy_tokens.store.units import COUNTER_MEASURES, MEASURES

        store = Store(url)
        store.ensure_schema()
        store.close()
        self.backend = backend
        param = "?" if backend == "sqlite" else "%s"
        self.insert, self.columns = insert_sql(backend, param, "token_usage", ROW_COLUMNS), ROW_COLUMNS
        self.upserts = (
            ("counters", upsert_sql(backend, param, "token_usage_counters", ("scope", "scope_id", "hour"),
                                    COUNTER_MEASURES)),
            ("model_counters", upsert_sql(backend, param, "token_usage_model_counters",
                                          ("scope", "scope_id", "model", "hour"), COUNTER_MEASURES)),
            ("daily", upsert_sql(backend, param, "token_usage_daily",
                                 ("day", "user_id", "guild_id", "model", "feature"), MEASURES)),
            ("rollups", upsert_sql(backend, param, "token_usage_rollups", ("grain", "scope", "bucket", "scope_key"),
                                   MEASURES)),
        )
        if backend == "sqlite":
            import sqlite3
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
        else:
            from .datagen import _connect_raw
            self.conn = _connect_raw(url)
            if backend == "postgresql":
                self.conn.autocommit = False
            else:
                self.conn.autocommit(False)

    def prepare(self, calls, batch_size: int = 1_000) -> list:
        """Rows built and priced, as driver tuples, and their aggregates summed: outside the timing."""
        from dspy_tokens.config import Config
        from dspy_tokens.ingest.rows import RowBuilder
        from dspy_tokens.pricing import PriceBook
        from dspy_tokens.store import aggregates
        from dspy_tokens.store.units import stored_time

        build = RowBuilder(PriceBook(Config())).build
        sqlite = self.backend == "sqlite"
        batches = []
        for start in range(0, len(calls), batch_size):
            rows = [build(call) for call in calls[start:start + batch_size]]
            tuples = [tuple(r._replace(created_at=stored_time(r.created_at, sqlite),
                                       cost_usd=str(r.cost_usd) if sqlite and r.cost_usd is not None
                                       else r.cost_usd)) for r in rows]
            found = aggregates.deltas(rows)
            batches.append((tuples, [[(*k, *getattr(found, name)[k]) for k in sorted(getattr(found, name))]
                                     for name, _ in self.upserts]))
        return batches

    def write(self, batches) -> None:
        cur = self.conn.cursor()
        for tuples, tables in batches:
            if self.backend == "sqlite":
                cur.execute("BEGIN IMMEDIATE")
            self._rows(cur, tuples)
            for (_, sql), params in zip(self.upserts, tables):
                self._many(cur, sql, params)
            if self.backend == "sqlite":
                cur.execute("COMMIT")
            else:
                self.conn.commit()

    def _rows(self, cur, tuples) -> None:
        if self.backend != "postgresql":
            return self._many(cur, self.insert, tuples)
        from dspy_tokens.store._sql import copy_rows  # the COPY text format; the driver does the rest

        copy_rows(cur, "token_usage", self.columns, tuples)

    def _many(self, cur, sql, params) -> None:
        if self.backend == "postgresql":
            from psycopg2.extras import execute_values
            execute_values(cur, sql, params, page_size=1000)
        else:
            cur.executemany(sql, params)

    def close(self) -> None:
        self.conn.close()


def _rate(fn, budget: float) -> float:
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        fn(done)
        done += 1
    return done / (time.perf_counter() - start)


def run(ctx: Context) -> list[Figure]:
    from dspy_tokens import TokenTracker

    from .datagen import private_database

    rounds = 2 if ctx.quick else 3
    n = 1_000 if ctx.quick else 8_000
    budget = 0.25 if ctx.quick else 1.0  # seconds per baseline round
    figures = []
    for backend in ("sqlite", "postgresql", "mysql"):
        if not ctx.usable(backend):
            ctx.say(f"    {backend}: skipped ({ctx.backends[backend]})")
            continue
        if backend == "sqlite":
            url = f"sqlite:///{ctx.work_dir / 'writer.db'}"
            target, target_open = str(ctx.work_dir / "gepeto.db"), str(ctx.work_dir / "per-row.db")
            ceiling = _Ceiling(backend, f"sqlite:///{ctx.work_dir / 'ceiling.db'}", str(ctx.work_dir / "ceiling.db"))
        else:
            url = private_database(backend, "dspy_tokens_bench_writer", recreate=True)
            target = target_open = url
            ceiling = _Ceiling(backend, private_database(backend, "dspy_tokens_bench_writer_ceiling",
                                                         recreate=True), None)
        tracker = TokenTracker(url, spill_dir=ctx.work_dir / f"writer-spill-{backend}")
        gepeto, per_row = _Gepeto(backend, target), _Gepeto(backend, target_open)
        connection = per_row.open()
        ours, base, base_open, top = [], [], [], []
        try:
            for call in synthetic_calls(200, offset=10**7):  # warm up: schema, connection, price lookups
                tracker.emit(call)
            assert tracker.flush(60), tracker.stats.last_error
            committed = tracker.stats.committed
            for r in range(rounds):
                calls = synthetic_calls(n, offset=r * n)
                start = time.perf_counter()
                for call in calls:
                    tracker.emit(call)
                assert tracker.flush(300), tracker.stats.last_error
                ours.append(n / (time.perf_counter() - start))
                base.append(_rate(gepeto.record, budget))
                base_open.append(_rate(lambda i: per_row.insert(connection, i), budget))
                prepared = ceiling.prepare(synthetic_calls(n, offset=(rounds + r) * n))
                start = time.perf_counter()
                ceiling.write(prepared)
                top.append(n / (time.perf_counter() - start))
            assert tracker.stats.committed - committed == rounds * n, "rows were lost or duplicated"
        finally:
            tracker.close()
            connection.close()
            ceiling.close()
        figures.append(Figure("writer", f"{backend}: emit → committed", "records/s", Stat(ours), Stat(base),
                              "GePeTo: connect+insert+commit per row", better="higher",
                              notes=f"{n:,} records x {rounds} rounds"))
        figures.append(Figure("writer", f"{backend}: emit → committed", "records/s", Stat(ours), Stat(base_open),
                              "insert+commit per row, open connection", better="higher"))
        figures.append(Figure("writer", f"{backend}: TokenTracker emit → committed vs driver batch insert (ceiling)",
                              "records/s", Stat(ours), Stat(top),
                              "driver batch insert (ceiling): rows + counter/rollup upserts", better="higher",
                              notes="same rows, schema and server; 1,000 rows per transaction"))
        ctx.say(f"    {backend}: ours {Stat(ours).median:,.0f}/s, driver ceiling {Stat(top).median:,.0f}/s "
                f"({Stat(ours).median / Stat(top).median:.2f}x), GePeTo {Stat(base).median:,.0f}/s, "
                f"one commit per row on an open connection {Stat(base_open).median:,.0f}/s")
    return figures
