"""Capture: what runs on the caller's thread (the DSPy callback, attribution context) and what knows DSPy's
shapes (usage normalisation). No I/O here; the only package that imports DSPy internals."""

from .callback import CallRecorder, ObservedCall
from .embeddings import install as record_embeddings
from .context import Attribution, current_attribution, propagate, usage_context
from .usage import TokenCounts, is_cache_hit, normalize_usage

__all__ = ["Attribution", "CallRecorder", "ObservedCall", "TokenCounts", "current_attribution", "is_cache_hit",
           "normalize_usage", "propagate", "record_embeddings", "usage_context"]
