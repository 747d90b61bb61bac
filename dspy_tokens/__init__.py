"""dspy-tokens: who spent how many tokens in your DSPy program, what it cost, and limits before the call."""

from .config import Bypasses, Config, ModelEntry, ModelPrice, load_bypasses, load_config
from .context import propagate, usage_context
from .errors import ConfigurationError, DspyTokensError, TokenLimitExceeded
from .reports import Reports
from .tracker import TokenTracker

__all__ = [
    "Bypasses", "Config", "ConfigurationError", "DspyTokensError", "ModelEntry", "ModelPrice", "TokenLimitExceeded",
    "Reports", "TokenTracker", "load_bypasses", "load_config", "propagate", "usage_context",
]
