"""The one strict schema of models.json (issue case 5 and the bounds behind case 4): unknown and duplicate keys
are errors naming the key and the closest valid one, values are bounded, ``"limits": [...]`` rule lists are
validated, and the schema is published (``dspy-tokens config check|schema``)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from click.testing import CliRunner

from dspy_tokens import ConfigurationError, load_config
from dspy_tokens.cli import main
from dspy_tokens.config import json_schema, parse_config

MODEL = {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}


def write(tmp_path, text: str):
    path = tmp_path / "models.json"
    path.write_text(text, encoding="utf-8")
    return path


class TestNothingSilentlyMeansNoLimit:
    @pytest.mark.parametrize("document, field, closest", [
        pytest.param({"user_token_limit": 1000}, '"user_token_limit"', "user_limit", id="user_token_limit"),
        pytest.param({"max_tokens_per_user": 1000}, '"max_tokens_per_user"', "user_limit", id="max_tokens_per_user"),
        pytest.param({"user_daily_limit": 1000}, '"user_daily_limit"', "limits", id="user_daily_limit"),
        pytest.param({"daily_limit": 1000}, '"daily_limit"', "daily_token_limit", id="daily_limit-is-tokens"),
        pytest.param({"models": [{**MODEL, "tokens_per_user": 5}]}, "models[0].tokens_per_user", "user_limit",
                     id="per-model-tokens_per_user"),
        pytest.param({"limits": [{"scope": "user", "max": 5, "windw": "1d"}]}, "limits[0].windw", "window",
                     id="rule-key-typo"),
    ])
    def test_unknown_keys_name_the_key_and_the_closest_valid_one(self, document, field, closest):
        """Each of the issue's unknown keys is a ConfigurationError naming it and the setting meant."""
        with pytest.raises(ConfigurationError) as raised:
            parse_config(document)
        assert raised.value.field == field
        assert f'did you mean "{closest}"' in raised.value.fix

    def test_a_nested_limits_object_is_an_error(self):
        """``{"limits": {...}}`` (an object, not a rule list) is rejected with an example of the list."""
        with pytest.raises(ConfigurationError, match="must be a list of rule objects"):
            parse_config({"limits": {"user": 1000}})

    @pytest.mark.parametrize("text, key", [
        ('{"user_limit": 1000, "user_limit": null}', "user_limit"),
        ('{"models": [{"label": "a", "name": "x", "name": "y"}]}', "name"),
    ])
    def test_duplicate_keys_are_errors(self, tmp_path, text, key):
        """A key given twice (JSON readers keep the last: here "no limit") is an error naming it."""
        path = write(tmp_path, text)
        with pytest.raises(ConfigurationError, match="is given twice") as raised:
            load_config(path)
        assert raised.value.field == f'"{key}"'

    @pytest.mark.parametrize("document, field", [
        ({"time_window_days": 3_000_000}, '"time_window_days"'),
        ({"user_limit": 10**19}, '"user_limit"'),
        ({"user_cost_limit": "1e30"}, '"user_cost_limit"'),
        ({"reservation_ttl_seconds": 10**12}, '"reservation_ttl_seconds"'),
        ({"default_estimate_tokens": 10**12}, '"default_estimate_tokens"'),
        ({"limits": [{"scope": "user", "max": 5, "window": "99999d"}]}, "limits[0].window"),
        ({"limits": [{"scope": "user", "max": -1}]}, "limits[0].max"),
        ({"limits": [{"scope": "user", "metric": "cost_usd", "max": "lots"}]}, "limits[0].max"),
        ({"alerts": {"thresholds": [0.5, 1.5]}}, "alerts.thresholds"),
        ({"alerts": {"webhook_url": "ftp://x"}}, "alerts.webhook_url"),
    ])
    def test_values_are_bounded(self, document, field):
        """Values that would overflow the window arithmetic or a 64-bit counter are rejected at load time."""
        with pytest.raises(ConfigurationError) as raised:
            parse_config(document)
        assert raised.value.field == field


class TestRuleLists:
    def test_the_issue_s_rules_load(self):
        """A per-user daily calendar limit, a per-guild monthly dollar budget, 50 requests per user per day and a
        per-model rule with a fallback all load as rules."""
        config = parse_config({"models": [MODEL, {"label": "big", "name": "gpt-4o", "provider": "openai"}], "limits": [
            {"scope": "user", "metric": "tokens", "max": 50_000, "window": "1d", "calendar": True},
            {"scope": "guild", "metric": "cost_usd", "max": "25.50", "window": "1mo"},
            {"scope": "user", "metric": "requests", "max": 50, "window": "24h", "calendar": True},
            {"scope": "user", "metric": "tokens", "max": 10_000, "window": "7d", "model": "big", "fallback": "mini",
             "enforcement": "warn", "alerts": {"thresholds": [0.8, 0.5]}},
            {"scope": "channel", "max": 1_000}, {"scope": "feature", "metric": "requests", "max": 10}]})
        from dspy_tokens.limits import rules_from_config

        rules = {r.key: r for r in rules_from_config(config)}
        assert len(rules) == 6
        daily, monthly, requests, per_model, channel, feature = rules.values()
        assert (daily.window, daily.limit, daily.metric) == ("day", 50_000, "tokens")
        assert (monthly.window, monthly.limit_value, monthly.scope) == ("month", Decimal("25.50"), "guild")
        assert (requests.metric, requests.window) == ("requests", "day")
        assert (per_model.model, per_model.fallback, per_model.hours, per_model.enforcement) == \
            ("openai/gpt-4o", "openai/gpt-4o-mini", 168, "warn")
        assert per_model.alerts.thresholds == (0.5, 0.8)
        assert (channel.scope, channel.window_hours) == ("channel", 720)
        assert feature.scope == "feature"

    @pytest.mark.parametrize("rule, field", [
        ({"scope": "team", "max": 5}, "limits[0].scope"),
        ({"scope": "user", "metric": "dollars", "max": 5}, "limits[0].metric"),
        ({"scope": "user", "max": 5, "model": "nope"}, "limits[0].model"),
        ({"scope": "user", "max": 5, "fallback": "nope"}, "limits[0].fallback"),
        ({"scope": "user", "max": 5, "window": "7d", "calendar": True}, "limits[0].window"),
        ({"scope": "user", "max": 5, "enforcement": "off"}, "limits[0].enforcement"),
        ({"scope": "user", "max": 5.5}, "limits[0].max"),
    ])
    def test_bad_rules_name_the_field(self, rule, field):
        with pytest.raises(ConfigurationError) as raised:
            parse_config({"models": [MODEL], "limits": [rule]})
        assert raised.value.field == field


class TestCommandLine:
    def test_config_check_accepts_a_good_file_and_names_the_key_of_a_bad_one(self, tmp_path):
        """``config check`` exits 0 on a valid file; on an invalid one 1, with one line naming key and fix."""
        good = write(tmp_path, json.dumps({"models": [MODEL], "limits": [{"scope": "user", "max": 5}]}))
        done = CliRunner().invoke(main, ["config", "check", str(good)])
        assert done.exit_code == 0 and "OK (1 models, 1 limit rules)" in done.output
        bad = tmp_path / "bad.json"
        bad.write_text('{"user_limit": 1000, "user_limit": null}', encoding="utf-8")
        done = CliRunner().invoke(main, ["config", "check", str(bad)])
        assert done.exit_code == 1 and '"user_limit" is given twice' in done.output

    def test_config_schema_is_the_json_schema_and_forbids_unknown_keys(self):
        done = CliRunner().invoke(main, ["config", "schema"])
        assert done.exit_code == 0
        document = json.loads(done.output)
        assert document == json.loads(json.dumps(json_schema()))
        assert document["additionalProperties"] is False
        assert set(document["properties"]) >= {"limits", "alerts", "user_limit", "models"}
        rule = document["$defs"]["LimitSchema"]
        assert rule["additionalProperties"] is False and rule["properties"]["scope"]["enum"] == [
            "user", "guild", "global", "channel", "feature"]
