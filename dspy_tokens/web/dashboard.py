"""The dashboard: server-rendered pages (Jinja2 templates, the chart as SVG, CSS and a few lines of JavaScript,
all shipped in the package: nothing is fetched from elsewhere). Login turns a token into a session cookie."""

from __future__ import annotations

import hmac
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from dspy_tokens import TokenTracker, __version__

from . import chart, format, views
from .auth import ADMIN, SESSION_COOKIE, SESSION_SECONDS, Viewer
from .params import DASHBOARD_PERIODS, dashboard_scope

templates = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
templates.env.filters.update(number=format.number, money=format.money, compact=format.compact)
templates.env.globals.update(version=__version__)
FILTERS = ("user_id", "guild_id", "feature", "model")
TOP_N = 10


def _render(request: Request, name: str, context: dict, status: int = 200) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status)


def _shown_id(viewer: Viewer, column: str, value) -> str:
    if value is None:
        return "(none)"
    return str(value) if viewer.admin else viewer.pseudonyms(column, value)


def _query(params: dict, **changes) -> str:
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return "?" + urlencode(merged) if merged else "?"


def _login_redirect(request: Request) -> RedirectResponse:
    return RedirectResponse(str(request.url_for("login_page")), status_code=303)


def build_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/", response_class=HTMLResponse, name="dashboard")
    def page(request: Request, period: str = "month", since: str | None = None, until: str | None = None,
             user_id: str | None = None, guild_id: str | None = None, feature: str | None = None,
             model: str | None = None, metric: str = "tokens"):
        viewer = request.app.state.gate.viewer(request)
        if viewer is None:
            return _login_redirect(request)
        tracker: TokenTracker = request.app.state.tracker
        raw = dict(user_id=user_id, guild_id=guild_id, feature=feature, model=model)
        filters = {k: v for k, v in raw.items() if v}
        found, period = dashboard_scope(period, since, until, filters)
        params = {"period": period, "since": since if period == "custom" else None,
                  "until": until if period == "custom" else None, **filters}
        summary = views.summary(tracker, found)
        series = views.daily(tracker, found)
        palette = chart.colors(series.models)
        tables = {dim: views.breakdown(tracker, dim, found) for dim in views.TABLE_DIMENSIONS}
        context = {
            "viewer": viewer, "open": request.app.state.gate.tokens.open, "period": period,
            "periods": DASHBOARD_PERIODS, "since": since or "", "until": until or "", "params": params,
            "query": lambda **changes: _query(params, **changes), "filters": filters,
            "summary": summary, "metric": "cost" if metric == "cost" else "tokens",
            "charts": {m: Markup(chart.stacked_bars(series, m, palette)) for m in ("tokens", "cost")},
            "legend": [(m, palette[m]) for m in series.models], "series": series, "tables": tables,
            "top_users": views.top(tracker, "user", found, TOP_N),
            "top_guilds": views.top(tracker, "guild", found, TOP_N),
            "sessions": tracker.recent_sessions(TOP_N, **{k: v for k, v in filters.items()
                                                         if k in ("user_id", "guild_id")}),
            "shown_id": lambda column, value: _shown_id(viewer, column, value),
            "export_query": urlencode({k: v.isoformat() for k, v in (("since", found.since),
                                                                     ("until", found.until)) if v}
                                      | ({"period": found.period} if found.since is None else {}) | filters),
            "form_key": _form_key(request),
        }
        return _render(request, "dashboard.html", context)

    @router.get("/sessions/{session_id}", response_class=HTMLResponse, name="session_page")
    def session_page(request: Request, session_id: str):
        viewer = request.app.state.gate.viewer(request)
        if viewer is None:
            return _login_redirect(request)
        calls = request.app.state.tracker.session(session_id)
        if not calls:
            raise HTTPException(404, f"no calls recorded for session {session_id!r}")
        totals = {k: sum(c[k] or 0 for c in calls) for k in ("prompt_tokens", "completion_tokens", "total_tokens",
                                                              "cost_usd")}
        first = calls[0]
        return _render(request, "session.html", {
            "viewer": viewer, "open": request.app.state.gate.tokens.open, "session_id": session_id, "calls": calls,
            "totals": totals, "user": _shown_id(viewer, "user_id", first["user_id"]),
            "guild": _shown_id(viewer, "guild_id", first["guild_id"]),
            "unknown": sum(1 for c in calls if c["cost_usd"] is None and not c["error"])})

    @router.get("/login", response_class=HTMLResponse, name="login_page")
    def login_page(request: Request):
        if request.app.state.gate.tokens.open:
            return RedirectResponse(str(request.url_for("dashboard")), status_code=303)
        return _render(request, "login.html", {"error": None})

    @router.post("/login", response_class=HTMLResponse, name="login")
    async def login(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        tokens = request.app.state.gate.tokens
        level = tokens.level_of(token) if token else None
        if level is None:
            # The form again with the error (200, as form pages answer; the API's refusals are bare 401s).
            return _render(request, "login.html", {"error": "That token is not valid."})
        response = RedirectResponse(str(request.url_for("dashboard")), status_code=303)
        response.set_cookie(SESSION_COOKIE, tokens.session_cookie(level), max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=request.url.scheme == "https", path=_cookie_path(request))
        return response

    @router.post("/logout", name="logout")
    def logout(request: Request):
        response = _login_redirect(request)
        response.delete_cookie(SESSION_COOKIE, path=_cookie_path(request))
        return response

    @router.post("/cleanup", response_class=HTMLResponse, name="cleanup_form")
    async def cleanup_form(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        cookie = request.cookies.get(SESSION_COOKIE, "")
        tokens = request.app.state.gate.tokens
        key = (form.get("form_key") or [""])[0]
        if tokens.session_level(cookie) != ADMIN or not hmac.compare_digest(key, tokens.form_key(cookie)):
            raise HTTPException(401)
        try:
            days = int((form.get("older_than_days") or [""])[0])
            if days < 1:
                raise ValueError
        except ValueError:
            raise HTTPException(422, "older_than_days must be a whole number of days, at least 1") from None
        dry_run = (form.get("dry_run") or [""])[0] in ("1", "on", "true")
        result = request.app.state.tracker.cleanup(days, dry_run=dry_run)
        from .admin import audit

        audit(request, "cleanup (dashboard)", older_than_days=days, dry_run=dry_run, rows=result.rows,
              counter_rows=result.counter_rows)
        return _render(request, "cleanup.html", {"viewer": Viewer(ADMIN, request.app.state.gate.pseudonyms),
                                                  "open": False, "result": result, "days": days})

    return router


def _cookie_path(request: Request) -> str:
    return request.scope.get("root_path") or "/"


def _form_key(request: Request) -> str:
    cookie = request.cookies.get(SESSION_COOKIE)
    return request.app.state.gate.tokens.form_key(cookie) if cookie else ""
