"""Tests of dspy_tokens.limits: rules, the limiter, the guard and races between processes."""
