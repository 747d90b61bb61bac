"""Tests of dspy_tokens.capture: the DSPy callback, attribution context and usage normalisation."""
