"""Serving the app: from the shell (``dspy-tokens serve``), or inside an asyncio program's own event loop (a
discord.py bot) with :func:`serve_in_background`, so a single-process bot needs no second process.

Both bind the socket first (a busy port is an ``OSError`` at the call, not a log line later) and refuse to listen
beyond loopback unless a token protects the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

import uvicorn

from dspy_tokens import ConfigurationError, TokenTracker

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, app) -> None:
    """Beyond loopback, anyone on the network could read the usage: a token is required."""
    if not is_loopback(host) and app.state.gate.tokens.open:
        raise ConfigurationError(
            "serve", "host", host, "is beyond this machine: refusing to serve usage there without a token; set "
            "DSPY_TOKENS_READ_TOKEN and/or DSPY_TOKENS_ADMIN_TOKEN (or pass read_token=/admin_token=), or listen "
            "on 127.0.0.1")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio turns Nagle off (TCP_NODELAY) only on sockets that say they are TCP, and
    # with Nagle on, a keep-alive response waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class _Embedded(uvicorn.Server):
    """A uvicorn server that leaves the host program's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class BackgroundServer:
    """A running app: ``url``, and ``await stop()`` (also ``async with``)."""

    def __init__(self, server: uvicorn.Server, task: asyncio.Task, sock: socket.socket, host: str):
        self.server, self.task, self.socket = server, task, sock
        port = sock.getsockname()[1]
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/"

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.socket.close()
        close = getattr(getattr(self.server.config.app, "state", None), "close", None)
        if close is not None:
            close()  # the reader create_app opened for a URL

    async def __aenter__(self) -> "BackgroundServer":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


def _as_app(app_or_tracker, admin_token, read_token):
    from .app import create_app

    if isinstance(app_or_tracker, (TokenTracker, str)) or app_or_tracker is None:
        return create_app(app_or_tracker, admin_token=admin_token, read_token=read_token)
    if admin_token is not None or read_token is not None:
        raise ConfigurationError("serve_in_background", "admin_token/read_token", "tokens and an app",
                                 "go to create_app(), which built the app")
    return app_or_tracker


async def serve_in_background(app_or_tracker=None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                              admin_token: str | None = None, read_token: str | None = None,
                              log_level: str = "warning") -> BackgroundServer:
    """Start serving in the running event loop and return once the socket accepts connections::

        web = await serve_in_background(tracker, admin_token=os.environ["DSPY_TOKENS_ADMIN_TOKEN"])
        ...                                   # e.g. in a discord.py bot's setup_hook
        await web.stop()

    ``app_or_tracker``: an app from :func:`create_app`, or a tracker / database URL to build one (with the
    tokens). ``port=0`` picks a free port (see ``.url``). Report reads run on worker threads, never on the loop.
    """
    app = _as_app(app_or_tracker, admin_token, read_token)
    check_exposure(host, app)
    sock = bind(host, port)
    # No lifespan: a failing startup would raise SystemExit inside the host's loop; the app needs none.
    config = uvicorn.Config(app, log_level=log_level, lifespan="off", access_log=False)
    server = _Embedded(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name="dspy-tokens-web")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # raises what stopped it
            raise RuntimeError("dspy-tokens web: the server stopped during startup; see the log above")
        await asyncio.sleep(0.01)
    return BackgroundServer(server, task, sock, host)


def serve(app, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "info",
          on_ready=None) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM), on this thread: what ``dspy-tokens serve`` runs."""
    check_exposure(host, app)
    sock = bind(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    if on_ready is not None:
        on_ready(f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
