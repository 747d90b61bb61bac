"""Limits: rules from models.json and the decisions made from them, before the LLM runs. Policy only: every read
and hold goes through :attr:`Store.windows <dspy_tokens.store.Store.windows>`."""

from .alerts import Alerts, BudgetAlert
from .decision import LimitDecision
from .guard import Guard
from .limiter import Limiter
from .messages import describe
from .overrides import LimitChange, LimitOverride, Overrides
from .refusals import RefusalCount
from .rules import COST, DAY, MONTH, ROLLING, TOKENS, Rule, rolling_window_start, rules_from_config

__all__ = ["Alerts", "BudgetAlert", "COST", "DAY", "Guard", "LimitChange", "LimitDecision", "LimitOverride", "Limiter",
           "MONTH", "Overrides", "ROLLING", "RefusalCount", "Rule", "TOKENS", "describe", "rolling_window_start",
           "rules_from_config"]
