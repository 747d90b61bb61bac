"""What the writer tells people: ``Health`` (``tracker.health()``), and an outage log of bounded volume — one
warning when the database becomes unavailable, one when it is back (with how many rows waited), and at most one a
minute in between."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("dspy_tokens")

REPEAT_SECONDS = 60.0


@dataclass(frozen=True)
class Health:
    """A tracker's recording health, for a liveness probe or a status page (``tracker.health()``)."""

    writer_alive: bool  # the background threads run (False for a reader, or after close())
    database_reachable: bool  # the database answered a ping just now
    pending: int  # rows in this process's memory, not committed yet
    spilled: int  # rows waiting on disk in the spill directory (any process's), replayed when the database answers
    rejected: int  # rows the database refused as data: on disk (``dspy-tokens spill replay --rejected``) or in memory
    last_error: str | None  # the last failure of the writer, None once writing works again
    spill_dir: Path | None  # None for a reader

    @property
    def ok(self) -> bool:
        """Recording works: the writer runs, the database answers and nothing is refused or left behind."""
        return self.writer_alive and self.database_reachable and not (self.spilled or self.rejected)


class OutageLog:
    """Warnings of bounded volume about the database being unavailable to the writer."""

    def __init__(self, repeat_seconds: float = REPEAT_SECONDS):
        self.repeat_seconds = repeat_seconds
        self.since: float | None = None  # monotonic start of the current outage
        self._last = 0.0
        self.attempts = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, error: str, waiting: int) -> None:
        now = time.monotonic()
        self.attempts += 1
        if self.since is None:
            self.since = self._last = now
            log.warning("dspy-tokens: database unavailable (%s); %d rows waiting, retrying with backoff (further "
                        "failures are logged at most once a minute)", error, waiting)
        elif now - self._last >= self.repeat_seconds:
            self._last = now
            log.warning("dspy-tokens: database still unavailable after %.0f s and %d attempts (%s); %d rows waiting",
                        now - self.since, self.attempts, error, waiting)

    def recovered(self, written: int) -> None:
        if self.since is None:
            return
        log.warning("dspy-tokens: database available again after %.1f s; %d rows that waited were written",
                    time.monotonic() - self.since, written)
        self.since = None
        self.attempts = 0
