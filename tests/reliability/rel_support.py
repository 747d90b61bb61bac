"""Helpers for the fault and load tests: a TCP proxy that can cut a database off, child processes, counts."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
SOAK_SECONDS = float(os.environ.get("DSPY_TOKENS_SOAK_SECONDS", "10"))


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a database server. ``stop()`` closes the listener (new connections are
    refused) and cuts every open connection mid-stream; ``start()`` listens again on the same port."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.accepted = 0

    def start(self) -> "TcpProxy":
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):  # the port may linger briefly after a stop
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"could not listen on 127.0.0.1:{self.port} again")
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="proxy-accept", daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    @property
    def up(self) -> bool:
        return self._listener is not None

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                ready, _, _ = select.select([listener], [], [], 0.05)
                if not ready:
                    continue
                client, _ = listener.accept()
            except (OSError, ValueError):
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # stopped meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._conns.discard(source)
                self._conns.discard(sink)


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host:port replaced by the proxy's."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


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
