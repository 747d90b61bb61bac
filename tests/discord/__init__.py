"""Tests of the Discord integration (``dspy_tokens_discord``), driven through discord.py's real dispatch."""
