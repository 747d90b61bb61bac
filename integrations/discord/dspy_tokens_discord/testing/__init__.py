"""Test your discord.py bot offline: a fake Discord built on discord.py's real dispatch, with only HTTP replaced.

::

    from dspy_tokens_discord.testing import FakeDiscord

    async def test_ask_answers():                              # pytest-asyncio, or asyncio.run(...)
        bot = create_bot(tracker, lm=server.lm())              # your real commands.Bot
        async with FakeDiscord(bot, roles=["super"]) as fake:  # login, setup_hook, READY, GUILD_CREATE
            alice = fake.member("alice", permissions=["manage_guild"])
            [reply] = await fake.slash("ask", question="What is DSPy?", user=alice)
            assert reply.content and not reply.ephemeral
            [echo] = await fake.message("!ping", author=alice)  # prefix commands and on_message listeners

What runs is discord.py's own code: login (``setup_hook``, cogs), the gateway parsers, the CommandTree with
``interaction_check``, checks, cooldowns, transformers and error handlers, prefix commands and listeners,
``Embed.to_dict``, flags, allowed mentions and file uploads. Only the two HTTP seams are replaced:
``HTTPClient.request`` (REST) and ``AsyncWebhookAdapter.request`` (interaction responses and followups), by a
:class:`FakeWire` that records each request as a :class:`Sent` (``content``, ``embeds``, ``ephemeral``,
``files``, ``field(name)``, ``file()``) and answers like Discord.

Lower level, for your own fixtures: :mod:`.payloads` (gateway payloads), :func:`start` / :func:`settle`, and
``FakeWire().patched()``.
"""

from .fake import FakeDiscord, Member, permission_value
from .gateway import settle, start
from .payloads import APP_ID, BOT_ID, CHANNEL_ID, EPHEMERAL, GUILD_ID, OWNER_ID, message_payload, slash_payload
from .wire import PNG_MAGIC, FakeWire, Sent

__all__ = ["APP_ID", "BOT_ID", "CHANNEL_ID", "EPHEMERAL", "GUILD_ID", "OWNER_ID", "PNG_MAGIC", "FakeDiscord",
           "FakeWire", "Member", "Sent", "message_payload", "permission_value", "settle", "slash_payload", "start"]
