"""``FakeDiscord``: one guild around a real bot, members to act as, and what the bot sent back."""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import discord

from . import gateway
from .payloads import (
    BOT_ID,
    CHANNEL_ID,
    GUILD_ID,
    OWNER_ID,
    guild_payload,
    message_payload,
    role_payload,
    slash_payload,
)
from .wire import FakeWire, Sent

ROLE_IDS = 400_000_000_000_000_001
MEMBER_IDS = 100_000_000_000_000_101


@dataclass(frozen=True)
class Member:
    """Someone to act as: a guild member with roles (ids) and permissions (what an interaction reports, and what
    the member's roles grant, so app-command and prefix-command checks both see them). ``in_guild=False``: a
    Discord user who is not in the guild (see :meth:`FakeDiscord.outsider`)."""

    id: int
    name: str
    roles: tuple[int, ...] = ()
    permissions: int = 0
    in_guild: bool = True


def permission_value(permissions: discord.Permissions | int | Iterable[str] | None) -> int:
    """``discord.Permissions(manage_guild=True)``, its int value, or names: ``["manage_guild"]``."""
    if permissions is None:
        return 0
    if isinstance(permissions, discord.Permissions):
        return permissions.value
    if isinstance(permissions, int):
        return permissions
    return discord.Permissions(**{name: True for name in permissions}).value


class FakeDiscord:
    """A fake Discord for a real ``commands.Bot``: discord.py's own login, READY, GUILD_CREATE and dispatch (the
    CommandTree with its checks, cooldowns, transformers and error handlers; prefix commands; listeners), with
    only the HTTP edge replaced by a recorder.

    ::

        async with FakeDiscord(bot) as fake:
            alice = fake.member("alice", roles=["super"])
            [reply] = await fake.slash("ask", question="What is DSPy?", user=alice)
            assert reply.ephemeral is False and "DSPy" in reply.content

    One guild (``guild_name``) with text channels (``channels``, the first is where commands run by default) and
    roles (``roles``; more are made on demand). ``owner`` is the application's (and guild's) owner. As on Discord,
    an initial interaction response arriving more than ``response_deadline`` seconds (default 3) after the
    interaction fails with ``discord.NotFound`` (10062 Unknown interaction); ``None`` turns the deadline off. While
    it is entered, discord.py's HTTP edge is replaced for the whole process: run one at a time.
    """

    def __init__(self, bot: discord.Client, *, guild_name: str = "Test Server",
                 channels: Iterable[str] = ("general",), roles: Iterable[str] = (),
                 response_deadline: float | None = 3.0) -> None:
        self.bot = bot
        self.guild_id = GUILD_ID
        self.guild_name = guild_name
        self.channels = {name: CHANNEL_ID + i for i, name in enumerate(channels)}
        if not self.channels:
            raise ValueError("FakeDiscord needs at least one channel")
        self._role_ids = itertools.count(ROLE_IDS)
        self._roles: dict[str, tuple[int, int]] = {}  # name -> (id, permissions)
        self._member_ids = itertools.count(MEMBER_IDS)
        self._started = False
        self._patch: contextlib.ExitStack | None = None
        self.wire = FakeWire(owner_id=OWNER_ID, response_deadline=response_deadline)
        for name in roles:
            self.role(name)
        self.owner = Member(OWNER_ID, "owner")
        self.everyone = self.member("member")

    # -- the world ------------------------------------------------------------------------------------
    def role(self, name: str, permissions: discord.Permissions | int | Iterable[str] | None = None) -> int:
        """The id of the role called ``name``, made (with ``permissions``) if it does not exist yet."""
        if name not in self._roles:
            role_id, value = next(self._role_ids), permission_value(permissions)
            self._roles[name] = (role_id, value)
            if self._started:
                gateway.add_role(self.bot, self.guild_id, role_payload(role_id, name, len(self._roles), value))
        return self._roles[name][0]

    def channel(self, name: str) -> int:
        """The id of a text channel of the guild."""
        try:
            return self.channels[name]
        except KeyError:
            raise KeyError(f"no channel {name!r}; the guild has {sorted(self.channels)}") from None

    def member(self, name: str, *, roles: Iterable[str | int] = (),
               permissions: discord.Permissions | int | Iterable[str] | None = None) -> Member:
        """A new member called ``name`` with ``roles`` (names or ids) and ``permissions``."""
        value = permission_value(permissions)
        role_ids = [r if isinstance(r, int) else self.role(r) for r in roles]
        if value:  # so prefix commands' checks, which read the roles, see the same permissions
            role_ids.append(self.role(f"{name} permissions", value))
        return Member(next(self._member_ids), name, tuple(role_ids), value)

    def outsider(self, name: str) -> Member:
        """A Discord user who is not a member of the guild: as a user option it resolves to a ``discord.User``."""
        return Member(next(self._member_ids), name, in_guild=False)

    # -- start and stop --------------------------------------------------------------------------------
    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Replace the HTTP edge and log the bot in: ``setup_hook`` runs, cogs load, the guild is ready."""
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.wire.patched())
            await gateway.start(self.bot, [self.guild_payload()])
            self._patch = stack.pop_all()  # keep the edge replaced until close()
        self._started = True

    async def close(self) -> None:
        """Close the bot (cogs unload, loops stop) and give discord.py its HTTP edge back."""
        try:
            if self._started:
                await self.bot.close()
        finally:
            self._started = False
            if self._patch is not None:
                self._patch.close()
                self._patch = None

    def guild_payload(self) -> dict:
        """The guild as GUILD_CREATE delivers it: its channels and roles so far."""
        roles = [role_payload(rid, name, i + 1, value) for i, (name, (rid, value)) in enumerate(self._roles.items())]
        return guild_payload(self.guild_id, self.guild_name, owner_id=OWNER_ID, roles=roles,
                             channels={cid: name for name, cid in self.channels.items()})

    # -- act ------------------------------------------------------------------------------------------
    async def slash(self, command: str, /, *, user: Member | None = None, channel: str | None = None,
                    dm: bool = False, **options: Any) -> list[Sent]:
        """Run ``/command`` (``"group sub"`` for a subcommand) as ``user`` (default: a member without roles) with
        ``options`` (strings, numbers, booleans, or a :class:`Member` for a user option); returns the messages the
        bot sent for it (responses, followups, channel messages), in order."""
        user = user or self.everyone
        plain = {k: v for k, v in options.items() if not isinstance(v, Member)}
        members = {k: v for k, v in options.items() if isinstance(v, Member)}
        payload = slash_payload(
            command, plain, user=user.id, user_name=user.name, guild_id=None if dm else self.guild_id,
            channel_id=self._channel_id(channel, dm, user), permissions=str(user.permissions), roles=user.roles,
            user_options={k: m.id for k, m in members.items()}, member_names={m.id: m.name for m in members.values()},
            non_members=[m.id for m in members.values() if not m.in_guild])
        return await self.deliver(gateway.deliver_interaction, payload)

    async def message(self, content: str, /, *, author: Member | None = None, channel: str | None = None,
                      dm: bool = False, mention_bot: bool = False) -> list[Sent]:
        """Post ``content`` as ``author`` (prefix commands and on_message listeners see it); ``mention_bot``
        mentions the bot (content gets the ``<@id>`` too). Returns the messages the bot sent for it."""
        author = author or self.everyone
        if mention_bot and f"<@{BOT_ID}>" not in content:
            content = f"<@{BOT_ID}> {content}"
        payload = message_payload(content, author=author.id, name=author.name,
                                  channel_id=self._channel_id(channel, dm, author),
                                  guild_id=None if dm else self.guild_id, roles=author.roles,
                                  mentions=[BOT_ID] if mention_bot else [])
        return await self.deliver(gateway.deliver_message, payload)

    async def deliver(self, parser: Callable[[Any, dict], None], payload: dict) -> list[Sent]:
        """Hand a raw gateway payload to ``parser`` (``gateway.deliver_interaction`` / ``deliver_message``), wait
        for the bot to finish with it, and return the messages it sent."""
        if not self._started:
            raise RuntimeError("start the fake first: `async with FakeDiscord(bot) as fake:`")
        self.wire.clear()
        parser(self.bot, payload)
        await gateway.settle()
        return self.wire.messages()

    def _channel_id(self, channel: str | None, dm: bool, member: Member) -> int:
        if dm:
            return 500_000_000_000_000_000 + member.id % 10**12  # the DM channel with that user
        return self.channel(channel) if channel is not None else next(iter(self.channels.values()))

    # -- read back ------------------------------------------------------------------------------------
    @property
    def sent(self) -> list[Sent]:
        """Every request of the last action (including reads and defers)."""
        return self.wire.sent

    @property
    def commands(self) -> dict[str, dict]:
        """The commands the bot last synced, by name (``await bot.tree.sync()``)."""
        return {c["name"]: c for c in self.wire.commands}
