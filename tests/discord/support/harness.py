"""Offline discord.py harness (see ../shared/notes/discord-testing.md): real dispatch, fake wire.

Only two seams are replaced — ``HTTPClient.request`` (REST) and ``AsyncWebhookAdapter.request`` (interaction
callbacks and followups). Everything above them is discord.py's own code: parsers, the CommandTree, checks,
transformers, error handlers, ``Embed.to_dict``, flags, allowed mentions and multipart building.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import discord
from discord.http import Route

APP_ID = BOT_ID = 900_000_000_000_000_001
OWNER_ID = 100_000_000_000_000_001
ALICE = 100_000_000_000_000_002
BOB = 100_000_000_000_000_003
CAROL = 100_000_000_000_000_004
ADMIN = 100_000_000_000_000_005
GUILD_ID = 200_000_000_000_000_001
OTHER_GUILD_ID = 200_000_000_000_000_002
CHANNEL_ID = 300_000_000_000_000_001
REPORT_CHANNEL_ID = 300_000_000_000_000_002
SUPER_ROLE = 400_000_000_000_000_001
PLAIN_ROLE = 400_000_000_000_000_002
BYPASS_ROLE = 400_000_000_000_000_003
NAMES = {OWNER_ID: "owner", ALICE: "alice", BOB: "bob", CAROL: "carol", ADMIN: "admin", BOT_ID: "tokenbot"}
EPHEMERAL = 64
_ids = itertools.count(1)


def snowflake() -> int:
    """A current snowflake: discord.py derives ``Interaction.is_expired()`` from the id."""
    return discord.utils.time_snowflake(discord.utils.utcnow()) + next(_ids)


def user_payload(user_id: int, *, bot: bool = False) -> dict:
    name = NAMES.get(user_id, f"user{user_id % 1000}")
    return {"id": str(user_id), "username": name, "global_name": name.title(), "discriminator": "0",
            "avatar": None, "bot": bot}


def member_payload(user_id: int, roles=(), *, with_user: bool = True, permissions: str | None = None) -> dict:
    out = {"roles": [str(r) for r in roles], "joined_at": "2024-01-01T00:00:00+00:00", "deaf": False,
           "mute": False, "flags": 0}
    if with_user:
        out["user"] = user_payload(user_id)
    if permissions is not None:
        out["permissions"] = permissions
    return out


def _role(role_id: int, name: str, position: int) -> dict:
    return {"id": str(role_id), "name": name, "permissions": "0", "position": position, "color": 0,
            "hoist": False, "managed": False, "mentionable": False, "flags": 0}


def _channel(channel_id: int, name: str, guild_id: int = GUILD_ID) -> dict:
    return {"id": str(channel_id), "type": 0, "name": name, "position": 0, "guild_id": str(guild_id),
            "permission_overwrites": [], "nsfw": False, "parent_id": None}


def ready_payload() -> dict:
    return {"v": 10, "user": user_payload(BOT_ID, bot=True), "guilds": [{"id": str(GUILD_ID), "unavailable": True}],
            "session_id": "session", "resume_gateway_url": "wss://gateway.invalid",
            "application": {"id": str(APP_ID), "flags": 0}}


def guild_payload(guild_id: int = GUILD_ID, name: str = "Test Server") -> dict:
    return {
        "id": str(guild_id), "name": name, "owner_id": str(OWNER_ID), "unavailable": False, "large": False,
        "member_count": 3, "features": [], "emojis": [], "stickers": [], "voice_states": [], "threads": [],
        "roles": [_role(guild_id, "@everyone", 0), _role(SUPER_ROLE, "super", 3), _role(PLAIN_ROLE, "plain", 1),
                  _role(BYPASS_ROLE, "bypass", 2)],
        "channels": [_channel(CHANNEL_ID, "general", guild_id), _channel(REPORT_CHANNEL_ID, "reports", guild_id)],
        "members": [member_payload(BOT_ID) | {"user": user_payload(BOT_ID, bot=True)}],
    }


def application_payload() -> dict:
    return {"id": str(APP_ID), "name": "tokenbot", "description": "", "icon": None, "bot_public": True,
            "bot_require_code_grant": False, "owner": user_payload(OWNER_ID), "verify_key": "0" * 64, "flags": 0,
            "team": None, "summary": ""}


def message_payload(content: str, *, author: int = ALICE, channel_id: int = CHANNEL_ID, guild_id: int | None = GUILD_ID,
                    roles=(), bot: bool = False, mentions=(), message_id: int | None = None) -> dict:
    out = {"id": str(message_id or snowflake()), "channel_id": str(channel_id),
           "author": user_payload(author, bot=bot), "content": content,
           "timestamp": datetime.now(timezone.utc).isoformat(), "edited_timestamp": None, "tts": False,
           "mention_everyone": False, "mentions": [user_payload(m, bot=m == BOT_ID) for m in mentions],
           "mention_roles": [], "attachments": [], "embeds": [], "pinned": False, "type": 0, "flags": 0}
    if guild_id is not None:
        out["guild_id"] = str(guild_id)
        out["member"] = member_payload(author, roles, with_user=False)
    return out


def slash_payload(name: str, options: dict[str, Any] | None = None, *, user: int = ALICE,
                  guild_id: int | None = GUILD_ID, channel_id: int = CHANNEL_ID, permissions: str = "0",
                  roles=(), user_options: dict[str, int] | None = None) -> dict:
    """An APPLICATION_COMMAND interaction as the gateway delivers it (string options and user options)."""
    iid = snowflake()
    opts = [{"name": k, "type": 3 if isinstance(v, str) else 4, "value": v} for k, v in (options or {}).items()]
    data: dict[str, Any] = {"id": str(snowflake()), "name": name, "type": 1, "options": opts}
    if user_options:
        resolved_users, resolved_members = {}, {}
        for key, uid in user_options.items():
            opts.append({"name": key, "type": 6, "value": str(uid)})
            resolved_users[str(uid)] = user_payload(uid)
            if guild_id is not None:
                resolved_members[str(uid)] = member_payload(uid, with_user=False, permissions="0")
        data["resolved"] = {"users": resolved_users, "members": resolved_members}
    payload = {"id": str(iid), "application_id": str(APP_ID), "type": 2, "token": f"token-{iid}", "version": 1,
               "attachment_size_limit": 8 * 1024 * 1024, "data": data, "channel_id": str(channel_id),
               "locale": "en-US", "app_permissions": str(discord.Permissions.all().value), "entitlements": [],
               "authorizing_integration_owners": {}, "context": 0 if guild_id is not None else 1}
    if guild_id is not None:
        payload["guild_id"] = str(guild_id)
        payload["guild_locale"] = "en-US"
        payload["channel"] = _channel(channel_id, "general", guild_id)
        payload["member"] = member_payload(user, roles, permissions=permissions)
    else:
        payload["channel"] = {"id": str(channel_id), "type": 1, "recipients": [user_payload(user)]}
        payload["user"] = user_payload(user)
    return payload


# -- the fake wire -------------------------------------------------------------------------------------
@dataclass
class Sent:
    """One request discord.py made: method, path (with ids), query params, JSON body, uploaded files."""

    method: str
    path: str
    params: dict | None
    json: Any
    files: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def data(self) -> dict:
        """The message data: ``json["data"]`` for an interaction callback, else the body itself."""
        body = self.json or {}
        return body.get("data") or {} if self.path.endswith("/callback") else body

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict]:
        return self.data.get("embeds") or []

    @property
    def ephemeral(self) -> bool:
        return bool((self.data.get("flags") or 0) & EPHEMERAL)

    def field(self, name: str, embed: int = 0) -> str:
        found = [f["value"] for f in self.embeds[embed].get("fields", []) if f["name"] == name]
        assert found, f"no field {name!r} in {[f['name'] for f in self.embeds[embed].get('fields', [])]}"
        return found[0]


def _json_of(body, multipart):
    """JSON body, or the payload_json part of a multipart upload."""
    if body is not None:
        return body
    part = next((p for p in multipart or () if p.get("name") == "payload_json"), None)
    return json.loads(part["value"]) if part else None


def _read(file: discord.File) -> bytes:
    pos = file.fp.tell()
    data = file.fp.read()
    file.fp.seek(pos)
    return data


class FakeWire:
    """Records every request and answers with JSON discord.py can parse."""

    def __init__(self):
        self.sent: list[Sent] = []
        self.commands: list[dict] = []

    def answer(self, route: Route, body, files, params):
        path = route.url[len(Route.BASE):]
        self.sent.append(Sent(route.method, path, params, body, [(f.filename, _read(f)) for f in files or ()]))
        method = route.method
        if method == "GET" and path == "/users/@me":
            return user_payload(BOT_ID, bot=True)
        if method == "GET" and path == "/oauth2/applications/@me":
            return application_payload()
        if path.endswith("/callback"):
            kind = (body or {}).get("type", 4)
            data = (body or {}).get("data") or {}
            mid = snowflake()
            return {"interaction": {"id": path.split("/")[2], "type": 2, "response_message_id": str(mid),
                                    "response_message_loading": kind == 5,
                                    "response_message_ephemeral": bool((data.get("flags") or 0) & EPHEMERAL)},
                    "resource": {"type": kind, "message": self._message(data, CHANNEL_ID, mid)}}
        if method == "PUT" and path.endswith("/commands"):
            self.commands = [dict(c, id=str(snowflake()), application_id=str(APP_ID), version="1")
                             for c in body or []]
            return self.commands
        if method == "GET" and path.startswith("/channels/") and path.count("/") == 2:
            cid = int(path.split("/")[2])
            return _channel(cid, "fetched")
        if method in ("POST", "PATCH") and ("/messages" in path or path.startswith("/webhooks/")):
            channel = int(path.split("/")[2]) if path.startswith("/channels/") else CHANNEL_ID
            return self._message(body or {}, channel, snowflake())
        return {}

    @staticmethod
    def _message(data: dict, channel_id: int, message_id: int) -> dict:
        return {"id": str(message_id), "channel_id": str(channel_id), "author": user_payload(BOT_ID, bot=True),
                "content": data.get("content") or "", "timestamp": datetime.now(timezone.utc).isoformat(),
                "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
                "mention_roles": [], "attachments": [], "embeds": data.get("embeds") or [], "pinned": False,
                "type": 0, "flags": data.get("flags") or 0}

    # -- queries for assertions ------------------------------------------------------------------------
    def messages(self) -> list[Sent]:
        """What was shown to users: interaction callbacks with content, followups and channel messages."""
        out = []
        for s in self.sent:
            if s.path.endswith("/callback") and (s.json or {}).get("type") == 5:
                continue  # a defer ("thinking…"), not a message
            if s.path.endswith("/callback") or (s.method == "POST" and (
                    s.path.startswith("/webhooks/") or s.path.endswith("/messages"))):
                out.append(s)
        return out

    @property
    def posted(self) -> list[Sent]:
        """Every request except reads (GETs such as discord.py's owner lookup)."""
        return [s for s in self.sent if s.method != "GET"]

    def clear(self) -> None:
        self.sent.clear()


def install(monkeypatch, wire: FakeWire) -> FakeWire:
    async def rest(self, route, *, files=None, form=None, **kw):
        return wire.answer(route, _json_of(kw.get("json"), form), files, kw.get("params"))

    async def webhook(self, route, session, *, payload=None, multipart=None, files=None, params=None, **kw):
        return wire.answer(route, _json_of(payload, multipart), files, params)

    monkeypatch.setattr(discord.http.HTTPClient, "request", rest)
    monkeypatch.setattr(discord.webhook.async_.AsyncWebhookAdapter, "request", webhook)
    return wire


async def start(bot) -> None:
    """The real startup path minus the websocket: login (→ setup_hook, cogs load), READY, GUILD_CREATE."""
    await bot.login("fake-token")
    state = bot._connection
    state.guild_ready_timeout, state._chunk_guilds = 0.05, False
    state.parse_ready(ready_payload())
    state.parse_guild_create(guild_payload())
    await asyncio.wait_for(bot.wait_until_ready(), 5)


async def settle() -> None:
    """Wait until every dispatch task discord.py spawned (commands, events) has finished."""
    me = asyncio.current_task()
    while busy := [t for t in asyncio.all_tasks() if t is not me and not t.done() and
                   (t.get_name() == "CommandTree-invoker" or t.get_name().startswith("discord.py: "))]:
        await asyncio.gather(*busy, return_exceptions=True)
