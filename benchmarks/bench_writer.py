"""2. Writer throughput: records/s from ``TokenTracker.emit`` to committed rows, per backend.

Ours: N synthetic :class:`~dspy_tokens.callback.ObservedCall` objects (built beforehand, each carrying an
OpenAI-style history entry, ~200 users in 20 guilds) are handed to ``tracker.emit`` as fast as the loop goes;
the clock stops when ``flush()`` returns, i.e. when every row, its hourly counters and its report rollups are
committed by the background writer (pricing included).

Baseline (GePeTo style, the prior art): for every record, connect with the stdlib driver, INSERT one row into a
table of the same shape with GePeTo's indexes, commit, close. On SQLite with the default rollback journal, as
GePeTo ships. Time-boxed, in the same run and the same database server.
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
    from dspy_tokens.callback import ObservedCall
    from dspy_tokens.context import Attribution

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

    def record(self, i: int) -> None:
        p = self.param
        conn = self.connect()
        try:
            conn.cursor().execute(
                f"INSERT INTO gepeto_usage (user_id, guild_id, channel_id, session_id, call_index, model, "
                f"prompt_tokens, completion_tokens, total_tokens, timestamp) VALUES ({', '.join([p] * 10)})",
                (1000 + i % 200, 100 + i % 20, 5000 + i % 40, f"s{i // 3}", i % 3, "openai/gpt-4o-mini",
                 200 + i % 700, 30 + i % 200, 230 + i % 700 + i % 200, datetime.now().isoformat()))
            conn.commit()
        finally:
            conn.close()


def run(ctx: Context) -> list[Figure]:
    from dspy_tokens import TokenTracker

    from .datagen import private_database

    rounds = 2 if ctx.quick else 3
    n = 3_000 if ctx.quick else 20_000
    budget = 1.0 if ctx.quick else 2.5  # seconds per baseline round
    figures = []
    for backend in ("sqlite", "postgresql", "mysql"):
        if not ctx.usable(backend):
            ctx.say(f"    {backend}: skipped ({ctx.backends[backend]})")
            continue
        if backend == "sqlite":
            url = f"sqlite:///{ctx.work_dir / 'writer.db'}"
            target = str(ctx.work_dir / "gepeto.db")
        else:
            url = private_database(backend, "dspy_tokens_bench_writer", recreate=True)
            target = url
        tracker = TokenTracker(url, spill_dir=ctx.work_dir / f"writer-spill-{backend}")
        gepeto = _Gepeto(backend, target)
        ours, base = [], []
        try:
            for call in synthetic_calls(200, offset=10**7):  # warm up: schema, connection, price lookups
                tracker.emit(call)
            assert tracker.flush(60), tracker.writer.last_error
            committed = tracker.writer.committed
            for r in range(rounds):
                calls = synthetic_calls(n, offset=r * n)
                start = time.perf_counter()
                for call in calls:
                    tracker.emit(call)
                assert tracker.flush(300), tracker.writer.last_error
                ours.append(n / (time.perf_counter() - start))
                done, start = 0, time.perf_counter()
                while time.perf_counter() - start < budget:
                    gepeto.record(done)
                    done += 1
                base.append(done / (time.perf_counter() - start))
            assert tracker.writer.committed - committed == rounds * n, "rows were lost or duplicated"
        finally:
            tracker.close()
        figures.append(Figure("writer", f"{backend}: emit → committed", "records/s", Stat(ours), Stat(base),
                              "GePeTo: connect+insert+commit per row", better="higher",
                              notes=f"{n:,} records x {rounds} rounds"))
        ctx.say(f"    {backend}: ours {sorted(ours)[len(ours) // 2]:,.0f}/s, one-row-per-commit "
                f"{sorted(base)[len(base) // 2]:,.0f}/s")
    return figures
