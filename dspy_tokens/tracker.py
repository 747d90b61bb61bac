"""``TokenTracker``: the one object a DSPy program registers to have every LM call recorded."""

from __future__ import annotations

import atexit
import hashlib
import os
import weakref
from pathlib import Path

from .callback import CallRecorder, ObservedCall
from .config import Config, load_config
from .db import redact
from .pricing import PriceBook
from .rows import build_row, log_row
from .store import Store
from .writer import UsageWriter

EXIT_FLUSH_SECONDS = 5.0


def default_spill_dir(store: Store) -> Path:
    """Where rows wait while the database is unreachable: beside a SQLite file, else in the user's cache."""
    configured = os.environ.get("DSPY_TOKENS_SPILL_DIR")
    digest = hashlib.sha1(store.url.encode()).hexdigest()[:12]
    if configured:
        return Path(configured) / digest
    if store.dialect == "sqlite":
        database = store.db.database
        if database and database != ":memory:":
            return Path(f"{database}.spill")
    return Path.home() / ".cache" / "dspy_tokens" / "spill" / digest


class TokenTracker(CallRecorder):
    """Records every DSPy LM call: ``dspy.configure(callbacks=[TokenTracker()])``.

    ``database`` is a Peewee URL (default: ``$DSPY_TOKENS_DATABASE_URL``, else ``sqlite:///dspy_tokens.db``);
    ``config`` is a models.json path (default ``./models.json`` when present). Nothing here touches the
    database on the caller's thread: rows are written by a background writer; :meth:`flush` waits for it.
    """

    def __init__(self, database: str | None = None, config: str | os.PathLike | Config | None = None, *,
                 spill_dir: str | os.PathLike | None = None, max_buffer: int = 10_000, batch_size: int = 1_000):
        super().__init__()
        self._config_path = None if isinstance(config, Config) else config
        self.config = config if isinstance(config, Config) else load_config(config)
        self.prices = PriceBook(self.config)
        self.store = Store(database)
        self.writer = UsageWriter(self.store, self._to_row, Path(spill_dir) if spill_dir else default_spill_dir(self.store),
                                  max_buffer=max_buffer, batch_size=batch_size)
        self._closed = False
        # Drain at interpreter exit without keeping the tracker alive for it.
        ref = weakref.ref(self)
        self._atexit = lambda: (t := ref()) is not None and t.close(timeout=EXIT_FLUSH_SECONDS)
        atexit.register(self._atexit)

    def __repr__(self) -> str:
        return f"TokenTracker(database={redact(self.store.url)!r})"

    @property
    def database_url(self) -> str:
        return self.store.url

    def emit(self, call: ObservedCall) -> None:
        self.writer.submit(call)

    def _to_row(self, call: ObservedCall) -> dict:
        row = build_row(call, self.prices)
        if self.config.log_calls:
            log_row(row)
        return row

    def reload_config(self) -> Config:
        """Re-read models.json (it is never re-read implicitly). A bad file raises and keeps the old config."""
        config = load_config(self._config_path)
        self.config, self.prices = config, PriceBook(config)
        return config

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every call observed so far is committed. False if ``timeout`` passed first."""
        return self.writer.flush(timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush and stop the writer. Rows that could not be written are kept in the spill directory."""
        if self._closed:
            return True
        self._closed = True
        atexit.unregister(self._atexit)
        return self.writer.close(timeout)

    def __enter__(self) -> "TokenTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
