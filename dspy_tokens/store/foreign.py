"""Reading another tool's usage table: the ``token_usage`` table of a GePeTo-style token manager (one SQLite file,
one row per LM call), opened read-only so an import can never change the file it reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigurationError

GEPETO_TABLE = "token_usage"
#: The columns every GePeTo table has; ``id`` (its INTEGER PRIMARY KEY) and the Discord ids are read when present.
GEPETO_REQUIRED = ("session_id", "call_index", "model", "prompt_tokens", "completion_tokens", "total_tokens",
                   "timestamp")
GEPETO_OPTIONAL = ("id", "user_id", "guild_id", "channel_id")


class GepetoTable:
    """The rows of a GePeTo ``token_usage`` table in ``path``, as dicts of its columns (absent optional ones are
    ``None``), in rowid order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError("import", "FILE", str(path), "must be an existing GePeTo SQLite file")
        self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in self._connection.execute(f"PRAGMA table_info({GEPETO_TABLE})")}
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), f"must be a SQLite database ({exc})") from exc
        if "call_uuid" in columns:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), "is a dspy-tokens database, not GePeTo's: use "
                                     "`dspy-tokens copy --from sqlite:///FILE --to URL`")
        missing = [c for c in GEPETO_REQUIRED if c not in columns]
        if missing:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), f"must hold GePeTo's {GEPETO_TABLE} table "
                                     f"(missing columns: {', '.join(missing)})")
        self.columns = (*GEPETO_REQUIRED, *(c for c in GEPETO_OPTIONAL if c in columns))

    def count(self) -> int:
        return int(self._connection.execute(f"SELECT COUNT(*) FROM {GEPETO_TABLE}").fetchone()[0])

    def pages(self, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        sql = (f"SELECT rowid, {', '.join(self.columns)} FROM {GEPETO_TABLE} WHERE rowid > ? ORDER BY rowid "
               f"LIMIT {int(batch_size)}")
        last = -(2**63)
        while True:
            page = self._connection.execute(sql, (last,)).fetchall()
            if not page:
                return
            last = page[-1][0]
            yield [dict.fromkeys(GEPETO_OPTIONAL) | dict(zip(self.columns, raw[1:])) for raw in page]
            if len(page) < batch_size:
                return

    def close(self) -> None:
        self._connection.close()
