"""Discord integration for dspy-tokens (``pip install dspy-tokens[discord]``).

```python
from dspy_tokens_discord import enforce_limits, TokenUsageCog

await bot.add_cog(TokenUsageCog(bot, tracker))            # or: await bot.load_extension("dspy_tokens_discord")

@bot.tree.command(name="ask")
@enforce_limits(tracker)
async def ask(interaction: discord.Interaction, question: str): ...
```
"""

from .checks import AppTokenLimitExceeded, TokenLimitExceeded, enforce_limits
from .cog import TokenUsageCog, setup
from .config import DiscordSettings

__all__ = ["AppTokenLimitExceeded", "DiscordSettings", "TokenLimitExceeded", "TokenUsageCog", "enforce_limits",
           "setup"]
