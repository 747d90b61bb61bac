"""Benchmarks for dspy-tokens: ``python -m benchmarks [--quick]``. See ``benchmarks/README.md``."""
