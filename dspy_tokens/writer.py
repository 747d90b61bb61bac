"""The background writer: the only place usage rows touch the database.

Callers hand it finished calls through a lock-free queue (a few hundred ns). The writer thread turns them into
rows (pricing included), commits them in batches, and survives database outages: rows wait in memory (bounded),
then in spill files beside the process, and are written once the database answers again. Rows are keyed by
``call_uuid``, so a replayed spill file never double-counts.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Callable

import peewee as pw

from .store import Store

log = logging.getLogger("dspy_tokens")

_STOP = object()
SPILL_SUFFIX = ".jsonl"
SPILL_RESCAN_SECONDS = 30.0


class _Release:
    __slots__ = ("reservation_id",)

    def __init__(self, reservation_id: str):
        self.reservation_id = reservation_id


class _Flush:
    __slots__ = ("event",)

    def __init__(self):
        self.event = threading.Event()


def _encode(row: dict) -> str:
    def default(value):
        if isinstance(value, Decimal):
            return {"$decimal": str(value)}
        if isinstance(value, datetime):
            return {"$datetime": value.isoformat()}
        raise TypeError(type(value).__name__)
    return json.dumps(row, default=default, separators=(",", ":"))


def _decode(line: str) -> dict:
    def hook(obj):
        if "$decimal" in obj:
            return Decimal(obj["$decimal"])
        if "$datetime" in obj:
            return datetime.fromisoformat(obj["$datetime"])
        return obj
    return json.loads(line, object_hook=hook)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SpillDirectory:
    """Rows that could not be written yet, as complete JSONL segment files any process may replay."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, rows: list[dict], kind: str = "spill") -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(_encode(row) + "\n" for row in rows)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)  # a segment becomes visible only when complete
        return final

    def segments(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        found = sorted(self.path.glob(f"spill-*{SPILL_SUFFIX}"))
        for stale in [*self.path.glob("claimed-*"), *self.path.glob(f"journal-*{SPILL_SUFFIX}")]:
            # claimed by a process that died mid-replay, or the journal of a process that was killed
            pid = stale.name.split("-")[1]
            if pid.isdigit() and not _pid_alive(int(pid)):
                found.append(stale)
        return found

    def claim(self, segment: Path) -> Path | None:
        claimed = segment.with_name(f"claimed-{os.getpid()}-{uuid.uuid4().hex[:8]}-{segment.name}")
        try:
            os.replace(segment, claimed)
        except FileNotFoundError:
            return None  # another process took it
        return claimed

    @staticmethod
    def read(segment: Path) -> list[dict]:
        rows = []
        with open(segment, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        rows.append(_decode(line))
                    except ValueError:
                        log.error("dspy-tokens: skipping an unreadable line in %s", segment)
        return rows

    def release(self, claimed: Path) -> None:
        """Give a claimed segment back (its replay failed)."""
        original = claimed.name.split("-", 3)[3]
        os.replace(claimed, claimed.with_name(original))


class Journal:
    """Rows the writer holds but has not committed, appended to a local file as they are taken.

    A process killed with SIGKILL leaves its journal behind; any tracker on the same spill directory replays it
    (rows already committed are skipped by ``call_uuid``). Appends are flushed to the OS without fsync: they
    survive the process dying, not the machine losing power.
    """

    def __init__(self, directory: Path):
        self.path = directory / f"journal-{os.getpid()}-{uuid.uuid4().hex[:8]}{SPILL_SUFFIX}"
        self._fh = None
        self._dirty = False

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write("".join(_encode(row) + "\n" for row in rows))
            self._fh.flush()
            self._dirty = True
        except (OSError, TypeError, ValueError):
            log.exception("dspy-tokens: could not journal %d rows to %s", len(rows), self.path)

    def reset(self) -> None:
        if self._dirty and self._fh is not None:
            try:
                self._fh.seek(0)
                self._fh.truncate()
                self._dirty = False
            except OSError:
                log.exception("dspy-tokens: could not truncate %s", self.path)

    def remove(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            try:
                self.path.unlink()
            except OSError:
                pass


class _NoJournal:
    def append(self, rows):
        pass

    def reset(self):
        pass

    def remove(self):
        pass


class UsageWriter:
    """Batches rows into the store on a daemon thread. ``submit`` never blocks and never raises."""

    def __init__(self, store: Store, to_row: Callable[[object], dict], spill_dir: Path,
                 max_buffer: int = 10_000, batch_size: int = 1_000, max_retry_delay: float = 5.0,
                 on_committed: Callable[[list[dict]], None] | None = None, journal: bool = True):
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
        self._pending: list[dict] = []
        self._releases: list[str] = []  # reservations to delete once the rows queued before them are committed
        self._waiters: list[_Flush] = []
        self._spilled_here = False
        self._next_spill_scan = 0.0  # scan at start: a previous run may have left segments
        self._journal = Journal(self.spill.path) if journal else _NoJournal()
        self._closed = False
        self._intake = threading.Thread(target=self._intake_loop, name="dspy-tokens-intake", daemon=True)
        self._thread = threading.Thread(target=self._run, name="dspy-tokens-writer", daemon=True)
        self._intake.start()
        self._thread.start()

    # -- caller side -------------------------------------------------------------------------------
    def submit(self, call) -> None:
        self._queue.put(call)

    def release(self, reservation_id: str) -> None:
        """Delete a reservation in the same transaction as the rows submitted before this call."""
        self._queue.put(_Release(reservation_id))

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
    def backlog(self) -> int:
        return len(self._pending) + self._queue.qsize() + self._staged.qsize()

    # -- writer thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        delay = 0.0
        try:  # a previous run left rows on disk: replay them now, not at this process's first LM call
            self._spilled_here = bool(self.spill.segments())
        except OSError:
            pass
        while True:
            block = not (self._pending or self._releases or self._waiters or self._spilled_here)
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
                self._releases = []  # unsettled reservations expire by their TTL
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
            elif isinstance(item, _Release):
                self._releases.append(item.reservation_id)
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
                if item is _STOP or isinstance(item, (_Flush, _Release)):
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
            while self._pending or self._releases:
                batch = self._pending[:self.batch_size]
                last = len(batch) == len(self._pending)
                self._insert(batch, self._releases if last else ())
                del self._pending[:len(batch)]
                if last:
                    self._releases = []
            self.last_error = None
            return True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.store.reset_connection()
            if not self._unavailable(exc):
                # The database answers and refused the data itself: isolate the bad rows.
                self._write_one_by_one()
                return not self._pending
            log.warning("dspy-tokens: database unavailable (%s); %d rows waiting, will retry",
                        self.last_error, len(self._pending))
            return False

    def _unavailable(self, exc: Exception) -> bool:
        """True when a write failed because of the database's state, not the rows': keep them and retry.

        An OperationalError is the database's state even when it still answers a ping: SQLite's "database is
        locked", deadlocks, serialization failures, a full disk. Only the rows' own faults (integrity or data
        errors) may reject them. An InterfaceError is the connection's state (pymysql's ``(0, '')`` and
        psycopg2's "connection already closed" after a dropped connection), even if a fresh ping succeeds.
        """
        return isinstance(exc, (pw.OperationalError, pw.InterfaceError)) or not self.store.ping()

    def _insert(self, batch: list[dict], release=()) -> None:
        added = self.store.insert_rows(batch, list(release))
        self.committed += added
        if self.on_committed is not None:
            try:
                self.on_committed(batch)
            except Exception:
                log.exception("dspy-tokens: on_committed hook failed")

    def _write_one_by_one(self) -> None:
        rejected, kept = [], []
        for i, row in enumerate(self._pending):
            try:
                self._insert([row])
            except Exception as exc:
                if self._unavailable(exc):  # the database went away meanwhile: keep the rest for the retry
                    kept = self._pending[i:]
                    break
                log.error("dspy-tokens: row %s rejected by the database (%s); kept in %s",
                          row.get("call_uuid"), exc, self.spill.path)
                rejected.append(row)
        if rejected:
            self.spill.write(rejected, kind="rejected")
        self._pending = kept
        if not kept and self._releases:
            try:
                self._insert([], self._releases)
                self._releases = []
            except Exception:
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
