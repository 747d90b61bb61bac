"""Helpers for the fault and load tests: a TCP proxy that can cut a database off, child processes, counts."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
SOAK_SECONDS = float(os.environ.get("DSPY_TOKENS_SOAK_SECONDS", "10"))


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (5432 if url.startswith("postgres") else 3306)


def spawn(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start ``tests/reliability/child.py`` with ``args``; its stdout is line-buffered JSON events."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    return subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=environment, cwd=str(HERE))


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


def count_rows(store) -> tuple[int, int]:
    """(rows, distinct call_uuids) in token_usage."""
    with store.db.connection_context():
        return tuple(store.db.execute_sql("SELECT COUNT(*), COUNT(DISTINCT call_uuid) FROM token_usage").fetchone())


def token_sums(store) -> dict:
    with store.db.connection_context():
        row = store.db.execute_sql(
            "SELECT COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0), "
            "COALESCE(SUM(total_tokens), 0), COALESCE(SUM(cached_tokens), 0), COALESCE(SUM(reasoning_tokens), 0) "
            "FROM token_usage").fetchone()
    return dict(zip(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens"),
                    (int(v) for v in row)))


def counter_totals(store) -> tuple[int, int]:
    """(calls, tokens) in the global hourly counters: must equal the rows' count and token sum."""
    with store.db.connection_context():
        row = store.db.execute_sql("SELECT COALESCE(SUM(calls), 0), COALESCE(SUM(tokens), 0) "
                                   "FROM token_usage_counters WHERE scope = 'global'").fetchone()
    return int(row[0]), int(row[1])


def spill_files(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []
