"""models.json and token_bypasses.json: the shipped example loads, and every malformed file fails loudly with an
error naming the file, the field, the bad value and the fix — never a silent "unlimited"."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from dspy_tokens import ConfigurationError, load_bypasses, load_config
from dspy_tokens.config import MODEL_KEYS, TOP_LEVEL_KEYS

EXAMPLE = Path(__file__).resolve().parent.parent / "models.json"
MODEL = {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}


def write(tmp_path, document, name="models.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    return path


def assert_names_everything(error: ConfigurationError, path: Path, field: str, value, fix: str) -> None:
    message = str(error)
    assert error.source == str(path) and message.startswith(f"{path}: ")
    assert field in str(error.field) and field in message
    assert error.value == value and repr(value) in message
    assert fix in error.fix and fix in message


# -- the shipped example ------------------------------------------------------------------------------------------

class TestTheShippedExample:
    """The example models.json at the repository root, and loading without one."""

    def test_the_shipped_example_models_json_loads(self):
        """The example models.json at the repository root loads, in the seed format, with only known keys."""
        config = load_config(EXAMPLE)
        document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
        assert set(document) <= TOP_LEVEL_KEYS
        assert all(set(entry) <= MODEL_KEYS for entry in document["models"])
        assert {"default", "user_limit", "guild_limit", "time_window_days", "models"} <= set(document)
        assert config.model_entry(config.default) is not None
        assert all({"label", "name", "provider"} <= set(entry) for entry in document["models"])
        assert config.time_window_days == document["time_window_days"]

    def test_no_file_means_defaults(self, tmp_path, monkeypatch):
        """Without a path and without ./models.json the defaults apply: no limits, no model prices."""
        monkeypatch.chdir(tmp_path)
        config = load_config()
        assert config.models == () and config.user_limit is None and config.time_window_days == 30

    def test_a_file_with_a_utf8_bom_loads(self, tmp_path):
        """A models.json saved with a UTF-8 byte-order mark (Windows editors) loads like any other."""
        path = tmp_path / "models.json"
        path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"default": "mini", "models": [MODEL]}).encode())
        assert load_config(path).default == "mini"


# -- models.json errors --------------------------------------------------------------------------------------------

BAD_MODELS_JSON = [
    pytest.param({"user_limit": -5}, "user_limit", -5, "integer >= 0", id="negative-limit"),
    pytest.param({"user_limit": "100000"}, "user_limit", "100000", "integer >= 0", id="limit-as-string"),
    pytest.param({"guild_limit": 1.5}, "guild_limit", 1.5, "integer >= 0", id="fractional-limit"),
    pytest.param({"user_limt": 5}, "user_limt", 5, 'did you mean "user_limit"', id="typo"),
    pytest.param({"time_window_days": 0}, "time_window_days", 0, "integer >= 1", id="zero-window"),
    pytest.param({"time_window_days": None}, "time_window_days", None, "integer >= 1", id="null-window"),
    pytest.param({"default_estimate_tokens": None}, "default_estimate_tokens", None, "integer >= 1",
                 id="null-estimate"),
    pytest.param({"user_cost_limit": -1}, "user_cost_limit", -1, "non-negative number of US dollars",
                 id="negative-cost-limit"),
    pytest.param({"monthly_cost_limit": "ten"}, "monthly_cost_limit", "ten", "non-negative number of US dollars",
                 id="cost-not-a-number"),
    pytest.param({"enforcement": "strict"}, "enforcement", "strict", "enforce, warn, off", id="bad-enforcement"),
    pytest.param({"soft_limit_ratio": 2}, "soft_limit_ratio", 2, "(0, 1]", id="ratio-above-1"),
    pytest.param({"log_calls": "yes"}, "log_calls", "yes", "true or false", id="bool-as-string"),
    pytest.param({"models": {"name": "gpt-4o-mini"}}, "models", {"name": "gpt-4o-mini"}, "must be a list",
                 id="models-not-a-list"),
    pytest.param({"models": [{"label": "mini"}]}, "models[0].name", None, "non-empty string", id="model-without-name"),
    pytest.param({"models": [{**MODEL, "input_cost_per_token": -1e-06}]}, "models[0].input_cost_per_token", -1e-06,
                 "non-negative number of US dollars", id="negative-price"),
    pytest.param({"models": [{**MODEL, "input_cost_per_token": "cheap"}]}, "models[0].input_cost_per_token",
                 "cheap", "non-negative number of US dollars", id="price-not-a-number"),
    pytest.param({"models": [{**MODEL, "input_cost_per_tokn": 1e-06}]}, "models[0].input_cost_per_tokn", 1e-06,
                 'did you mean "input_cost_per_token"', id="price-key-typo"),
    pytest.param({"models": [{**MODEL, "max_tokens": 0}]}, "models[0].max_tokens", 0, "integer >= 1",
                 id="zero-max-tokens"),
    pytest.param({"models": [MODEL, {**MODEL, "name": "gpt-4o"}]}, "models", ["mini"], "duplicate labels",
                 id="duplicate-labels"),
    pytest.param({"default": "gpt-5", "models": [MODEL]}, "default", "gpt-5", "label of a model", id="bad-default"),
]


class TestModelsJsonErrors:
    """Every malformed models.json fails loudly, naming the file, the field, the bad value and the fix."""

    @pytest.mark.parametrize("document, field, value, fix", BAD_MODELS_JSON)
    def test_a_bad_models_json_names_file_field_value_and_fix(self, tmp_path, document, field, value, fix):
        """Each malformed setting raises ConfigurationError naming the file, the field, the bad value and the fix."""
        path = write(tmp_path, document)
        with pytest.raises(ConfigurationError) as raised:
            load_config(path)
        assert_names_everything(raised.value, path, field, value, fix)

    def test_a_partial_price_for_a_model_the_map_does_not_know_is_rejected(self, tmp_path):
        """An entry giving only some rates, for a model the price map cannot complete, is a ConfigurationError
        naming the entry and the missing keys (never silently ignored)."""
        from dspy_tokens.pricing import PriceBook
        entry = {"label": "ft", "name": "ft-unknown-to-any-map", "provider": "acme", "input_cost_per_token": 1e-06}
        path = write(tmp_path, {"models": [entry]})
        with pytest.raises(ConfigurationError) as raised:
            PriceBook(load_config(path))
        assert raised.value.field == "models[0]"
        assert "input_cost_per_token" in str(raised.value) and "output_cost_per_token" in str(raised.value)

    def test_a_cache_read_dearer_than_input_is_rejected(self, tmp_path):
        """Inconsistent rates (a cache read above the input rate) name the key."""
        path = write(tmp_path, {"models": [{**MODEL, "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                                            "cache_read_input_token_cost": 5e-06}]})
        with pytest.raises(ConfigurationError) as raised:
            load_config(path)
        assert raised.value.field == "models[0].cache_read_input_token_cost"

    @pytest.mark.parametrize("text, problem", [
        pytest.param('{"user_limit": 5,}', "trailing", id="trailing-comma"),
        pytest.param('{"user_limit": 5 // per user\n}', "comments", id="comment"),
        pytest.param("", "valid JSON", id="empty"),
    ])
    def test_invalid_json_names_the_line_and_column(self, tmp_path, text, problem):
        """Invalid JSON raises ConfigurationError with the file, line and column, and says JSON allows no comments or
        trailing commas."""
        path = write(tmp_path, text)
        with pytest.raises(ConfigurationError) as raised:
            load_config(path)
        assert str(raised.value).startswith(f"{path}: line ")
        assert "no comments or trailing commas" in raised.value.fix

    @pytest.mark.parametrize("document", [[1, 2], "models", 5], ids=["list", "string", "number"])
    def test_a_document_that_is_not_an_object_is_rejected(self, tmp_path, document):
        """A models.json whose top level is not a JSON object is rejected, naming the file."""
        path = write(tmp_path, json.dumps(document))
        with pytest.raises(ConfigurationError, match="must be a JSON object") as raised:
            load_config(path)
        assert raised.value.source == str(path)

    def test_a_missing_or_unreadable_file_names_the_path(self, tmp_path):
        """A path that cannot be read raises ConfigurationError naming it (never "no limits")."""
        for path in (tmp_path / "missing.json", tmp_path):
            with pytest.raises(ConfigurationError, match="could not be read") as raised:
                load_config(path)
            assert raised.value.source == str(path)

    def test_a_file_not_in_utf8_names_the_file(self, tmp_path):
        """A models.json in another encoding (UTF-16) raises ConfigurationError naming the file and the fix."""
        path = tmp_path / "models.json"
        path.write_bytes(json.dumps({"user_limit": 5}).encode("utf-16"))
        with pytest.raises(ConfigurationError, match="UTF-8") as raised:
            load_config(path)
        assert raised.value.source == str(path)

    def test_unknown_keys_are_rejected_even_far_from_known_ones(self, tmp_path):
        """Every unknown key is an error (one strict schema for the whole file): an unknown key could be a limit
        the owner believes is in force."""
        path = write(tmp_path, {"bot_prefix": "!", "models": [MODEL], "default": "mini"})
        with pytest.raises(ConfigurationError, match="is not a known setting; did you mean") as raised:
            load_config(path)
        assert raised.value.field == '"bot_prefix"'

    def test_prices_are_exact_decimals(self, tmp_path):
        """Prices are read as exact Decimals (from floats or strings), never binary floats."""
        path = write(tmp_path, {"models": [{**MODEL, "input_cost_per_token": 1.5e-07,
                                            "output_cost_per_token": "6e-07"}]})
        price = load_config(path).models[0].price
        assert (price.input, price.output) == (Decimal("1.5e-07"), Decimal("6e-07"))


# -- token_bypasses.json --------------------------------------------------------------------------------------------

class TestBypasses:
    """token_bypasses.json: ids as numbers or digit strings, nobody without a file, bad entries named."""

    def test_bypasses_load_ids_given_as_numbers_or_digit_strings(self, tmp_path):
        """token_bypasses.json accepts Discord ids as numbers or digit strings (JSON loses precision past 2**53)."""
        path = write(tmp_path, {"users": [123456789012345678, "987654321098765432"], "guilds": [], "roles": ["5"]},
                     "token_bypasses.json")
        bypasses = load_bypasses(path)
        assert bypasses.users == {123456789012345678, 987654321098765432} and bypasses.roles == {5}
        assert bypasses.covers(user_id=987654321098765432) and not bypasses.covers(user_id=1, guild_id=2)

    def test_no_bypass_file_means_nobody(self, tmp_path, monkeypatch):
        """Without token_bypasses.json nobody is bypassed."""
        monkeypatch.chdir(tmp_path)
        assert not load_bypasses().covers(user_id=1, guild_id=1)

    @pytest.mark.parametrize("document, field, value, fix", [
        pytest.param({"users": "123"}, "users", "123", "list of numeric Discord ids", id="not-a-list"),
        pytest.param({"users": ["@alice"]}, "users", "@alice", "64-bit non-negative integer ids", id="name-not-id"),
        pytest.param({"guilds": [-1]}, "guilds", -1, "64-bit non-negative integer ids", id="negative"),
        pytest.param({"roles": [True]}, "roles", True, "64-bit non-negative integer ids", id="boolean"),
        pytest.param({"guilds": [2**64]}, "guilds", 2**64, "64-bit non-negative integer ids", id="too-large"),
        pytest.param({"user": [1]}, "user", [1], 'did you mean "users"', id="typo"),
    ])
    def test_a_bad_bypass_file_names_file_field_value_and_fix(self, tmp_path, document, field, value, fix):
        """Each malformed bypass entry raises ConfigurationError naming the file, the field, the value and the fix."""
        path = write(tmp_path, document, "token_bypasses.json")
        with pytest.raises(ConfigurationError) as raised:
            load_bypasses(path)
        assert_names_everything(raised.value, path, field, value, fix)


# -- the tracker ---------------------------------------------------------------------------------------------------

class TestTracker:
    """The tracker refuses a bad configuration at construction."""

    def test_a_tracker_with_a_bad_models_json_fails_at_construction(self, tmp_path):
        """TokenTracker refuses to start on a malformed models.json instead of running without limits."""
        from dspy_tokens import TokenTracker

        path = write(tmp_path, {"user_limit": -1})
        with pytest.raises(ConfigurationError, match="user_limit"):
            TokenTracker(f"sqlite:///{tmp_path / 'u.db'}", path, spill_dir=tmp_path / "spill")
