"""dspy-tokens: who spent how many tokens in your DSPy program, what it cost, and limits before the call.

Names are imported on first use, so ``import dspy_tokens`` (and the CLI's ``--help``) does not import DSPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "Bypasses": "config", "Config": "config", "ModelEntry": "config", "ModelPrice": "config",
    "load_bypasses": "config", "load_config": "config",
    "ConfigurationError": "errors", "DspyTokensError": "errors", "StorageError": "errors",
    "TokenLimitExceeded": "errors",
    "parse_id": "_ids",
    "propagate": "capture.context", "usage_context": "capture.context",
    "LimitChange": "limits.overrides", "LimitDecision": "limits.decision", "RefusalCount": "limits.refusals",
    "BudgetAlert": "limits.alerts",
    "CleanupResult": "reports.results", "Group": "reports.results", "Summary": "reports.results",
    "Totals": "reports.results", "CallRecord": "reports.results", "Reports": "reports.queries",
    "Health": "ingest.health", "WriterStats": "ingest.writer",
    "RepriceGroup": "ingest.repricing", "RepriceResult": "ingest.repricing",
    "TokenTracker": "tracker",
}
__all__ = [
    "BudgetAlert", "Bypasses", "CallRecord", "CleanupResult", "Config", "ConfigurationError", "DspyTokensError",
    "Group", "Health", "LimitChange", "LimitDecision", "ModelEntry", "ModelPrice", "RefusalCount", "RepriceGroup",
    "RepriceResult", "Reports", "StorageError", "Summary", "TokenLimitExceeded", "TokenTracker", "Totals",
    "WriterStats", "load_bypasses", "load_config", "parse_id", "propagate", "usage_context",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads each name on first use
    from ._ids import parse_id
    from .capture.context import propagate, usage_context
    from .config import Bypasses, Config, ModelEntry, ModelPrice, load_bypasses, load_config
    from .errors import ConfigurationError, DspyTokensError, StorageError, TokenLimitExceeded
    from .ingest.health import Health
    from .ingest.repricing import RepriceGroup, RepriceResult
    from .ingest.writer import WriterStats
    from .limits.alerts import BudgetAlert
    from .limits.decision import LimitDecision
    from .limits.overrides import LimitChange
    from .limits.refusals import RefusalCount
    from .reports.queries import Reports
    from .reports.results import CallRecord, CleanupResult, Group, Summary, Totals
    from .tracker import TokenTracker


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dspy_tokens' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
