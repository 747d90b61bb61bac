"""The writer's backlog on disk: rows it could not commit (spill files, replayed when the database answers) and
rows the database refused as data (``rejected-`` files, kept for a replay after a fix). Every standing problem is
logged once, and a row that cannot be put anywhere is written to the log rather than lost without a word."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

from ..store import UsageRow
from .journal import encode
from .replay import replay_directory
from .spill import CLAIMED, JOURNAL, REJECTED, SPILL, SpillDirectory

log = logging.getLogger("dspy_tokens")

RESCAN_SECONDS = 30.0  # how often other processes' files are looked for, and a failed save is retried
SPILL_RETRY_SECONDS = 5.0  # a spill that failed (a full or read-only disk) is not tried again sooner
MAX_TOLD = 1000


class Backlog:
    """Spill files and refused rows of one writer's spill directory."""

    def __init__(self, path: Path):
        self.directory = SpillDirectory(path)
        self.rejected: list[UsageRow] = []  # refused as data, not saved to disk yet
        self.waiting = False  # this writer left rows on disk (or found some at start): replay before anything else
        self._next_scan = 0.0  # scan at start: a previous run may have left files
        self._next_save = 0.0
        self._spill_failing = False
        self._next_spill = 0.0
        self._told: set[str] = set()

    @property
    def path(self) -> Path:
        return self.directory.path

    def look(self) -> None:
        """At start: files another run left are replayed at once, not at this process's first LM call."""
        try:
            self.waiting = self.waiting or bool(self.directory.candidates())
        except OSError:
            pass

    def counts(self) -> tuple[int, int]:
        """(rows waiting on disk, rows refused) for ``health()``; live journals are their owners' memory."""
        try:
            files = self.directory.files()
        except OSError:
            files = []
        spilled = sum(f.rows for f in files if f.kind in (SPILL, CLAIMED) or (f.kind == JOURNAL and not f.live))
        return spilled, sum(f.rows for f in files if f.kind == REJECTED) + len(self.rejected)

    # -- rows the database could not take yet -------------------------------------------------------------
    def spill(self, rows: list[UsageRow], in_journal: bool, final: bool = False) -> bool:
        """Write ``rows`` to a spill file; False (logged once until it works) when that is impossible. After a
        failure it is tried again only after ``SPILL_RETRY_SECONDS`` (or at the end: ``final``)."""
        if self._spill_failing and not final and time.monotonic() < self._next_spill:
            return False
        try:
            path = self.directory.write(rows)
        except OSError as exc:
            self._next_spill = time.monotonic() + SPILL_RETRY_SECONDS
            if not self._spill_failing:
                self._spill_failing = True
                log.warning("dspy-tokens: cannot spill %d rows to %s (%s); they stay in memory%s", len(rows),
                            self.path, exc, " and in the journal" if in_journal else "")
            return False
        self._spill_failing = False
        self.waiting = True
        log.info("dspy-tokens: %d rows spilled to %s while the database is unavailable", len(rows), path)
        return True

    def replay(self, insert: Callable[[Sequence[UsageRow]], int], batch_size: int) -> int:
        """Replay what waits (when this writer spilled, or every ``RESCAN_SECONDS`` for other processes' files);
        returns the rows added. Raises the StorageError when the database stops answering."""
        if not self.waiting and time.monotonic() < self._next_scan:
            return 0
        result = replay_directory(self.directory, insert, batch_size=batch_size)
        self._next_scan = time.monotonic() + RESCAN_SECONDS
        for reason in result.skipped:
            self.tell(reason, logging.WARNING, "dspy-tokens: spill file %s; it is left in %s", reason, self.path)
        if result.rejected:
            log.error("dspy-tokens: the database refused %d spilled rows as data (%s); they are kept in %s: replay "
                      "them after a fix with `dspy-tokens spill replay --rejected`", result.rejected,
                      result.last_rejection, self.path)
        if result.unreadable:
            log.error("dspy-tokens: %d spilled lines are not usage rows; they are kept in unreadable-*.jsonl in %s",
                      result.unreadable, self.path)
        if result.files:
            log.info("dspy-tokens: replayed %d spilled rows from %d files (%d new)", result.rows, result.files,
                     result.written)
        if result.unavailable is not None:
            raise result.unavailable
        self.waiting = False
        return result.written

    # -- rows the database refused ----------------------------------------------------------------------------
    def reject(self, rows: list[UsageRow], of: int, reason: str) -> None:
        log.error("dspy-tokens: the database refused %d of %d rows as data (%s); they are kept in %s: replay them "
                  "after a fix with `dspy-tokens spill replay --rejected`", len(rows), of, reason, self.path)
        self.rejected.extend(rows)
        self.save_rejected()

    @property
    def save_due(self) -> float | None:
        """When refused rows held in memory should next be saved (None: none held)."""
        return self._next_save if self.rejected else None

    def save_rejected(self) -> None:
        if not self.rejected:
            return
        try:
            self.directory.write(self.rejected, kind=REJECTED)
        except OSError as exc:
            self._next_save = time.monotonic() + RESCAN_SECONDS
            self.tell(f"rejected:{exc}", logging.ERROR,
                      "dspy-tokens: cannot save %d refused rows to %s (%s); they are kept in memory "
                      "(tracker.health().rejected) until it is writable: set spill_dir= or $DSPY_TOKENS_SPILL_DIR to "
                      "a writable directory", len(self.rejected), self.path, exc)
            return
        self.rejected = []

    # -- last resort -------------------------------------------------------------------------------------------
    def dump(self, rows: list[UsageRow], why: str) -> None:
        """Rows that can be put nowhere: into the log, as spill lines an operator can replay."""
        log.error("dspy-tokens: %d rows were %s. So that they are not lost, here they are as spill lines: save them "
                  "as a file named spill-recovered.jsonl in %s and run `dspy-tokens spill replay`\n%s", len(rows),
                  why, self.path, "\n".join(encode(row) for row in rows))

    def tell(self, key: str, level: int, message: str, *args, exc_info: bool = False) -> None:
        """Log a standing problem once (the set is bounded: such problems are few)."""
        if key in self._told or len(self._told) > MAX_TOLD:
            return
        self._told.add(key)
        log.log(level, message, *args, exc_info=exc_info)
