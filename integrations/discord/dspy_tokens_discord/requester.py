"""Who is asking: the Interaction, Context or Message a handler received, and the attribution it carries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import discord
from discord.ext import commands

from .permissions import role_ids_of

Target = Union[discord.Interaction, commands.Context, discord.Message]


@dataclass(frozen=True)
class Requester:
    user_id: int | None
    guild_id: int | None
    channel_id: int | None
    feature: str
    session_id: str
    role_ids: tuple[int, ...]
    is_bot: bool


def find_target(args: tuple, kwargs: dict) -> Target | None:
    """The Interaction, Context or Message among a handler's arguments (``self`` of a cog is skipped)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, (discord.Interaction, commands.Context, discord.Message)):
            return value
    return None


def requester(target: Target, default_feature: str) -> Requester:
    if isinstance(target, discord.Interaction):
        user, guild_id, channel_id = target.user, target.guild_id, target.channel_id
        command = target.command
        feature = command.qualified_name if command is not None else default_feature
        session = target.id
    elif isinstance(target, commands.Context):
        user, guild_id, channel_id = target.author, target.guild.id if target.guild else None, target.channel.id
        feature = target.command.qualified_name if target.command is not None else default_feature
        session = target.interaction.id if target.interaction is not None else target.message.id
    else:
        user, guild_id, channel_id = target.author, target.guild.id if target.guild else None, target.channel.id
        feature, session = default_feature, target.id
    return Requester(user.id, guild_id, channel_id, feature, str(session), role_ids_of(user), bool(user.bot))
