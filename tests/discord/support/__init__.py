"""Helpers of the Discord tests: the offline discord.py harness (``harness``), the bot under test (``bot``),
stored calls with Discord ids (``rows``) and a PEP 563 user module (``future_annotated_commands``)."""
