"""Admin-only calls under ``/api`` (the admin token, or the dashboard's admin session for the export download):
the streamed export and the retention cleanup. Every state-changing call is logged to the audit logger
``dspy_tokens.web.audit`` with who asked (the client address) and what it did.

A new admin call is one decorated function here: ``@router.<method>(path)`` with ``viewer = Depends(admin)``,
a call on the tracker, ``audit(request, ...)`` if it changes anything, and ``viewer.shape(result)``.
"""

from __future__ import annotations

import logging
import queue
import threading
from datetime import datetime, timezone
from typing import Iterator, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from dspy_tokens import TokenTracker

from .api import tracker_of
from .auth import Viewer
from .params import Scope, scope

audit_log = logging.getLogger("dspy_tokens.web.audit")
log = logging.getLogger("dspy_tokens.web")
MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json", "jsonl": "application/x-ndjson"}
CHUNK_CHARS = 64 * 1024
_END = object()


def admin(request: Request) -> Viewer:
    return request.app.state.gate.admin(request)


def audit(request: Request, action: str, **details) -> None:
    client = request.client.host if request.client else "?"
    audit_log.info("%s by admin from %s: %s", action, client,
                   ", ".join(f"{k}={v}" for k, v in details.items()))


class _Pipe:
    """A text file for ``tracker.export`` on a worker thread, read as chunks by the response: bounded (the
    export waits when the client is slow) and closed from the reading side when the client goes away."""

    def __init__(self):
        self.chunks: queue.Queue = queue.Queue(maxsize=8)
        self.buffer: list[str] = []
        self.size = 0
        self.closed = threading.Event()

    def write(self, text: str) -> int:
        self.buffer.append(text)
        self.size += len(text)
        if self.size >= CHUNK_CHARS:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.buffer:
            self._put("".join(self.buffer))
            self.buffer, self.size = [], 0

    def _put(self, item) -> None:
        while not self.closed.is_set():
            try:
                self.chunks.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("the client closed the export download")

    def finish(self, error: BaseException | None) -> None:
        try:
            if error is None:
                self.flush()
            self._put(error if error is not None else _END)
        except BrokenPipeError:
            pass

    def read(self) -> Iterator[bytes]:
        try:
            while True:
                item = self.chunks.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item  # the response stops without its end: the client sees a broken download
                yield item.encode()
        finally:
            self.closed.set()


def build_router() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["admin"])

    @router.get("/export", summary="Every matching call, streamed as CSV, a JSON array or JSON lines")
    def export(request: Request, format: Literal["csv", "json", "jsonl"] = "csv", anonymize: bool = False,
               found: Scope = Depends(scope), viewer: Viewer = Depends(admin),
               tracker: TokenTracker = Depends(tracker_of)) -> StreamingResponse:
        """Constant memory: rows are read in pages and sent as they come. ``anonymize=true`` replaces user, guild
        and channel ids by salted hashes (stable within this export only). The default period is everything."""
        pipe = _Pipe()
        options = dict(anonymize=anonymize, **found.range, **found.filters)
        if "period" not in request.query_params and found.since is None:
            options["period"] = None

        def run():
            try:
                tracker.export(format, pipe, **options)
            except BrokenPipeError:
                return
            except BaseException as exc:  # reported to the client (a cut download) and in the log
                log.exception("dspy-tokens web: export failed")
                pipe.finish(exc)
                return
            pipe.finish(None)

        threading.Thread(target=run, name="dspy-tokens-web-export", daemon=True).start()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        audit(request, "export", format=format, anonymize=anonymize, **found.range, **found.filters)
        return StreamingResponse(pipe.read(), media_type=MEDIA_TYPES[format], headers={
            "Content-Disposition": f'attachment; filename="dspy-tokens-usage-{stamp}.{format}"',
            "Cache-Control": "no-store"})

    @router.delete("/cleanup", summary="Delete per-call rows older than N days (rollups are kept)")
    def cleanup(request: Request, older_than_days: int = Query(..., ge=1), dry_run: bool = False,
                viewer: Viewer = Depends(admin), tracker: TokenTracker = Depends(tracker_of)) -> dict:
        """Deletes in short batches; ``dry_run=true`` only counts. Summaries of old periods still answer from the
        daily and monthly rollups; sessions and exports of deleted days are gone."""
        result = tracker.cleanup(older_than_days, dry_run=dry_run)
        audit(request, "cleanup", older_than_days=older_than_days, dry_run=dry_run, rows=result.rows,
              counter_rows=result.counter_rows)
        return viewer.shape(result)
    return router  # limit management (set, clear, reset, bypass, history): limit_admin.py
