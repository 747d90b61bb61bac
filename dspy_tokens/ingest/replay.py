"""Replaying a spill directory into the database (the writer's background replay and ``dspy-tokens spill
replay``): every waiting file, each line validated, a refused row set aside without blocking the others.

A file is finished — removed — only once each of its rows is stored, or kept in a ``rejected-`` file (the database
refused it as data), or, for a line that is not a row, kept in an ``unreadable-`` file. When the database stops
answering, the file is given back and the replay stops; the caller retries later (rows are keyed by ``call_uuid``,
so what a stopped replay already stored is skipped next time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..errors import StorageError, StorageRejected
from ..store import UsageRow
from .spill import REJECTED, UNREADABLE, SpillDirectory


@dataclass
class ReplayResult:
    """What one replay did."""

    files: int = 0  # files replayed and removed
    rows: int = 0  # rows read from them
    written: int = 0  # rows newly stored (the others were stored already)
    rejected: int = 0  # rows the database refused as data, kept in rejected-*.jsonl
    unreadable: int = 0  # lines that are not rows, kept in unreadable-*.jsonl
    skipped: list[str] = field(default_factory=list)  # files left where they are, and why
    unavailable: StorageError | None = None  # the database stopped answering: the rest waits for the next replay
    last_rejection: str | None = None

    @property
    def complete(self) -> bool:
        return self.unavailable is None


def replay_directory(directory: SpillDirectory, insert: Callable[[Sequence[UsageRow]], int], *,
                     batch_size: int = 1000, rejected: bool = False) -> ReplayResult:
    """Replay every file waiting in ``directory`` (with ``rejected``, the rejected rows too) through ``insert``
    (which stores rows not stored yet and returns how many it added, raising :class:`StorageError`)."""
    result = ReplayResult()
    for path in directory.candidates(rejected=rejected):
        try:
            claim = directory.claim(path)
        except OSError as exc:
            result.skipped.append(f"{path.name}: cannot be claimed ({exc})")
            continue
        if claim is None:
            continue  # a running process holds it
        bad: list[str] = []
        try:
            rows, written, refused = _store(directory.read(claim, batch_size, bad), insert, result)
        except OSError as exc:
            result.skipped.append(f"{path.name}: cannot be read ({exc})")
            directory.release(claim)
            continue
        except StorageError as exc:  # unavailable: give the file back, stop, back off
            directory.release(claim)
            result.unavailable = exc
            return result
        except BaseException:
            directory.release(claim)
            raise
        try:
            if refused:
                directory.write(refused, kind=REJECTED)
            if bad:
                directory.write_lines(bad, kind=UNREADABLE)
        except OSError as exc:  # the file stays whole: nothing of it is lost
            result.skipped.append(f"{path.name}: its refused rows cannot be set aside ({exc})")
            directory.release(claim)
            continue
        directory.finish(claim)
        result.files += 1
        result.rows += rows
        result.written += written
        result.rejected += len(refused)
        result.unreadable += len(bad)
    return result


def _store(batches: Iterable[list[UsageRow]], insert, result: ReplayResult) -> tuple[int, int, list[UsageRow]]:
    """(rows read, rows added, rows refused); a batch the database refuses is retried row by row to find the
    refused ones."""
    read, written, refused = 0, 0, []
    for batch in batches:
        read += len(batch)
        try:
            written += insert(batch)
            continue
        except StorageRejected:
            pass
        for row in batch:
            try:
                written += insert([row])
            except StorageRejected as exc:
                refused.append(row)
                result.last_rejection = str(exc)
    return read, written, refused
