"""Run-time limits as rules: what ``tracker.set_limit`` / ``set_bypass`` / ``reset_usage`` stored for the
scopes of a request, read from the database at every decision (so a change holds in every process at its next
check). An override's rule replaces the configured rules of the same scope and metric for that one id (a
per-model rule of models.json stays); a bypass admits; a reset makes windows start at the reset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import Config
from ..store import Store
from ..store.units import SCOPE_CHANNEL, SCOPE_GLOBAL, SCOPE_GUILD, SCOPE_USER
from .request import Request
from .rules import COST, REQUESTS, ROLLING, TOKENS, Rule, window_of

#: The scopes a run-time change can name (each by its id; global by 0).
SCOPES = (SCOPE_USER, SCOPE_GUILD, SCOPE_CHANNEL, SCOPE_GLOBAL)
_METRIC_FIELDS = ((TOKENS, "tokens"), (COST, "cost_pusd"), (REQUESTS, "requests"))


def scope_keys(request: Request) -> list[tuple[str, int]]:
    ids = ((SCOPE_USER, request.user_id), (SCOPE_GUILD, request.guild_id), (SCOPE_CHANNEL, request.channel_id))
    return [(scope, sid) for scope, sid in ids if sid is not None] + [(SCOPE_GLOBAL, 0)]


def override_rules(key: tuple[str, int], found: dict[str, Any], config: Config) -> list[Rule]:
    scope, scope_id = key
    if found["window"]:
        window, hours = window_of(found["window"], False)
    else:
        window, hours = ROLLING, 24 * config.time_window_days
    rules = []
    for metric, column in _METRIC_FIELDS:
        if found[column] is not None:
            rules.append(Rule(f"override[{scope}:{scope_id}].{metric}", scope, metric, int(found[column]), window,
                              hours // 24, hours=hours if window == ROLLING else None, scope_only=scope_id))
    return rules


@dataclass
class Found:
    """A request's overrides: ``rules`` to add, whether one of its scopes is bypassed, and the usage resets in
    the shape :class:`~dspy_tokens.limits.evaluate.Ask` takes."""

    bypassed: bool = False
    rules: list[Rule] = field(default_factory=list)
    resets: dict = field(default_factory=dict)

    def apply(self, rules: list[Rule]) -> list[Rule]:
        """``rules`` (configured ones and these overrides, already filtered to the request) without the
        configured rules an override replaces."""
        replaced = {(r.scope, r.metric) for r in rules if r.scope_only is not None}
        return [r for r in rules if r.scope_only is not None or r.model is not None
                or (r.scope, r.metric) not in replaced]


class Overrides:
    """Reads a request's overrides: one query, plus one for the baselines when a scope was reset."""

    def __init__(self, store: Store, config: Config):
        self.store, self.config = store, config

    def read(self, request: Request) -> Found:
        keys = scope_keys(request)
        stored = self.store.overrides.read(keys)
        found = Found()
        if not stored:
            return found
        found.bypassed = any(o["bypass"] for o in stored.values())
        for key, values in stored.items():
            found.rules.extend(override_rules(key, values, self.config))
        reset = [key for key, values in stored.items() if values["reset_hour"] is not None]
        if reset:
            baselines = self.store.overrides.baselines(reset)
            found.resets = {key: (int(stored[key]["reset_hour"]), baselines.get(key, {})) for key in reset}
        return found
