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


def spawn(*args: str, env: dict | None = None, prefix: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start ``tests/support/workers/child.py`` with ``args`` (after ``prefix``, e.g. an ``unshare`` command);
    its stdout is line-buffered JSON events."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    return subprocess.Popen([*prefix, sys.executable, str(CHILD), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, cwd=str(WORKERS))


# -- containers: a child in a PID namespace of its own (as every container is) ---------------------------------
UNSHARE = ("unshare", "--pid", "--fork", "--kill-child")


def namespaces_problem() -> str | None:
    """None when this machine can start a process in a new PID namespace (root, util-linux unshare)."""
    try:
        done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"unshare exited {done.returncode}")


def spawn_in_namespace(*args: str, pid1: bool = True) -> subprocess.Popen:
    """``child.py args`` in a new PID namespace: as PID 1 (a container's main process), or else under a shell that
    first used up 40 PIDs (so the child's PID exists in no fresh namespace, not even as a thread id there).
    Killing the returned process (unshare) with SIGKILL kills the child with it."""
    if pid1:
        return spawn(*args, prefix=UNSHARE)
    command = " ".join(f"'{part}'" for part in (sys.executable, str(CHILD), *args))
    burn = "i=0; while [ $i -lt 40 ]; do /bin/true; i=$((i+1)); done"
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([*UNSHARE, "sh", "-c", f"{burn}; {command}; true"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment, cwd=str(WORKERS))


def python_in(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """The host PID of the Python child under ``unshare`` (and under its shell, for a non-PID-1 child)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = proc.pid
        for _ in range(3):
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                children = []
            if not children:
                break
            pid = int(children[0])
            try:
                if "python" in Path(f"/proc/{pid}/comm").read_text():
                    return pid
            except OSError:
                break
        time.sleep(0.05)
    raise AssertionError("the namespaced Python child was not found")


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


def rejected_lines(spill_dir: Path) -> int:
    """Rows set aside as refused (rejected-*.jsonl) under a spill directory."""
    return sum(len(p.read_text().splitlines()) for p in spill_files(spill_dir) if p.name.startswith("rejected-"))


def figures(target, answered: int, spill_dir: Path | None = None) -> dict:
    """The issue's figures for one run: calls answered, rows stored, lost (answered but never stored), duplicated,
    rejected (set aside), and whether the hourly counters equal the rows."""
    rows, distinct = count_rows(target)
    total = token_sums(target)["total_tokens"]
    return {"answered": answered, "stored": rows, "lost": answered - distinct, "duplicated": rows - distinct,
            "rejected": rejected_lines(spill_dir) if spill_dir is not None else 0,
            "counters_equal_rows": counter_totals(target) == (rows, total)}


def report(case: str, found: dict) -> dict:
    """Print the figures of ``case`` (pytest -s shows them; the closing note quotes them) and return them."""
    print(f"\nFIGURES {case}: " + ", ".join(f"{k}={v}" for k, v in found.items()))
    return found


def assert_exactly_once(found: dict) -> None:
    """0 lost, 0 duplicated, 0 rejected, counters == rows."""
    assert (found["lost"], found["duplicated"], found["rejected"], found["counters_equal_rows"]) == (0, 0, 0, True), \
        found
