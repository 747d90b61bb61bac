"""``DiscordSettings``: constructor arguments, then environment variables, then defaults; bad values fail loudly
with the core's ``ConfigurationError``, and Discord ids follow the core's one id rule."""

from __future__ import annotations

import pytest
from dspy_tokens_discord.config import DiscordSettings, parse_role_ids

from dspy_tokens import ConfigurationError, usage_context


def test_settings_default_then_env_then_arguments(monkeypatch):
    """Constructor arguments win over environment variables, which win over the defaults."""
    assert DiscordSettings.resolve() == DiscordSettings()
    assert DiscordSettings().report_interval_seconds == 86400 and DiscordSettings().report_top_users == 10
    monkeypatch.setenv("SUPER_ROLE_IDS", "11, 22,,33")
    monkeypatch.setenv("STATS_REPORT_CHANNEL_ID", "44")
    monkeypatch.setenv("STATS_REPORT_INTERVAL_SECONDS", "3600")
    monkeypatch.setenv("STATS_REPORT_TOP_USERS", "5")
    monkeypatch.setenv("STATS_ADMIN_PERMISSION", "administrator")
    env = DiscordSettings.resolve()
    assert env == DiscordSettings(frozenset({11, 22, 33}), 44, 3600.0, 5, "administrator")
    given = DiscordSettings.resolve(super_role_ids=[7], report_channel_id=8, report_interval_seconds=60,
                                    report_top_users=3, admin_permission="manage_guild")
    assert given == DiscordSettings(frozenset({7}), 8, 60.0, 3, "manage_guild")


@pytest.mark.parametrize("name, value", [
    ("SUPER_ROLE_IDS", "12,abc"), ("STATS_REPORT_CHANNEL_ID", "-4"), ("STATS_REPORT_INTERVAL_SECONDS", "soon"),
    ("STATS_REPORT_INTERVAL_SECONDS", "0"), ("STATS_REPORT_TOP_USERS", "100"), ("STATS_ADMIN_PERMISSION", "boss"),
])
def test_bad_settings_fail_loudly(monkeypatch, name, value):
    """A malformed variable raises ConfigurationError naming it, instead of silently disabling a feature."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        DiscordSettings.resolve()


@pytest.mark.parametrize("value", [
    "0", "42", " 42 ", 7, 2**63 - 1, str(2**63 - 1), 2**63, str(2**63), -1, "-4", "abc", "4.0", 4.0, True, "٣",
    "1" * 20, "0042"])
def test_ids_follow_the_cores_one_id_rule(value):
    """A Discord id is accepted exactly when the core accepts it as an id (0 <= id < 2**63, digits-only strings);
    otherwise it is a ConfigurationError naming where it came from."""
    try:
        usage_context(user_id=value)  # the core's rule, through a public name
        core = True
    except ConfigurationError:
        core = False
    if core:
        assert parse_role_ids([value], source="SUPER_ROLE_IDS") == frozenset({int(str(value).strip())})
    else:
        with pytest.raises(ConfigurationError, match="SUPER_ROLE_IDS"):
            parse_role_ids([value], source="SUPER_ROLE_IDS")
