"""Tests of dspy_tokens.testing: the fake OpenAI-compatible server."""
