"""``LimitDecision``: the answer to "may this request run?", with the numbers to explain it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from .rules import COST, TOKENS


@dataclass(frozen=True)
class LimitDecision:
    """``scope``/``rule``/``used``/``limit`` describe the refusing rule, or — when allowed — the rule closest to its
    limit (``None`` when no rule applies). Cost amounts are ``Decimal`` dollars. ``used`` is committed usage in the
    window; ``reserved`` is what in-flight guarded runs hold; ``window_start`` is where the window begins now.
    """

    allowed: bool
    scope: str | None = None
    rule: str | None = None
    metric: str = TOKENS
    used: int | Decimal = 0
    reserved: int | Decimal = 0
    held_until: datetime | None = None
    limit: int | Decimal | None = None
    requested: int | Decimal = 0
    resets_at: datetime | None = None
    window: str | None = None
    window_start: datetime | None = None
    message: str = "No usage limits apply."
    warning: bool = False  # soft threshold reached, or over the limit in "warn" mode
    exceeded: bool = False  # a rule refuses (even if "warn"/"off" lets the request through)
    enforcement: str = "enforce"
    bypassed: bool = False
    unknown_cost_calls: int = 0  # calls in the window whose cost is unknown: cost rules cannot see them
    reservation_id: str | None = None
    #: How ``requested`` was sized: "given" (``estimate=``), "prompt" (the prompt counted plus the output cap),
    #: "max_tokens" (the model's cap), "default" (``default_estimate_tokens``), or "left" (an automatic estimate cut
    #: down to what the limits have left: a reservation nobody asked for never makes a request impossible).
    estimate_source: str = "given"
    hold_tokens: int = 0  # the tokens this decision's reservation holds (a guarded run tops it up call by call)
    forecast_exhausted_at: datetime | None = None  # at the recent pace, when this rule's limit is reached
    fallback_model: str | None = None  # the model a guarded run was admitted on instead (the rule's "fallback")
    others: tuple["LimitDecision", ...] = field(default=(), repr=False)  # every other applicable rule

    @property
    def remaining(self) -> int | Decimal | None:
        if self.limit is None:
            return None
        return max(self.limit - self.used - self.reserved, Decimal(0) if self.metric == COST else 0)

    @property
    def ratio(self) -> float:
        if not self.limit:
            return 0.0
        return float((self.used + self.reserved) / self.limit)

    @property
    def rules(self) -> tuple["LimitDecision", ...]:
        """This decision and every other applicable rule's, the main one first (empty when no rule applies)."""
        return (self, *self.others) if self.limit is not None else ()
