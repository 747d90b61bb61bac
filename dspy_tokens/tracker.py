"""``TokenTracker``: the one object a DSPy program registers, and the one place the parts are put together.

    config → prices → store → ingest (row builder, writer) → limiter → reports → retention

The tracker hands each observed call straight to the writer (``emit`` is the writer's ``submit``), so the path
of an LM call never comes back through this module.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

from . import lifecycle
from .capture import CallRecorder, ObservedCall, record_embeddings
from .capture.context import bind_lm
from .config import Bypasses, Config, load_bypasses, load_config
from .ingest import Health, Journal, RowBuilder, UsageWriter, WriterStats, default_spill_dir
from .ingest.repricing import RepriceResult, reprice
from .limits import (Alerts, BudgetAlert, Guard, LimitChange, LimitDecision, Limiter, LimitOverride, Overrides,
                     RefusalCount, rolling_window_start)
from .pricing import PriceBook
from .reports import CallRecord, CleanupResult, Group, Reports, RetentionScheduler, Summary, retention
from .reports.periods import Period
from .store import Store, UsageRow, redact

EXIT_FLUSH_SECONDS = 5.0  # what close() may take at exit or on SIGTERM (docker stop waits 10 s, then SIGKILLs)
log = logging.getLogger("dspy_tokens")


def _load(source: Any, kind: type, loader: Callable[[Any], Any]) -> Any:
    return source if isinstance(source, kind) else loader(source)


class TokenTracker(CallRecorder):
    """Records every DSPy LM call: ``dspy.configure(callbacks=[TokenTracker()])``.

    ``database`` is a Peewee URL (default: ``$DSPY_TOKENS_DATABASE_URL``, else ``sqlite:///dspy_tokens.db``);
    ``config`` is a models.json path (default ``./models.json`` when present). Nothing here touches the
    database on the caller's thread: rows are written by a background writer; :meth:`flush` waits for it.
    :meth:`reader` opens a tracker that only reads (reports, limit checks) and starts no writer.
    """

    retention_interval = 3600.0  # seconds between automatic cleanups (retention_days in models.json)

    def __init__(self, database: str | None = None, config: str | os.PathLike | Config | None = None, *,
                 bypasses: str | os.PathLike | Bypasses | None = None, spill_dir: str | os.PathLike | None = None,
                 max_buffer: int = 10_000, batch_size: int = 1_000, _record: bool = True):
        super().__init__()
        # Objects are kept as given; paths (or the ./models.json, ./token_bypasses.json defaults) are re-read.
        self._config_source, self._bypasses_source = config, bypasses
        self.config = _load(config, Config, load_config)
        self.bypasses = _load(bypasses, Bypasses, load_bypasses)
        self._prices = PriceBook(self.config)
        self._store = Store(database)
        self._overrides = Overrides(self._store, self.config)
        self._limiter = Limiter(self._store, self.config, self.bypasses, self._prices, self._overrides)
        self._alerts = self._wire_alerts(self._limiter, [])
        self._reports = Reports(self._store)
        self._closed = False
        self._writer: UsageWriter | None = None
        self._lifecycle_lock = threading.Lock()
        self._reopened = False
        self._exiting = False  # closed because the process ends (atexit, a signal)
        self._late: Journal | None = None  # calls that arrive while the process ends
        lifecycle.register(self, self._store.url)
        if not _record:
            return
        record_embeddings()  # dspy.Embedder fires no DSPy callback: LiteLLM's callbacks see its requests
        self._rows = RowBuilder(self._prices, self.config.log_calls, self.config.estimate_usage)
        self._retention = RetentionScheduler(self._reports, self.config, self.retention_interval,
                                             on_done=self._store.reset_connection)
        self._spill_dir = Path(spill_dir) if spill_dir else default_spill_dir(self._store)
        self._writer_options: dict[str, Any] = dict(max_buffer=max_buffer, batch_size=batch_size)
        self._start_writer()
        # LiteLLM's import and map hash (~2 s) on their own thread, not in front of the first call's row.
        threading.Thread(target=self._prices.warm, name="dspy-tokens-prices", daemon=True).start()

    def _start_writer(self) -> None:
        self._writer = UsageWriter(self._store, self._rows.build, self._spill_dir, **self._writer_options,
                                   on_committed=self._retention if self.config.retention_days else None)
        self.emit = self._writer.submit  # type: ignore[method-assign]  # the LM call path skips this module
        # Drain at interpreter exit without keeping the tracker alive for it.
        ref = weakref.ref(self)
        self._atexit = lambda: (t := ref()) is not None and t._close_for_exit(EXIT_FLUSH_SECONDS)
        atexit.register(self._atexit)

    @classmethod
    def reader(cls, database: str | None = None, config: str | os.PathLike | Config | None = None, *,
               bypasses: str | os.PathLike | Bypasses | None = None) -> "TokenTracker":
        """A tracker that reads only: reports, ``check`` and ``cleanup`` work; it records nothing and starts no
        background thread (dashboards, the CLI, support tools)."""
        return cls(database, config, bypasses=bypasses, _record=False)

    def __repr__(self) -> str:
        return f"TokenTracker(database={redact(self._store.url)!r})"

    @property
    def database_url(self) -> str:
        return self._store.url

    @property
    def stats(self) -> WriterStats | None:
        """The background writer's state (committed, pending, last error, spill directory); None for a reader."""
        return self._writer.stats if self._writer is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def health(self) -> Health:
        """Is recording working? The writer's threads, a ping of the database (a blocking call on this thread,
        like :meth:`check`), rows pending in memory, waiting on disk and refused. For a liveness probe or a status
        page; ``health().ok`` is the short answer."""
        reachable = self._store.ping()
        self._store.reset_connection()  # the ping's connection belongs to this (the caller's) thread
        if self._writer is not None:
            return self._writer.health(reachable)
        return Health(False, reachable, 0, 0, 0, None, None)

    def install_signal_handlers(self, signals: Iterable[int] = (signal.SIGTERM,),
                                timeout: float = EXIT_FLUSH_SECONDS) -> None:
        """Drain on ``signals`` (default SIGTERM: ``docker stop``, Kubernetes, systemd), then run the handler that
        was there before. Without it a SIGTERM ends Python at once: no ``atexit``, rows still in memory are kept
        only by the journal. Call once, from the main thread. See the README's "Containers"."""
        lifecycle.install_signal_handlers(weakref.WeakMethod(self._close_for_exit), signals, timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        # dspy.settings.save / program.save(save_program=True) pickle the callbacks: restored as the open tracker
        # of the same database in the loading process (threads and connections are never pickled).
        return lifecycle.restore, (lifecycle.key_of(self._store.url), redact(self._store.url))

    def emit(self, call: ObservedCall) -> None:  # replaced by the writer's submit; a reader records nothing
        log.warning("dspy-tokens: a read-only TokenTracker (TokenTracker.reader) saw an LM call and did not "
                    "record it; register a TokenTracker(...) to record calls")

    def on_row(self, listener: Callable[[UsageRow], None]) -> None:
        """Call ``listener(row)`` with each :class:`~dspy_tokens.store.UsageRow` this tracker records, on its
        intake thread, before the row is committed (keep it fast; an exception is logged, the row kept). This is how
        :func:`dspy_tokens.otel.instrument` feeds OpenTelemetry."""
        if self._writer is None:
            raise TypeError("a read-only TokenTracker (TokenTracker.reader) records no rows to listen to")
        self._rows.listeners.append(listener)

    def reload_config(self) -> Config:
        """Re-read models.json and token_bypasses.json (never re-read implicitly). A bad file raises
        :class:`ConfigurationError` and the previous configuration stays in force."""
        config = _load(self._config_source, Config, load_config)
        bypasses = _load(self._bypasses_source, Bypasses, load_bypasses)
        prices = PriceBook(config)
        self._overrides = Overrides(self._store, config)
        limiter = Limiter(self._store, config, bypasses, prices, self._overrides)
        self.config, self.bypasses, self._prices, self._limiter = config, bypasses, prices, limiter
        self._alerts = self._wire_alerts(limiter, self._alerts.hooks)
        if self._writer is not None:
            self._rows.configure(prices, config.log_calls, config.estimate_usage)
            self._retention.configure(config)
            self._writer.on_committed = self._retention if config.retention_days else None
        return config

    # -- limits ------------------------------------------------------------------------------------
    def _wire_alerts(self, limiter: Limiter, hooks: list) -> Alerts:
        alerts = Alerts(self._store.alerts, limiter.config, limiter.rules)
        alerts.hooks = hooks
        limiter.alerts = alerts if alerts.wanted else None
        return alerts

    def on_alert(self, fn: Callable[[BudgetAlert], None]) -> Callable[[BudgetAlert], None]:
        """Call ``fn(alert)`` once per budget alert this process fires (models.json ``"alerts"``), on the thread
        of the check that saw the crossing (keep it fast; an exception is logged). Usable as a decorator."""
        self._alerts.hooks.append(fn)
        return fn

    def check(self, user_id: int | str | None = None, guild_id: int | str | None = None, *,
              channel_id: int | str | None = None, feature: str | None = None, model: str | None = None,
              estimate: int | None = None, prompt: Any = None, role_ids: Sequence[int] = (),
              now: datetime | None = None) -> LimitDecision:
        """May this user/guild run a request of ``estimate`` tokens now? Reads only; reserves nothing.

        Without ``estimate``, the request is sized from ``prompt`` (chat messages or text, counted with LiteLLM's
        tokenizer) plus the output cap, else the model's ``max_tokens``, else ``default_estimate_tokens`` — and
        never above what the limits have left (``decision.estimate_source`` says which).
        Blocking database read: from async code use ``await asyncio.to_thread(tracker.check, ...)``.
        """
        return self._limiter.check(user_id, guild_id, channel_id=channel_id, feature=feature, model=model,
                                   estimate=estimate, prompt=prompt, role_ids=role_ids, now=now)

    def guard(self, user_id: int | None = None, guild_id: int | None = None, channel_id: int | None = None,
              feature: str | None = None, estimate: int | None = None, *, session_id: Any = None,
              model: str | None = None, role_ids: Sequence[int] = (), strict: bool = False) -> Guard:
        """``with``/``async with``: raise :class:`TokenLimitExceeded` before the block when over a limit; else
        reserve ``estimate`` tokens, attribute the block's calls, and settle to the real usage at its end.

        Before each LM call of the block the reservation is topped up to what the run has spent plus what the call
        may use (its prompt counted, plus the output cap), so other runs see it. ``strict``: a call that does not
        fit is never sent; the block raises :class:`TokenLimitExceeded` instead."""
        return Guard(self._limiter.reserve, self._settle, user_id=user_id, guild_id=guild_id,
                     channel_id=channel_id, feature=feature, session_id=session_id, estimate=estimate, model=model,
                     role_ids=role_ids, recorder=self, top_up=self._limiter.top_up,
                     default_output=self.config.default_estimate_tokens, strict=strict,
                     bind_model=self._bind_model, note_call=self._store.note_reserved_call)

    def limit_refusals(self) -> list[RefusalCount]:
        """How many guarded runs the limits refused, by refusing rule (scope, metric) and the run's model and
        feature: all time, counted in the database by every process (what ``/metrics`` reports)."""
        return [RefusalCount(*row) for row in self._store.refusals.totals()]

    def _bind_model(self, model_id: str) -> Any:
        """``dspy.context(lm=...)`` on a configured model (a rule's fallback), like the LM the run would use."""
        return bind_lm(model_id, self.config.model_entry(model_id))

    # -- limits changed at run time (stored: every process sees them at its next check) ---------------
    def set_limit(self, scope: str, scope_id: int | str | None, *, tokens: int | None = None,
                  cost_usd: Any = None, requests: int | None = None, window: str | None = None,
                  by: str | None = None) -> LimitChange:
        """Override the limits of one scope (``user``, ``guild``, ``channel``, ``feature`` by name, ``global``):
        each metric given replaces the configured rules of that scope and metric (per-model rules stay).
        ``window``: ``"30d"``, ``"24h"``, ``"1mo"``... (default ``time_window_days``). ``by`` goes in the audit."""
        return self._overrides.set_limit(scope, scope_id, tokens=tokens, cost_usd=cost_usd, requests=requests,
                                         window=window, by=by)

    def clear_limit(self, scope: str, scope_id: int | str | None, *, by: str | None = None) -> LimitChange:
        """Drop the scope's run-time limits: the configured rules apply again."""
        return self._overrides.clear_limit(scope, scope_id, by=by)

    def reset_usage(self, scope: str, scope_id: int | str | None, *, by: str | None = None) -> LimitChange:
        """Usage before now stops counting toward the scope's limits (reports and history keep it)."""
        return self._overrides.reset_usage(scope, scope_id, by=by)

    def set_bypass(self, scope: str, scope_id: int | str | None, on: bool = True, *,
                   by: str | None = None) -> LimitChange:
        """Let every request of the scope through (``on=False`` ends it)."""
        return self._overrides.set_bypass(scope, scope_id, on, by=by)

    def limit_override(self, scope: str, scope_id: int | str | None = None) -> LimitOverride | None:
        """What is overridden for the scope now (None: nothing)."""
        return self._overrides.get(scope, scope_id)

    def limit_changes(self, scope: str | None = None, scope_id: int | str | None = None, *,
                      limit: int = 20) -> list[LimitChange]:
        """The audit trail, latest first: who changed which scope's limits, when, and to what."""
        return self._overrides.changes(scope, scope_id, limit=limit)

    def window_start(self, now: datetime | None = None) -> datetime:
        """Where the rolling limit window (``time_window_days``, whole hours) begins now: report totals from here
        agree with the limits' ``used``."""
        return rolling_window_start(self.config.time_window_days, now or datetime.now(timezone.utc))

    def _settle(self, reservation_id: str) -> None:
        if self._writer is not None and not self._exiting:
            self._open_writer().settle(reservation_id)
        # a reader's reservations (and those of a process that is ending) expire by their TTL

    def _open_writer(self) -> UsageWriter:
        """The writer, started again if :meth:`close` stopped it: a call after close is recorded, with a warning."""
        with self._lifecycle_lock:
            if self._closed:
                if not self._reopened:
                    self._reopened = True
                    log.warning("dspy-tokens: an LM call reached %r after close(); it reopened to record it. Close "
                                "the tracker when the program is done with DSPy, or remove it from the callbacks "
                                "first", self)
                self._start_writer()
                self._retention.stopped = False
                self._closed = False
            assert self._writer is not None  # a recording tracker always has one (readers never get here)
        return self._writer

    def _emit_after_close(self, call: ObservedCall) -> None:
        if not self._exiting:
            try:
                self._open_writer().submit(call)
                return
            except RuntimeError:  # the interpreter is shutting down and starts no thread
                self._exiting = True
        self._journal_late(call)

    def _journal_late(self, call: ObservedCall) -> None:
        """The process is ending (atexit, SIGTERM) and calls still complete on other threads: journal each on the
        caller's thread. The process's end releases the journal's lock, and the next tracker replays it."""
        with self._lifecycle_lock:
            if self._late is None:
                self._late = Journal(self._spill_dir)
            if not self._late.append([self._rows.build(call)]):
                log.error("dspy-tokens: LM call %s completed while the process was ending and could not be saved "
                          "to %s", call.call_uuid, self._spill_dir)

    def _close_for_exit(self, timeout: float) -> bool:
        self._exiting = True
        return self.close(timeout=timeout)

    # -- lifecycle ---------------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Block until every call observed so far is committed. False if ``timeout`` passed first."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self, timeout: float | None = 10.0) -> bool:
        """Flush and stop the writer. Rows that could not be written are kept in the spill directory. An LM call
        that still reaches the tracker afterwards reopens it (with one warning), so it is recorded all the same."""
        if self._closed:
            return True
        self._closed = True
        self._alerts.close(min(timeout or 5.0, 5.0))
        if self._writer is None:
            self._store.close()
            return True
        atexit.unregister(self._atexit)
        self._retention.stopped = True
        self.emit = self._emit_after_close  # type: ignore[method-assign]
        return self._writer.close(timeout)

    def __enter__(self) -> "TokenTracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reports and retention ---------------------------------------------------------------------
    # These read (cleanup: writes) the database on the calling thread: they are reports, not the LM hot path.
    # From async code: ``await asyncio.to_thread(tracker.summary, "today")``. Calls still queued for the
    # writer are not in the database yet: ``flush()`` first for numbers that include them.
    @property
    def reports(self) -> Reports:
        """:class:`~dspy_tokens.Reports` over this tracker's database."""
        return self._reports

    def summary(self, period: Period = None, **filters: Any) -> Summary:
        """Totals of ``period`` (``"today"``, ``"week"``, ``"month"`` — UTC calendar periods —, ``"all"``/None,
        a ``timedelta`` or ``"7d"``; or ``since=``/``until=``), optionally for ``user_id=``, ``guild_id=``,
        ``feature=``, ``model=``. See :meth:`Reports.summary`."""
        return self.reports.summary(period, **filters)

    def breakdown(self, by: str | tuple[str, str], period: Period = None, **filters: Any) -> list[Group]:
        """Totals per ``"user" | "guild" | "model" | "feature" | "day" | "session"``, or per day and dimension
        (``("day", "model")``); see :meth:`Reports.breakdown`."""
        return self.reports.breakdown(by, period, **filters)

    def top(self, n: int = 10, by: str = "tokens", scope: str = "user", period: Period = None,
            **filters: Any) -> list[Group]:
        """The ``n`` users (or guilds) with the most tokens (or cost); see :meth:`Reports.top`."""
        return self.reports.top(n, by, scope, period, **filters)

    def session(self, session_id: str) -> list[CallRecord]:
        """A session's calls in call order; see :meth:`Reports.session`."""
        return self.reports.session(session_id)

    def recent_sessions(self, limit: int = 10, **filters: Any) -> list[Group]:
        """The sessions with the latest calls, latest first; see :meth:`Reports.recent_sessions`."""
        return self.reports.recent_sessions(limit, **filters)

    def recent_calls(self, user_id: int, guild_id: int | None = None, limit: int = 10) -> list[CallRecord]:
        """A user's last ``limit`` calls (in one guild, if given), newest first."""
        return self.reports.recent_calls(user_id, guild_id, limit)

    def export(self, fmt: str = "csv", out: str | os.PathLike[str] | TextIO | None = None, **options: Any) -> int:
        """Stream rows as CSV/JSON/JSONL to a file object or path; see :meth:`Reports.export`."""
        return self.reports.export(fmt, out, **options)

    def cleanup(self, older_than_days: int | None = None, *, batch_size: int = 5000,
                dry_run: bool = False) -> CleanupResult:
        """Delete raw rows older than ``older_than_days`` (default: ``retention_days`` from models.json, else
        90) in short batches; the daily/monthly rollups are kept. Hourly limit counters are kept for at least
        the limits' window. See :func:`dspy_tokens.reports.retention.cleanup`."""
        return self.reports.cleanup(retention.retention_days(self.config, older_than_days), batch_size=batch_size,
                                    dry_run=dry_run, keep_counters_days=retention.keep_counters_days(self.config))

    def reprice(self, since: datetime | date, until: datetime | date | None = None, model: str | None = None, *,
                dry_run: bool = False, batch_size: int = 1000,
                progress: Callable[[int, int], None] | None = None) -> RepriceResult:
        """Price the rows created in ``[since, until)`` (UTC; of ``model``, if given) again from this tracker's
        prices (after a models.json fix or a LiteLLM update) and write the changed costs with their counters and
        rollups, ``batch_size`` rows per transaction; ``dry_run`` only says what would change. Rows whose cost
        cannot be known today keep theirs (see :mod:`dspy_tokens.ingest.repricing`). Blocking; ``flush()`` first
        to include queued calls. ``progress(rows_read, rows)`` after each batch."""
        return reprice(self._store, self._prices, since, until, model, dry_run=dry_run, batch_size=batch_size,
                       progress=progress)
