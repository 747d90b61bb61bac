"""The background writer: the only place usage rows reach the database.

Callers hand it finished calls through a lock-free queue (a few hundred ns). An intake thread turns them into
rows (pricing included) and journals them, waking at most every ``INTAKE_INTERVAL`` (a SIGKILL loses what
waits that long); a committer thread gathers rows for up to ``COMMIT_INTERVAL`` or a batch per transaction (one
per call costs ~10x the CPU per row); a flush, a settle or close commits at once. Neither thread can die: an
unexpected error is logged and its loop starts again with every row it held. While the database is unavailable
(unreachable, locked, read-only, full: the store's classification) rows wait in memory (bounded), then in spill
files, and are written once it answers; rows it refuses as data are set aside in ``rejected-`` files, replayable
after a fix. Rows are keyed by ``call_uuid``, so a replayed file never double-counts.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..errors import StorageError, StorageRejected
from ..store import Store, UsageRow
from .backlog import Backlog
from .health import Health, OutageLog
from .journal import Journal, NoJournal
from .markers import MARKERS, STOP, Flush, Settle

log = logging.getLogger("dspy_tokens")

OUTAGE_CLOSE_SECONDS = 1.0  # how long close() still waits for a database that is unavailable
INTAKE_INTERVAL = 0.002  # seconds: the intake thread wakes at most this often
COMMIT_INTERVAL = 0.05  # seconds: the longest the committer gathers rows before a transaction


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

    def __init__(self, store: Store, to_row: Callable[[Any], UsageRow], spill_dir: Path,
                 max_buffer: int = 10_000, batch_size: int = 1_000, max_retry_delay: float = 5.0,
                 on_committed: Callable[[int], None] | None = None, journal: bool = True):
        self.store = store
        self.to_row = to_row
        self.backlog = Backlog(Path(spill_dir))
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.max_retry_delay = max_retry_delay
        self.on_committed = on_committed
        self.committed = 0  # rows this writer inserted
        self.last_error: str | None = None
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # callers -> intake thread
        self._staged: queue.SimpleQueue = queue.SimpleQueue()  # intake thread (rows, journaled) -> committer
        self._journal_lock = threading.Lock()
        # Set by the intake thread for what ends a gathering (a marker, a batch of rows), not for every row staged.
        self._wake, self._unsignalled = threading.Event(), 0
        self._pending: list[UsageRow] = []
        self._gathered_since = 0.0  # monotonic time the oldest row in _pending was taken
        self._settled: list[str] = []  # reservations to delete once the rows queued before them are committed
        self._waiters: list[Flush] = []
        self._outage = OutageLog()
        self._stopping = False
        self._retry_at = 0.0  # no write before this (monotonic): backing off after a failure
        self._delay = 0.0
        self._journal = Journal(self.backlog.path) if journal else NoJournal()
        self._closed = False
        self._intake = threading.Thread(target=self._supervised(self._intake_loop, "intake"),
                                        name="dspy-tokens-intake", daemon=True)
        self._thread = threading.Thread(target=self._supervised(self._run, "writer"), name="dspy-tokens-writer",
                                        daemon=True)
        self._intake.start()
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------------
    def submit(self, call) -> None:
        self._queue.put(call)

    def settle(self, reservation_id: str) -> None:
        """Delete a reservation in the same transaction as the rows submitted before this call."""
        self._queue.put(Settle(reservation_id))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is committed. False on timeout (DB unreachable)."""
        if not self._thread.is_alive():
            return not self._pending
        marker = Flush()
        self._queue.put(marker)
        return marker.event.wait(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Write what can be written within ``timeout`` (at most ``OUTAGE_CLOSE_SECONDS`` while the database is
        unavailable: then the rows go to disk at once); spill the rest. True if all was committed."""
        if self._closed:
            return True
        self._closed = True
        if self._outage.active:
            timeout = OUTAGE_CLOSE_SECONDS if timeout is None else min(timeout, OUTAGE_CLOSE_SECONDS)
        committed = self.flush(timeout)
        self._queue.put(STOP)
        self._thread.join(timeout=max(5.0, timeout or 0))
        return committed

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self._intake.is_alive()

    @property
    def stats(self) -> WriterStats:
        pending = len(self._pending) + self._queue.qsize() + self._staged.qsize()
        return WriterStats(self.committed, pending, self.last_error, self.backlog.path, self.alive)

    def health(self, database_reachable: bool) -> Health:
        """The writer's state and what waits in its spill directory (reads the directory)."""
        spilled, rejected = self.backlog.counts()
        return Health(self.alive, database_reachable, self.stats.pending, spilled, rejected, self.last_error,
                      self.backlog.path)

    # -- supervision -------------------------------------------------------------------------------
    def _supervised(self, loop: Callable[[], None], name: str) -> Callable[[], None]:
        """Run ``loop`` until it returns; an unexpected error restarts it (the rows live on ``self``)."""
        def run() -> None:
            failures = 0
            while True:
                try:
                    loop()
                    return
                except Exception as exc:
                    failures += 1
                    self.last_error = f"{name} thread: {type(exc).__name__}: {exc}"
                    if failures == 1 or failures % 100 == 0:
                        log.exception("dspy-tokens: the %s thread failed (%d times so far); it starts again, "
                                      "keeping every row it held", name, failures)
                    time.sleep(min(self.max_retry_delay, 0.05 * 2 ** min(failures, 7)))
        return run

    # -- intake thread: calls -> rows -> journal -> committer ------------------------------------------
    def _intake_loop(self) -> None:
        """Build rows and journal them as fast as calls arrive, even while the committer waits on the database."""
        woke, full = 0.0, False
        while True:
            items = [self._queue.get()]
            if not (full or items[0] is STOP or isinstance(items[0], MARKERS)):
                rest = woke + INTAKE_INTERVAL - time.monotonic()
                if rest > 0:  # let the calls of the next milliseconds join this wake-up
                    time.sleep(rest)
            woke = time.monotonic()
            while len(items) < self.batch_size:  # a batch at a time: the committer starts on it meanwhile
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            full = len(items) >= self.batch_size
            staged, rows = [], []
            build = self.to_row
            for item in items:
                if item is STOP or isinstance(item, MARKERS):
                    staged.append(item)
                    continue
                try:
                    row = build(item)
                except Exception:  # a bug in row building must not kill the writer or lose the others
                    log.exception("dspy-tokens: could not build a usage row for %r", item)
                    continue
                rows.append(row)
                staged.append(row)
            with self._journal_lock:
                try:
                    self._journal.append(rows)
                except Exception:  # the journal is a safety net, never a reason to drop the rows
                    log.exception("dspy-tokens: journaling %d rows failed", len(rows))
                for item in staged:
                    self._staged.put(item)
            self._unsignalled += len(rows)
            if len(rows) < len(staged) or self._unsignalled >= self.batch_size:
                self._unsignalled = 0
                self._wake.set()
            if any(item is STOP for item in items):
                return

    # -- committer thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        self.backlog.look()
        while not self._stopping:
            idle = not (self._pending or self._settled or self._waiters or self.backlog.waiting)
            now, save_due = time.monotonic(), self.backlog.save_due
            if idle:
                wait = None if save_due is None else max(0.0, save_due - now)
            else:
                wait = max(0.0, self._retry_at - now, self._gathering(now))
            self._take(wait)
            if self._stopping:
                break
            if self._gathering(time.monotonic()) > 0:  # fewer, larger transactions
                continue
            if save_due is not None and time.monotonic() >= save_due:
                self.backlog.save_rejected()
            if time.monotonic() < self._retry_at:  # backing off: only keep memory bounded
                if len(self._pending) > self.max_buffer:
                    self._spill_pending()
                continue
            if self._pending or self._settled or self.backlog.waiting:
                if not self._write():
                    self._delay = min(self.max_retry_delay, max(0.05, self._delay * 2))
                    self._retry_at = time.monotonic() + self._delay
                    if len(self._pending) > self.max_buffer:
                        self._spill_pending()
                    continue
                self._delay = self._retry_at = 0.0
                self._compact_journal()
            self._release_waiters()
        self._finish()

    def _gathering(self, now: float) -> float:
        """How much longer to gather rows before committing (0: commit now)."""
        if not self._pending or self._waiters or self._settled or len(self._pending) >= self.batch_size \
                or self.backlog.waiting or now < self._retry_at:
            return 0.0
        return max(0.0, self._gathered_since + COMMIT_INTERVAL - now)

    def _absorb(self, item) -> None:
        if item is STOP:
            self._stopping = True
        elif isinstance(item, Flush):
            self._waiters.append(item)
        elif isinstance(item, Settle):
            self._settled.append(item.reservation_id)
        else:
            if not self._pending:
                self._gathered_since = time.monotonic()
            self._pending.append(item)

    def _take(self, wait: float | None) -> None:
        """Move staged items into the committer's lists: wait up to ``wait`` s for the first (None: until one comes),
        then take what is there (at most a few batches, so a flood never starves the writes). While gathering,
        wait for the intake thread's signal instead of each item."""
        if wait and self._pending and self._gathering(time.monotonic()) > 0:
            self._wake.wait(wait)
            self._wake.clear()
            wait = 0.0
        try:
            item = self._staged.get(timeout=wait) if wait is None or wait > 0 else self._staged.get_nowait()
        except queue.Empty:
            return
        self._absorb(item)
        for _ in range(self.batch_size * 4):
            try:
                self._absorb(self._staged.get_nowait())
            except queue.Empty:
                return

    def _drain_staged(self) -> None:
        """Take everything staged (with the journal lock held: then the journal holds exactly what we hold)."""
        while True:
            try:
                self._absorb(self._staged.get_nowait())
            except queue.Empty:
                return

    def _compact_journal(self) -> None:
        """After a commit: the journal keeps only the rows still held, so it never grows with the stream."""
        with self._journal_lock:
            self._drain_staged()
            if not self._pending:
                self._journal.reset()
            elif self._journal.rows > max(4 * len(self._pending), self.batch_size):
                self._journal.rewrite(self._pending)

    def _write(self) -> bool:
        """Commit pending, then spilled rows. False when the database is unavailable (the rows are kept)."""
        written = 0
        try:
            while self._pending or self._settled:
                batch = self._pending[:self.batch_size]
                last = len(batch) == len(self._pending)
                settled = self._settled if last else []
                try:
                    written += self._insert(batch, settled)
                except StorageRejected:
                    written += self._isolate(batch, settled)
                del self._pending[:len(batch)]
                if last:
                    self._settled = []
            # After the rows in memory: those probe the database cheaply, a replay reads whole files first.
            written += self.backlog.replay(self._insert, self.batch_size)
        except StorageError as exc:  # unavailable: the database's state, not the rows'
            self.last_error = str(exc)
            self._outage.failed(self.last_error, self.stats.pending)
            return False
        except Exception as exc:  # not the database's answer (a bug): keep the rows, retry with backoff
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.backlog.tell(self.last_error, logging.ERROR, "dspy-tokens: writing usage rows failed unexpectedly "
                              "(%s); the rows are kept and the write retried", self.last_error, exc_info=True)
            return False
        self.last_error = None
        self._outage.recovered(written)
        return True

    def _insert(self, batch, settled=()) -> int:
        added = self.store.write_batch(batch, list(settled))
        self.committed += added
        if self.on_committed is not None:
            try:
                self.on_committed(added)
            except Exception:
                log.exception("dspy-tokens: on_committed hook failed")
        return added

    def _isolate(self, batch: list[UsageRow], settled) -> int:
        """Row by row: store every row the database takes and set aside those it refuses as data. An unavailable
        database raises (the batch stays pending; what was stored is skipped on the retry)."""
        written, refused, reason = 0, [], ""
        for row in batch:
            try:
                written += self._insert([row])
            except StorageRejected as exc:
                refused.append(row)
                reason = str(exc)
        if settled:
            try:
                self._insert([], settled)
            except StorageRejected:
                pass  # they expire by their TTL
        if refused:
            self.backlog.reject(refused, len(batch), reason)
        return written

    def _spill_pending(self, final: bool = False) -> bool:
        """Move every held row to a spill file (the journal then holds none). False when it cannot be written."""
        with self._journal_lock:
            self._drain_staged()
            if self._pending and not self.backlog.spill(self._pending, self._journal.intact, final):
                return False
            self._journal.reset()
            self._pending = []
        return True

    def _release_waiters(self) -> None:
        # Settled reservations count too: a flush taken with a settle (by the journal's compaction) must wait for it.
        if self._pending or self._settled or self.backlog.waiting:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.event.set()

    # -- stop --------------------------------------------------------------------------------------
    def _finish(self) -> None:
        """Stopping: one last write if the database was answering, then everything held goes to disk — a spill
        file, else the journal (kept for the next tracker), else the log, never silently nowhere."""
        self._take_late_calls()
        if (self._pending or self._settled) and not self._outage.active:
            self._write()
        if self._pending:
            self._spill_pending(final=True)
        self.backlog.save_rejected()
        if self.backlog.rejected:
            self.backlog.dump(self.backlog.rejected, "refused by the database as data and could not be saved to disk")
        self._settled = []  # unsettled reservations expire by their TTL
        if not self._pending:
            self._journal.remove()
        elif self._journal.intact:
            self._journal.close()
            log.warning("dspy-tokens: %d rows could not be committed or spilled; they stay in %s and are written by "
                        "the next tracker on %s", len(self._pending), self._journal.path, self.backlog.path)
        else:
            self._journal.close()
            self.backlog.dump(self._pending, "not committed (the database is unavailable) and could not be saved "
                                             "to disk")
        if not self._pending:
            self._release_waiters()
        self.store.close()

    def _take_late_calls(self) -> None:
        """Calls submitted after the intake thread stopped (a race with close): build their rows here."""
        with self._journal_lock:
            self._drain_staged()
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is STOP or isinstance(item, MARKERS):
                self._absorb(item)
                continue
            try:
                self._pending.append(self.to_row(item))
            except Exception:
                log.exception("dspy-tokens: could not build a usage row for %r", item)
            self._journal.intact = False  # these rows were never journaled
