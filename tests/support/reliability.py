"""Helpers for the fault and load tests (tests/reliability): child processes (``tests/support/workers/child.py``),
and counts read back from a tracker's database through a Store of our own (``tests.support.db.store_of``)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.db import store_of

WORKERS = Path(__file__).resolve().parent / "workers"
CHILD = WORKERS / "child.py"
SOAK_SECONDS = float(os.environ.get("DSPY_TOKENS_SOAK_SECONDS", "10"))


def host_port(url: str) -> tuple[str, int]:
    """The host and port of a server database URL (the default port of its scheme when none is given)."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (5432 if url.startswith("postgres") else 3306)


def spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``tests/support/workers/child.py`` with ``args``; its stdout is line-buffered JSON events."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment, cwd=str(WORKERS))


def read_event(proc: subprocess.Popen, kind: str, timeout: float = 60.0) -> dict:
    """The next JSON line of ``kind`` from the child (fails with its stderr if it exits first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == kind:
                return event
        elif proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"child never reported {kind!r}; exit {proc.poll()}; stderr:\n{proc.stderr.read()[-4000:]}")


def count_rows(target) -> tuple[int, int]:
    """(rows, distinct call_uuids) in token_usage of a tracker's (or a URL's) database."""
    store = store_of(target)
    store.ensure_schema()
    with store.db.connection_context():
        return tuple(store.db.execute_sql("SELECT COUNT(*), COUNT(DISTINCT call_uuid) FROM token_usage").fetchone())


def token_sums(target) -> dict:
    """The sums of the five token columns over every stored row."""
    store = store_of(target)
    store.ensure_schema()
    with store.db.connection_context():
        row = store.db.execute_sql(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0) "
            "FROM token_usage").fetchone()
    return dict(zip(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"),
                    (int(v) for v in row)))


def counter_totals(target) -> tuple[int, int]:
    """(calls, tokens) in the global hourly counters: must equal the rows' count and token sum."""
    store = store_of(target)
    store.ensure_schema()
    with store.db.connection_context():
        row = store.db.execute_sql("SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(tokens), 0) "
                                   "FROM token_usage_counters WHERE scope = 'global'").fetchone()
    return int(row[0]), int(row[1])


def spill_files(path: Path) -> list[Path]:
    """Every file under a spill directory (none when it does not exist)."""
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []
