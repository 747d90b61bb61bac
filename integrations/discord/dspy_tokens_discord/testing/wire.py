"""The fake wire: discord.py's two outbound seams replaced by a recorder that answers with JSON discord.py can
parse. ``HTTPClient.request`` carries REST (login, ``channel.send``, command sync); ``AsyncWebhookAdapter.request``
carries interaction callbacks and followups. Everything above them stays discord.py's own code: ``Embed.to_dict``,
flags, allowed mentions, multipart building, routes.

Like Discord, the wire refuses a second initial response to one interaction (``40060 Interaction has already been
acknowledged``) and, given a ``response_deadline``, an initial response arriving later than that after the
interaction was created (``10062 Unknown interaction``); both are recorded with their ``error``. After a public
defer the first followup is public whatever its flags (it edits the "thinking…" message), unless that message was
deleted first."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import discord
from discord.http import Route

from .payloads import (
    APP_ID,
    BOT_ID,
    CHANNEL_ID,
    EPHEMERAL,
    application_payload,
    channel_payload,
    snowflake,
    user_payload,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass
class Sent:
    """One request the bot made: method, path (with ids), query params, JSON body, uploaded files."""

    method: str
    path: str
    params: dict | None
    json: Any
    files: list[tuple[str, bytes]] = field(default_factory=list)
    after_ephemeral_defer: bool = False  # the first followup of ``defer(ephemeral=True)``: Discord shows it ephemeral
    after_public_defer: bool = False  # the first followup of a public defer: Discord shows it to everyone
    at: float = field(default_factory=time.time)  # when it was sent (epoch seconds)
    error: str | None = None  # why Discord refused it (late or repeated initial response); None when delivered

    @property
    def data(self) -> dict:
        """The message: ``json["data"]`` for an interaction callback, else the body itself."""
        body = self.json or {}
        return body.get("data") or {} if self.path.endswith("/callback") else body

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict]:
        """The embeds as Discord receives them (``Embed.to_dict()``)."""
        return self.data.get("embeds") or []

    @property
    def ephemeral(self) -> bool:
        """Only the user who ran the command sees it: the ephemeral flag, or the first followup after an
        ephemeral defer (which edits the deferred message, so Discord keeps it ephemeral)."""
        if self.after_public_defer:
            return False
        return self.after_ephemeral_defer or bool((self.data.get("flags") or 0) & EPHEMERAL)

    @property
    def is_initial_response(self) -> bool:
        """The interaction callback (a message, or a defer): the one reply due within the response deadline."""
        return self.path.startswith("/interactions/") and self.path.endswith("/callback")

    def seconds_after(self, interaction_id: int | str) -> float:
        """How long after the interaction was created (its snowflake's time) this was sent."""
        return self.at - discord.utils.snowflake_time(int(interaction_id)).timestamp()

    @property
    def is_followup(self) -> bool:
        return self.path.startswith("/webhooks/")

    @property
    def channel_id(self) -> int | None:
        """The channel of a ``channel.send`` / ``reply`` (None for interaction responses)."""
        return int(self.path.split("/")[2]) if self.path.startswith("/channels/") else None

    @property
    def allowed_mentions(self) -> dict | None:
        return self.data.get("allowed_mentions")

    def render(self) -> str:
        """The message as a person would read it, in plain text: content, embeds (title, description, fields),
        files; ``(ephemeral)`` first when only the command's user sees it."""
        lines = [(("(ephemeral) " if self.ephemeral else "") + (self.content or "")).rstrip()]
        for embed in self.embeds:
            lines += [f"  [{embed.get('title') or 'embed'}]"]
            lines += [f"  {line}" for line in (embed.get("description") or "").splitlines()]
            for f in embed.get("fields", []):
                lines += [f"  {f['name']}:"] + [f"    {line}" for line in str(f["value"]).splitlines()]
        for name, data in self.files:
            lines.append(f"  file {name} ({len(data):,} bytes{', PNG' if data[:8] == PNG_MAGIC else ''})")
        return "\n".join(line for line in lines if line.strip())

    def field(self, name: str, embed: int = 0) -> str:
        """The value of the embed field called ``name``."""
        fields = self.embeds[embed].get("fields", [])
        found = [f["value"] for f in fields if f["name"] == name]
        if not found:
            raise KeyError(f"no field {name!r} in {[f['name'] for f in fields]}")
        return found[0]

    def file(self, filename: str | None = None) -> bytes:
        """The bytes of an uploaded file (the only one, or the one called ``filename``)."""
        found = [data for name, data in self.files if filename in (None, name)]
        if len(found) != 1:
            raise KeyError(f"{len(found)} files match {filename!r} in {[name for name, _ in self.files]}")
        return found[0]


def _json_of(body, multipart):
    """The JSON body, or the payload_json part of a multipart upload."""
    if body is not None:
        return body
    part = next((p for p in multipart or () if p.get("name") == "payload_json"), None)
    return json.loads(part["value"]) if part else None


@dataclass
class _Response:
    """What ``discord.HTTPException`` reads from an HTTP response."""

    status: int
    reason: str


def _read(file: discord.File) -> bytes:
    pos = file.fp.tell()
    data = file.fp.read()
    file.fp.seek(pos)
    return data


class FakeWire:
    """Records every request and answers it like Discord would, enough for discord.py to go on."""

    def __init__(self, owner_id: int | None = None, *, response_deadline: float | None = None):
        """``response_deadline``: seconds after an interaction's creation by which its initial response must
        arrive (Discord's is 3); later ones fail with ``discord.NotFound`` (10062). None: no deadline."""
        self.sent: list[Sent] = []
        self.commands: list[dict] = []  # the last synced command list (``PUT .../commands``)
        self._defers: dict[str, bool] = {}  # token -> ephemeral, for deferred interactions whose first followup is due
        self._answered: set[str] = set()  # interaction ids with an initial response
        self.owner_id = owner_id
        self.channels: dict[int, dict] = {}  # channel payloads ``GET /channels/{id}`` returns (else a text channel)
        self.response_deadline = response_deadline

    def answer(self, route: Route, body, files, params):
        path = route.url[len(Route.BASE):]
        method = route.method
        sent = Sent(method, path, params, body, [(f.filename, _read(f)) for f in files or ()])
        self.sent.append(sent)
        if sent.is_initial_response:  # /interactions/{id}/{token}/callback
            self._initial_response(sent)
            if (body or {}).get("type") == 5:
                self._defers[path.split("/")[3]] = sent.ephemeral
        elif path.startswith("/webhooks/") and path.split("/")[3] in self._defers:
            token = path.split("/")[3]
            if method == "DELETE" and path.endswith("/messages/@original"):
                del self._defers[token]  # the "thinking…" message is gone: followups keep their own flags
            elif method == "POST":
                ephemeral = self._defers.pop(token)
                sent.after_ephemeral_defer, sent.after_public_defer = ephemeral, not ephemeral
        if method == "GET" and path == "/users/@me":
            return user_payload(BOT_ID, bot=True)
        if method == "GET" and path == "/oauth2/applications/@me":
            return application_payload() if self.owner_id is None else application_payload(self.owner_id)
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
            channel_id = int(path.split("/")[2])
            return self.channels.get(channel_id) or channel_payload(channel_id, "fetched")
        if method in ("POST", "PATCH") and ("/messages" in path or path.startswith("/webhooks/")):
            channel = int(path.split("/")[2]) if path.startswith("/channels/") else CHANNEL_ID
            return self._message(body or {}, channel, snowflake())
        return {}

    def _initial_response(self, sent: Sent) -> None:
        interaction_id = sent.path.split("/")[2]
        if interaction_id in self._answered:
            sent.error = "Interaction has already been acknowledged"
            raise discord.HTTPException(_Response(400, "Bad Request"),  # type: ignore[arg-type]
                                        {"code": 40060, "message": sent.error})
        late = self.response_deadline is not None and sent.seconds_after(interaction_id) > self.response_deadline
        if late:
            sent.error = "Unknown interaction"
            raise discord.NotFound(_Response(404, "Not Found"),  # type: ignore[arg-type]
                                   {"code": 10062, "message": sent.error})
        self._answered.add(interaction_id)

    @staticmethod
    def _message(data: dict, channel_id: int, message_id: int) -> dict:
        return {"id": str(message_id), "channel_id": str(channel_id), "author": user_payload(BOT_ID, bot=True),
                "content": data.get("content") or "", "timestamp": datetime.now(timezone.utc).isoformat(),
                "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
                "mention_roles": [], "attachments": [], "embeds": data.get("embeds") or [], "pinned": False,
                "type": 0, "flags": data.get("flags") or 0}

    # -- what the bot showed ---------------------------------------------------------------------------
    def messages(self) -> list[Sent]:
        """What users saw: interaction responses with a message, followups, channel messages and replies (a
        defer, "thinking…", is not a message)."""
        out = []
        for s in self.sent:
            if s.error is not None:
                continue
            if s.path.endswith("/callback") and (s.json or {}).get("type") == 5:
                continue
            if s.path.endswith("/callback") or (s.method == "POST" and (
                    s.path.startswith("/webhooks/") or s.path.endswith("/messages"))):
                out.append(s)
        return out

    @property
    def refused(self) -> list[Sent]:
        """Requests Discord would have refused: initial responses after the deadline or a second time."""
        return [s for s in self.sent if s.error is not None]

    @property
    def posted(self) -> list[Sent]:
        """Every request except reads (GETs such as discord.py's owner lookup)."""
        return [s for s in self.sent if s.method != "GET"]

    def clear(self) -> None:
        self.sent.clear()

    # -- the two seams ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def patched(self) -> Iterator[FakeWire]:
        """Replace discord.py's HTTP edge by this wire while the block runs (for every client in the process)."""
        wire = self

        async def rest(self, route, *, files=None, form=None, **kw):
            return wire.answer(route, _json_of(kw.get("json"), form), files, kw.get("params"))

        async def webhook(self, route, session, *, payload=None, multipart=None, files=None, params=None, **kw):
            return wire.answer(route, _json_of(payload, multipart), files, params)

        http, adapter = discord.http.HTTPClient, discord.webhook.async_.AsyncWebhookAdapter
        saved = http.request, adapter.request
        http.request, adapter.request = rest, webhook  # type: ignore[method-assign]
        try:
            yield self
        finally:
            http.request, adapter.request = saved  # type: ignore[method-assign]
