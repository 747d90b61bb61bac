"""What models.json and token_bypasses.json say, as frozen values (validated by :mod:`.schema`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

PRICE_KEYS = {
    "input_cost_per_token": "input",
    "output_cost_per_token": "output",
    "cache_read_input_token_cost": "cache_read",
    "output_cost_per_reasoning_token": "reasoning",
    "cache_creation_input_token_cost": "cache_write",
    "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
    "input_cost_per_audio_token": "audio_input",
    "output_cost_per_audio_token": "audio_output",
    "input_cost_per_image_token": "image_input",
    "input_cost_per_request": "per_request",
}
TOKEN_LIMIT_KEYS = ("user_limit", "guild_limit", "global_limit", "daily_token_limit")
COST_LIMIT_KEYS = ("user_cost_limit", "guild_cost_limit", "global_cost_limit", "daily_cost_limit", "monthly_cost_limit")
ENFORCEMENT_MODES = ("enforce", "warn", "off")
RULE_SCOPES = ("user", "guild", "global", "channel", "feature")
RULE_METRICS = ("tokens", "cost_usd", "requests")
RULE_ENFORCEMENT = ("enforce", "warn")


@dataclass(frozen=True)
class ModelPrice:
    """USD per token (``per_request``: per call), under the price map's key names (:data:`PRICE_KEYS`). ``None``
    for a rate the entry does not give: the price map's rate for that key is used, when the map knows the model."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    reasoning: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    audio_input: Decimal | None = None
    audio_output: Decimal | None = None
    image_input: Decimal | None = None
    per_request: Decimal | None = None

    @property
    def is_complete(self) -> bool:
        return self.input is not None and self.output is not None

    def as_map_keys(self) -> dict[str, Decimal]:
        """The rates this entry names, keyed as in the price map (what it overrides there)."""
        return {key: getattr(self, attr) for key, attr in PRICE_KEYS.items() if getattr(self, attr) is not None}


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
class AlertSettings:
    """``"alerts"``: the fractions of a limit at which to tell someone, and where."""

    thresholds: tuple[float, ...] = ()
    webhook_url: str | None = None
    discord_channel_id: int | None = None


@dataclass(frozen=True)
class LimitSpec:
    """One entry of ``"limits": [...]``. ``window`` is ``"<n>d"``, ``"<n>h"`` or ``"1mo"``; ``max`` is tokens or
    requests (int), or US dollars (Decimal) for ``cost_usd``; ``model`` and ``fallback`` are model labels."""

    scope: str
    metric: str
    max: int | Decimal
    window: str = "30d"
    calendar: bool = False
    model: str | None = None
    enforcement: str = "enforce"
    fallback: str | None = None
    alerts: AlertSettings | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        return self.name or f"limits[{self.scope}.{self.metric}.{self.window}{'.' + self.model if self.model else ''}]"


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
    estimate_usage: bool = True  # no usage reported: count it with LiteLLM's tokenizer (flagged) and limit it
    fail_open: bool = True  # when the database cannot be asked: allow (and log) rather than refuse everyone
    limits: tuple[LimitSpec, ...] = ()
    alerts: AlertSettings | None = None

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
