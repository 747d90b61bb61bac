"""Reading models.json and token_bypasses.json: once, validated loudly.

A malformed file raises :class:`ConfigurationError` naming the file, the field, the bad value and the fix; it never
silently means "unlimited" or "nobody bypassed". Unknown and duplicate keys are errors too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .._ids import parse_id
from ..errors import ConfigurationError
from . import schema
from .model import PRICE_KEYS, AlertSettings, Bypasses, Config, LimitSpec, ModelEntry, ModelPrice

MODEL_KEYS = set(schema.ModelSchema.model_fields)
TOP_LEVEL_KEYS = set(schema.ConfigSchema.model_fields)
FLAT_LIMIT_KEYS = ("user_limit", "guild_limit", "global_limit", "daily_token_limit", "user_cost_limit",
                   "guild_cost_limit", "global_cost_limit", "daily_cost_limit", "monthly_cost_limit")


class _DuplicateKey(Exception):
    def __init__(self, key: str, value: Any):
        self.key, self.value = key, value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(key, value)
        seen[key] = value
    return seen


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (left by Windows editors) is not an error
    except OSError as exc:
        raise ConfigurationError(str(path), "file", str(exc),
                                 "could not be read; check the path and permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(str(path), "file", str(exc), "is not UTF-8 text; save it as UTF-8") from exc
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise ConfigurationError(str(path), f'"{exc.key}"', exc.value,
                                 "is given twice; keep one (JSON readers silently keep the last)") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            str(path), f"line {exc.lineno} column {exc.colno}", exc.msg,
            "is not valid JSON (JSON allows no comments or trailing commas); fix the syntax") from exc


def _alerts(raw) -> AlertSettings | None:
    if raw is None:
        return None
    return AlertSettings(tuple(raw.thresholds), raw.webhook_url, raw.discord_channel_id)


def _model_entry(source: str, raw: schema.ModelSchema, document: dict, index: int) -> ModelEntry:
    rates = {attr: getattr(raw, key) for key, attr in PRICE_KEYS.items()}
    price = ModelPrice(**rates) if any(v is not None for v in rates.values()) else None
    # Whether a partial entry is complete with the price map's rates is checked by the PriceBook (the map's room).
    if price is not None and price.input is not None and price.cache_read is not None and \
            price.cache_read > price.input:
        raise ConfigurationError(source, f"models[{index}].cache_read_input_token_cost", document,
                                 f"is more than input_cost_per_token ({price.input}): a cache read is never dearer "
                                 "than reading the prompt; check the two rates")
    limits = {key: getattr(raw, key) for key in FLAT_LIMIT_KEYS if key in document}
    return ModelEntry(label=raw.label or raw.name, name=raw.name, provider=raw.provider, price=price,
                      max_tokens=raw.max_tokens, limits=limits)


def _limit(source: str, raw: schema.LimitSchema, index: int, models: tuple[ModelEntry, ...]) -> LimitSpec:
    where = f"limits[{index}]"
    if raw.metric == "cost_usd":
        try:
            amount = schema.money(schema.MAX_USD)(raw.max)
        except ValueError:
            amount = None
        if amount is None:
            raise ConfigurationError(source, f"{where}.max", raw.max, schema.FIXES["user_cost_limit"]
                                     .replace(" or null", ""))
    else:
        amount = raw.max
        if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= schema.MAX_TOKENS:
            raise ConfigurationError(source, f"{where}.max", raw.max,
                                     f"must be an integer number of {raw.metric} >= 0 and <= {schema.MAX_TOKENS}")
    for key in ("model", "fallback"):
        label = getattr(raw, key)
        if label is not None and not any(m.matches(label) for m in models):
            labels = ", ".join(m.label for m in models)
            raise ConfigurationError(source, f"{where}.{key}", label,
                                     f"must be the label of a model in \"models\" ({labels})")
    if raw.fallback is not None and raw.fallback == raw.model:
        raise ConfigurationError(source, f"{where}.fallback", raw.fallback, "must name another model than the rule's")
    if raw.calendar and raw.window not in ("1d", "24h", "1mo"):
        raise ConfigurationError(source, f"{where}.window", raw.window,
                                 'must be "1d" or "1mo" for a calendar window (UTC day or month); or set '
                                 '"calendar": false for a rolling window')
    return LimitSpec(raw.scope, raw.metric, amount, raw.window, raw.calendar, raw.model, raw.enforcement,
                     raw.fallback, _alerts(raw.alerts), raw.name)


def parse_config(data: Any, source: str = "models.json") -> Config:
    """Validate a decoded models.json document against :class:`~dspy_tokens.config.schema.ConfigSchema`."""
    raw = schema.validate(schema.ConfigSchema, data, source)
    models = tuple(_model_entry(source, m, data["models"][i], i) for i, m in enumerate(raw.models))
    labels = [m.label for m in models]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigurationError(source, '"models"', duplicates, "has duplicate labels; give each model its own label")
    if raw.default is not None and models and not any(m.matches(raw.default) for m in models):
        raise ConfigurationError(source, '"default"', raw.default,
                                 f"must be the label of a model in \"models\" ({', '.join(labels)})")
    limits = tuple(_limit(source, rule, i, models) for i, rule in enumerate(raw.limits))
    keys = [rule.key for rule in limits]
    if len(set(keys)) < len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise ConfigurationError(source, '"limits"', twice, 'has the same rule twice; remove one or give each a "name"')
    flat = {key: getattr(raw, key) for key in FLAT_LIMIT_KEYS}
    return Config(
        source=source, default=raw.default, models=models, time_window_days=raw.time_window_days, **flat,
        enforcement=raw.enforcement, soft_limit_ratio=raw.soft_limit_ratio, retention_days=raw.retention_days,
        default_estimate_tokens=raw.default_estimate_tokens, reservation_ttl_seconds=raw.reservation_ttl_seconds,
        log_calls=raw.log_calls, estimate_usage=raw.estimate_usage, fail_open=raw.fail_open, limits=limits, alerts=_alerts(raw.alerts))


def _default(path: str | os.PathLike | None, name: str) -> Path | None:
    """``path``, else ``./name`` when that file exists, else None (the defaults)."""
    if path is None:
        return Path(name) if Path(name).is_file() else None
    return Path(path)


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read ``path``; with ``None``, ``./models.json`` when present, else defaults (no limits, no prices)."""
    found = _default(path, "models.json")
    return Config() if found is None else parse_config(read_json(found), str(found))


def _ids(source: str, values: list, key: str) -> frozenset[int]:
    ids = []
    for value in values:
        try:
            ids.append(parse_id(value))
        except ValueError:
            raise ConfigurationError(source, f'"{key}"', value,
                                     "must contain only 64-bit non-negative integer ids") from None
    return frozenset(ids)


def load_bypasses(path: str | os.PathLike | None = None) -> Bypasses:
    """Read token_bypasses.json (``{"users": [...], "guilds": [...], "roles": [...]}``); absent file → nobody."""
    path = _default(path, "token_bypasses.json")
    if path is None:
        return Bypasses()
    data = read_json(path)
    source = str(path)
    raw = schema.validate(schema.BypassesSchema, data, source)
    return Bypasses(source, _ids(source, raw.users, "users"), _ids(source, raw.guilds, "guilds"),
                    _ids(source, raw.roles, "roles"))


def check_file(path: str | os.PathLike) -> Config:
    """``dspy-tokens config check FILE``: the file validated as a tracker would read it."""
    return load_config(path)


__all__ = ["MODEL_KEYS", "TOP_LEVEL_KEYS", "check_file", "load_bypasses", "load_config", "parse_config",
           "read_json"]
