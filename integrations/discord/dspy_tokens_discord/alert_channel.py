"""Budget alerts (models.json ``"alerts": {"discord_channel_id": ...}``) posted to a channel as an embed. The core
calls the hook on whichever thread made the check; the post is handed to the bot's own loop."""

from __future__ import annotations

import asyncio
import logging

import discord
from discord.ext import commands

from dspy_tokens import BudgetAlert

log = logging.getLogger("dspy_tokens_discord")


def alert_embed(alert: BudgetAlert) -> discord.Embed:
    colour = discord.Colour.red() if alert.threshold >= 1 else discord.Colour.orange()
    return discord.Embed(title=f"🔔 Budget alert: {alert.percent}% reached", description=alert.text(), colour=colour,
                         timestamp=alert.window_start)


class AlertChannel:
    """``tracker.on_alert(AlertChannel(bot))``: active between :meth:`start` (on the bot's loop) and :meth:`stop`."""

    def __init__(self, bot: commands.Bot):
        self.bot = bot
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    def stop(self) -> None:
        self.loop = None

    def __call__(self, alert: BudgetAlert) -> None:
        loop = self.loop
        if loop is None or alert.discord_channel_id is None or loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.post(alert), loop)

    async def post(self, alert: BudgetAlert) -> None:
        channel_id = alert.discord_channel_id
        if channel_id is None:
            return
        try:
            channel = self.bot.get_channel(channel_id) or await self.bot.fetch_channel(channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                raise TypeError(f"discord_channel_id {channel_id} is not a text channel or thread")
            await channel.send(embed=alert_embed(alert), allowed_mentions=discord.AllowedMentions.none())
        except Exception:
            log.exception("budget alert for %s could not be posted to channel %s", alert.rule,
                          alert.discord_channel_id)
