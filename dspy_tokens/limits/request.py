"""``Request``: who asks, for which model — the ids every rule counts by, validated once."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .._ids import checked_id
from ..store.units import feature_scope_id


@dataclass(frozen=True)
class Request:
    user_id: int | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    feature: str | None = None
    model: str | None = None  # normalised: the configured model's provider/name when it is one of models.json's
    role_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, user_id=None, guild_id=None, channel_id=None, feature=None, model=None, role_ids=()) -> "Request":
        # The ids usage_context accepts ("42" is user 42), validated before any database work.
        return cls(checked_id("usage_context", "user_id", user_id), checked_id("usage_context", "guild_id", guild_id),
                   checked_id("usage_context", "channel_id", channel_id),
                   None if feature is None else str(feature)[:100], model, tuple(role_ids))

    def on(self, model: str | None) -> "Request":
        return replace(self, model=model)

    @property
    def hold_ids(self) -> dict:
        """The ids a reservation is stored under."""
        return {"user_id": self.user_id, "guild_id": self.guild_id, "channel_id": self.channel_id,
                "feature_id": feature_scope_id(self.feature) if self.feature else None}
