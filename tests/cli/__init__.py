"""Tests of dspy_tokens.cli through click's CliRunner."""
