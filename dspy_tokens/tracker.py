"""``TokenTracker``: the one object a DSPy program registers to have every LM call recorded."""

from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import threading
import time
import weakref
from pathlib import Path

from .callback import CallRecorder, ObservedCall
from .config import Bypasses, Config, load_bypasses, load_config
from .db import redact
from .guard import Guard
from .limits import LimitDecision, Limiter
from .pricing import PriceBook
from .reports import DEFAULT_KEEP_COUNTERS_DAYS, CleanupResult, Group, Reports, Summary
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
        self._retention_due = 0.0
        self._retention_thread: threading.Thread | None = None
        self.writer = UsageWriter(self.store, self._to_row, Path(spill_dir) if spill_dir else default_spill_dir(self.store),
                                  max_buffer=max_buffer, batch_size=batch_size,
                                  on_committed=self._maybe_run_retention)
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

    # -- reports and retention -----------------------------------------------------------------------
    # These read (cleanup: writes) the database on the calling thread: they are reports, not the LM hot path.
    # From async code: ``await asyncio.to_thread(tracker.summary, "today")``. Calls still queued for the
    # writer are not in the database yet: ``flush()`` first for numbers that include them.
    retention_interval = 3600.0  # seconds between automatic cleanups (retention_days in models.json)

    @functools.cached_property
    def reports(self) -> Reports:
        """:class:`~dspy_tokens.reports.Reports` over this tracker's database."""
        return Reports(self.store)

    def summary(self, period=None, **filters) -> Summary:
        """Totals of ``period`` (``"today"``, ``"week"``, ``"month"`` — UTC calendar periods —, ``"all"``/None,
        a ``timedelta`` or ``"7d"``; or ``since=``/``until=``), optionally for ``user_id=``, ``guild_id=``,
        ``feature=``, ``model=``. See :meth:`Reports.summary`."""
        return self.reports.summary(period, **filters)

    def breakdown(self, by: str, period=None, **filters) -> list[Group]:
        """Totals per ``"user" | "guild" | "model" | "feature" | "day" | "session"``; see :meth:`Reports.breakdown`."""
        return self.reports.breakdown(by, period, **filters)

    def top(self, n: int = 10, by: str = "tokens", scope: str = "user", period=None, **filters) -> list[Group]:
        """The ``n`` users (or guilds) with the most tokens (or cost); see :meth:`Reports.top`."""
        return self.reports.top(n, by, scope, period, **filters)

    def session(self, session_id: str) -> list[dict]:
        """A session's calls in call order; see :meth:`Reports.session`."""
        return self.reports.session(session_id)

    def export(self, fmt: str = "csv", out=None, **options) -> int:
        """Stream rows as CSV/JSON/JSONL to a file object or path; see :meth:`Reports.export`."""
        return self.reports.export(fmt, out, **options)

    def cleanup(self, older_than_days: int | None = None, *, batch_size: int = 5000,
                dry_run: bool = False) -> CleanupResult:
        """Delete raw rows older than ``older_than_days`` (default: ``retention_days`` from models.json, else
        90) in short batches; the daily/monthly rollups are kept. Hourly limit counters are kept for at least
        the limits' window. See :meth:`Reports.cleanup`."""
        days = older_than_days or self.config.retention_days or 90
        keep = max(self.config.time_window_days + 1, DEFAULT_KEEP_COUNTERS_DAYS)
        return self.reports.cleanup(days, batch_size=batch_size, dry_run=dry_run, keep_counters_days=keep)

    def _maybe_run_retention(self, committed_batch=None) -> None:
        """After a commit, with ``retention_days`` set: run :meth:`cleanup` on a short-lived thread, at most once
        per ``retention_interval`` (so an idle tracker does nothing)."""
        days = self.config.retention_days
        now = time.monotonic()
        if not days or self._closed or now < self._retention_due:
            return
        if self._retention_thread is not None and self._retention_thread.is_alive():
            return
        self._retention_due = now + self.retention_interval
        self._retention_thread = threading.Thread(target=self._run_retention, args=(days,),
                                                  name="dspy-tokens-retention", daemon=True)
        self._retention_thread.start()

    def _run_retention(self, days: int) -> None:
        log = logging.getLogger("dspy_tokens")
        try:
            result = self.cleanup(days)
            if result.rows or result.counter_rows:
                log.info("dspy-tokens: retention deleted %d rows older than %s and %d hourly counters",
                         result.rows, result.cutoff.isoformat(), result.counter_rows)
        except Exception:
            log.exception("dspy-tokens: automatic retention cleanup failed; it is retried after the next commit "
                          "in %.0f s", self.retention_interval)
        finally:
            self.store.db.close()  # this thread's connection only
