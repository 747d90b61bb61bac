"""``TokenUsageCog``: ``/token-usage``, ``/token-stats`` and the scheduled usage report.

Usage is read through the core's public report API (``tracker.summary/top/breakdown/recent_calls/check``, served
from rollup tables); this module only ranks it by tokens and fills in days without usage. Every database read
and the chart rendering run in worker threads (``asyncio.to_thread``); commands defer before them, so the
3-second interaction deadline never matters. Errors: known ones (missing permission, cooldown) get a short
ephemeral message; anything else a generic ephemeral message, and the traceback goes to the
``dspy_tokens_discord`` logger — nothing internal is shown in chat.
"""

import asyncio
import io
import logging
import math
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

import discord
from discord import app_commands
from discord.ext import commands, tasks

from dspy_tokens import CallRecord, ConfigurationError, Group, LimitDecision, Summary

from .alert_channel import AlertChannel
from .config import ENV_REPORT_CHANNEL_ID, DiscordSettings

if TYPE_CHECKING:
    from dspy_tokens import TokenTracker
from .embeds import CHART_FILENAME, GENERIC_ERROR, PERIOD_LABELS, report_embed, stats_embed, usage_embed
from .permissions import has_super_role, is_owner, others_usage_scope, require_admin, role_ids_of
from .replies import say

log = logging.getLogger("dspy_tokens_discord")

RECENT_CALLS = 10
TOP_USERS = 10
TOP_SERVERS = 10
TOP_BREAKDOWN = 10
FLUSH_SECONDS = 2.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# -- reading usage: the core's report API, ranked and shaped for Discord (all blocking: run in a thread) ----
def flush(tracker: "TokenTracker", timeout: float = FLUSH_SECONDS) -> bool:
    """Wait (briefly) until calls already made are committed, so a user sees the request they just made."""
    try:
        return tracker.flush(timeout)
    except Exception:  # a stopped writer: show what is stored
        log.debug("flush before reading usage failed", exc_info=True)
        return False


def by_tokens(groups: Iterable[Group], limit: Optional[int] = None) -> list[Group]:
    """Most tokens first (ties by key, calls without a key last): the core orders breakdowns by cost."""
    ranked = sorted(groups, key=lambda g: (-g.total_tokens, g.key is None, str(g.key)))
    return ranked[:limit] if limit is not None else ranked


def per_day(days: Sequence[Group], since: datetime, until: Optional[datetime] = None) -> list[Group]:
    """The core's ``breakdown("day")`` with one group per UTC day from ``since`` to ``until`` (default now):
    days without usage included as 0, oldest first."""
    until = until or utcnow()
    found = {g.key: g for g in days}
    out: list[Group] = []
    day: date = since.astimezone(timezone.utc).date()
    last = (until.astimezone(timezone.utc) - timedelta(microseconds=1)).date()
    while day <= last:
        out.append(found.get(day) or Group(by="day", key=day))
        day += timedelta(days=1)
    return out


async def _stats_admin(interaction: discord.Interaction) -> bool:
    """Runtime check of /token-stats (``default_permissions`` is only a hint server admins can change)."""
    cog = getattr(interaction.command, "binding", None)  # a context menu has none
    settings = cog.settings if isinstance(cog, TokenUsageCog) else DiscordSettings.resolve()
    return await require_admin(interaction, settings)


@dataclass(frozen=True)
class UsageView:
    user_totals: Summary
    guild_totals: Optional[Summary]
    decision: LimitDecision
    guild_decision: Optional[LimitDecision]
    recent: Optional[list[CallRecord]]


@dataclass(frozen=True)
class StatsView:
    totals: Summary
    top_users: list[Group]
    top_servers: Optional[list[Group]]
    by_model: list[Group]
    by_feature: list[Group]
    days: list[Group]


class TokenUsageCog(commands.Cog, name="TokenUsage"):
    """Token usage for everyone (``/token-usage``), statistics for admins (``/token-stats``), and a report
    posted every ``report_interval_seconds`` to ``report_channel_id``.

    Arguments fall back to the environment (``SUPER_ROLE_IDS``, ``STATS_REPORT_CHANNEL_ID``,
    ``STATS_REPORT_INTERVAL_SECONDS``, ``STATS_REPORT_TOP_USERS``, ``STATS_ADMIN_PERMISSION``); see
    :mod:`dspy_tokens_discord.config`.
    """

    def __init__(self, bot: commands.Bot, tracker: "TokenTracker", *,
                 super_role_ids: str | Iterable[int | str] | None = None, report_channel_id: int | str | None = None,
                 report_interval_seconds: float | str | None = None, report_top_users: int | str | None = None,
                 admin_permission: str | None = None) -> None:
        self.bot = bot
        self.tracker = tracker
        self.settings = DiscordSettings.resolve(
            super_role_ids=super_role_ids, report_channel_id=report_channel_id,
            report_interval_seconds=report_interval_seconds, report_top_users=report_top_users,
            admin_permission=admin_permission)
        # The UI hint (synced as default_member_permissions) follows the configured permission.
        self.token_stats.default_permissions = discord.Permissions(**{self.settings.admin_permission: True})
        self.report_loop.change_interval(seconds=self.settings.report_interval_seconds)
        self.alert_channel = AlertChannel(bot)
        tracker.on_alert(self.alert_channel)

    # -- lifecycle -------------------------------------------------------------------------------------
    async def cog_load(self) -> None:
        self.alert_channel.start()
        if self.settings.report_channel_id is not None:
            self.report_loop.start()
            log.info("token report every %ss to channel %s", self.settings.report_interval_seconds,
                     self.settings.report_channel_id)

    async def cog_unload(self) -> None:
        self.alert_channel.stop()
        self.report_loop.cancel()

    @property
    def window_days(self) -> int:
        return self.tracker.config.time_window_days

    # -- /token-usage ----------------------------------------------------------------------------------
    @app_commands.command(name="token-usage", description="Show your token usage and limits")
    @app_commands.describe(user="Admins only: a member of this server whose usage here to show",
                           scope="For another member: this server, or every server (bot owner only)")
    @app_commands.choices(scope=[app_commands.Choice(name="This server", value="server"),
                                 app_commands.Choice(name="All servers (bot owner only)", value="all")])
    async def token_usage(self, interaction: discord.Interaction, user: Optional[discord.User] = None,
                          scope: str = "server") -> None:
        subject = user or interaction.user
        is_self = subject.id == interaction.user.id
        usage_guild = None  # your own usage: every server (it is yours)
        if not is_self:
            refusal, usage_guild = await others_usage_scope(interaction, subject, self.settings,
                                                            everywhere=scope == "all")
            if refusal is not None:
                await interaction.response.send_message(refusal, ephemeral=True,
                                                        allowed_mentions=discord.AllowedMentions.none())
                return
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = interaction.guild_id
        bypassed = has_super_role(subject, self.settings.super_role_ids)
        view = await asyncio.to_thread(self._usage_view, subject.id, guild_id, role_ids_of(subject),
                                       with_recent=user is not None, bypassed=bypassed, usage_guild=usage_guild)
        guild_name = interaction.guild.name if interaction.guild is not None and not is_self else None
        embed = usage_embed(
            subject=getattr(subject, "display_name", str(subject)), is_self=is_self, user_totals=view.user_totals,
            guild_totals=view.guild_totals, decision=view.decision, guild_decision=view.guild_decision,
            bypassed=bypassed, window_days=self.window_days, guild_name=guild_name, recent=view.recent,
            avatar_url=subject.display_avatar.url if user is not None else None,
            this_server_only=usage_guild is not None)
        await interaction.followup.send(embed=embed, ephemeral=True)

    def _usage_view(self, user_id: int, guild_id: Optional[int], role_ids: Iterable[int], *, with_recent: bool,
                    bypassed: bool, usage_guild: Optional[int] = None) -> UsageView:
        """``usage_guild``: the one server whose usage of this user may be shown (None: every server)."""
        t = self.tracker
        flush(t)  # so the request just made is counted
        # The smallest request (1 token): every applicable rule with used, limit and remaining; a rule used up
        # exactly counts as exceeded, with the time it frees up.
        decision = t.check(user_id, guild_id, estimate=1, role_ids=tuple(role_ids))
        guild_decision = t.check(None, guild_id, estimate=1) if bypassed or decision.bypassed else None
        since = t.window_start()  # where the limits' rolling window starts: totals and "used" agree
        user_totals = t.summary(since=since, user_id=user_id, guild_id=usage_guild)
        guild_totals = t.summary(since=since, guild_id=guild_id) if guild_id is not None else None
        recent = t.recent_calls(user_id, guild_id=usage_guild, limit=RECENT_CALLS) if with_recent else None
        return UsageView(user_totals, guild_totals, decision, guild_decision, recent)

    # -- /token-stats ----------------------------------------------------------------------------------
    @app_commands.command(name="token-stats", description="Token usage statistics for admins")
    @app_commands.describe(period="Time span to report", scope="This server, or every server (bot owner only)")
    @app_commands.choices(  # the values are the core's own period names
        period=[app_commands.Choice(name="Today (UTC)", value="today"),
                app_commands.Choice(name="Last 7 days", value="7d"),
                app_commands.Choice(name="Last 30 days", value="30d")],
        scope=[app_commands.Choice(name="This server", value="server"),
               app_commands.Choice(name="All servers (bot owner only)", value="all")])
    @app_commands.default_permissions(manage_guild=True)
    @app_commands.check(_stats_admin)
    async def token_stats(self, interaction: discord.Interaction, period: str = "7d",
                          scope: str = "server") -> None:
        everywhere = scope == "all" or interaction.guild_id is None
        if everywhere and not await is_owner(interaction.client, interaction.user):
            await interaction.response.send_message("🚫 Only the bot owner can see every server's usage.",
                                                    ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        guild_id = None if everywhere else interaction.guild_id
        view = await asyncio.to_thread(self._stats_view, period, guild_id, everywhere)
        chart = await asyncio.to_thread(_render_chart, view.days)
        file = None
        if chart is not None and len(chart.getbuffer()) <= interaction.filesize_limit:
            file = discord.File(chart, filename=CHART_FILENAME)
        scope_label = "all servers" if everywhere else (interaction.guild.name if interaction.guild else "this server")
        embed = stats_embed(scope_label=scope_label, period_label=PERIOD_LABELS[period], totals=view.totals,
                            top_users=view.top_users, top_servers=view.top_servers, by_model=view.by_model,
                            by_feature=view.by_feature, days=view.days, server_label=self._server_label,
                            chart=file is not None)
        kwargs: dict[str, Any] = {"file": file} if file is not None else {}
        await interaction.followup.send(embed=embed, ephemeral=True, **kwargs)

    def _server_label(self, guild_id: int | None) -> str:
        guild = self.bot.get_guild(guild_id) if guild_id is not None else None
        return discord.utils.escape_markdown(guild.name) if guild is not None else f"server `{guild_id}`"

    def _stats_view(self, period: str, guild_id: Optional[int], everywhere: bool) -> StatsView:
        t = self.tracker
        flush(t)
        totals = t.summary(period, guild_id=guild_id)  # the core resolves the period: read its bounds back
        since, until = totals.since, totals.until
        assert since is not None  # every period offered (today, 7d, 30d) has a start
        scope: dict[str, Any] = dict(since=since, until=until, guild_id=guild_id)
        servers = t.top(TOP_SERVERS, by="tokens", scope="guild", since=since, until=until) if everywhere else None
        return StatsView(
            totals=totals,
            top_users=by_tokens(t.top(TOP_USERS, by="tokens", scope="user", **scope)),
            top_servers=by_tokens(servers) if servers is not None else None,
            by_model=by_tokens(t.breakdown("model", **scope), TOP_BREAKDOWN),
            by_feature=by_tokens(t.breakdown("feature", **scope), TOP_BREAKDOWN),
            days=per_day(t.breakdown("day", **scope), since, until),
        )

    # -- scheduled report ------------------------------------------------------------------------------
    @tasks.loop(seconds=86_400)
    async def report_loop(self) -> None:
        try:
            await self.send_report()
        except asyncio.CancelledError:
            raise
        except Exception:  # a failed report must not stop the loop
            log.exception("the scheduled token usage report failed")

    @report_loop.before_loop
    async def _before_report(self) -> None:
        await self.bot.wait_until_ready()
        try:
            await self.report_channel()
        except (ConfigurationError, TypeError, discord.HTTPException) as exc:  # checked once at start, loudly
            log.error("the scheduled token usage report is off: %s", exc)
            self.report_loop.stop()
            return
        # Fire on interval boundaries (86400 s: 00:00 UTC), not "N seconds after each restart".
        interval = self.settings.report_interval_seconds
        now = utcnow().timestamp()
        await discord.utils.sleep_until(datetime.fromtimestamp(math.floor(now / interval + 1) * interval,
                                                                timezone.utc))

    async def send_report(self, *, now: Optional[datetime] = None) -> Optional[discord.Message]:
        """Post the top-users report for the last interval to the report channel (now, whatever the schedule).

        The ranking covers the report channel's server only, so one server's users are never listed in
        another's channel; a DM channel is a :class:`~dspy_tokens.ConfigurationError` (see :meth:`report_channel`).
        """
        channel = await self.report_channel()
        if channel is None:
            return None
        now = now or utcnow()
        since = now - timedelta(seconds=self.settings.report_interval_seconds)
        guild = channel.guild
        top_users, totals = await asyncio.to_thread(self._report_data, since, now, guild.id)
        embed = report_embed(top_users=top_users, totals=totals, since=since, now=now,
                             interval_seconds=self.settings.report_interval_seconds, scope_label=guild.name)
        return await channel.send(embed=embed, allowed_mentions=discord.AllowedMentions.none())

    async def report_channel(self) -> Any:
        """The report channel (None when none is configured): a server's channel, whose ranking is that server's.

        A DM or group DM has no server to scope the ranking to, and would receive every server's users: a
        :class:`~dspy_tokens.ConfigurationError`, raised when the loop starts and by :meth:`send_report`.
        """
        channel_id = self.settings.report_channel_id
        if channel_id is None:
            return None
        channel = self.bot.get_channel(channel_id)
        if channel is None:
            channel = await self.bot.fetch_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            raise TypeError(f"report_channel_id {channel_id} is a {type(channel).__name__}, where no message can be "
                            "sent: give a text channel or thread")
        if getattr(channel, "guild", None) is None:
            raise ConfigurationError(
                f"{ENV_REPORT_CHANNEL_ID} / TokenUsageCog(report_channel_id=)", "report_channel_id", channel_id,
                "is a direct-message channel, where the report would rank every server's users: give a text "
                "channel of the server to report on (one cog per server's channel)")
        return channel

    def _report_data(self, since: datetime, until: datetime, guild_id: Optional[int]) -> tuple[list[Group], Summary]:
        t = self.tracker
        flush(t)
        top = by_tokens(t.top(self.settings.report_top_users, by="tokens", scope="user", since=since, until=until,
                              guild_id=guild_id))
        return top, t.summary(since=since, until=until, guild_id=guild_id)

    # -- errors ----------------------------------------------------------------------------------------
    async def cog_app_command_error(self, interaction: discord.Interaction,
                                    error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.MissingPermissions):
            text = f"🚫 You need the {self.settings.admin_permission_label} permission to use this command."
        elif isinstance(error, app_commands.CommandOnCooldown):
            text = f"⏳ Slow down: try again in {error.retry_after:.0f} s."
        elif isinstance(error, app_commands.CheckFailure):
            text = "🚫 You can't use this command here."
        else:
            original = getattr(error, "original", error)
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error("unexpected error in /%s (user %s, guild %s)", command, interaction.user.id,
                      interaction.guild_id, exc_info=original)
            text = GENERIC_ERROR
        await say(interaction, text)  # ephemeral (a followup once answered); a failure to send is logged


def _render_chart(days: Sequence[Any]) -> io.BytesIO | None:
    if not days:
        return None
    from .charts import usage_chart  # matplotlib is imported on first use (about a second)
    return usage_chart(days)
