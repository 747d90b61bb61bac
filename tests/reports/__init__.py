"""Tests of dspy_tokens.reports: periods, queries, exports and retention."""
