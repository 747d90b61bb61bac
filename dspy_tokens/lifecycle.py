"""A tracker beyond its own object: found again by its database after pickling (``dspy.settings.save``,
``program.save(..., save_program=True)`` with the tracker on an LM), and drained before the process ends on
SIGTERM (``docker stop``, Kubernetes, systemd), where Python would otherwise exit without running ``atexit``.

A pickled tracker holds no thread, lock or connection: it is stored as a digest of its database URL (never the
password) and restored as the live :class:`~dspy_tokens.TokenTracker` of that database in the loading process —
or, while there is none, as a :class:`TrackerReference` that hands every event to one as soon as it exists.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
import weakref
from typing import Any, Callable, Iterable

from .capture.dspy_internals import BaseCallback

log = logging.getLogger("dspy_tokens")

_live: dict[str, list[weakref.ref]] = {}
_lock = threading.Lock()
_warned: set[str] = set()


def key_of(url: str) -> str:
    """What identifies a database across processes without carrying its password."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def register(tracker: Any, url: str) -> None:
    with _lock:
        refs = [ref for ref in _live.get(key_of(url), []) if ref() is not None]
        refs.append(weakref.ref(tracker))
        _live[key_of(url)] = refs


def find(key: str) -> Any | None:
    """The most recently made open tracker of that database in this process, if any."""
    with _lock:
        trackers = [ref() for ref in _live.get(key, [])]
    open_ones = [t for t in trackers if t is not None and not t.closed]
    return open_ones[-1] if open_ones else None


def restore(key: str, shown_url: str):
    """Unpickling a tracker: the live tracker of its database, or a reference that waits for one."""
    found = find(key)
    if found is not None:
        return found
    _warn_once(key, "dspy-tokens: a TokenTracker of %s was restored from a pickle, but no TokenTracker of that "
                    "database is open in this process: LM calls are not recorded until you create one "
                    "(TokenTracker(%r)), which is then used automatically", shown_url, shown_url)
    return TrackerReference(key, shown_url)


class TrackerReference(BaseCallback):
    """Stands in for an unpickled tracker: every callback event goes to the open tracker of the same database."""

    def __init__(self, key: str, shown_url: str):
        self.key, self.shown_url = key, shown_url

    def __reduce__(self):
        return restore, (self.key, self.shown_url)

    def __repr__(self) -> str:
        return f"TrackerReference({self.shown_url!r})"


def _forward(name: str) -> Callable:
    def forward(self: TrackerReference, *args, **kwargs):
        target = find(self.key)
        if target is not None:
            return getattr(target, name)(*args, **kwargs)
        if name == "on_lm_start":
            _warn_once(self.key, "dspy-tokens: an LM call was not recorded: it went to a TokenTracker restored from "
                                 "a pickle, and no TokenTracker of %s is open; create one (TokenTracker(%r))",
                       self.shown_url, self.shown_url)
        return None
    forward.__name__ = name
    return forward


for _name in [name for name in vars(BaseCallback) if name.startswith("on_")]:
    setattr(TrackerReference, _name, _forward(_name))


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


# -- signals --------------------------------------------------------------------------------------------------
def install_signal_handlers(close: weakref.WeakMethod, signals: Iterable[int], timeout: float) -> dict[int, Any]:
    """On each of ``signals``: ``close(timeout)`` (commit, else spill to disk), then what was installed before — a
    Python handler is called, an ignored signal stays ignored, and the default action (terminate) becomes
    ``SystemExit(128 + signum)``, which also ends PID 1 in a container (the kernel drops a default-handled signal
    sent to PID 1). Returns the previous handlers. Call it from the main thread."""
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("install_signal_handlers() must be called from the main thread (Python runs signal "
                           "handlers only there)")
    previous = {}
    for signum in signals:
        before = signal.getsignal(signum)
        previous[signum] = before

        def handler(number, frame, before=before):
            drain = close()
            if drain is not None:
                log.warning("dspy-tokens: %s received; writing what is pending before exiting",
                            signal.Signals(number).name)
                drain(timeout)
            if callable(before):
                before(number, frame)
            elif before != signal.SIG_IGN:
                raise SystemExit(128 + number)

        signal.signal(signum, handler)
    return previous
