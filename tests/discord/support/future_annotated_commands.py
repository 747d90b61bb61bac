"""A user module written with PEP 563 (``from __future__ import annotations``): every annotation below is a
string that must be resolved against *this* module's globals, where ``Prompt`` and ``Shout`` live."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands
from dspy_tokens_discord import enforce_limits

Prompt = app_commands.Range[str, 1, 200]


class Shout(commands.Converter):
    async def convert(self, ctx: commands.Context, argument: str) -> str:
        return argument.upper()


def register(bot: commands.Bot, tracker, calls: list) -> None:
    @bot.tree.command(name="future-ask", description="Slash command from a PEP 563 module")
    @app_commands.describe(prompt="What to ask")
    @enforce_limits(tracker)
    async def future_ask(interaction: discord.Interaction, prompt: Prompt):
        calls.append(prompt)
        await interaction.response.send_message(f"ok {prompt}")

    @bot.command(name="future-shout")
    @enforce_limits(tracker)
    async def future_shout(ctx: commands.Context, word: Shout):
        calls.append(word)
        await ctx.send(word)
