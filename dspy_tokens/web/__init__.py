"""A dashboard, an HTTP API and Prometheus metrics over the usage database (``pip install "dspy-tokens[web]"``).

    from dspy_tokens.web import create_app, serve_in_background

    app = create_app("sqlite:///usage.db", admin_token=..., read_token=...)   # an ASGI app (FastAPI)
    web = await serve_in_background(tracker, admin_token=...)                 # in a bot's own event loop

``dspy-tokens serve`` runs the same app from the shell. Everything reads through the report and limits API (the
rollups answer, so pages stay fast at 10M rows); the page, its CSS, JavaScript and chart ship in the package.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import jinja2  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(f"dspy_tokens.web needs the [web] extra ({exc.name} is missing): "
                      "pip install \"dspy-tokens[web]\"") from exc

from .app import create_app
from .serving import DEFAULT_HOST, DEFAULT_PORT, BackgroundServer, serve, serve_in_background

__all__ = ["BackgroundServer", "DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve", "serve_in_background"]
