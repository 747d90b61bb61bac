"""Run-time limit management under ``/api/limits/{scope}/{scope_id}`` (admin token only): set, clear, reset,
bypass, and the history. Each change goes through the tracker's public calls, which store it in the database
(every process applies it at its next check) with an audit entry ``changed_by="web:<client address>"``; it is
also logged to ``dspy_tokens.web.audit``. A bad scope, id, amount or window is a 422 that says which."""

from __future__ import annotations

from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from dspy_tokens import LimitChange, TokenTracker

from .admin import admin, audit
from .api import tracker_of
from .auth import Viewer

SCOPE_HELP = "user, guild, channel (by id) or global (scope_id 0)"


class LimitBody(BaseModel):
    """What to limit; at least one of tokens, cost_usd, requests. Metrics left out keep their run-time value."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(None, ge=0, description="tokens per window")
    cost_usd: str | None = Field(None, description='US dollars per window, as a decimal string ("12.50")')
    requests: int | None = Field(None, ge=0, description="requests per window")
    window: str | None = Field(None, description='"30d", "24h", "1mo" (default: time_window_days, rolling)')


class BypassBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    on: bool = Field(..., description="true: limits off for this scope; false: on again")


def who(request: Request) -> str:
    return f"web:{request.client.host if request.client else '?'}"


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api/limits", tags=["admin"])

    def answer(viewer: Viewer, change: LimitChange) -> dict:
        return {"change": viewer.shape(change)}

    @router.get("/history", summary="The audit trail of run-time limit changes, newest first")
    def history(scope: str | None = Query(None, description=SCOPE_HELP), scope_id: str | None = None,
                n: int = Query(50, ge=1, le=10_000), viewer: Viewer = Depends(admin),
                tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """Who (``changed_by``: ``web:<address>`` here, or what the CLI/bot gave), what (``action``, ``detail``)
        and when (``changed_at``, UTC), for every scope, one kind of scope, or one scope id."""
        changes = tracker.limit_changes(scope or None, scope_id or None, limit=n)
        return {"changes": viewer.shape(changes)}

    @router.put("/{scope}/{scope_id}", summary="Set a run-time limit for one scope")
    def set_limit(request: Request, scope: str, scope_id: str, body: LimitBody, viewer: Viewer = Depends(admin),
                  tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """Replaces the configured rule of the same scope and metric for this id; every process applies it at its
        next check."""
        change = tracker.set_limit(scope, scope_id, tokens=body.tokens, cost_usd=body.cost_usd,
                                   requests=body.requests, window=body.window, by=who(request))
        audit(request, "set limit", scope=scope, scope_id=scope_id, **change.detail)
        return answer(viewer, change)

    @router.delete("/{scope}/{scope_id}", summary="Clear a scope's run-time limits (models.json applies again)")
    def clear_limit(request: Request, scope: str, scope_id: str, viewer: Viewer = Depends(admin),
                    tracker: TokenTracker = Depends(tracker_of)) -> dict:
        change = tracker.clear_limit(scope, scope_id, by=who(request))
        audit(request, "clear limit", scope=scope, scope_id=scope_id)
        return answer(viewer, change)

    @router.post("/{scope}/{scope_id}/reset", summary="Usage before now stops counting toward this scope's limits")
    def reset_usage(request: Request, scope: str, scope_id: str, viewer: Viewer = Depends(admin),
                    tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """Reports and exports keep the usage; only the limits forget it."""
        change = tracker.reset_usage(scope, scope_id, by=who(request))
        audit(request, "reset usage", scope=scope, scope_id=scope_id)
        return answer(viewer, change)

    @router.put("/{scope}/{scope_id}/bypass", summary="Turn limits off (on=true) or on again for a scope")
    def set_bypass(request: Request, scope: str, scope_id: str, body: BypassBody = Body(...),
                   viewer: Viewer = Depends(admin), tracker: TokenTracker = Depends(tracker_of)) -> dict:
        change = tracker.set_bypass(scope, scope_id, body.on, by=who(request))
        audit(request, "bypass", scope=scope, scope_id=scope_id, on=body.on)
        return answer(viewer, change)

    return router
