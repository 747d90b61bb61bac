"""Answering within Discord's 3-second deadline whatever the database does.

Discord drops an interaction whose first response comes more than 3 s after it was created (``10062 Unknown
interaction``). ``@enforce_limits`` decides (one or more database round trips) before anything is sent; when that
decision is not back :data:`DEFER_AFTER` seconds after the interaction was created, :func:`answer_in_time` defers
the interaction ("thinking…", public) and the handler's response calls become followups (:class:`AutoDeferred`).
A quick decision sends nothing extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, AsyncIterator

import discord
from discord.ext import commands

log = logging.getLogger("dspy_tokens_discord")

#: Seconds after an interaction was created by which a slow limit decision gives way to a defer: half of Discord's
#: 3 s, leaving room for the defer's own round trip and a host clock a little off Discord's.
DEFER_AFTER = 1.5


def checked_defer_after(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 3:
        raise ValueError(f"defer_after must be seconds in [0, 3) (Discord's deadline is 3 s) or None, got {value!r}")
    return float(value)


def interaction_of(target: Any) -> discord.Interaction | None:
    """The interaction behind a slash command or a hybrid command used as one (None for messages)."""
    if isinstance(target, discord.Interaction):
        return target
    if isinstance(target, commands.Context):
        return target.interaction
    return None


class AutoDeferred(discord.InteractionResponse):
    """``interaction.response`` once ``@enforce_limits`` deferred it: the handler's own ``defer()`` is a no-op and
    ``send_message()`` becomes a followup, so a handler written for the fast path works unchanged. An ephemeral
    first message deletes the public "thinking…" placeholder first: Discord would otherwise show it to everyone.
    """

    __slots__ = ("_first",)

    def __init__(self, parent: discord.Interaction, response_type: Any) -> None:
        super().__init__(parent)
        self._response_type = response_type
        self._first = True  # nothing but the placeholder has been shown

    async def defer(self, *, ephemeral: bool = False, thinking: bool = False) -> None:
        self._first = False  # the handler takes the placeholder as its own, as after its own defer

    async def send_message(self, content: Any = None, *, ephemeral: bool = False,  # type: ignore[override]
                           delete_after: float | None = None, **kwargs: Any) -> None:
        parent = self._parent
        if self._first and ephemeral:
            await parent.delete_original_response()
        self._first = False
        message = await parent.followup.send(content, ephemeral=ephemeral, wait=True, **kwargs)
        if delete_after is not None:
            await message.delete(delay=delete_after)


class _Deferral:
    def __init__(self, interaction: discord.Interaction, delay: float) -> None:
        self.interaction = interaction
        self.sending = False
        self.task = asyncio.ensure_future(self._defer_after(delay))

    async def _defer_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.sending = True
        interaction = self.interaction
        await interaction.response.defer(thinking=True)
        # discord.py keeps the response object in this slot; a handler's later response calls must be followups.
        interaction._cs_response = AutoDeferred(interaction, interaction.response.type)  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if not self.sending:  # still waiting: nothing was sent, and nothing will be
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            return
        try:  # the defer is on the wire: it must land before anything else answers the interaction
            await self.task
        except discord.HTTPException:
            log.warning("could not defer a slow interaction in time", exc_info=True)


@contextlib.asynccontextmanager
async def answer_in_time(target: Any, defer_after: float | None = DEFER_AFTER) -> AsyncIterator[None]:
    """Run the block (the limit decision); if it is still running ``defer_after`` seconds after the interaction
    was created, defer the interaction meanwhile. Messages and answered interactions are left alone."""
    interaction = interaction_of(target)
    if interaction is None or defer_after is None or interaction.response.is_done():
        yield
        return
    age = (discord.utils.utcnow() - interaction.created_at).total_seconds()
    deferral = _Deferral(interaction, min(defer_after, max(defer_after - age, 0.0)))
    try:
        yield
    finally:
        await deferral.stop()
