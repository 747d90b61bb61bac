"""Reports: what was spent, by whom, over which period — from the rollups, never by scanning rows — plus
exports and retention."""

from ..store import EXPORT_COLUMNS
from .export import EXPORT_FORMATS, OTEL_ALIASES
from .periods import PERIODS, parse_period, period_bounds, plan_spans
from .pseudonyms import Pseudonyms
from .queries import BREAKDOWNS, Reports
from .results import (
    CallRecord,
    CleanupResult,
    Group,
    Summary,
    Totals,
    decimal_text,
    json_ready,
    to_json_value,
)
from .retention import DEFAULT_KEEP_COUNTERS_DAYS, RetentionScheduler, keep_counters_days, retention_days

__all__ = ["BREAKDOWNS", "CallRecord", "CleanupResult", "DEFAULT_KEEP_COUNTERS_DAYS", "EXPORT_COLUMNS",
           "EXPORT_FORMATS", "Group", "OTEL_ALIASES", "PERIODS", "Pseudonyms", "Reports", "RetentionScheduler",
           "Summary", "Totals", "decimal_text", "json_ready", "keep_counters_days", "parse_period", "period_bounds",
           "plan_spans", "retention_days", "to_json_value"]
