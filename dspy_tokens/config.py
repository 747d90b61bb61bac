"""models.json and token_bypasses.json: read once, validated loudly.

A malformed file raises :class:`ConfigurationError` naming the file, the field, the bad value and the fix;
it never silently means "unlimited" or "nobody bypassed".
"""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, overload

from ._ids import parse_id
from .errors import ConfigurationError

PRICE_KEYS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "output_cost_per_reasoning_token": "reasoning",
}
TOKEN_LIMIT_KEYS = ("user_limit", "guild_limit", "global_limit", "daily_token_limit")
COST_LIMIT_KEYS = ("user_cost_limit", "guild_cost_limit", "global_cost_limit", "daily_cost_limit", "monthly_cost_limit")
ENFORCEMENT_MODES = ("enforce", "warn", "off")
MODEL_KEYS = {"label", "name", "provider", "max_tokens", *PRICE_KEYS, *TOKEN_LIMIT_KEYS, *COST_LIMIT_KEYS}
TOP_LEVEL_KEYS = {
    "default", "models", "time_window_days", "enforcement", "soft_limit_ratio", "retention_days",
    "default_estimate_tokens", "reservation_ttl_seconds", "log_calls", "fail_open", *TOKEN_LIMIT_KEYS,
    *COST_LIMIT_KEYS,
}


@dataclass(frozen=True)
class ModelPrice:
    """USD per token. ``None`` for a rate the entry does not give (the next price source is used instead)."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    reasoning: Decimal | None = None

    @property
    def is_complete(self) -> bool:
        return self.input is not None and self.output is not None


@dataclass(frozen=True)
class ModelEntry:
    label: str
    name: str
    provider: str | None = None
    price: ModelPrice | None = None
    max_tokens: int | None = None
    limits: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        """The string DSPy is given, e.g. ``groq/moonshotai/kimi-k2-instruct``."""
        return f"{self.provider}/{self.name}" if self.provider else self.name

    def matches(self, model: str | None) -> bool:
        return bool(model) and model in (self.model_id, self.name, self.label)


@dataclass(frozen=True)
class Config:
    source: str = "<defaults>"
    default: str | None = None
    models: tuple[ModelEntry, ...] = ()
    time_window_days: int = 30
    user_limit: int | None = None
    guild_limit: int | None = None
    global_limit: int | None = None
    daily_token_limit: int | None = None
    user_cost_limit: Decimal | None = None
    guild_cost_limit: Decimal | None = None
    global_cost_limit: Decimal | None = None
    daily_cost_limit: Decimal | None = None
    monthly_cost_limit: Decimal | None = None
    enforcement: str = "enforce"
    soft_limit_ratio: float = 0.8
    retention_days: int | None = None
    default_estimate_tokens: int = 4000
    reservation_ttl_seconds: int = 600
    log_calls: bool = False
    fail_open: bool = True  # when the database cannot be asked: allow (and log) rather than refuse everyone

    def model_entry(self, *models: str | None) -> ModelEntry | None:
        """The first entry matching any of ``models`` (configured string first, then the provider's name)."""
        for model in models:
            for entry in self.models:
                if entry.matches(model):
                    return entry
        return None


@dataclass(frozen=True)
class Bypasses:
    source: str = "<none>"
    users: frozenset[int] = frozenset()
    guilds: frozenset[int] = frozenset()
    roles: frozenset[int] = frozenset()

    def covers(self, user_id: int | None = None, guild_id: int | None = None, role_ids=()) -> bool:
        return (user_id in self.users) or (guild_id in self.guilds) or any(r in self.roles for r in role_ids)


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (left by Windows editors) is not an error
    except OSError as exc:
        raise ConfigurationError(str(path), "file", str(exc), "could not be read; check the path and permissions") from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(str(path), "file", str(exc), "is not UTF-8 text; save it as UTF-8") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            str(path), f"line {exc.lineno} column {exc.colno}", exc.msg,
            "is not valid JSON (JSON allows no comments or trailing commas); fix the syntax") from exc


class _Fields:
    """Validating reader over one JSON object; every error carries the file and the field path."""

    def __init__(self, source: str, data: Any, where: str = ""):
        self.source, self.where = source, where
        if not isinstance(data, dict):
            raise ConfigurationError(source, where or "top level", data, "must be a JSON object")
        self.data = data

    def _name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else f'"{key}"'

    def reject_typos(self, known: set[str]) -> None:
        for key in self.data:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.8)
            if close:
                raise ConfigurationError(self.source, self._name(key), self.data[key],
                                         f'is not a known setting; did you mean "{close[0]}"?')

    def integer(self, key: str, default, minimum: int = 0, nullable: bool = True):
        """An integer setting; ``null`` only where it means "none" (no limit), never for a required number."""
        if key not in self.data:
            return default
        value = self.data[key]
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            fix = f"must be an integer >= {minimum}" + (" or null (no limit)" if nullable else f" (default {default})")
            raise ConfigurationError(self.source, self._name(key), value, fix)
        return value

    def money(self, key: str):
        value = self.data.get(key)
        if value is None:
            return None
        try:
            if isinstance(value, bool):
                raise TypeError
            amount = Decimal(str(value)) if isinstance(value, (int, float, str, Decimal)) else None
        except (InvalidOperation, TypeError):
            amount = None
        if amount is None or not amount.is_finite() or amount < 0:
            raise ConfigurationError(self.source, self._name(key), value,
                                     "must be a non-negative number of US dollars or null")
        return amount

    def ratio(self, key: str, default: float) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise ConfigurationError(self.source, self._name(key), value, "must be a number in (0, 1], e.g. 0.8")
        return float(value)

    def choice(self, key: str, default: str, choices) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            raise ConfigurationError(self.source, self._name(key), value, f"must be one of {', '.join(choices)}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            raise ConfigurationError(self.source, self._name(key), value, "must be true or false")
        return value

    @overload
    def text(self, key: str, required: Literal[True]) -> str: ...
    @overload
    def text(self, key: str, required: bool = False) -> str | None: ...

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ConfigurationError(self.source, self._name(key), value, "must be a non-empty string")
        return value


def _model_entry(source: str, raw: Any, index: int) -> ModelEntry:
    fields = _Fields(source, raw, f"models[{index}]")
    fields.reject_typos(MODEL_KEYS)
    name = fields.text("name", required=True)
    rates = {attr: fields.money(key) for key, attr in PRICE_KEYS.items()}
    price = ModelPrice(**rates) if any(v is not None for v in rates.values()) else None
    if price is not None and (price.cache_read is not None or price.reasoning is not None) and not price.is_complete:
        raise ConfigurationError(source, f"models[{index}]", raw,
                                 "gives cache or reasoning rates without both input_cost_per_token and "
                                 "output_cost_per_token; add them")
    limits = {key: fields.integer(key, None) for key in TOKEN_LIMIT_KEYS if key in raw}
    limits.update({key: fields.money(key) for key in COST_LIMIT_KEYS if key in raw})
    return ModelEntry(label=fields.text("label") or name, name=name, provider=fields.text("provider"),
                      price=price, max_tokens=fields.integer("max_tokens", None, minimum=1), limits=limits)


def parse_config(data: Any, source: str = "models.json") -> Config:
    """Validate a decoded models.json document."""
    fields = _Fields(source, data)
    fields.reject_typos(TOP_LEVEL_KEYS)
    models_raw = data.get("models", [])
    if not isinstance(models_raw, list):
        raise ConfigurationError(source, '"models"', models_raw, "must be a list of model objects")
    models = tuple(_model_entry(source, raw, i) for i, raw in enumerate(models_raw))
    labels = [m.label for m in models]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigurationError(source, '"models"', duplicates, "has duplicate labels; give each model its own label")
    default = fields.text("default")
    if default is not None and models and not any(m.matches(default) for m in models):
        raise ConfigurationError(source, '"default"', default, f"must be the label of a model in \"models\" ({', '.join(labels)})")
    return Config(
        source=source,
        default=default,
        models=models,
        time_window_days=fields.integer("time_window_days", 30, minimum=1, nullable=False),
        **{key: fields.integer(key, None) for key in TOKEN_LIMIT_KEYS},
        **{key: fields.money(key) for key in COST_LIMIT_KEYS},
        enforcement=fields.choice("enforcement", "enforce", ENFORCEMENT_MODES),
        soft_limit_ratio=fields.ratio("soft_limit_ratio", 0.8),
        retention_days=fields.integer("retention_days", None, minimum=1),
        default_estimate_tokens=fields.integer("default_estimate_tokens", 4000, minimum=1, nullable=False),
        reservation_ttl_seconds=fields.integer("reservation_ttl_seconds", 600, minimum=1, nullable=False),
        log_calls=fields.boolean("log_calls", False),
        fail_open=fields.boolean("fail_open", True),
    )


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read ``path``; with ``None``, ``./models.json`` when present, else defaults (no limits, no prices)."""
    if path is None:
        if not Path("models.json").is_file():
            return Config()
        path = "models.json"
    path = Path(path)
    return parse_config(_read_json(path), str(path))


def _ids(source: str, data: dict, key: str) -> frozenset[int]:
    values = data.get(key, [])
    if not isinstance(values, list):
        raise ConfigurationError(source, f'"{key}"', values, "must be a list of numeric Discord ids")
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
    if path is None:
        if not Path("token_bypasses.json").is_file():
            return Bypasses()
        path = "token_bypasses.json"
    path = Path(path)
    data = _read_json(path)
    source = str(path)
    _Fields(source, data).reject_typos({"users", "guilds", "roles"})
    return Bypasses(source, _ids(source, data, "users"), _ids(source, data, "guilds"), _ids(source, data, "roles"))
