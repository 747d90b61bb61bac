"""Limits changed at run time (``tracker.set_limit/clear_limit/reset_usage/set_bypass``): stored in the
database, so a change made through one tracker holds for another on the same database at its next check; every
change is in ``limit_changes``."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from dspy_tokens import ConfigurationError
from tests.support.limits import GUILD, OTHER_USER, USER, config, seed


def test_a_limit_set_in_one_process_holds_in_another(make_tracker, database_url):
    """Admin's tracker sets a user's limit; the bot's tracker (another instance) refuses at its next check."""
    admin, bot = make_tracker(database_url, config(user_limit=100_000)), make_tracker(database_url,
                                                                                       config(user_limit=100_000))
    seed(bot, dict(user_id=USER, guild_id=GUILD, prompt_tokens=800, completion_tokens=0))
    assert bot.check(USER, GUILD, estimate=300).allowed
    admin.set_limit("user", USER, tokens=1_000, by="test:admin")
    refused = bot.check(USER, GUILD, estimate=300)
    assert not refused.allowed and refused.used == 800 and refused.limit == 1_000
    assert bot.check(OTHER_USER, GUILD, estimate=300).allowed  # the override is for that user only
    admin.clear_limit("user", USER, by="test:admin")
    assert bot.check(USER, GUILD, estimate=300).allowed and bot.limit_override("user", USER) is None


def test_reset_bypass_and_the_audit_trail(make_tracker, database_url):
    """A reset stops earlier usage counting (history keeps it); a bypass lets a refused guild through."""
    tracker = make_tracker(database_url, config(guild_limit=1_000))
    seed(tracker, dict(user_id=USER, guild_id=GUILD, prompt_tokens=900, completion_tokens=0))
    assert not tracker.check(USER, GUILD, estimate=300).allowed
    tracker.reset_usage("guild", GUILD, by="test:a")
    after = tracker.check(USER, GUILD, estimate=300)
    assert after.allowed and after.used == 0
    assert tracker.summary(guild_id=GUILD).total_tokens == 900
    seed(tracker, dict(user_id=USER, guild_id=GUILD, prompt_tokens=950, completion_tokens=0))
    assert not tracker.check(USER, GUILD, estimate=300).allowed  # usage after the reset counts
    tracker.set_bypass("guild", GUILD, True, by="test:b")
    assert tracker.check(USER, GUILD, estimate=300).bypassed
    made = tracker.set_limit("guild", GUILD, cost_usd="2.50", window="7d", by="test:c")
    override = tracker.limit_override("guild", GUILD)
    assert override.bypass and override.cost_usd == Decimal("2.5") and override.window == "7d"
    history = tracker.limit_changes("guild", GUILD)
    assert [(c.action, c.changed_by) for c in history] == [("set", "test:c"), ("bypass", "test:b"),
                                                           ("reset", "test:a")]
    assert history[0].detail == {"cost_usd": "2.5", "window": "7d"} and history[1].detail == {"on": True}
    assert history[0].changed_at - history[2].changed_at < timedelta(minutes=1)
    assert (made.id, made.action, made.scope_id, made.detail) == (history[0].id, "set", GUILD, history[0].detail)


@pytest.mark.parametrize("kwargs, key", [({"tokens": -1}, "tokens"), ({"window": "3w"}, "window"),
                                         ({"cost_usd": "lots"}, "cost_usd"), ({}, "limit")])
def test_bad_values_name_the_key(sqlite_tracker, kwargs, key):
    with pytest.raises(ConfigurationError, match=key):
        sqlite_tracker.set_limit("user", USER, **kwargs)
