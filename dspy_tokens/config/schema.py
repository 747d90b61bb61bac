"""The one strict schema of models.json, as pydantic models: unknown keys are errors, every value is bounded.

:func:`validate` turns pydantic's errors into :class:`ConfigurationError` naming the file, the field, the value and
the fix (for an unknown key: the closest valid one). :func:`json_schema` publishes the same schema.
"""

from __future__ import annotations

import difflib
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Optional, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from .._ids import parse_id
from ..errors import ConfigurationError
from .model import PRICE_KEYS

MAX_TOKENS = 10**15  # a token or request limit; far above any real budget, far below 64-bit overflow
MAX_USD = Decimal(1_000_000)  # a dollar limit: its picodollars (10**18) fit a 64-bit counter
MAX_WINDOW_DAYS = 3650
MAX_PRICE = Decimal(1)  # USD per token
WINDOW = re.compile(r"^(?:(?P<days>[1-9]\d{0,3})d|(?P<hours>[1-9]\d{0,4})h|1mo)$")


def money(maximum: Decimal):
    def check(value):
        if value is None:
            return None
        try:
            if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
                raise TypeError
            amount = Decimal(str(value))
        except (InvalidOperation, TypeError):
            amount = None
        if amount is None or not amount.is_finite() or amount < 0 or amount > maximum:
            raise ValueError("money")
        return amount
    return check


def _ratio(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError("ratio")
    return float(value)


def _window(value):
    if not isinstance(value, str) or not WINDOW.match(value) or int(value[:-1] if value[-1] in "dh" else 1) > (
            MAX_WINDOW_DAYS if value.endswith("d") else 24 * MAX_WINDOW_DAYS):
        raise ValueError("window")
    return value


def _thresholds(value):
    if not isinstance(value, list) or not 0 < len(value) <= 10 or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1 for v in value):
        raise ValueError("thresholds")
    return tuple(sorted({float(v) for v in value}))


def _channel(value):
    return None if value is None else parse_id(value)


def _url(value):
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/]+", value) or len(value) > 2000:
        raise ValueError("url")
    return value


Tokens = Optional[Annotated[int, Field(ge=0, le=MAX_TOKENS)]]
Money = Annotated[Optional[Decimal], BeforeValidator(money(MAX_USD)),
                  WithJsonSchema({"type": ["number", "string", "null"], "minimum": 0, "maximum": int(MAX_USD)})]
Price = Annotated[Optional[Decimal], BeforeValidator(money(MAX_PRICE)),
                  WithJsonSchema({"type": ["number", "string", "null"], "minimum": 0, "maximum": 1})]
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]
Ratio = Annotated[float, BeforeValidator(_ratio), WithJsonSchema({"type": "number", "exclusiveMinimum": 0,
                                                                  "maximum": 1})]
Window = Annotated[str, BeforeValidator(_window), WithJsonSchema({"type": "string", "pattern": WINDOW.pattern})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class AlertsSchema(_Strict):
    thresholds: Annotated[tuple[float, ...], BeforeValidator(_thresholds),
                          WithJsonSchema({"type": "array", "items": {"type": "number", "exclusiveMinimum": 0,
                                                                     "maximum": 1}, "maxItems": 10})] = (0.5, 0.8, 1.0)
    webhook_url: Annotated[Optional[str], BeforeValidator(_url), WithJsonSchema({"type": ["string", "null"],
                                                                                 "format": "uri"})] = None
    discord_channel_id: Annotated[Optional[int], BeforeValidator(_channel),
                                  WithJsonSchema({"type": ["integer", "string", "null"]})] = None


class LimitSchema(_Strict):
    scope: Literal["user", "guild", "global", "channel", "feature"]
    metric: Literal["tokens", "cost_usd", "requests"] = "tokens"
    max: Annotated[Any, WithJsonSchema({"type": ["integer", "number", "string"], "minimum": 0})]
    window: Window = "30d"
    calendar: bool = False
    model: Optional[Text] = None
    enforcement: Literal["enforce", "warn"] = "enforce"
    fallback: Optional[Text] = None
    alerts: Optional[AlertsSchema] = None
    name: Optional[Text] = None


class _FlatLimits(_Strict):
    """The seed's flat limit keys, the same at the top level and per model."""

    user_limit: Tokens = None
    guild_limit: Tokens = None
    global_limit: Tokens = None
    daily_token_limit: Tokens = None
    user_cost_limit: Money = None
    guild_cost_limit: Money = None
    global_cost_limit: Money = None
    daily_cost_limit: Money = None
    monthly_cost_limit: Money = None


class ModelSchema(_FlatLimits):
    label: Optional[Text] = None
    name: Text
    provider: Optional[Text] = None
    max_tokens: Optional[Annotated[int, Field(ge=1, le=10**7)]] = None
    input_cost_per_token: Price = None
    output_cost_per_token: Price = None
    cache_read_input_token_cost: Price = None
    output_cost_per_reasoning_token: Price = None
    cache_creation_input_token_cost: Price = None
    cache_creation_input_token_cost_above_1hr: Price = None
    input_cost_per_audio_token: Price = None
    output_cost_per_audio_token: Price = None
    input_cost_per_image_token: Price = None
    input_cost_per_request: Price = None


class ConfigSchema(_FlatLimits):
    """models.json"""

    default: Optional[Text] = None
    models: list[ModelSchema] = []
    time_window_days: Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)] = 30
    enforcement: Literal["enforce", "warn", "off"] = "enforce"
    soft_limit_ratio: Ratio = 0.8
    retention_days: Optional[Annotated[int, Field(ge=1, le=36500)]] = None
    default_estimate_tokens: Annotated[int, Field(ge=1, le=10**7)] = 4000
    reservation_ttl_seconds: Annotated[int, Field(ge=1, le=7 * 86400)] = 600
    log_calls: bool = False
    estimate_usage: bool = True
    fail_open: bool = True
    limits: list[LimitSchema] = []
    alerts: Optional[AlertsSchema] = None


class BypassesSchema(_Strict):
    """token_bypasses.json"""

    users: list[Any] = []
    guilds: list[Any] = []
    roles: list[Any] = []


_TOKENS_FIX = f"must be an integer >= 0 and <= {MAX_TOKENS} or null (no limit)"
_MONEY_FIX = f"must be a non-negative number of US dollars (at most {MAX_USD}) or null"
FIXES = {
    **{key: _TOKENS_FIX for key in ("user_limit", "guild_limit", "global_limit", "daily_token_limit")},
    **{key: _MONEY_FIX for key in ("user_cost_limit", "guild_cost_limit", "global_cost_limit", "daily_cost_limit",
                                   "monthly_cost_limit")},
    **{key: "must be a non-negative number of US dollars per token (at most 1) or null" for key in PRICE_KEYS},
    "time_window_days": f"must be an integer >= 1 and <= {MAX_WINDOW_DAYS} (default 30)",
    "retention_days": "must be an integer >= 1 and <= 36500 or null (keep everything)",
    "default_estimate_tokens": "must be an integer >= 1 and <= 10000000 (default 4000)",
    "reservation_ttl_seconds": "must be an integer >= 1 and <= 604800 (default 600)",
    "max_tokens": "must be an integer >= 1 and <= 10000000 or null",
    "enforcement": "must be one of enforce, warn, off",
    "soft_limit_ratio": "must be a number in (0, 1], e.g. 0.8",
    "log_calls": "must be true or false", "estimate_usage": "must be true or false", "fail_open": "must be true or false", "calendar": "must be true or false",
    "models": "must be a list of model objects",
    "limits": 'must be a list of rule objects, e.g. [{"scope": "user", "metric": "tokens", "max": 50000, '
              '"window": "1d", "calendar": true}]',
    "alerts": 'must be an object, e.g. {"thresholds": [0.5, 0.8, 1.0], "webhook_url": "https://..."}',
    "name": "must be a non-empty string", "label": "must be a non-empty string",
    "provider": "must be a non-empty string", "default": "must be a non-empty string",
    "model": "must be the label of a model in \"models\"", "fallback": "must be the label of a model in \"models\"",
    "scope": "must be one of user, guild, global, channel, feature",
    "metric": "must be one of tokens, cost_usd, requests",
    "window": 'must be "<n>d" (1 to 3650 days), "<n>h" (1 to 87600 hours) or "1mo", e.g. "30d", "24h", "7d"',
    "thresholds": "must be a list of 1 to 10 fractions of the limit in (0, 1], e.g. [0.5, 0.8, 1.0]",
    "webhook_url": "must be an http(s) URL",
    "discord_channel_id": "must be a 64-bit non-negative integer id",
    "users": "must be a list of numeric Discord ids", "guilds": "must be a list of numeric Discord ids",
    "roles": "must be a list of numeric Discord ids",
}
#: Keys people write for a setting that has another name: what to write instead.
ALIASES = {
    "user_token_limit": "user_limit", "max_tokens_per_user": "user_limit", "tokens_per_user": "user_limit",
    "daily_limit": "daily_token_limit", "token_limit": "user_limit", "user_daily_limit": "limits",
    "guild_token_limit": "guild_limit", "max_tokens_per_guild": "guild_limit", "tokens_per_guild": "guild_limit",
    "monthly_limit": "monthly_cost_limit", "budget": "monthly_cost_limit",
}


def _where(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text if len(loc) > 1 else f'"{text}"'


def _schema_at(schema: type[BaseModel], loc: tuple) -> type[BaseModel]:
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = schema.model_fields[part].annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    schema = inner
    return schema


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def validate(schema: type[SchemaT], data: Any, source: str) -> SchemaT:
    """``schema.model_validate(data)``, its first error as a :class:`ConfigurationError`."""
    if not isinstance(data, dict):
        raise ConfigurationError(source, "top level", data, "must be a JSON object")
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise _configuration_error(schema, exc.errors()[0], source) from None


def _configuration_error(schema: type[BaseModel], error: Any, source: str) -> ConfigurationError:
    loc = tuple(error["loc"])
    where, value = _where(loc), error.get("input")
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    if error["type"] == "extra_forbidden":
        known = list(_schema_at(schema, loc[:-1]).model_fields)
        close = ALIASES.get(key) if ALIASES.get(key) in known else None
        close = close or next(iter(difflib.get_close_matches(key, known, n=1, cutoff=0.0)), None)
        return ConfigurationError(source, where, value, f'is not a known setting; did you mean "{close}"?')
    if error["type"] == "missing":
        return ConfigurationError(source, where, None, FIXES.get(key, "is required"))
    fix = FIXES.get(key)
    if fix is None and len(loc) >= 2 and isinstance(loc[-1], int):
        fix = FIXES.get(loc[-2])
    return ConfigurationError(source, where, value, fix or f"is invalid: {error['msg']}")


def json_schema() -> dict:
    """The JSON Schema of models.json (``dspy-tokens config schema``)."""
    document = ConfigSchema.model_json_schema()
    document["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    document["title"] = "dspy-tokens models.json"
    return document
