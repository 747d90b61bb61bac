"""Rows on local disk: spill segments (rows that wait for the database) and the journal (rows the writer holds
but has not committed), in one JSON-lines codec that keeps ``Decimal`` and aware ``datetime`` exact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from ..store import Store, UsageRow

log = logging.getLogger("dspy_tokens")

SPILL_SUFFIX = ".jsonl"
SPILL_DIR_ENV = "DSPY_TOKENS_SPILL_DIR"


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


def encode(row: UsageRow) -> str:
    def default(value):
        if isinstance(value, Decimal):
            return {"$decimal": str(value)}
        if isinstance(value, datetime):
            return {"$datetime": value.isoformat()}
        raise TypeError(type(value).__name__)
    return json.dumps(row._asdict(), default=default, separators=(",", ":"))


def decode(line: str) -> UsageRow:
    def hook(obj):
        if "$decimal" in obj:
            return Decimal(obj["$decimal"])
        if "$datetime" in obj:
            return datetime.fromisoformat(obj["$datetime"])
        return obj
    data = json.loads(line, object_hook=hook)
    if not isinstance(data, dict):
        raise ValueError("not a row object")
    return UsageRow(**data)


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

    def write(self, rows: list[UsageRow], kind: str = "spill") -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"{kind}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SPILL_SUFFIX}"
        tmp = final.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(encode(row) + "\n" for row in rows)
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
    def read(segment: Path) -> list[UsageRow]:
        rows = []
        with open(segment, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        rows.append(decode(line))
                    except (ValueError, TypeError):
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

    def append(self, rows: list[UsageRow]) -> None:
        if not rows:
            return
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "a", encoding="utf-8")
            self._fh.write("".join(encode(row) + "\n" for row in rows))
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


class NoJournal(Journal):
    """For writers that opt out of journaling (benchmarks of the bare write path)."""

    def __init__(self, directory: Path | None = None):
        self.path = None  # type: ignore[assignment]

    def append(self, rows) -> None:
        pass

    def reset(self) -> None:
        pass

    def remove(self) -> None:
        pass
