"""Tests of dspy_tokens.ingest: row building, the background writer, spill and replay."""
