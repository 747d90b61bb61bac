"""Reading another tool's usage table: a GePeTo-style token manager's SQLite file (one row per LM call), opened
read-only so an import can never change the file it reads. Its ``token_usage`` table (the token manager: Discord
ids, session and call index) or, failing that, its ``usage`` table (the smaller manager: user, model, tokens)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigurationError

GEPETO_TABLES = ("token_usage", "usage")
#: The columns every GePeTo table has; ``id`` (its INTEGER PRIMARY KEY), the Discord ids, the session and the
#: call index are read when present.
GEPETO_REQUIRED = ("model", "prompt_tokens", "completion_tokens", "total_tokens", "timestamp")
GEPETO_OPTIONAL = ("id", "user_id", "guild_id", "channel_id", "session_id", "call_index")


class GepetoTable:
    """The rows of a GePeTo ``token_usage`` table in ``path``, as dicts of its columns (absent optional ones are
    ``None``), in rowid order."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigurationError("import", "FILE", str(path), "must be an existing GePeTo SQLite file")
        self._connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {name: {row[1] for row in self._connection.execute(f"PRAGMA table_info({name})")}
                      for name in GEPETO_TABLES}
        except sqlite3.DatabaseError as exc:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), f"must be a SQLite database ({exc})") from exc
        if "call_uuid" in tables["token_usage"]:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), "is a dspy-tokens database, not GePeTo's: use "
                                     "`dspy-tokens copy --from sqlite:///FILE --to URL`")
        found = [name for name, columns in tables.items() if all(c in columns for c in GEPETO_REQUIRED)]
        if not found:
            self.close()
            raise ConfigurationError("import", "FILE", str(path), "must hold GePeTo's token_usage (or usage) table "
                                     f"with the columns {', '.join(GEPETO_REQUIRED)}")
        self.table = found[0]
        self.columns = (*GEPETO_REQUIRED, *(c for c in GEPETO_OPTIONAL if c in tables[self.table]))

    def count(self) -> int:
        return int(self._connection.execute(f"SELECT COUNT(*) FROM {self.table}").fetchone()[0])

    def pages(self, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        sql = (f"SELECT rowid, {', '.join(self.columns)} FROM {self.table} WHERE rowid > ? ORDER BY rowid "
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
