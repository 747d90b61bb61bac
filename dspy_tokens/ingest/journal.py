"""The JSON-lines row codec (spill files and journals), and the journal: rows a writer holds but has not
committed, on local disk while its process lives.

The codec keeps ``Decimal`` and aware ``datetime`` exact, and reads lines written by other versions: unknown keys
are ignored, missing columns get their default, values are coerced to the column's type, so a row is never lost
because its line came from an older or newer dspy-tokens.

A journal's owner holds an exclusive ``flock`` on it for its whole life. A journal whose lock can be taken has no
living owner — whatever its PID, in whatever PID namespace — and is replayed by any tracker on the directory.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import orjson

from ..store import UsageRow
from .rows import storable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: dead journals are not recognised automatically
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("dspy_tokens")
_orjson_dumps = orjson.dumps
_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME  # datetimes go through _default, as json writes them

SUFFIX = ".jsonl"
RETRY_SECONDS = 30.0  # a journal that could not be opened is tried again after this long
_REQUIRED = ("call_uuid", "created_at")
#: Columns a line from another version may lack that have a natural value (others become None).
_FALLBACKS = {  # each takes the columns decoded so far (in column order)
    "session_id": lambda row: row["call_uuid"],
    "call_index": lambda row: 0,
    "model": lambda row: "unknown",
    "cost_source": lambda row: "unknown",
    "cache_hit": lambda row: False,
    "usage_reported": lambda row: any(row.get(k) is not None for k in ("prompt_tokens", "completion_tokens",
                                                                       "total_tokens")),
}


# -- the codec ------------------------------------------------------------------------------------------------
def _default(value):
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    raise TypeError(type(value).__name__)


def encode(row: UsageRow) -> str:
    return json.dumps(row._asdict(), default=_default, separators=(",", ":"))


def encode_lines(rows: list[UsageRow]) -> bytes:
    """JSON lines of ``rows``, UTF-8: orjson's (~3x faster than json's on the intake thread, same lines once
    decoded), else json's for a row orjson refuses (an integer beyond 64 bits)."""
    fields, parts = UsageRow._fields, []
    for row in rows:
        try:
            parts.append(_orjson_dumps(dict(zip(fields, row)), default=_default, option=_PASSTHROUGH))
        except TypeError:
            parts.append(encode(row).encode("utf-8"))
    parts.append(b"")
    return b"\n".join(parts)


def _hook(obj):
    if "$decimal" in obj:
        return Decimal(obj["$decimal"])
    if "$datetime" in obj:
        return datetime.fromisoformat(obj["$datetime"])
    return obj


def _kind(annotation) -> tuple[str, bool]:
    """('int' | 'str' | 'bool' | 'Decimal' | 'datetime' | other, nullable) from a field's annotation."""
    text = getattr(annotation, "__forward_arg__", None) or getattr(annotation, "__name__", None) or str(annotation)
    parts = [part.strip() for part in text.split("|")]
    kinds = [part for part in parts if part != "None"]
    return (kinds[0] if kinds else "None"), "None" in parts


_COLUMNS = {name: _kind(UsageRow.__annotations__.get(name, "")) for name in UsageRow._fields}


def _coerce(value, kind: str):
    """``value`` as ``kind``; raises ValueError/TypeError when it cannot be one."""
    if kind == "int":
        if isinstance(value, bool):
            raise TypeError("bool is not a count")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if not isinstance(value, int):
            raise TypeError(f"{type(value).__name__} is not an int")
        return value
    if kind == "str":
        return value if isinstance(value, str) else str(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if value in (0, 1, "0", "1", "true", "false"):
            return value in (1, "1", "true")
        raise TypeError(f"{value!r} is not a bool")
    if kind == "Decimal":
        try:
            return value if isinstance(value, Decimal) else Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal") from None
    if kind == "datetime":
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        if not isinstance(moment, datetime):
            raise TypeError(f"{value!r} is not a time")
        return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    return value  # a kind this codec does not know (e.g. a JSON column): as decoded


def row_from(data: dict) -> UsageRow:
    """A row from a decoded line of any version; ValueError when it is not a row at all."""
    if not isinstance(data, dict) or any(not data.get(key) for key in _REQUIRED):
        raise ValueError(f"not a row: needs {', '.join(_REQUIRED)}")
    values: dict = {}
    for name, (kind, nullable) in _COLUMNS.items():
        value = data.get(name)
        if value is not None:
            try:
                values[name] = _coerce(value, kind)
                continue
            except (TypeError, ValueError):
                if name in _REQUIRED:
                    raise ValueError(f"not a row: {name}={value!r}") from None
        if name in UsageRow._field_defaults:  # an absent or unusable value: the column's default
            values[name] = UsageRow._field_defaults[name]
        elif name in _FALLBACKS:
            values[name] = _FALLBACKS[name](values)
        elif nullable:
            values[name] = None
        else:
            raise ValueError(f"not a row: {name} is missing")
    return storable(UsageRow(**values))


def decode(line: str) -> UsageRow:
    """A row from one JSON line; ValueError for a line that is not one (garbage, a truncated write)."""
    try:
        data = json.loads(line, object_hook=_hook)
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    return row_from(data)


# -- file locks -----------------------------------------------------------------------------------------------
def try_lock(fd: int) -> bool:
    """Take an exclusive lock on an open file without waiting. False when another open file holds it (its owner
    lives), or when this platform has no ``flock``."""
    if fcntl is None:  # pragma: no cover
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    return True


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# -- the journal ----------------------------------------------------------------------------------------------
class Journal:
    """Rows the writer holds but has not committed, appended to ``journal-<token>.jsonl`` as they are taken.

    The file only ever holds complete lines (a failed append is cut back), is locked by its owner until
    :meth:`close`, and holds no more than what the writer still owes: :meth:`reset` empties it once everything is
    committed or spilled, :meth:`rewrite` compacts it to the rows still held. Appends reach the OS without fsync:
    they survive the process dying, not the machine losing power.
    """

    def __init__(self, directory: Path):
        self.path = directory / f"journal-{uuid.uuid4().hex}{SUFFIX}"
        self.rows = 0  # lines in the file
        self.intact = True  # every row appended since the last reset/rewrite is in the file
        self._fd: int | None = None
        self._size = 0
        self._retry_at = 0.0
        self._failing: str | None = None

    def _open(self) -> int:
        if time.monotonic() < self._retry_at:
            raise OSError(self._failing or "the journal could not be opened")
        fresh = self.path.with_name(self.path.name + ".new")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError:
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise
        try_lock(fd)  # before the name is visible: a visible journal is always locked by a living owner
        try:
            os.replace(fresh, self.path)
        except OSError:
            os.close(fd)
            _unlink(fresh)
            self._retry_at = time.monotonic() + RETRY_SECONDS
            raise
        self._fd = fd
        return fd

    def _write(self, rows: list[UsageRow]) -> None:
        data = encode_lines(rows)
        fd = self._fd if self._fd is not None else self._open()
        try:
            write_all(fd, data)
        except OSError:
            try:
                os.ftruncate(fd, self._size)  # never leave half a line behind
            except OSError:
                pass
            raise
        self._size += len(data)
        self.rows += len(rows)

    def append(self, rows: list[UsageRow]) -> bool:
        """Add rows; False (logged once until it works again) when they could not be written."""
        if not rows:
            return True
        try:
            self._write(rows)
        except (OSError, TypeError, ValueError) as exc:
            self.intact = False
            if self._failing is None:
                log.warning("dspy-tokens: cannot journal rows to %s (%s); they are kept in memory and written as "
                            "usual, but a crash of this process would lose them until the directory is writable "
                            "again (spill_dir= or $DSPY_TOKENS_SPILL_DIR)", self.path, exc)
            self._failing = f"{type(exc).__name__}: {exc}"
            return False
        if self._failing is not None:
            self._failing = None
            log.warning("dspy-tokens: journaling to %s works again", self.path)
        return True

    def reset(self) -> None:
        """Forget every row: the writer holds none that is not committed or spilled."""
        self.intact = True
        if self._fd is None or not self._size:
            return
        try:
            os.ftruncate(self._fd, 0)
            self._size = self.rows = 0
        except OSError as exc:
            log.warning("dspy-tokens: could not empty the journal %s (%s)", self.path, exc)

    def rewrite(self, rows: list[UsageRow]) -> None:
        """Keep only ``rows`` (what the writer still holds), so the journal never grows beyond it."""
        self.reset()
        self.intact = self.append(rows)

    def close(self) -> None:
        """Release the lock and keep the file: its rows are replayed by the next tracker on the directory."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        if self._fd is not None:
            _unlink(self.path)
            self.close()


class NoJournal(Journal):
    """For writers that opt out of journaling (benchmarks of the bare write path)."""

    def __init__(self, directory: Path | None = None):
        self.path = None  # type: ignore[assignment]
        self.rows, self.intact = 0, False

    def append(self, rows) -> bool:
        return True

    def reset(self) -> None:
        pass

    def rewrite(self, rows) -> None:
        pass

    def close(self) -> None:
        pass

    def remove(self) -> None:
        pass


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
