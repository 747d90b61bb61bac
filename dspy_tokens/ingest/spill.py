"""The spill directory: rows waiting on local disk for the database, as JSON-lines files any process may replay.

=====================  ======================================================================================
file                   holds
=====================  ======================================================================================
``spill-*.jsonl``      rows a writer could not commit (an outage, or its close); replayed automatically
``journal-*.jsonl``    rows a living writer holds (locked by it); once its lock is free, replayed like a spill
``claimed-*.jsonl``    a file being replayed (locked by the replayer); one whose lock is free is taken over
``rejected-*.jsonl``   rows the database refused as data; kept, replayed on demand (``spill replay --rejected``)
``unreadable-*.jsonl`` lines that are not rows (garbage, a truncated write); kept for inspection
=====================  ======================================================================================

A file becomes visible only when complete (written under a temporary name, then renamed), and is claimed by
locking it and renaming it, so two processes never replay the same file at once.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ..store import Store, UsageRow
from .journal import SUFFIX, decode, encode, try_lock

SPILL_DIR_ENV = "DSPY_TOKENS_SPILL_DIR"
SPILL, JOURNAL, CLAIMED, REJECTED, UNREADABLE = "spill", "journal", "claimed", "rejected", "unreadable"
KINDS = (SPILL, JOURNAL, CLAIMED, REJECTED, UNREADABLE)
_CLAIM_PREFIX = re.compile(r"^claimed-(?:\d+-[0-9a-f]{8}|[0-9a-f]{32})-")
_LEGACY_JOURNAL = re.compile(r"^journal-(\d+)-[0-9a-f]{8}\.jsonl$")  # named by PID (dspy-tokens <= 0.2)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
STALE_SECONDS = 600.0  # a temporary file this old belongs to no write in progress


def default_spill_dir(store: Store) -> Path:
    """Where rows wait while the database is unreachable: beside a SQLite file, else in the user's cache."""
    configured = os.environ.get(SPILL_DIR_ENV)
    digest = hashlib.sha1(store.url.encode()).hexdigest()[:12]
    if configured:
        return Path(configured) / digest
    if store.dialect == "sqlite":
        database = store.db.database
        if database and database != ":memory:":
            return Path(f"{database}.spill")
    return Path.home() / ".cache" / "dspy_tokens" / "spill" / digest


def original_name(name: str) -> str:
    """The name a file had before it was claimed (claims may be taken over, so prefixes may repeat)."""
    while True:
        stripped = _CLAIM_PREFIX.sub("", name, count=1)
        if stripped == name:
            return name
        name = stripped


def kind_of(name: str) -> str | None:
    if name.startswith("claimed-"):
        return CLAIMED
    for kind in (SPILL, JOURNAL, REJECTED, UNREADABLE):
        if name.startswith(f"{kind}-") and name.endswith(SUFFIX):
            return kind
    return None


@dataclass(frozen=True)
class SpillFile:
    """One file of a spill directory, as ``dspy-tokens spill status`` lists it."""

    path: Path
    kind: str  # spill | journal | claimed | rejected | unreadable
    live: bool  # held by a running process: a writer's journal, a replay in progress
    rows: int  # lines
    bytes: int
    modified: datetime


@dataclass
class Claim:
    """A file this process locked and renamed to replay it."""

    path: Path
    original: str
    fd: int


class SpillDirectory:
    """The files of one spill directory (created on first write)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    # -- writing -------------------------------------------------------------------------------------------
    def write(self, rows: list[UsageRow], kind: str = SPILL) -> Path:
        """A new complete file of ``rows``; nothing is left behind when it cannot be written."""
        return self.write_lines([encode(row) for row in rows], kind)

    def write_lines(self, lines: list[str], kind: str) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"{kind}-{uuid.uuid4().hex}{SUFFIX}"
        tmp = final.with_name(final.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.writelines(line + "\n" for line in lines)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)  # a file becomes visible only when complete
        except BaseException:
            _unlink(tmp)
            raise
        return final

    # -- what waits ------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        try:
            return sorted(os.listdir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def candidates(self, rejected: bool = False) -> list[Path]:
        """Files a replay may claim (a live journal or claim refuses the claim): spill segments, journals, claims,
        and with ``rejected`` the rejected rows too."""
        kinds = {SPILL, JOURNAL, CLAIMED} | ({REJECTED} if rejected else set())
        self.sweep()
        return [self.path / name for name in self.names() if kind_of(name) in kinds]

    def sweep(self) -> None:
        """Remove what a dead process left half made: a journal it never named (always empty), a spill file it
        never finished writing (its rows are still in that process's journal)."""
        now = time.time()
        for name in self.names():
            if name.endswith((".jsonl.new", ".jsonl.tmp")):
                path = self.path / name
                try:
                    stale = now - path.stat().st_mtime > STALE_SECONDS
                except OSError:
                    continue
                if stale and not self.is_live(path):
                    _unlink(path)

    def is_live(self, path: Path) -> bool:
        """Held by a running process (its lock cannot be taken)."""
        legacy = _LEGACY_JOURNAL.match(path.name)
        if legacy:
            return _legacy_alive(int(legacy.group(1)))
        try:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        except OSError:
            return False
        try:
            return not try_lock(fd)
        finally:
            os.close(fd)  # also releases the probe's lock

    def files(self) -> list[SpillFile]:
        """Every file with its kind, whether a running process holds it, its lines and size."""
        self.sweep()
        found = []
        for name in self.names():
            kind = kind_of(name)
            if kind is None:
                continue
            path = self.path / name
            try:
                stat = path.stat()
                with open(path, "rb") as fh:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
            except OSError:
                continue  # claimed or removed meanwhile
            live = kind in (JOURNAL, CLAIMED) and self.is_live(path)
            found.append(SpillFile(path, kind, live, lines, stat.st_size,
                                   datetime.fromtimestamp(stat.st_mtime, timezone.utc)))
        return found

    # -- replaying -------------------------------------------------------------------------------------------
    def claim(self, path: Path) -> Claim | None:
        """Lock and rename ``path`` for this process to replay; None when a running process holds it or another
        process took it first. Raises OSError when the directory cannot be changed (read-only)."""
        legacy = _LEGACY_JOURNAL.match(path.name)
        if legacy and _legacy_alive(int(legacy.group(1))):
            return None
        try:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        except FileNotFoundError:
            return None
        if not try_lock(fd):
            os.close(fd)
            return None
        original = original_name(path.name)
        claimed = path.with_name(f"claimed-{uuid.uuid4().hex}-{original}")
        try:
            os.replace(path, claimed)
        except FileNotFoundError:  # replayed and removed by another process since we opened it
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        return Claim(claimed, original, fd)

    @staticmethod
    def read(claim: Claim, batch_size: int, bad: list[str]) -> Iterator[list[UsageRow]]:
        """The file's rows, ``batch_size`` at a time (a replay into an unavailable database stops at the first);
        lines that are not rows are appended to ``bad``."""
        rows: list[UsageRow] = []
        with open(claim.path, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(decode(line))
                except ValueError:
                    bad.append(line.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
                if len(rows) >= batch_size:
                    yield rows
                    rows = []
        if rows:
            yield rows

    def release(self, claim: Claim) -> None:
        """Give a claimed file back under its own name (its replay could not finish)."""
        try:
            os.replace(claim.path, claim.path.with_name(claim.original))
        except OSError:
            pass  # left claimed: once our lock is gone, any replay takes it over
        os.close(claim.fd)

    @staticmethod
    def finish(claim: Claim) -> None:
        """The file's rows are all stored (or kept elsewhere): remove it."""
        _unlink(claim.path)
        os.close(claim.fd)

    def discard(self, files: list[SpillFile]) -> list[SpillFile]:
        """Delete these files, except those a running process holds (or that are gone); returns the deleted."""
        gone = []
        for spill_file in files:
            if spill_file.path.exists() and not self.is_live(spill_file.path):
                _unlink(spill_file.path)
                gone.append(spill_file)
        return gone


def _legacy_alive(pid: int) -> bool:
    """A journal named by PID (no lock): its owner may live unless that PID is gone — or is this process, whose
    own journals are named otherwise (in a container every restart is PID 1)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
