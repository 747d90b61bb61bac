"""``RefusalCount``: how many guarded runs the limits refused, counted in the database for every process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class RefusalCount:
    """Refusals of ``tracker.guard`` (on entry, and strict runs stopped before a call) under one refusing rule's
    ``scope`` and ``metric``, for runs of ``model`` and ``feature`` (``""``: none given). All time, every process;
    ``tracker.check`` only reads and is never counted."""

    scope: str
    metric: str
    model: str
    feature: str
    refusals: int
    last_refused_at: datetime
