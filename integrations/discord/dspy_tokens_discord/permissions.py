"""Who may see what: predicates only (RoboDanny's ``checks.py`` style) — the bot owner, ``SUPER_ROLE_IDS``
members and members with the configured admin permission (default *Manage Server*)."""

from __future__ import annotations

import logging
from typing import Awaitable, Iterable

import discord
from discord import app_commands

from .config import DiscordSettings

log = logging.getLogger("dspy_tokens_discord")


def role_ids_of(user) -> tuple[int, ...]:
    """The ids of a member's roles (a plain ``User``, e.g. in DMs, has none)."""
    return tuple(role.id for role in getattr(user, "roles", ()) or ())


def has_super_role(user, super_role_ids: Iterable[int]) -> bool:
    """Whether ``user`` holds one of ``super_role_ids`` (``SUPER_ROLE_IDS``)."""
    return bool(set(super_role_ids).intersection(role_ids_of(user)))


async def is_owner(client, user) -> bool:
    """The bot owner (or a team owner/admin/developer), as ``commands.Bot.is_owner`` decides."""
    check = getattr(client, "is_owner", None)
    if check is not None:
        try:
            return await check(user)
        except discord.HTTPException:
            log.warning("could not fetch the application owner", exc_info=True)
            return False
    app = getattr(client, "application", None)
    owner = getattr(app, "owner", None)
    return owner is not None and owner.id == user.id


async def is_admin(interaction: discord.Interaction, settings: DiscordSettings) -> bool:
    """Owner, a ``SUPER_ROLE_IDS`` member, or a member with the configured permission in this server."""
    if interaction.guild_id is not None:  # in DMs permissions mean nothing: only the owner is an admin there
        if getattr(interaction.permissions, settings.admin_permission, False):
            return True
        if has_super_role(interaction.user, settings.super_role_ids):
            return True
    return await is_owner(interaction.client, interaction.user)  # may fetch the application info once


def require_admin(interaction: discord.Interaction, settings: DiscordSettings) -> Awaitable[bool]:
    """Like :func:`is_admin` but raises ``app_commands.MissingPermissions`` (a ``CheckFailure``) when not."""
    async def run() -> bool:
        if await is_admin(interaction, settings):
            return True
        raise app_commands.MissingPermissions([settings.admin_permission])
    return run()


async def others_usage_scope(interaction: discord.Interaction, subject, settings: DiscordSettings, *,
                             everywhere: bool) -> tuple[str | None, int | None]:
    """May the invoker see ``subject``'s usage, and from which server? ``(refusal, guild_id)``: a refusal to show,
    or ``None`` and the server to filter by (``None``: every server).

    A server admin sees a *member of this server*, and only what happened in this server: anyone can add the
    bot to a server of their own, so an admin there must not read what someone did elsewhere. Every server
    (``everywhere``, or the command run in a DM) is the bot owner's alone.
    """
    if everywhere or interaction.guild_id is None:
        if await is_owner(interaction.client, interaction.user):
            return None, None
        if interaction.guild_id is None:
            return "🚫 Another member's usage can only be shown in a server you both belong to.", None
        return "🚫 Only the bot owner can see a member's usage across every server.", None
    if not await is_admin(interaction, settings):
        return "🚫 Only server admins can see another member's usage.", None
    member_guild = getattr(getattr(subject, "guild", None), "id", None)
    if not isinstance(subject, discord.Member) or member_guild != interaction.guild_id:
        name = discord.utils.escape_markdown(getattr(subject, "display_name", str(subject)))
        return f"🚫 {name} is not a member of this server.", None
    return None, interaction.guild_id
