"""The read API under ``/api`` (JSON: ids and money as strings, periods as in the reports API). Any token reads;
without the admin token user, guild and channel ids are pseudonyms (stable while the app runs)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from dspy_tokens import TokenTracker
from dspy_tokens.reports import decimal_text, json_ready

from . import views
from .auth import Viewer
from .params import Scope, scope


def tracker_of(request: Request) -> TokenTracker:
    return request.app.state.tracker


def reader(request: Request) -> Viewer:
    return request.app.state.gate.reader(request)


def _range(tracker: TokenTracker, found: Scope) -> dict:
    since, until = tracker.reports.bounds(**found.range)
    return {"period": found.label, "since": json_ready(since), "until": json_ready(until)}


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["usage"])

    @router.get("/usage/stats", summary="Totals of a period with a per-feature breakdown")
    def usage_stats(found: Scope = Depends(scope), viewer: Viewer = Depends(reader),
                    tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """``{"period", "start_date", "total_calls", "total_tokens", "total_cost", "by_feature": [{"feature",
        "calls", "tokens", "cost"}], "unknown_cost_calls", "cache_hits", "errors"}``."""
        total = views.summary(tracker, found)
        features = views.breakdown(tracker, "feature", found)
        return {"period": found.label, "start_date": total.since.date().isoformat() if total.since else None,
                "total_calls": total.calls, "total_tokens": total.total_tokens,
                "total_cost": decimal_text(total.cost_usd),
                "by_feature": [{"feature": g.key, "calls": g.calls, "tokens": g.total_tokens,
                                "cost": decimal_text(g.cost_usd)} for g in features],
                "unknown_cost_calls": total.unknown_cost_calls, "cache_hits": total.cache_hits,
                "errors": total.errors}

    @router.get("/usage", summary="A Summary: totals, tokens by kind, exact cost, active users")
    def usage(found: Scope = Depends(scope), viewer: Viewer = Depends(reader),
              tracker: TokenTracker = Depends(tracker_of)) -> dict:
        return viewer.shape(views.summary(tracker, found))

    @router.get("/usage/daily", summary="One entry per day with calls; each day split by a dimension")
    def usage_daily(found: Scope = Depends(scope), split: Literal["model", "feature", "none"] = "model",
                    viewer: Viewer = Depends(reader), tracker: TokenTracker = Depends(tracker_of)) -> dict:
        days = views.breakdown(tracker, "day", found)
        payload = {**_range(tracker, found), "days": viewer.shape(days)}
        if split != "none":
            payload["split"] = split
            payload["parts"] = viewer.shape(views.breakdown(tracker, ("day", split), found))  # type: ignore[arg-type]
        return payload

    @router.get("/usage/models", summary="Totals by model (and by request type once calls record one)")
    def usage_models(found: Scope = Depends(scope), viewer: Viewer = Depends(reader),
                     tracker: TokenTracker = Depends(tracker_of)) -> dict:
        payload = {"period": found.label, "models": viewer.shape(views.breakdown(tracker, "model", found))}
        if "request_type" in views.TABLE_DIMENSIONS:
            payload["request_types"] = viewer.shape(views.breakdown(tracker, "request_type", found))
        return payload

    @router.get("/usage/features", summary="Totals by feature")
    def usage_features(found: Scope = Depends(scope), viewer: Viewer = Depends(reader),
                       tracker: TokenTracker = Depends(tracker_of)) -> dict:
        return {"period": found.label, "features": viewer.shape(views.breakdown(tracker, "feature", found))}

    def top_route(kind: str):
        def route(found: Scope = Depends(scope), n: int = Query(10, ge=1, le=1000),
                  by: Literal["tokens", "cost"] = "tokens", viewer: Viewer = Depends(reader),
                  tracker: TokenTracker = Depends(tracker_of)) -> dict:
            groups = views.top(tracker, kind, found, n, by)
            return {"period": found.label, "by": by, kind + "s": viewer.shape(groups)}
        return route

    router.get("/usage/users", summary="Top users by tokens or cost")(top_route("user"))
    router.get("/usage/guilds", summary="Top guilds (servers) by tokens or cost")(top_route("guild"))

    @router.get("/sessions", summary="The sessions with the latest calls, latest first")
    def recent_sessions(limit: int = Query(10, ge=1, le=100), user_id: str | None = None,
                        guild_id: str | None = None, viewer: Viewer = Depends(reader),
                        tracker: TokenTracker = Depends(tracker_of)) -> dict:
        filters = {k: v for k, v in (("user_id", user_id), ("guild_id", guild_id)) if v}
        return {"sessions": viewer.shape(tracker.recent_sessions(limit, **filters))}

    @router.get("/sessions/{session_id}", summary="A session's calls in call order, with their totals")
    def session(session_id: str, viewer: Viewer = Depends(reader),
                tracker: TokenTracker = Depends(tracker_of)) -> dict:
        calls = tracker.session(session_id)
        if not calls:
            raise HTTPException(404, f"no calls recorded for session {session_id!r}")
        return {"session_id": session_id, "calls": viewer.shape(calls)}

    @router.get("/limits", summary="A LimitDecision: may this user/guild run a request now?")
    def limits(user_id: str | None = None, guild_id: str | None = None, model: str | None = None,
               estimate: int | None = Query(None, ge=0), viewer: Viewer = Depends(reader),
               tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """Reads only (reserves nothing). The decision's fields as JSON: ``used`` (committed in the window) apart
        from ``reserved`` (held by guarded runs in progress), ``remaining``, and ``forecast_exhausted_at`` (ISO 8601
        UTC: when the limit is reached at the pace of the last three hours; null without a pace, or when the
        window starts again first); ``others`` holds every other applicable rule in the same shape."""
        decision = tracker.check(user_id or None, guild_id or None, model=model or None, estimate=estimate)
        return viewer.shape(decision)

    return router
