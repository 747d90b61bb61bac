"""``tracker.guard(...)``: check and reserve before a run, attribute the run, settle when it ends."""

from __future__ import annotations

import asyncio
from typing import Callable

from ..capture.context import usage_context
from ..errors import TokenLimitExceeded
from .decision import LimitDecision


class Guard:
    """Context manager (``with`` and ``async with``) returned by :meth:`TokenTracker.guard`.

    On entry: refuse with :class:`TokenLimitExceeded` before anything runs, or reserve the estimate and bind
    ``usage_context`` for the block. On exit (also on exceptions) the reservation is handed to ``settle`` (the
    background writer), which deletes it in the same transaction that commits the block's real usage.
    """

    def __init__(self, reserve: Callable[..., LimitDecision], settle: Callable[[str], None], *, user_id=None,
                 guild_id=None, channel_id=None, feature=None, session_id=None, estimate=None, model=None,
                 role_ids=()):
        self._reserve, self._settle_reservation = reserve, settle
        self._ask = dict(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature, model=model,
                         estimate=estimate, role_ids=tuple(role_ids))
        # Validates the ids before any database work.
        self._context = usage_context(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature,
                                      session_id=session_id)
        self.decision: LimitDecision | None = None

    def _admit(self, decision: LimitDecision) -> LimitDecision:
        self.decision = decision
        if not decision.allowed:
            raise TokenLimitExceeded(decision)
        self._context.__enter__()
        return decision

    def _settle(self) -> None:
        self._context.__exit__(None, None, None)
        if self.decision is not None and self.decision.reservation_id:
            self._settle_reservation(self.decision.reservation_id)

    def __enter__(self) -> LimitDecision:
        return self._admit(self._reserve(**self._ask))

    def __exit__(self, *exc: object) -> None:
        self._settle()

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

    async def __aexit__(self, *exc: object) -> None:
        self._settle()
