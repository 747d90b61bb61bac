"""The bot under test: like the example — /ask (slash), hask (hybrid), !pask (prefix), a mention-only chat
listener, a cog command, and raise_error variants — plus :class:`App`, which delivers slash commands and
messages through discord.py's own parsers and returns what the fake wire recorded."""

from __future__ import annotations

from dataclasses import dataclass, field

import discord
import dspy
from discord import app_commands
from discord.ext import commands
from dspy_tokens_discord import TokenUsageCog, enforce_limits

from tests.discord.support.harness import BOT_ID, SUPER_ROLE, FakeWire, Sent, message_payload, settle, slash_payload


def mentions_bot(message: discord.Message) -> bool:
    """The chat listener's ``when=``: a DM, or a message mentioning the bot, reaches the LLM."""
    return message.guild is None or any(u.id == BOT_ID for u in message.mentions)


@dataclass
class App:
    """A started bot with its tracker, the fake wire and the fake LLM server."""

    bot: commands.Bot
    tracker: object
    wire: FakeWire
    server: object
    errors: list = field(default_factory=list)  # (where, error) seen by the bot's own error handlers

    @property
    def cog(self) -> TokenUsageCog:
        return self.bot.get_cog("TokenUsage")

    async def slash(self, name: str, options=None, **kwargs) -> list[Sent]:
        """Deliver a slash command through ``parse_interaction_create``; return the messages it produced."""
        self.wire.clear()
        self.bot._connection.parse_interaction_create(slash_payload(name, options, **kwargs))
        await settle()
        return self.wire.messages()

    async def message(self, content: str, **kwargs) -> list[Sent]:
        """Deliver a chat message through ``parse_message_create`` (prefix commands and on_message)."""
        self.wire.clear()
        self.bot._connection.parse_message_create(message_payload(content, **kwargs))
        await settle()
        return self.wire.messages()


def build_bot(tracker, lm, errors: list, cog_kwargs: dict) -> commands.Bot:
    """A bot like the example: /ask (slash), hask (hybrid), !pask (prefix), a mention-only chat listener, a cog
    command, and raise_error variants whose errors are recorded by the bot's own handlers."""
    program = dspy.Predict("question -> answer")
    limits = dict(super_role_ids=[SUPER_ROLE])

    async def answer(question: str) -> str:
        with dspy.context(lm=lm):
            return (await program.acall(question=question)).answer

    class Bot(commands.Bot):
        async def setup_hook(self):
            await self.add_cog(TokenUsageCog(self, tracker, **{"super_role_ids": [SUPER_ROLE], **cog_kwargs}))
            await self.add_cog(AskCog())

    intents = discord.Intents.default()
    intents.message_content = True
    bot = Bot(command_prefix="!", intents=intents, help_command=None, chunk_guilds_at_startup=False,
              allowed_mentions=discord.AllowedMentions(everyone=False, roles=False))

    @bot.tree.command(name="ask", description="Ask the model")
    @enforce_limits(tracker, **limits)
    async def ask(interaction: discord.Interaction, question: str):
        await interaction.response.defer(thinking=True)
        await interaction.followup.send(await answer(question))

    @bot.tree.command(name="ask-strict", description="Ask the model; limits raise")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def ask_strict(interaction: discord.Interaction, question: str):
        await interaction.response.send_message(await answer(question))

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError):
        errors.append(("tree", error))
        if not interaction.response.is_done():
            await interaction.response.send_message("handled by the bot", ephemeral=True)

    @bot.hybrid_command(name="hask", description="Ask the model (hybrid)")
    @enforce_limits(tracker, **limits)
    async def hask(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.hybrid_command(name="hstrict", description="Ask the model (hybrid); limits raise")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def hstrict(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.command(name="pask")
    @enforce_limits(tracker, **limits)
    async def pask(ctx: commands.Context, *, question: str):
        await ctx.reply(await answer(question), mention_author=False)

    @bot.command(name="pstrict")
    @enforce_limits(tracker, raise_error=True, **limits)
    async def pstrict(ctx: commands.Context, *, question: str):
        await ctx.send(await answer(question))

    @bot.event
    async def on_command_error(ctx: commands.Context, error: commands.CommandError):
        errors.append(("command", error))

    @bot.listen("on_message")
    @enforce_limits(tracker, when=mentions_bot, feature="chat", **limits)
    async def chat(message: discord.Message):
        if message.author.bot or not mentions_bot(message):
            return
        await message.reply(await answer(message.content), mention_author=False)

    class AskCog(commands.Cog):
        @app_commands.command(name="cog-ask", description="Ask the model from a cog")
        @enforce_limits(tracker, **limits)
        async def ask_from_cog(self, interaction: discord.Interaction, question: str):
            await interaction.response.send_message(await answer(question))

    return bot
