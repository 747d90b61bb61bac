"""Tests of dspy_tokens.store: migrations and the write path with its aggregates."""
