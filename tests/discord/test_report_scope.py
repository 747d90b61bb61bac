"""The scheduled report ranks one server's users, in that server's channel (case 8): a report channel that is a
DM (no server to scope to) would post every server's ranking, so it is a ConfigurationError naming the setting
and the fix — at start (the loop stops, logged) and from ``send_report`` — and nothing is posted."""

from __future__ import annotations

import asyncio
import logging

import pytest
from dspy_tokens_discord.testing.payloads import dm_channel_payload

from dspy_tokens import ConfigurationError
from tests.discord.support.harness import ALICE, OTHER_GUILD_ID, REPORT_CHANNEL_ID
from tests.discord.support.rows import seed, usage_row

DM_CHANNEL = 500_000_000_000_000_777


async def dm_report_app(make_app, wire):
    wire.channels[DM_CHANNEL] = dm_channel_payload(DM_CHANNEL, ALICE, "alice")
    app = await make_app(report_channel_id=DM_CHANNEL, report_interval_seconds=3600)
    seed(app.tracker, usage_row(user_id=ALICE, tokens=500), usage_row(user_id=ALICE + 10, tokens=900,
                                                                       guild_id=OTHER_GUILD_ID))
    return app


async def test_dm_report_channel_stops_the_loop_at_start(make_app, wire, caplog):
    with caplog.at_level(logging.ERROR, logger="dspy_tokens_discord"):
        app = await dm_report_app(make_app, wire)
        for _ in range(200):
            if not app.cog.report_loop.is_running():
                break
            await asyncio.sleep(0.01)
    assert not app.cog.report_loop.is_running()
    [record] = [r for r in caplog.records if "report is off" in r.message]
    assert "report_channel_id" in record.getMessage() and "direct-message channel" in record.getMessage()
    assert "STATS_REPORT_CHANNEL_ID" in record.getMessage()
    assert app.wire.messages() == []


async def test_send_report_to_a_dm_is_refused_and_posts_nothing(make_app, wire):
    app = await dm_report_app(make_app, wire)
    app.wire.clear()
    with pytest.raises(ConfigurationError, match="direct-message channel.*text channel of the server") as info:
        await app.cog.send_report()
    assert info.value.field == "report_channel_id" and info.value.value == DM_CHANNEL
    assert app.wire.messages() == []


async def test_server_channel_report_ranks_only_that_server(make_app):
    """The other server's heavier user never appears in this server's report."""
    app = await make_app(report_channel_id=REPORT_CHANNEL_ID, report_interval_seconds=3600)
    seed(app.tracker, usage_row(user_id=ALICE, tokens=500), usage_row(user_id=ALICE + 10, tokens=900,
                                                                       guild_id=OTHER_GUILD_ID))
    app.wire.clear()
    await app.cog.send_report()
    [post] = app.wire.messages()
    text = post.embeds[0]["description"]
    assert f"<@{ALICE}>" in text and f"<@{ALICE + 10}>" not in text
