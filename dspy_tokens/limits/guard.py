"""``tracker.guard(...)``: check and reserve before a run, attribute the run, top its reservation up call by call,
settle when it ends."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Callable

from ..capture.context import bind_run, usage_context
from ..errors import TokenLimitExceeded
from .decision import LimitDecision
from .request import Request
from .run import GuardedRun, RunStopped


class Guard:
    """Context manager (``with`` and ``async with``) returned by :meth:`TokenTracker.guard`.

    On entry: refuse with :class:`TokenLimitExceeded` before anything runs, or reserve the estimate and bind
    ``usage_context`` for the block. Before each LM call of the block the reservation grows to what the run has
    spent plus what the call may use; with ``strict`` a call that does not fit is never sent and the block raises
    :class:`TokenLimitExceeded`. On exit (also on exceptions) the reservation is handed to ``settle`` (the
    background writer), which deletes it in the same transaction that commits the block's real usage.
    """

    def __init__(self, reserve: Callable[..., LimitDecision], settle: Callable[[str], None], *, user_id=None,
                 guild_id=None, channel_id=None, feature=None, session_id=None, estimate=None, model=None,
                 role_ids=(), recorder: Any = None, top_up: Callable[..., LimitDecision] | None = None,
                 default_output: int = 4000, strict: bool = False, bind_model: Callable[[str], Any] | None = None,
                 note_call: Callable[[str, str], None] | None = None):
        self._reserve, self._settle_reservation = reserve, settle
        self._ask = dict(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature, model=model,
                         estimate=estimate, role_ids=tuple(role_ids))
        # Validates the ids before any database work.
        self._context = usage_context(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature,
                                      session_id=session_id)
        self._request = Request.of(user_id, guild_id, channel_id, feature, model, role_ids)
        self._recorder, self._top_up, self._default_output = recorder, top_up, default_output
        self.strict = strict
        self._bind_model, self._note_call = bind_model, note_call
        self._entered: list = []  # what _admit entered, exited in reverse
        self.decision: LimitDecision | None = None
        self.run: GuardedRun | None = None

    def _admit(self, decision: LimitDecision) -> LimitDecision:
        self.decision = decision
        if not decision.allowed:
            raise TokenLimitExceeded(decision)
        self._context.__enter__()
        self._entered.append(self._context)
        if decision.fallback_model and self._bind_model is not None:
            bound = self._bind_model(decision.fallback_model)  # dspy.context(lm=<the fallback model>)
            bound.__enter__()
            self._entered.append(bound)
        if decision.reservation_id and self._top_up is not None and self._recorder is not None:
            self.run = GuardedRun(self._recorder, decision.reservation_id, decision.hold_tokens,
                                  functools.partial(self._top_up, self._request), self._default_output, self.strict,
                                  self._note_call, any(d.metric == "requests" for d in decision.rules))
            binding = bind_run(self.run)
            binding.__enter__()
            self._entered.append(binding)
        return decision

    def _settle(self, exc: BaseException | None) -> None:
        while self._entered:
            self._entered.pop().__exit__(None, None, None)
        if self.decision is not None and self.decision.reservation_id:
            self._settle_reservation(self.decision.reservation_id)
        if isinstance(exc, RunStopped):  # a strict guard stopped the run before a call that did not fit
            self.decision = exc.decision
            raise TokenLimitExceeded(exc.decision) from None

    def __enter__(self) -> LimitDecision:
        return self._admit(self._reserve(**self._ask))

    def __exit__(self, exc_type, exc, tb) -> None:
        self._settle(exc)

    async def __aenter__(self) -> LimitDecision:
        # The decision needs the database: never on the event loop.
        deciding = asyncio.ensure_future(asyncio.to_thread(self._reserve, **self._ask))
        try:
            decision = await asyncio.shield(deciding)
        except asyncio.CancelledError:
            # The thread still finishes; hand back whatever it reserved instead of holding it until its TTL.
            deciding.add_done_callback(self._release_abandoned)
            raise
        return self._admit(decision)

    def _release_abandoned(self, deciding: asyncio.Future) -> None:
        if deciding.cancelled() or deciding.exception() is not None:
            return
        reservation_id = deciding.result().reservation_id
        if reservation_id:
            self._settle_reservation(reservation_id)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self._settle(exc)
