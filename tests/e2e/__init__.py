"""End to end: real DSPy programs against FakeLLMServer, recorded into a real database."""
