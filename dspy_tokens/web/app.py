"""``create_app``: the ASGI app (FastAPI) — the read API, the admin calls, ``/metrics``, ``/healthz`` and the
dashboard — over one tracker or database."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from dspy_tokens import Config, StorageError, TokenTracker, __version__

from . import admin, api, dashboard, limit_admin, metrics
from .auth import Gate, Tokens

log = logging.getLogger("dspy_tokens.web")
STATIC = Path(__file__).with_name("static")


def create_app(tracker_or_database_url: TokenTracker | str | None = None, *, admin_token: str | None = None,
               read_token: str | None = None, config: str | os.PathLike | Config | None = None) -> FastAPI:
    """The dashboard and HTTP API over a tracker (a bot's own: ``/healthz`` and ``/metrics`` then include its
    writer) or a database URL (opened read-only with ``TokenTracker.reader(url, config)``; ``config`` is the
    models.json the limit checks use).

    Without tokens the app is open to whoever reaches it: reads only, with user/guild/channel ids pseudonymised,
    and no admin calls — serve it on loopback only. ``read_token`` lets scripts and people read (ids still
    pseudonymised); ``admin_token`` also shows ids and allows export, cleanup and limit changes. Mount it in an
    existing app with ``parent.mount("/usage", create_app(...))``. No CORS headers are sent (add Starlette's
    CORSMiddleware for the origins you trust).
    """
    tokens = Tokens.of(admin_token, read_token)
    owned = not isinstance(tracker_or_database_url, TokenTracker)
    tracker = (tracker_or_database_url if isinstance(tracker_or_database_url, TokenTracker)
               else TokenTracker.reader(tracker_or_database_url, config))
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if owned:
            tracker.close()

    app = FastAPI(title="dspy-tokens", lifespan=lifespan, version=__version__, docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json",
                  description="Token usage and cost of DSPy programs. Authorization: Bearer <token>; ids and "
                              "money are strings; periods are UTC.")
    app.state.tracker = tracker
    app.state.gate = Gate(tokens)
    app.state.registry = metrics.registry_for(tracker)
    app.state.close = tracker.close if owned else None
    if tokens.open:
        log.warning("dspy-tokens web: no admin_token or read_token: whoever reaches this app reads the usage "
                    "(ids pseudonymised) and no admin call is possible; serve it on loopback only")

    @app.exception_handler(StorageError)
    async def storage_unavailable(request: Request, exc: StorageError):
        log.warning("dspy-tokens web: %s %s: database error: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "the usage database is not answering"}, status_code=503)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError):  # the report API's own validation messages
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/healthz", tags=["health"], summary="Database reachable; this process's writer, if any")
    def healthz() -> JSONResponse:
        """No token needed; says nothing about usage. 503 while the database does not answer."""
        database = tracker.reports.store.ping()
        stats = tracker.stats
        writer = None if stats is None else {"alive": stats.alive, "pending": stats.pending,
                                              "committed": stats.committed, "failing": stats.last_error is not None}
        healthy = database and (writer is None or writer["alive"])
        return JSONResponse({"status": "ok" if healthy else "unavailable", "database": database, "writer": writer},
                            status_code=200 if healthy else 503)

    @app.get("/metrics", tags=["health"], summary="Prometheus text format, from the database's rollups")
    def prometheus(request: Request) -> Response:
        app.state.gate.reader(request)
        return Response(metrics.render(app.state.registry), media_type=metrics.CONTENT_TYPE)

    app.include_router(api.build_router())
    app.include_router(admin.build_router())
    app.include_router(limit_admin.build_router())
    app.include_router(dashboard.build_router())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
