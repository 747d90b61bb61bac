"""``await bot.load_extension("dspy_tokens_discord")``: the extension entry point, adding both cogs."""

from __future__ import annotations

from discord.ext import commands

from .cog import TokenUsageCog
from .limits_cog import TokenLimitsCog


async def setup(bot: commands.Bot) -> None:
    """Add ``TokenUsageCog`` and ``TokenLimitsCog``, on ``bot.token_tracker`` if set, else on a ``TokenTracker()``
    from ``$DSPY_TOKENS_DATABASE_URL`` and ``./models.json``."""
    tracker = getattr(bot, "token_tracker", None)
    if tracker is None:
        from dspy_tokens import TokenTracker
        tracker = TokenTracker()
        bot.token_tracker = tracker  # type: ignore[attr-defined]  # the attribute this setup reads above
    await bot.add_cog(TokenUsageCog(bot, tracker))
    await bot.add_cog(TokenLimitsCog(bot, tracker))
