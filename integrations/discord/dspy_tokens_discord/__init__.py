"""Discord integration for dspy-tokens (``pip install dspy-tokens[discord]``).

Modules: ``enforce`` (``@enforce_limits`` and its exceptions), ``cog`` (``/token-usage``, ``/token-stats``, the
scheduled report), ``limits_cog`` (``/token-limits``: admins change limits at run time), ``permissions`` (owner /
admin / super-role predicates), ``replies`` (ephemeral messages and one-time notices), ``embeds`` (pure
formatting of the core's report types), ``charts`` and ``config``.

```python
from dspy_tokens_discord import enforce_limits, TokenLimitsCog, TokenUsageCog

await bot.add_cog(TokenUsageCog(bot, tracker))            # or: await bot.load_extension("dspy_tokens_discord")
await bot.add_cog(TokenLimitsCog(bot, tracker))           # /token-limits (load_extension adds both)

@bot.tree.command(name="ask")
@enforce_limits(tracker)
async def ask(interaction: discord.Interaction, question: str): ...
```
"""

from .cog import TokenUsageCog
from .config import DiscordSettings
from .enforce import AppTokenLimitExceeded, TokenLimitExceeded, enforce_limits
from .extension import setup
from .limits_cog import TokenLimitsCog

__all__ = ["AppTokenLimitExceeded", "DiscordSettings", "TokenLimitExceeded", "TokenLimitsCog", "TokenUsageCog",
           "enforce_limits", "setup"]
