"""``TokenTracker``: the one object a DSPy program registers to have every LM call recorded."""

from __future__ import annotations

import atexit
import hashlib
import os
import weakref
from pathlib import Path

from .callback import CallRecorder, ObservedCall
from .config import Bypasses, Config, load_bypasses, load_config
from .db import redact
from .guard import Guard
from .limits import LimitDecision, Limiter
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


def _load(source, kind, loader):
    return source if isinstance(source, kind) else loader(source)


class TokenTracker(CallRecorder):
    """Records every DSPy LM call: ``dspy.configure(callbacks=[TokenTracker()])``.

    ``database`` is a Peewee URL (default: ``$DSPY_TOKENS_DATABASE_URL``, else ``sqlite:///dspy_tokens.db``);
    ``config`` is a models.json path (default ``./models.json`` when present). Nothing here touches the
    database on the caller's thread: rows are written by a background writer; :meth:`flush` waits for it.
    """

    def __init__(self, database: str | None = None, config: str | os.PathLike | Config | None = None, *,
                 bypasses: str | os.PathLike | Bypasses | None = None, spill_dir: str | os.PathLike | None = None,
                 max_buffer: int = 10_000, batch_size: int = 1_000):
        super().__init__()
        # Objects are kept as given; paths (or the ./models.json, ./token_bypasses.json defaults) are re-read.
        self._config_source, self._bypasses_source = config, bypasses
        self.config = _load(config, Config, load_config)
        self.bypasses = _load(bypasses, Bypasses, load_bypasses)
        self.prices = PriceBook(self.config)
        self.store = Store(database)
        self.limiter = Limiter(self.store, self.config, self.bypasses, self.prices)
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
        """Re-read models.json and token_bypasses.json (never re-read implicitly). A bad file raises
        :class:`ConfigurationError` and the previous configuration stays in force."""
        config = _load(self._config_source, Config, load_config)
        bypasses = _load(self._bypasses_source, Bypasses, load_bypasses)
        prices = PriceBook(config)
        self.config, self.bypasses, self.prices = config, bypasses, prices
        self.limiter = Limiter(self.store, config, bypasses, prices)
        return config

    # -- limits ------------------------------------------------------------------------------------
    def check(self, user_id: int | None = None, guild_id: int | None = None, *, model: str | None = None,
              estimate: int | None = None, role_ids=()) -> LimitDecision:
        """May this user/guild run a request of ``estimate`` tokens now? Reads only; reserves nothing.

        Blocking database read: from async code use ``await asyncio.to_thread(tracker.check, ...)``.
        """
        return self.limiter.check(user_id, guild_id, model=model, estimate=estimate, role_ids=role_ids)

    def guard(self, user_id: int | None = None, guild_id: int | None = None, channel_id: int | None = None,
              feature: str | None = None, estimate: int | None = None, *, session_id=None, model: str | None = None,
              role_ids=()) -> Guard:
        """``with``/``async with``: raise :class:`TokenLimitExceeded` before the block when over a limit; else
        reserve ``estimate`` tokens, attribute the block's calls, and settle to the real usage at its end."""
        return Guard(self, user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature,
                     session_id=session_id, estimate=estimate, model=model, role_ids=role_ids)

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
