"""Settings of the Discord layer: constructor arguments first, then environment variables, then defaults.

| argument                  | environment variable            | default        |
|---------------------------|---------------------------------|----------------|
| ``super_role_ids``        | ``SUPER_ROLE_IDS`` (comma list) | none           |
| ``report_channel_id``     | ``STATS_REPORT_CHANNEL_ID``     | none (no loop) |
| ``report_interval_seconds`` | ``STATS_REPORT_INTERVAL_SECONDS`` | 86400      |
| ``report_top_users``      | ``STATS_REPORT_TOP_USERS``      | 10             |
| ``admin_permission``      | ``STATS_ADMIN_PERMISSION``      | manage_guild   |

A bad value raises :class:`dspy_tokens.ConfigurationError` naming the variable, the value and the fix, when the
cog (or ``@enforce_limits``) is created, never later inside a command.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import discord

from dspy_tokens import ConfigurationError, parse_id

ENV_SUPER_ROLE_IDS = "SUPER_ROLE_IDS"
ENV_REPORT_CHANNEL_ID = "STATS_REPORT_CHANNEL_ID"
ENV_REPORT_INTERVAL = "STATS_REPORT_INTERVAL_SECONDS"
ENV_REPORT_TOP_USERS = "STATS_REPORT_TOP_USERS"
ENV_ADMIN_PERMISSION = "STATS_ADMIN_PERMISSION"

DEFAULT_REPORT_INTERVAL = 86_400.0
DEFAULT_REPORT_TOP_USERS = 10
DEFAULT_ADMIN_PERMISSION = "manage_guild"
MAX_REPORT_TOP_USERS = 25  # one ranked line each must fit the 4096-character embed description


def _snowflake(source: str, value: object) -> int:
    """A Discord id by the core's one id rule (:func:`dspy_tokens.parse_id`), else a
    :class:`~dspy_tokens.ConfigurationError` naming ``source``."""
    try:
        return parse_id(value)
    except ValueError:
        raise ConfigurationError(source, "id", value, "must be a 64-bit non-negative integer Discord id") from None


def parse_role_ids(value: str | Iterable[int | str] | None, source: str = ENV_SUPER_ROLE_IDS) -> frozenset[int]:
    """``"1, 2,3"`` or an iterable of ids → a frozenset of ints; empty entries are ignored."""
    if value is None:
        return frozenset()
    items = value.split(",") if isinstance(value, str) else list(value)
    return frozenset(_snowflake(source, item) for item in items if str(item).strip())


def env_super_role_ids() -> frozenset[int]:
    return parse_role_ids(os.environ.get(ENV_SUPER_ROLE_IDS))


def _number(source: str, value: object, kind: Callable[[str], Any], minimum: float) -> Any:
    try:
        number = kind(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < minimum or number != number:  # NaN
        raise ConfigurationError(source, "value", value, f"must be a number >= {minimum}")
    return number


def _pick(given: Any, env_name: str) -> tuple[Any, str]:
    """The constructor argument when given, else the environment variable when set and non-empty."""
    if given is not None:
        return given, f"argument for {env_name}"
    raw = os.environ.get(env_name)
    return (raw if raw is not None and raw.strip() else None), env_name


@dataclass(frozen=True)
class DiscordSettings:
    super_role_ids: frozenset[int] = frozenset()
    report_channel_id: int | None = None
    report_interval_seconds: float = DEFAULT_REPORT_INTERVAL
    report_top_users: int = DEFAULT_REPORT_TOP_USERS
    admin_permission: str = DEFAULT_ADMIN_PERMISSION

    @classmethod
    def resolve(cls, *, super_role_ids: str | Iterable[int | str] | None = None,
                report_channel_id: int | str | None = None, report_interval_seconds: float | str | None = None,
                report_top_users: int | str | None = None, admin_permission: str | None = None) -> "DiscordSettings":
        roles, source = _pick(super_role_ids, ENV_SUPER_ROLE_IDS)
        channel, channel_source = _pick(report_channel_id, ENV_REPORT_CHANNEL_ID)
        interval, interval_source = _pick(report_interval_seconds, ENV_REPORT_INTERVAL)
        top, top_source = _pick(report_top_users, ENV_REPORT_TOP_USERS)
        permission, permission_source = _pick(admin_permission, ENV_ADMIN_PERMISSION)
        permission = str(permission).strip() if permission is not None else DEFAULT_ADMIN_PERMISSION
        if permission not in discord.Permissions.VALID_FLAGS:
            raise ConfigurationError(permission_source, "permission", permission,
                                     "must be a discord.Permissions flag name such as manage_guild or administrator")
        top_users = DEFAULT_REPORT_TOP_USERS if top is None else _number(top_source, top, int, 1)
        if top_users > MAX_REPORT_TOP_USERS:
            raise ConfigurationError(top_source, "value", top, f"must be at most {MAX_REPORT_TOP_USERS}")
        return cls(
            super_role_ids=parse_role_ids(roles, source),
            report_channel_id=None if channel is None else _snowflake(channel_source, channel),
            report_interval_seconds=(DEFAULT_REPORT_INTERVAL if interval is None
                                     else float(_number(interval_source, interval, float, 1))),
            report_top_users=top_users,
            admin_permission=permission,
        )

    @property
    def admin_permission_label(self) -> str:
        """``manage_guild`` → ``Manage Server``: the name Discord's client shows."""
        labels = {"manage_guild": "Manage Server", "administrator": "Administrator"}
        return labels.get(self.admin_permission, self.admin_permission.replace("_", " ").title())
