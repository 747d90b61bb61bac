"""A complete small Discord bot: a DSPy ``/ask`` under ``@enforce_limits``, plus ``/token-usage`` and
``/token-stats`` from the usage cog.

Setup::

    pip install "dspy-tokens[discord]"
    export DISCORD_TOKEN=...            # Bot token (Developer Portal → Bot → Reset Token)
    export OPENAI_API_KEY=...           # or any provider DSPy supports; model via DSPY_MODEL
    # optional: DSPY_TOKENS_DATABASE_URL, ./models.json (limits, prices), ./token_bypasses.json,
    #           SUPER_ROLE_IDS, STATS_REPORT_CHANNEL_ID, STATS_REPORT_INTERVAL_SECONDS, STATS_REPORT_TOP_USERS

Syncing slash commands (Discord only shows commands after they are synced; syncing is rate-limited, so it is
**not** done on every start):

* development: ``python examples/discord_bot.py --sync-guild YOUR_SERVER_ID`` copies the commands to one server,
  where they appear at once;
* production: ``python examples/discord_bot.py --sync`` publishes them globally (may take a while to appear);
* from Discord, as the bot owner: ``!sync`` (global), ``!sync guild`` (this server), ``!sync clear`` (remove
  this server's copies). ``!sync`` needs the message-content intent (enable it in the Developer Portal).

Then run ``python examples/discord_bot.py`` without flags.

Without a token or an API key: ``python examples/discord_bot.py --offline`` runs the same bot against a fake
Discord (``dspy_tokens_discord.testing``: discord.py's real dispatch, only HTTP replaced) and a local fake LLM
server (``dspy_tokens.testing.FakeLLMServer``), sends it a few commands as members of a test server and prints
the transcript. ``examples/test_example_bot.py`` does the same in a test.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
from typing import Literal, Optional

if "--offline" in sys.argv:  # before DSPy is imported: prices from the map bundled with DSPy, no network
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import discord
import dspy
from discord import app_commands
from discord.ext import commands
from dspy_tokens_discord import TokenLimitsCog, TokenUsageCog, enforce_limits

from dspy_tokens import Config, TokenTracker

log = logging.getLogger("discord_bot")
MODEL = os.environ.get("DSPY_MODEL", "openai/gpt-4o-mini")
MESSAGE_MAX = 2000


class Answer(dspy.Signature):
    """Answer the question helpfully and briefly."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


Question = app_commands.Range[str, 1, 1000]


def create_bot(tracker: TokenTracker, *, lm: Optional[dspy.LM] = None, sync: Optional[str] = None,
               sync_guild_id: Optional[int] = None) -> commands.Bot:
    """Build the bot. ``lm`` defaults to the LM given to ``dspy.configure``; ``sync`` is ``"global"`` or
    ``"guild"`` (with ``sync_guild_id``) to sync commands once in ``setup_hook``."""
    program = dspy.ChainOfThought(Answer)
    intents = discord.Intents.default()
    intents.message_content = True  # only for the !sync prefix command; slash commands do not need it

    class Bot(commands.Bot):
        async def setup_hook(self) -> None:
            await self.add_cog(TokenUsageCog(self, tracker))
            await self.add_cog(TokenLimitsCog(self, tracker))  # /token-limits: admins change limits at run time
            if sync == "guild" and sync_guild_id:
                guild = discord.Object(id=sync_guild_id)
                self.tree.copy_global_to(guild=guild)
                log.info("synced %d commands to guild %s", len(await self.tree.sync(guild=guild)), sync_guild_id)
            elif sync == "global":
                log.info("synced %d commands globally", len(await self.tree.sync()))

    # LLM output must never ping @everyone or roles.
    bot = Bot(command_prefix=commands.when_mentioned_or("!"), intents=intents, help_command=None,
              allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True))

    @bot.tree.command(name="ask", description="Ask the model a question")
    @app_commands.describe(question="Your question")
    @enforce_limits(tracker)  # checked and reserved before the LLM runs; calls attributed to this interaction
    async def ask(interaction: discord.Interaction, question: Question):
        await interaction.response.defer(thinking=True)  # LLM calls take longer than Discord's 3 s
        if lm is not None:
            with dspy.context(lm=lm):
                result = await program.acall(question=question)
        else:
            result = await program.acall(question=question)
        answer = result.answer or "(no answer)"
        await interaction.followup.send(answer if len(answer) <= MESSAGE_MAX else answer[:MESSAGE_MAX - 1] + "…")

    @bot.tree.error
    async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError):
        # Called for every app-command error (the cog's commands handle their own first).
        if interaction.command is not None and isinstance(interaction.command.binding,
                                                                 (TokenUsageCog, TokenLimitsCog)):
            return  # the cog's own error handler already answered
        log.error("error in /%s", interaction.command and interaction.command.name, exc_info=error)
        text = "⚠️ Something went wrong; please try again later."
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    @bot.command(name="sync")
    @commands.is_owner()
    async def sync_command(ctx: commands.Context, where: Literal["global", "guild", "clear"] = "global"):
        """Owner only: sync slash commands globally, to this server, or clear this server's copies."""
        if where == "global":
            synced = await bot.tree.sync()
        elif ctx.guild is None:
            await ctx.reply("Use `!sync guild` inside a server.", mention_author=False)
            return
        elif where == "guild":
            bot.tree.copy_global_to(guild=ctx.guild)
            synced = await bot.tree.sync(guild=ctx.guild)
        else:
            bot.tree.clear_commands(guild=ctx.guild)
            synced = await bot.tree.sync(guild=ctx.guild)
        await ctx.reply(f"Synced {len(synced)} command(s) ({where}).", mention_author=False)

    @bot.event
    async def on_command_error(ctx: commands.Context, error: commands.CommandError):
        if isinstance(error, (commands.CommandNotFound, commands.NotOwner)):
            return
        log.error("error in !%s", ctx.command, exc_info=error)

    return bot


async def offline(echo=print) -> None:
    """The bot's commands against a fake Discord and a fake LLM server, with a transcript of what it answered."""
    from dspy_tokens_discord.testing import FakeDiscord

    from dspy_tokens.testing import FakeLLMServer

    with tempfile.TemporaryDirectory() as tmp, FakeLLMServer(cached_tokens=8) as server:
        tracker = TokenTracker(f"sqlite:///{tmp}/usage.db", Config())
        bot = create_bot(tracker, lm=server.lm(MODEL))
        try:
            async with FakeDiscord(bot) as fake:
                alice = fake.member("alice")
                admin = fake.member("admin", permissions=["manage_guild"])
                script = [(alice, "/ask question: What is DSPy?"), (alice, "/token-usage"),
                          (admin, "/token-stats period: 7d"), (alice, "/token-stats"), (fake.owner, "!sync guild")]
                for who, said in script:
                    echo(f"{who.name}: {said}")
                    for sent in await _act(fake, who, said):
                        echo("bot: " + sent.render().replace("\n", "\n     "))
                    echo("")
                    tracker.flush()  # the next command reports this one's usage
        finally:
            tracker.close()
    echo(f"LLM calls answered by the fake server: {len(server.requests)}")


def _act(fake, who, said: str):
    """Say ``said`` as ``who``: ``!text`` is a message, ``/command option: value`` a slash command."""
    if said.startswith("!"):
        return fake.message(said, author=who)
    command, *options = said[1:].split(" ", 1)
    name, _, value = (options[0] if options else "").partition(": ")
    return fake.slash(command, user=who, **({name: value} if name else {}))


def main(argv: Optional[list] = None) -> None:
    parser = argparse.ArgumentParser(description="DSPy Discord bot with token tracking and limits")
    parser.add_argument("--sync", action="store_true", help="sync slash commands globally, then run")
    parser.add_argument("--sync-guild", type=int, metavar="GUILD_ID",
                        help="copy the slash commands to one server (instant; for development), then run")
    parser.add_argument("--offline", action="store_true",
                        help="no Discord, no LLM provider: run the commands against fakes and print a transcript")
    args = parser.parse_args(argv)
    if args.offline:
        asyncio.run(offline())
        return
    token = os.environ.get("DISCORD_TOKEN")
    if not token:
        sys.exit("Set DISCORD_TOKEN to your bot's token.")
    tracker = TokenTracker()  # $DSPY_TOKENS_DATABASE_URL (else sqlite:///dspy_tokens.db), ./models.json
    dspy.configure(lm=dspy.LM(MODEL), callbacks=[tracker])
    sync = "guild" if args.sync_guild else "global" if args.sync else None
    bot = create_bot(tracker, sync=sync, sync_guild_id=args.sync_guild)
    try:
        bot.run(token)  # also sets up logging to stderr
    finally:
        tracker.close()


if __name__ == "__main__":
    main()
