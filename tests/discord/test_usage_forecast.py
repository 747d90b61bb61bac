"""/token-usage after /ask, through discord.py's real dispatch: each limit line tells when the recent pace reaches
the limit, as a Discord timestamp."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from dspy_tokens_discord.embeds import F_YOU

from tests.discord.support.harness import ALICE, GUILD_ID


async def test_token_usage_shows_when_the_pace_reaches_the_limit(make_app):
    app = await make_app({"user_limit": 20_000, "default_estimate_tokens": 50})
    await app.slash("ask", {"question": "what is 2+2?"})
    assert app.tracker.flush(10)
    [answer] = await app.slash("token-usage")
    found = re.search(r"at this pace used up <t:(\d+):R>", answer.field(F_YOU))
    assert found, answer.field(F_YOU)
    expected = app.tracker.check(ALICE, GUILD_ID, estimate=1).forecast_exhausted_at
    shown = datetime.fromtimestamp(int(found.group(1)), timezone.utc)
    assert abs(shown - expected) < timedelta(seconds=5)
