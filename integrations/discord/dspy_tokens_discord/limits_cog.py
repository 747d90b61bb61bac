"""``TokenLimitsCog``: ``/token-limits show | set | clear | reset | bypass | history`` for admins.

Every change goes through the tracker's run-time limits (``tracker.set_limit/clear_limit/reset_usage/
set_bypass``), stored in the database: every process of the bot applies it at its next check. Changes are
recorded as ``by="discord:<user id>"`` and listed by ``history``.

Who may change what:

- the command is for admins (the configured permission, default *Manage Server*; ``SUPER_ROLE_IDS``; the bot
  owner), checked at run time — ``default_permissions`` is only a hint server admins can change;
- a server admin acts on *this* server and on its members only; a member's limit counts every server, so their
  amounts are not shown to a server admin, and a member's bypass (which would lift other servers' limits too) is
  the bot owner's alone;
- the global scope (every server) is the bot owner's alone.

Replies are ephemeral embeds; database work runs in a worker thread after ``defer``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import discord
from discord import app_commands
from discord.ext import commands

from dspy_tokens import ConfigurationError

from .cog import flush
from .config import DiscordSettings
from .embeds import GENERIC_ERROR
from .limits_embeds import HISTORY_ROWS, change_embed, history_embed, limits_embed, override_lines
from .permissions import is_owner, require_admin, role_ids_of
from .replies import say

if TYPE_CHECKING:
    from dspy_tokens import TokenTracker

log = logging.getLogger("dspy_tokens_discord")
SCOPES = [app_commands.Choice(name="This server", value="server"),
          app_commands.Choice(name="Global: every server (bot owner only)", value="global")]


@dataclass(frozen=True)
class Target:
    scope: str  # user, guild or global (the tracker's scopes)
    scope_id: int
    label: str


@app_commands.default_permissions(manage_guild=True)
class TokenLimitsCog(commands.GroupCog, name="TokenLimits", group_name="token-limits",
                     group_description="Show and change usage limits (admins)"):
    """Admin commands over the tracker's run-time limits. Arguments fall back to the environment like
    :class:`~dspy_tokens_discord.TokenUsageCog` (``SUPER_ROLE_IDS``, ``STATS_ADMIN_PERMISSION``)."""

    def __init__(self, bot: commands.Bot, tracker: "TokenTracker", *,
                 super_role_ids: str | Iterable[int | str] | None = None, admin_permission: str | None = None) -> None:
        self.bot = bot
        self.tracker = tracker
        self.settings = DiscordSettings.resolve(super_role_ids=super_role_ids, admin_permission=admin_permission)
        super().__init__()
        # The UI hint (synced as default_member_permissions) follows the configured permission.
        group = self.app_command
        assert group is not None  # a GroupCog always has its group
        group.default_permissions = discord.Permissions(**{self.settings.admin_permission: True})

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        return await require_admin(interaction, self.settings)

    # -- whom a command is about -----------------------------------------------------------------------
    async def _target(self, interaction: discord.Interaction, user: Optional[discord.User],
                      scope: Optional[str]) -> Target | str:
        """The scope a command acts on, or why this admin may not act on it."""
        owner = await is_owner(interaction.client, interaction.user)
        if user is not None:
            if scope == "global":
                return "⚠️ Give a member or `scope: global`, not both."
            in_guild = (isinstance(user, discord.Member) and interaction.guild_id is not None
                        and user.guild.id == interaction.guild_id)
            if not owner and not in_guild:
                name = discord.utils.escape_markdown(getattr(user, "display_name", str(user)))
                return f"🚫 {name} is not a member of this server."
            return Target("user", user.id, user.mention)
        if scope == "global":
            if not owner:
                return "🚫 Only the bot owner can change or see the global limits."
            return Target("global", 0, "every server (global)")
        if interaction.guild is None:
            return "⚠️ Run this in a server, or give a member or `scope: global`."
        return Target("guild", interaction.guild.id, discord.utils.escape_markdown(interaction.guild.name))

    async def _run(self, interaction: discord.Interaction, user: Optional[discord.User], scope: Optional[str],
                   work: Callable[[Target, str], discord.Embed], *, owner_only_for_users: str | None = None) -> None:
        target = await self._target(interaction, user, scope)
        if isinstance(target, Target) and target.scope == "user" and owner_only_for_users is not None \
                and not await is_owner(interaction.client, interaction.user):
            target = owner_only_for_users
        if isinstance(target, str):
            await interaction.response.send_message(target, ephemeral=True,
                                                    allowed_mentions=discord.AllowedMentions.none())
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        embed = await asyncio.to_thread(work, target, f"discord:{interaction.user.id}")
        await interaction.followup.send(embed=embed, ephemeral=True, allowed_mentions=discord.AllowedMentions.none())

    # -- show --------------------------------------------------------------------------------------------
    @app_commands.command(name="show", description="The limits in force for a member or this server")
    @app_commands.describe(user="A member of this server (default: the server itself)",
                           scope="This server, or the global limits (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def show(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                   scope: Optional[str] = None) -> None:
        owner = await is_owner(interaction.client, interaction.user)
        amounts_for = ("user", "guild", "global", "channel", "feature") if owner else ("guild",)
        guild_id = interaction.guild_id
        roles = role_ids_of(user) if user is not None else ()

        def work(target: Target, by: str) -> discord.Embed:
            t = self.tracker
            flush(t)
            if target.scope == "user":
                decision = t.check(target.scope_id, guild_id, estimate=1, role_ids=roles)
            else:
                decision = t.check(None, target.scope_id if target.scope == "guild" else None, estimate=1)
            shown = [d for d in decision.rules if target.scope != "global" or d.scope == "global"]
            return limits_embed(target=target.label, decisions=shown, bypassed=decision.bypassed,
                                override=t.limit_override(target.scope, target.scope_id), amounts_for=amounts_for)
        await self._run(interaction, user, scope, work)

    # -- changes -------------------------------------------------------------------------------------
    @app_commands.command(name="set", description="Set a member's or this server's limits")
    @app_commands.describe(user="A member of this server (default: the server itself)",
                           tokens="Tokens allowed per window", cost_usd="Dollars allowed per window, e.g. 5 or 0.50",
                           requests="LM calls allowed per window",
                           window='Window: "30d", "7d", "24h" or "1mo" (calendar month); default the configured',
                           scope="This server, or the global limits (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def set_(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                   tokens: Optional[app_commands.Range[int, 0]] = None,
                   cost_usd: Optional[app_commands.Range[str, 1, 20]] = None,
                   requests: Optional[app_commands.Range[int, 0]] = None,
                   window: Optional[app_commands.Range[str, 2, 6]] = None, scope: Optional[str] = None) -> None:
        def work(target: Target, by: str) -> discord.Embed:
            self.tracker.set_limit(target.scope, target.scope_id, tokens=tokens, cost_usd=cost_usd,
                                   requests=requests, window=window, by=by)
            return change_embed(f"Limits set for {target.label}",
                                override_lines(self.tracker.limit_override(target.scope, target.scope_id)))
        await self._run(interaction, user, scope, work)

    @app_commands.command(name="clear", description="Drop limits set here: the configured rules apply again")
    @app_commands.describe(user="A member of this server (default: the server itself)",
                           scope="This server, or the global limits (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def clear(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                    scope: Optional[str] = None) -> None:
        def work(target: Target, by: str) -> discord.Embed:
            self.tracker.clear_limit(target.scope, target.scope_id, by=by)
            return change_embed(f"Limits cleared for {target.label}", ["The configured rules apply again."])
        await self._run(interaction, user, scope, work)

    @app_commands.command(name="reset", description="Usage before now stops counting toward the limits")
    @app_commands.describe(user="A member of this server (default: the server itself)",
                           scope="This server, or the global limits (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def reset(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                    scope: Optional[str] = None) -> None:
        def work(target: Target, by: str) -> discord.Embed:
            self.tracker.reset_usage(target.scope, target.scope_id, by=by)
            return change_embed(f"Usage reset for {target.label}",
                                ["Usage before now no longer counts toward the limits (reports keep it)."])
        await self._run(interaction, user, scope, work)

    @app_commands.command(name="bypass", description="Turn limits off (or back on) for a member or this server")
    @app_commands.describe(on="True: no limit is enforced; False: limits apply again",
                           user="A member (bot owner only: it lifts every server's limits for them)",
                           scope="This server, or every server (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def bypass(self, interaction: discord.Interaction, on: bool, user: Optional[discord.User] = None,
                     scope: Optional[str] = None) -> None:
        def work(target: Target, by: str) -> discord.Embed:
            self.tracker.set_bypass(target.scope, target.scope_id, on, by=by)
            state = "off: no limit is enforced" if on else "back on"
            return change_embed(f"Bypass {'on' if on else 'off'} for {target.label}", [f"Limits are {state}."])
        await self._run(interaction, user, scope, work,
                        owner_only_for_users="🚫 Only the bot owner can bypass a member: it would lift the limits "
                                             "of every server they are in. Raise their limit with `set` instead.")

    @app_commands.command(name="history", description="Recent limit changes, with who made them")
    @app_commands.describe(user="A member of this server (default: the server itself)",
                           scope="This server, or the global limits (bot owner only)")
    @app_commands.choices(scope=SCOPES)
    async def history(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                      scope: Optional[str] = None) -> None:
        def work(target: Target, by: str) -> discord.Embed:
            changes = self.tracker.limit_changes(target.scope, target.scope_id, limit=HISTORY_ROWS)
            return history_embed(target=target.label, changes=changes)
        await self._run(interaction, user, scope, work)

    # -- errors ----------------------------------------------------------------------------------------
    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        original: Any = getattr(error, "original", error)
        if isinstance(error, app_commands.MissingPermissions):
            text = f"🚫 You need the {self.settings.admin_permission_label} permission to use this command."
        elif isinstance(error, app_commands.CheckFailure):
            text = "🚫 You can't use this command here."
        elif isinstance(original, ConfigurationError):
            text = f"⚠️ `{original.field}` {original.fix}."
        else:
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("unexpected error in /%s (user %s, guild %s)", command, interaction.user.id,
                      interaction.guild_id, exc_info=original)
            text = GENERIC_ERROR
        await say(interaction, text)  # ephemeral (a followup once answered); a failure to send is logged
