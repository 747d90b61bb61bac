"""A guarded run, call by call: before each LM call its reservation is topped up to what the run has spent plus
what this call may use (the prompt counted, plus the output cap), so concurrent runs see it; a strict guard stops
the run before a call that does not fit.

The callback (``capture``) calls :meth:`GuardedRun.before_call` from ``on_lm_start`` and :meth:`after_call` from
``on_lm_end``. DSPy logs and swallows an ``Exception`` raised by a callback, so a strict stop is raised as
:class:`RunStopped` (a ``BaseException``, like ``KeyboardInterrupt``) and the guard turns it into
:class:`~dspy_tokens.TokenLimitExceeded` when the block ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .decision import LimitDecision
from .estimate import output_cap, prompt_bound, prompt_tokens

log = logging.getLogger("dspy_tokens")


class RunStopped(BaseException):
    """Raised into DSPy by a strict guard before an LM call that does not fit; ``.decision`` says why."""

    def __init__(self, decision: LimitDecision):
        self.decision = decision
        super().__init__(decision.message)


class GuardedRun:
    """The state of one guarded block: its reservation, what its calls spent, and what is in flight.

    A top-up holds room for one more call like the one asking when that fits (else exactly this call), so a call
    the reservation already covers (most of them, and every cache hit) is sent with no database round trip, and
    a strict guard still stops only a call that does not fit. ``note_call`` ties
    each call to the reservation in memory (the writer moves its usage out of the hold when it commits the row).
    """

    def __init__(self, recorder: Any, reservation_id: str, held_tokens: int,
                 top_up: Callable[..., LimitDecision], default_output: int, strict: bool,
                 note_call: Callable[[str, str], None] | None = None, counts_calls: bool = True):
        self.recorder, self.reservation_id, self.strict = recorder, reservation_id, strict
        self._top_up, self._default_output, self._note_call = top_up, default_output, note_call
        self._lock = threading.Lock()
        self.held = held_tokens  # what the reservation holds (the run's expected total so far)
        self.held_calls = 1  # the calls it holds
        self.counts_calls = counts_calls  # a rule counts requests: the calls held must cover each call too
        self.spent = 0  # tokens of this run's finished calls
        self.calls = 0  # finished calls
        self.top_ups = 0  # database round trips made before calls
        self._inflight: dict[str, int] = {}  # call id -> what it may use
        self.stopped: LimitDecision | None = None

    def before_call(self, call_id: str, lm: Any, messages: Any, prompt: Any) -> None:
        model = getattr(lm, "model", None)
        text = messages if messages is not None else prompt
        cap = output_cap(lm, self._default_output)
        bound = prompt_bound(text)
        if bound is None or not self._covers(bound + cap):  # counting the prompt costs more than the call's rest
            bound = prompt_tokens(model, text) or 0
        need = bound + cap
        with self._lock:
            total = self.spent + sum(self._inflight.values()) + need
            calls = self.calls + len(self._inflight) + 1
            self._inflight[call_id] = need
            covered = total <= self.held and (calls <= self.held_calls or not self.counts_calls)
            held = self.held
        if self._note_call is not None:
            self._note_call(call_id, self.reservation_id)
        if covered:
            return
        if not self.strict and _on_event_loop():  # never block the loop: the hold is raised off it
            _background().submit(self._raise, call_id, model, total, calls, need, held)
            return
        decision = self._raise(call_id, model, total, calls, need, held)
        if decision.allowed or not self.strict:
            return
        with self._lock:
            self._inflight.pop(call_id, None)
        self.stopped = decision
        raise RunStopped(decision)

    def _covers(self, need: int) -> bool:
        with self._lock:
            return (self.spent + sum(self._inflight.values()) + need <= self.held
                    and (self.calls + len(self._inflight) + 1 <= self.held_calls or not self.counts_calls))

    def _raise(self, call_id: str, model: str | None, total: int, calls: int, need: int, held: int) -> LimitDecision:
        """Hold room for one more call like this one if it fits; else exactly this call (refused only if strict)."""
        decision = self._ask(call_id, model, total + need, calls + 1, held, strict=True, tentative=True)
        if decision.allowed:
            self._holds(total + need, calls + 1)
            return decision
        decision = self._ask(call_id, model, total, calls, held, strict=self.strict)
        if decision.allowed or not self.strict:
            self._holds(total, calls)
        return decision

    def _ask(self, call_id: str, model: str | None, total: int, calls: int, held: int,
             strict: bool, tentative: bool = False) -> LimitDecision:
        # tentative: asking for room beyond this call, so a "no" stops nothing (and is no refusal to count)
        self.top_ups += 1
        return self._top_up(self.reservation_id, call_id, model, total, max(total - held, 0), calls, strict,
                            tentative)

    def _holds(self, total: int, calls: int) -> None:
        with self._lock:
            self.held, self.held_calls = max(self.held, total), max(self.held_calls, calls)

    def after_call(self, call_id: str, entry: dict | None, cache_hit: bool = False) -> None:
        usage = (entry or {}).get("usage") or {}
        field = usage.get if isinstance(usage, dict) else (lambda key: getattr(usage, key, None))
        tokens = field("total_tokens")
        if not isinstance(tokens, int):
            tokens = (field("prompt_tokens") or 0) + (field("completion_tokens") or 0)
        with self._lock:
            need = self._inflight.pop(call_id, 0)
            # A cache hit costs nothing; unknown usage: assume it used what it could.
            self.spent += 0 if cache_hit else tokens if usage else need
            self.calls += 1


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """The threads that raise async runs' holds (two: top-ups are short, and ordered per run by their locks)."""
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="dspy-tokens-top-up"))
        return _pool[0]
