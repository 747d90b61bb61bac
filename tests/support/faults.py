"""Real faults for tests: a TCP proxy in front of a database server that can be cut and restored, and triggers
that make the server itself refuse rows (as data) or fail every write (with a given server error)."""

from __future__ import annotations

import select
import socket
import threading
import time
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    """A real network outage for tests: forwards 127.0.0.1:<port> to a database server. ``stop()`` closes the
    listener (new connections are refused) and cuts every open connection mid-stream; ``start()`` listens again on
    the same port."""

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


# -- the database refusing writes: triggers on token_usage, raised by the server itself --------------------------

def _run(url: str, *statements: str) -> None:
    from dspy_tokens.store import Store

    store = Store(url)
    store.ensure_schema()
    try:
        with store.db.connection_context():
            for statement in statements:
                store.db.execute_sql(statement)
    finally:
        store.close()


def _dialect(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql" if url.startswith("postgres") else "mysql"


TRIGGER = "dspy_tokens_test_fault"


def refuse_rows(url: str, feature: str) -> None:
    """From now on the database refuses, as a data error (PostgreSQL 23514, MariaDB 4025, SQLite ABORT), every
    ``token_usage`` row whose feature is ``feature``; :func:`stop_refusing` undoes it."""
    kind = _dialect(url)
    if kind == "sqlite":
        _run(url, f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON token_usage WHEN NEW.feature = '{feature}' "
                  "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    elif kind == "postgresql":
        _run(url, f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger AS $$ BEGIN IF NEW.feature = '{feature}' "
                  "THEN RAISE EXCEPTION 'refused by the test' USING ERRCODE = '23514'; END IF; RETURN NEW; END "
                  "$$ LANGUAGE plpgsql",
             f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON token_usage FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()")
    else:
        _run(url, f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON token_usage FOR EACH ROW BEGIN IF NEW.feature = "
                  f"'{feature}' THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused by the test', "
                  "MYSQL_ERRNO = 4025; END IF; END")


def fail_writes(url: str, code: str | int) -> None:
    """From now on every insert into ``token_usage`` fails with this server error (a PostgreSQL SQLSTATE such as
    '53100' disk full, or a MariaDB error number such as 1114 table full), raised by the server."""
    if _dialect(url) == "postgresql":
        _run(url, f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION "
                  f"'injected by the test' USING ERRCODE = '{code}'; END $$ LANGUAGE plpgsql",
             f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON token_usage FOR EACH STATEMENT EXECUTE FUNCTION "
             f"{TRIGGER}()")
    else:
        _run(url, f"CREATE TRIGGER {TRIGGER} BEFORE INSERT ON token_usage FOR EACH ROW SIGNAL SQLSTATE '45000' "
                  f"SET MESSAGE_TEXT = 'injected by the test', MYSQL_ERRNO = {int(code)}")


def stop_refusing(url: str) -> None:
    """Drop the trigger of :func:`refuse_rows` / :func:`fail_writes`."""
    kind = _dialect(url)
    _run(url, f"DROP TRIGGER IF EXISTS {TRIGGER}" + (" ON token_usage" if kind == "postgresql" else ""))
