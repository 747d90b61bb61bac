"""A guarded run, call by call: before each LM call its reservation is topped up to what the run has spent plus
what this call may use (the prompt counted, plus the output cap), so concurrent runs see it; a strict guard stops
the run before a call that does not fit.

The callback (``capture``) calls :meth:`GuardedRun.before_call` from ``on_lm_start`` and :meth:`after_call` from
``on_lm_end``. DSPy logs and swallows an ``Exception`` raised by a callback, so a strict stop is raised as
:class:`RunStopped` (a ``BaseException``, like ``KeyboardInterrupt``) and the guard turns it into
:class:`~dspy_tokens.TokenLimitExceeded` when the block ends.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .decision import LimitDecision
from .estimate import output_cap, prompt_tokens

log = logging.getLogger("dspy_tokens")


class RunStopped(BaseException):
    """Raised into DSPy by a strict guard before an LM call that does not fit; ``.decision`` says why."""

    def __init__(self, decision: LimitDecision):
        self.decision = decision
        super().__init__(decision.message)


class GuardedRun:
    """The state of one guarded block: its reservation, what its calls spent, and what is in flight."""

    def __init__(self, recorder: Any, reservation_id: str, held_tokens: int,
                 top_up: Callable[..., LimitDecision], default_output: int, strict: bool):
        self.recorder, self.reservation_id, self.strict = recorder, reservation_id, strict
        self._top_up, self._default_output = top_up, default_output
        self._lock = threading.Lock()
        self.held = held_tokens  # what the reservation holds (the run's expected total so far)
        self.spent = 0  # tokens of this run's finished calls
        self.calls = 0  # finished calls
        self._inflight: dict[str, int] = {}  # call id -> what it may use
        self.stopped: LimitDecision | None = None

    def before_call(self, call_id: str, lm: Any, messages: Any, prompt: Any) -> None:
        model = getattr(lm, "model", None)
        counted = prompt_tokens(model, messages if messages is not None else prompt)
        need = (counted or 0) + output_cap(lm, self._default_output)
        with self._lock:
            total = self.spent + sum(self._inflight.values()) + need
            calls = self.calls + len(self._inflight) + 1
            extra = max(total - self.held, 0)
            self._inflight[call_id] = need
        decision = self._top_up(self.reservation_id, call_id, model, total, extra, calls, self.strict)
        if decision.allowed or not self.strict:
            with self._lock:
                self.held = max(self.held, total)
            return
        with self._lock:
            self._inflight.pop(call_id, None)
        self.stopped = decision
        raise RunStopped(decision)

    def after_call(self, call_id: str, entry: dict | None) -> None:
        usage = (entry or {}).get("usage") or {}
        field = usage.get if isinstance(usage, dict) else (lambda key: getattr(usage, key, None))
        tokens = field("total_tokens")
        if not isinstance(tokens, int):
            tokens = (field("prompt_tokens") or 0) + (field("completion_tokens") or 0)
        with self._lock:
            need = self._inflight.pop(call_id, 0)
            self.spent += tokens if usage else need  # unknown usage: assume it used what it could
            self.calls += 1
