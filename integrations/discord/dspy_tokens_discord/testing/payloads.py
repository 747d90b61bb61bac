"""Gateway payloads as Discord sends them: READY, GUILD_CREATE, MESSAGE_CREATE and INTERACTION_CREATE (slash
commands with string, number, boolean and member options, subcommands), for discord.py's own parsers.

Ids are snowflakes; :func:`snowflake` makes current ones (discord.py derives ``Interaction.is_expired()`` from an
interaction's id, and an expired hybrid ``ctx.send`` silently falls back to a plain channel message).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import discord

APP_ID = BOT_ID = 900_000_000_000_000_001
OWNER_ID = 100_000_000_000_000_001
GUILD_ID = 200_000_000_000_000_001
CHANNEL_ID = 300_000_000_000_000_001
EPHEMERAL = 64  # the message flag
_serial = itertools.count(1)


def snowflake() -> int:
    """A current, unique snowflake."""
    return discord.utils.time_snowflake(discord.utils.utcnow()) + next(_serial)


def user_payload(user_id: int, name: str | None = None, *, bot: bool = False) -> dict:
    name = name or ("bot" if user_id == BOT_ID else f"user{user_id % 10_000}")
    return {"id": str(user_id), "username": name, "global_name": name.title(), "discriminator": "0",
            "avatar": None, "bot": bot}


def member_payload(user_id: int, roles: Iterable[int] = (), *, name: str | None = None, with_user: bool = True,
                   permissions: str | None = None) -> dict:
    """A guild member; ``permissions`` (a decimal string) is what an interaction's member carries: the member's
    permissions in the channel, which ``app_commands.checks.has_permissions`` reads."""
    out: dict[str, Any] = {"roles": [str(r) for r in roles], "joined_at": "2024-01-01T00:00:00+00:00",
                           "deaf": False, "mute": False, "flags": 0}
    if with_user:
        out["user"] = user_payload(user_id, name)
    if permissions is not None:
        out["permissions"] = permissions
    return out


def role_payload(role_id: int, name: str, position: int, permissions: int = 0) -> dict:
    return {"id": str(role_id), "name": name, "permissions": str(permissions), "position": position, "color": 0,
            "hoist": False, "managed": False, "mentionable": False, "flags": 0}


def channel_payload(channel_id: int, name: str, guild_id: int = GUILD_ID) -> dict:
    return {"id": str(channel_id), "type": 0, "name": name, "position": 0, "guild_id": str(guild_id),
            "permission_overwrites": [], "nsfw": False, "parent_id": None}


def dm_channel_payload(channel_id: int, user: int, name: str | None = None) -> dict:
    """A direct-message channel with ``user``, as ``GET /channels/{id}`` returns it."""
    return {"id": str(channel_id), "type": 1, "recipients": [user_payload(user, name)], "last_message_id": None}


def ready_payload(guild_ids: Iterable[int] = (GUILD_ID,), bot_name: str = "bot") -> dict:
    return {"v": 10, "user": user_payload(BOT_ID, bot_name, bot=True),
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids], "session_id": "session",
            "resume_gateway_url": "wss://gateway.invalid", "application": {"id": str(APP_ID), "flags": 0}}


def guild_payload(guild_id: int = GUILD_ID, name: str = "Test Server", *, owner_id: int = OWNER_ID,
                  roles: Mapping[int, str] | Iterable[dict] = (), channels: Mapping[int, str] | None = None) -> dict:
    """A guild with ``@everyone``, the given roles (``{id: name}`` or role payloads) and text channels
    (``{id: name}``; default ``#general``), and the bot as its only cached member."""
    channels = channels if channels is not None else {CHANNEL_ID: "general"}
    role_list = ([role_payload(rid, rname, i + 1) for i, (rid, rname) in enumerate(roles.items())]
                 if isinstance(roles, Mapping) else list(roles))
    return {
        "id": str(guild_id), "name": name, "owner_id": str(owner_id), "unavailable": False, "large": False,
        "member_count": 1, "features": [], "emojis": [], "stickers": [], "voice_states": [], "threads": [],
        "roles": [role_payload(guild_id, "@everyone", 0), *role_list],
        "channels": [channel_payload(cid, cname, guild_id) for cid, cname in channels.items()],
        "members": [member_payload(BOT_ID) | {"user": user_payload(BOT_ID, bot=True)}],
    }


def application_payload(owner_id: int = OWNER_ID, name: str = "bot") -> dict:
    return {"id": str(APP_ID), "name": name, "description": "", "icon": None, "bot_public": True,
            "bot_require_code_grant": False, "owner": user_payload(owner_id, "owner"), "verify_key": "0" * 64,
            "flags": 0, "team": None, "summary": ""}


def message_payload(content: str, *, author: int, name: str | None = None, channel_id: int = CHANNEL_ID,
                    guild_id: int | None = GUILD_ID, roles: Iterable[int] = (), bot: bool = False,
                    mentions: Iterable[int] = (), message_id: int | None = None) -> dict:
    """A MESSAGE_CREATE from ``author`` (a member with ``roles`` in a guild, or a DM with ``guild_id=None``)."""
    out: dict[str, Any] = {
        "id": str(message_id or snowflake()), "channel_id": str(channel_id),
        "author": user_payload(author, name, bot=bot), "content": content,
        "timestamp": datetime.now(timezone.utc).isoformat(), "edited_timestamp": None, "tts": False,
        "mention_everyone": False, "mentions": [user_payload(m, bot=m == BOT_ID) for m in mentions],
        "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0}
    if guild_id is not None:
        out["guild_id"] = str(guild_id)
        out["member"] = member_payload(author, roles, with_user=False)
    return out


def _option(name: str, value: Any) -> dict:
    if isinstance(value, bool):
        kind = 5
    elif isinstance(value, int):
        kind = 4
    elif isinstance(value, float):
        kind = 10
    else:
        kind, value = 3, str(value)
    return {"name": name, "type": kind, "value": value}


def slash_payload(name: str, options: Mapping[str, Any] | None = None, *, user: int, user_name: str | None = None,
                  guild_id: int | None = GUILD_ID, channel_id: int = CHANNEL_ID, permissions: str = "0",
                  roles: Iterable[int] = (), user_options: Mapping[str, int] | None = None,
                  member_names: Mapping[int, str] | None = None, non_members: Iterable[int] = ()) -> dict:
    """An APPLICATION_COMMAND interaction as the gateway delivers it. ``name`` may hold a subcommand
    (``"config show"``); ``options`` are strings, ints, floats or booleans; ``user_options`` name users by id,
    resolved as members of the guild except those in ``non_members`` (Discord then resolves a plain user)."""
    iid = snowflake()
    opts = [_option(k, v) for k, v in (options or {}).items()]
    names = dict(member_names or {})
    outsiders = set(non_members)
    resolved_users, resolved_members = {}, {}
    for key, uid in (user_options or {}).items():
        opts.append({"name": key, "type": 6, "value": str(uid)})
        resolved_users[str(uid)] = user_payload(uid, names.get(uid))
        if guild_id is not None and uid not in outsiders:
            resolved_members[str(uid)] = member_payload(uid, with_user=False, permissions="0")
    command, *sub = name.split()
    for depth in reversed(range(len(sub))):  # "group sub": a subcommand group holding a subcommand
        opts = [{"name": sub[depth], "type": 1 if depth == len(sub) - 1 else 2, "options": opts}]
    data: dict[str, Any] = {"id": str(snowflake()), "name": command, "type": 1, "options": opts}
    if resolved_users:
        data["resolved"] = {"users": resolved_users, **({"members": resolved_members} if resolved_members else {})}
    payload: dict[str, Any] = {
        "id": str(iid), "application_id": str(APP_ID), "type": 2, "token": f"token-{iid}", "version": 1,
        "attachment_size_limit": 8 * 1024 * 1024, "data": data, "channel_id": str(channel_id), "locale": "en-US",
        "app_permissions": str(discord.Permissions.all().value), "entitlements": [],
        "authorizing_integration_owners": {}, "context": 0 if guild_id is not None else 1}
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild_locale"] = "en-US"
        payload["channel"] = channel_payload(channel_id, "general", guild_id)
        payload["member"] = member_payload(user, roles, name=user_name, permissions=permissions)
    else:
        payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user_payload(user, user_name)]}
        payload["user"] = user_payload(user, user_name)
    return payload
