"""The shipped kit, ``dspy_tokens_discord.testing``, as a bot author uses it: a small bot of their own, driven by
``FakeDiscord`` through discord.py's real dispatch: options, member options, subcommands, ephemeral replies,
embeds and files, permission checks (app commands and prefix commands), listeners, DMs."""

from __future__ import annotations

import discord
import pytest
from discord import app_commands
from discord.ext import commands
from dspy_tokens_discord.testing import PNG_MAGIC, FakeDiscord


def author_bot(seen: list) -> commands.Bot:
    """A bot like a bot author's: slash commands, a group, a prefix command with a permission check, a listener."""
    intents = discord.Intents.default()
    intents.message_content = True
    bot = commands.Bot(command_prefix="!", intents=intents, help_command=None)

    @bot.tree.command(name="hello", description="Greet")
    async def hello(interaction: discord.Interaction, name: str, times: int = 1, loud: bool = False):
        await interaction.response.send_message(" ".join([f"Hello {name}!"] * times), ephemeral=not loud)

    @bot.tree.command(name="whois", description="Who is that")
    async def whois(interaction: discord.Interaction, member: discord.Member):
        await interaction.response.send_message(f"{member.display_name} ({member.id}), asked by "
                                                f"{interaction.user.display_name}")

    @bot.tree.command(name="lookup", description="Member or not")
    async def lookup(interaction: discord.Interaction, target: discord.User):
        await interaction.response.send_message(f"{type(target).__name__} {target.display_name}")

    @bot.tree.command(name="purge", description="Moderators only")
    @app_commands.checks.has_permissions(manage_messages=True)
    async def purge(interaction: discord.Interaction):
        await interaction.response.send_message("purged")

    @purge.error
    async def purge_error(interaction: discord.Interaction, error: app_commands.AppCommandError):
        seen.append(error)
        await interaction.response.send_message("moderators only", ephemeral=True)

    settings = app_commands.Group(name="settings", description="Settings")

    @settings.command(name="show", description="Show one")
    async def show(interaction: discord.Interaction, key: str):
        embed = discord.Embed(title=f"Setting {key}").add_field(name="value", value="42")
        embed.set_image(url="attachment://chart.png")
        await interaction.response.defer(ephemeral=True, thinking=True)
        await interaction.followup.send(embed=embed, file=discord.File(__import__("io").BytesIO(PNG_MAGIC + b"x"),
                                                                       filename="chart.png"))

    bot.tree.add_command(settings)

    @bot.command(name="ping")
    @commands.has_permissions(manage_guild=True)
    async def ping(ctx: commands.Context):
        await ctx.reply("pong", mention_author=False)

    @bot.event
    async def on_command_error(ctx, error):
        seen.append(error)

    @bot.listen("on_message")
    async def called(message: discord.Message):
        if bot.user in message.mentions and not message.author.bot:
            await message.channel.send(f"you called, {message.author.display_name}?")

    return bot


@pytest.fixture
async def fake():
    """A started FakeDiscord around the author's bot; ``fake.seen`` holds the errors its handlers saw."""
    seen: list = []
    async with FakeDiscord(author_bot(seen), roles=["mods"]) as started:
        started.seen = seen
        yield started


class TestSlashCommands:
    async def test_options_and_the_ephemeral_flag_reach_the_command(self, fake):
        """String, integer and boolean options are transformed by discord.py; ``ephemeral`` is read back."""
        [quiet] = await fake.slash("hello", name="Ada", times=2)
        assert quiet.content == "Hello Ada! Hello Ada!" and quiet.ephemeral
        [loud] = await fake.slash("hello", name="Ada", loud=True)
        assert loud.content == "Hello Ada!" and not loud.ephemeral

    async def test_a_member_option_resolves_to_a_member(self, fake):
        """A :class:`Member` passed as an option arrives as a ``discord.Member`` with its name and id."""
        bob, alice = fake.member("bob"), fake.member("alice")
        [answer] = await fake.slash("whois", member=bob, user=alice)
        assert answer.content == f"Bob ({bob.id}), asked by Alice"

    async def test_an_outsider_resolves_to_a_plain_user(self, fake):
        """``fake.outsider()`` is a Discord user outside the guild: a user option resolves to ``discord.User``."""
        eve, bob = fake.outsider("eve"), fake.member("bob")
        assert [m.content for m in await fake.slash("lookup", target=eve)] == ["User Eve"]
        assert [m.content for m in await fake.slash("lookup", target=bob)] == ["Member Bob"]

    async def test_permission_checks_run_and_the_error_handler_answers(self, fake):
        """``app_commands.checks.has_permissions`` sees the member's permissions: refused without them (the
        command's error handler replies, ephemeral), run with them."""
        [refused] = await fake.slash("purge", user=fake.member("newbie"))
        assert refused.content == "moderators only" and refused.ephemeral
        assert isinstance(fake.seen[-1], app_commands.MissingPermissions)
        [done] = await fake.slash("purge", user=fake.member("mod", permissions=["manage_messages"]))
        assert done.content == "purged"

    async def test_subcommands_embeds_and_files(self, fake):
        """``"settings show"`` runs a group's subcommand; a deferred ephemeral followup carries the embed (as
        ``Embed.to_dict``) and the uploaded file's bytes."""
        [shown] = await fake.slash("settings show", key="volume")
        assert shown.is_followup and shown.ephemeral
        assert shown.embeds[0]["title"] == "Setting volume" and shown.field("value") == "42"
        assert shown.embeds[0]["image"]["url"] == "attachment://chart.png"
        assert shown.file("chart.png").startswith(PNG_MAGIC)
        assert "[Setting volume]" in shown.render() and "chart.png (9 bytes, PNG)" in shown.render()

    async def test_commands_work_in_a_dm(self, fake):
        """``dm=True`` runs the command outside any guild."""
        [answer] = await fake.slash("hello", name="DM", dm=True)
        assert answer.content == "Hello DM!"


class TestMessages:
    async def test_prefix_commands_check_the_permissions_the_roles_grant(self, fake):
        """A prefix command's ``has_permissions`` reads the author's roles: a member given the permission gets the
        reply, one without it gets nothing (the bot's error handler sees the failure)."""
        assert await fake.message("!ping", author=fake.member("plain", roles=["mods"])) == []
        assert isinstance(fake.seen[-1], commands.MissingPermissions)
        [pong] = await fake.message("!ping", author=fake.member("owner-ish", permissions=["manage_guild"]))
        assert pong.content == "pong" and pong.channel_id == fake.channel("general")

    async def test_listeners_see_mentions(self, fake):
        """``on_message`` listeners run; ``mention_bot`` mentions the bot."""
        carol = fake.member("carol")
        assert await fake.message("hello all", author=carol) == []
        [answer] = await fake.message("hi", author=carol, mention_bot=True)
        assert answer.content == "you called, Carol?"


async def test_the_http_edge_is_replaced_only_while_entered():
    """Inside ``async with FakeDiscord(...)`` discord.py's two HTTP seams are the fake's; after it, its own."""
    rest, hook = discord.http.HTTPClient.request, discord.webhook.async_.AsyncWebhookAdapter.request
    async with FakeDiscord(author_bot([])) as fake:
        assert discord.http.HTTPClient.request is not rest
        assert [s.path for s in fake.wire.sent[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    assert discord.http.HTTPClient.request is rest and discord.webhook.async_.AsyncWebhookAdapter.request is hook
