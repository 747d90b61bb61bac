"""The background writer: the only place usage rows reach the database.

Callers hand it finished calls through a lock-free queue (a few hundred ns). An intake thread turns them into
rows (pricing included) and journals them; a committer thread writes them in batches, and survives database
outages: rows wait in memory (bounded), then in spill files beside the process, and are written once the database
answers again. Rows are keyed by ``call_uuid``, so a replayed spill file never double-counts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import StorageError
from ..store import Store, UsageRow
from .spill import Journal, NoJournal, SpillDirectory

log = logging.getLogger("dspy_tokens")

_STOP = object()
SPILL_RESCAN_SECONDS = 30.0


class _Settle:
    __slots__ = ("reservation_id",)

    def __init__(self, reservation_id: str):
        self.reservation_id = reservation_id


class _Flush:
    __slots__ = ("event",)

    def __init__(self):
        self.event = threading.Event()


@dataclass(frozen=True)
class WriterStats:
    """A snapshot of the background writer: what it committed, what waits, and its last database error."""

    committed: int  # rows this tracker's writer inserted
    pending: int  # rows in memory, not yet committed (queued, being priced, or waiting for the database)
    last_error: str | None  # the last failed write, None once a write succeeds again
    spill_dir: Path  # where rows wait on disk while the database is unavailable
    alive: bool  # the writer threads are running


class UsageWriter:
    """Batches rows into the store on a daemon thread. ``submit`` never blocks and never raises."""

    def __init__(self, store: Store, to_row: Callable[[object], UsageRow], spill_dir: Path,
                 max_buffer: int = 10_000, batch_size: int = 1_000, max_retry_delay: float = 5.0,
                 on_committed: Callable[[int], None] | None = None, journal: bool = True):
        self.store = store
        self.to_row = to_row
        self.spill = SpillDirectory(Path(spill_dir))
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self.on_committed = on_committed
        self.committed = 0  # rows this writer inserted
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # callers -> intake thread
        self._staged: queue.SimpleQueue = queue.SimpleQueue()  # intake thread (rows, journaled) -> committer
        self._journal_lock = threading.Lock()
        self._pending: list[UsageRow] = []
        self._settled: list[str] = []  # reservations to delete once the rows queued before them are committed
        self._waiters: list[_Flush] = []
        self._spilled_here = False
        self._next_spill_scan = 0.0  # scan at start: a previous run may have left segments
        self._journal = Journal(self.spill.path) if journal else NoJournal()
        self._closed = False
        self._intake = threading.Thread(target=self._intake_loop, name="dspy-tokens-intake", daemon=True)
        self._thread = threading.Thread(target=self._run, name="dspy-tokens-writer", daemon=True)
        self._intake.start()
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------------
    def submit(self, call) -> None:
        self._queue.put(call)

    def settle(self, reservation_id: str) -> None:
        """Delete a reservation in the same transaction as the rows submitted before this call."""
        self._queue.put(_Settle(reservation_id))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is committed. False on timeout (DB unreachable)."""
        if not self._thread.is_alive():
            return not self._pending
        marker = _Flush()
        self._queue.put(marker)
        return marker.event.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write what can be written within ``timeout``; spill the rest to disk. True if all was committed."""
        if self._closed:
            return True
        self._closed = True
        committed = self.flush(timeout)
        self._queue.put(_STOP)
        self._thread.join(timeout=max(5.0, timeout or 0))
        return committed

    @property
    def stats(self) -> WriterStats:
        pending = len(self._pending) + self._queue.qsize() + self._staged.qsize()
        return WriterStats(self.committed, pending, self.last_error, self.spill.path, self._thread.is_alive())

    # -- writer thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.0
        try:  # a previous run left rows on disk: replay them now, not at this process's first LM call
            self._spilled_here = bool(self.spill.segments())
        except OSError:
            pass
        while True:
            block = not (self._pending or self._settled or self._waiters or self._spilled_here)
            stop = self._take(block=block, timeout=delay or None)
            ok = self._write()
            if ok:
                delay = 0.0
                if not self._pending:
                    self._reset_journal()
                    self._release_waiters()
            else:
                delay = min(self.max_retry_delay, max(0.05, delay * 2))
                if len(self._pending) > self.max_buffer:
                    self._spill_pending()
            if stop:
                if self._pending:
                    self._spill_pending()
                self._settled = []  # unsettled reservations expire by their TTL
                if not self._pending:
                    self._journal.remove()
                self._release_waiters(all_committed=False)
                self.store.close()
                return

    def _take(self, block: bool, timeout: float | None) -> bool:
        """Move queued calls into ``_pending`` as rows. Returns True when asked to stop."""
        try:
            item = self._staged.get(timeout=timeout) if (block or timeout) else self._staged.get_nowait()
        except queue.Empty:
            return False
        taken = 0
        while True:
            if item is _STOP:
                return True
            if isinstance(item, _Flush):
                self._waiters.append(item)
            elif isinstance(item, _Settle):
                self._settled.append(item.reservation_id)
            else:
                self._pending.append(item)
                taken += 1
            if taken >= self.batch_size * 4:
                return False
            try:
                item = self._staged.get_nowait()
            except queue.Empty:
                return False

    # -- intake thread: calls -> rows -> journal -> committer ------------------------------------------
    def _intake_loop(self) -> None:
        """Build rows and journal them as fast as calls arrive, even while the committer waits on the database."""
        while True:
            items = [self._queue.get()]
            while len(items) < self.batch_size:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            staged, rows = [], []
            for item in items:
                if item is _STOP or isinstance(item, (_Flush, _Settle)):
                    staged.append(item)
                    continue
                try:
                    row = self.to_row(item)
                except Exception:  # a bug in row building must not kill the writer or lose the others
                    log.exception("dspy-tokens: could not build a usage row for %r", item)
                    continue
                rows.append(row)
                staged.append(row)
            with self._journal_lock:
                self._journal.append(rows)
                for item in staged:
                    self._staged.put(item)
            if any(item is _STOP for item in items):
                return

    def _reset_journal(self) -> None:
        """Forget journaled rows once all of them are committed or spilled (none still on their way)."""
        with self._journal_lock:
            if self._staged.empty():
                self._journal.reset()

    def _write(self) -> bool:
        """Commit pending rows (and spilled ones). False when the database is unavailable."""
        try:
            self._replay_spill()
            while self._pending or self._settled:
                batch = self._pending[:self.batch_size]
                last = len(batch) == len(self._pending)
                self._insert(batch, self._settled if last else ())
                del self._pending[:len(batch)]
                if last:
                    self._settled = []
            self.last_error = None
            return True
        except StorageError as exc:
            self.last_error = str(exc)
            if not exc.unavailable:
                # The database answers and refused the data itself: isolate the bad rows.
                self._write_one_by_one()
                return not self._pending
            log.warning("dspy-tokens: database unavailable (%s); %d rows waiting, will retry",
                        self.last_error, len(self._pending))
            return False
        except Exception as exc:  # not the database's answer (a bug, the spill directory): keep the rows, retry
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("dspy-tokens: writing usage rows failed; %d rows waiting, will retry", len(self._pending))
            return False

    def _insert(self, batch: list[UsageRow], settled=()) -> None:
        added = self.store.write_batch(batch, list(settled))
        self.committed += added
        if self.on_committed is not None:
            try:
                self.on_committed(added)
            except Exception:
                log.exception("dspy-tokens: on_committed hook failed")

    def _write_one_by_one(self) -> None:
        rejected, kept = [], []
        for i, row in enumerate(self._pending):
            try:
                self._insert([row])
            except StorageError as exc:
                if exc.unavailable:  # the database went away meanwhile: keep the rest for the retry
                    kept = self._pending[i:]
                    break
                log.error("dspy-tokens: row %s rejected by the database (%s); kept in %s",
                          row.call_uuid, exc, self.spill.path)
                rejected.append(row)
        if rejected:
            self.spill.write(rejected, kind="rejected")
        self._pending = kept
        if not kept and self._settled:
            try:
                self._insert([], self._settled)
                self._settled = []
            except StorageError:
                pass  # they expire by their TTL

    def _spill_pending(self) -> None:
        try:
            path = self.spill.write(self._pending)
            self._reset_journal()
        except OSError:
            log.exception("dspy-tokens: could not spill %d rows to %s; keeping them in memory",
                          len(self._pending), self.spill.path)
            return
        log.warning("dspy-tokens: database unavailable; %d rows spilled to %s", len(self._pending), path)
        self._pending = []
        self._spilled_here = True

    def _replay_spill(self) -> None:
        now = time.monotonic()
        if not self._spilled_here and now < self._next_spill_scan:
            return
        self._next_spill_scan = now + SPILL_RESCAN_SECONDS
        for segment in self.spill.segments():
            claimed = self.spill.claim(segment)
            if claimed is None:
                continue
            rows = self.spill.read(claimed)
            try:
                for start in range(0, len(rows), self.batch_size):
                    self._insert(rows[start:start + self.batch_size])
            except Exception:
                self.spill.release(claimed)
                raise
            claimed.unlink()
            log.info("dspy-tokens: replayed %d spilled rows from %s", len(rows), segment.name)
        self._spilled_here = False

    def _release_waiters(self, all_committed: bool = True) -> None:
        if all_committed and self._spilled_here:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if all_committed:
                waiter.event.set()
            # On stop with rows left, waiters stay unset: flush() returns False, the rows are on disk.
