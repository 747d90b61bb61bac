"""Retention: deleting old per-call rows while keeping what reports and limits still need.

:func:`cleanup` deletes raw rows older than N days (the cutoff is floored to the hour, so whole hours go, as the
counters' rebuild expects) in short batches with the hour rollups of those hours, and prunes the hourly limit
counters older than ``max(N, keep_counters_days)`` days (the limits never look further back than their window).
What survives, forever: the daily cube and the day/month rollups, so summaries, breakdowns by
user/guild/model/feature/day and top-N of old periods still answer, at one-day resolution. What is gone for old
periods: sessions, the per-call rows (exports) and partial-day precision.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Callable

from ..config import Config
from ..store import Store
from ..store.units import hour_of
from .results import CleanupResult

log = logging.getLogger("dspy_tokens")

DEFAULT_RETENTION_DAYS = 90
DEFAULT_KEEP_COUNTERS_DAYS = 32  # a calendar month, or a 30-day rolling window, plus a margin


def retention_days(config: Config, older_than_days: int | None = None) -> int:
    """The retention to apply: the argument, else ``retention_days`` from models.json, else 90."""
    return older_than_days or config.retention_days or DEFAULT_RETENTION_DAYS


def keep_counters_days(config: Config) -> int:
    """How long hourly limit counters must live: the limits' window plus a day, at least a month."""
    return max(config.time_window_days + 1, DEFAULT_KEEP_COUNTERS_DAYS)


def cleanup(store: Store, older_than_days: int, *, now: datetime | None = None, batch_size: int = 5000,
            dry_run: bool = False, keep_counters_days: int = DEFAULT_KEEP_COUNTERS_DAYS,
            progress: Callable[[int], None] | None = None) -> CleanupResult:
    """Delete raw rows created before ``now - older_than_days`` (floored to the hour), ``batch_size`` ids per
    short transaction, and the hourly limit counters older than ``max(older_than_days, keep_counters_days)``."""
    if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 1:
        raise ValueError(f"older_than_days must be a positive number of days, got {older_than_days!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    cutoff = (now - timedelta(days=older_than_days)).replace(minute=0, second=0, microsecond=0)
    counters_cutoff = (now - timedelta(days=max(older_than_days, keep_counters_days))).replace(
        minute=0, second=0, microsecond=0)
    counter_hour, rows_hour = hour_of(counters_cutoff), hour_of(cutoff)
    pruner = store.pruning
    if dry_run:
        return CleanupResult(cutoff, pruner.count_rows_before(cutoff), counters_cutoff,
                             pruner.count_counters_before(counter_hour), 0, True,
                             pruner.count_hour_rollups_before(rows_hour))
    rows, batches = pruner.delete_rows_before(cutoff, batch_size, progress)
    hours = pruner.delete_hour_rollups_before(rows_hour)
    counters = pruner.delete_counters_before(counter_hour, batch_size)
    return CleanupResult(cutoff, rows, counters_cutoff, counters, batches, False, hours)


class RetentionScheduler:
    """The writer's commit hook when ``retention_days`` is set: runs a cleanup on a short-lived thread at most
    once per ``interval`` seconds, so an idle tracker does nothing. ``configure`` takes a reloaded configuration."""

    def __init__(self, reports, config: Config, interval: float = 3600.0,
                 on_done: Callable[[], None] | None = None):
        self.reports, self.config, self.interval, self.on_done = reports, config, interval, on_done
        self._due = 0.0
        self._thread: threading.Thread | None = None
        self.stopped = False

    def configure(self, config: Config) -> None:
        self.config = config

    def __call__(self, committed: int = 0) -> None:
        now = time.monotonic()
        if self.stopped or not self.config.retention_days or now < self._due:
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._due = now + self.interval
        self._thread = threading.Thread(target=self._run, name="dspy-tokens-retention", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        config = self.config
        try:
            result = self.reports.cleanup(retention_days(config), keep_counters_days=keep_counters_days(config))
            if result.rows or result.counter_rows:
                log.info("dspy-tokens: retention deleted %d rows older than %s and %d hourly counters",
                         result.rows, result.cutoff.isoformat(), result.counter_rows)
        except Exception:
            log.exception("dspy-tokens: automatic retention cleanup failed; it is retried after the next commit "
                          "in %.0f s", self.interval)
        finally:
            if self.on_done is not None:
                self.on_done()
