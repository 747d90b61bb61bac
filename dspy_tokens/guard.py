"""``tracker.guard(...)``: check and reserve before a run, attribute the run, settle when it ends."""

from __future__ import annotations

import asyncio

from .context import usage_context
from .errors import TokenLimitExceeded
from .limits import LimitDecision


class Guard:
    """Context manager (``with`` and ``async with``) returned by :meth:`TokenTracker.guard`.

    On entry: refuse with :class:`TokenLimitExceeded` before anything runs, or reserve the estimate and bind
    ``usage_context`` for the block. On exit (also on exceptions) the reservation is handed to the background
    writer, which deletes it in the same transaction that commits the block's real usage.
    """

    def __init__(self, tracker, *, user_id=None, guild_id=None, channel_id=None, feature=None, session_id=None,
                 estimate=None, model=None, role_ids=()):
        self._tracker = tracker
        self._who = dict(user_id=user_id, guild_id=guild_id, channel_id=channel_id, feature=feature,
                         session_id=session_id)
        self._ask = dict(user_id=user_id, guild_id=guild_id, model=model, estimate=estimate, role_ids=tuple(role_ids))
        self._context = usage_context(**self._who)  # validates the ids before any database work
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
            self._tracker.writer.release(self.decision.reservation_id)

    def __enter__(self) -> LimitDecision:
        return self._admit(self._tracker.limiter.reserve(**self._ask))

    def __exit__(self, *exc) -> None:
        self._settle()

    async def __aenter__(self) -> LimitDecision:
        # The decision needs the database: never on the event loop.
        decision = await asyncio.to_thread(self._tracker.limiter.reserve, **self._ask)
        return self._admit(decision)

    async def __aexit__(self, *exc) -> None:
        self._settle()
