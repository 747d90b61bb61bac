"""Budget alerts with ``"discord_channel_id"`` reach that channel as an embed through the cog, pinging nobody."""

from __future__ import annotations

import asyncio

from tests.discord.support.harness import ALICE, REPORT_CHANNEL_ID
from tests.support.limits import seed


async def test_a_crossed_threshold_is_posted_to_the_alert_channel_once(make_app):
    """A check on another thread sees Alice at 85%: one embed for 50% and one for 80% in the alert channel."""
    app = await make_app(config={"user_limit": 1000, "alerts": {"thresholds": [0.5, 0.8],
                                                                 "discord_channel_id": str(REPORT_CHANNEL_ID)}})
    seed(app.tracker, dict(user_id=ALICE, prompt_tokens=850, completion_tokens=0))
    app.wire.clear()
    await asyncio.to_thread(app.tracker.check, ALICE, estimate=0)
    await asyncio.to_thread(app.tracker.check, ALICE, estimate=0)
    for _ in range(200):
        if len(app.wire.messages()) >= 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    posts = app.wire.messages()
    assert [p.path for p in posts] == [f"/channels/{REPORT_CHANNEL_ID}/messages"] * 2
    assert sorted(p.embeds[0]["title"] for p in posts) == ["🔔 Budget alert: 50% reached",
                                                           "🔔 Budget alert: 80% reached"]
    for post in posts:
        assert post.json["allowed_mentions"] == {"parse": []}
        assert f"user {ALICE}" in post.embeds[0]["description"] and "850 of 1,000 tokens" in \
            post.embeds[0]["description"]


async def test_no_alert_after_the_cog_is_unloaded(make_app):
    """Once the cog is removed its hook posts nothing."""
    app = await make_app(config={"user_limit": 1000, "alerts": {"discord_channel_id": str(REPORT_CHANNEL_ID)}})
    await app.bot.remove_cog("TokenUsage")
    seed(app.tracker, dict(user_id=ALICE, prompt_tokens=990, completion_tokens=0))
    app.wire.clear()
    await asyncio.to_thread(app.tracker.check, ALICE, estimate=0)
    await asyncio.sleep(0.2)
    assert app.wire.messages() == []
