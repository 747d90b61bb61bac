"""Shared by the limit tests (and the store's rebuild test): a fixed clock, ids, models.json documents given as
keyword arguments, and usage seeded into a tracker's database through the write path."""

from __future__ import annotations

from datetime import datetime, timezone

from dspy_tokens.config import Config, parse_config
from tests.support.rows import insert, seed_row

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=timezone.utc)
USER, GUILD, OTHER_USER = 42, 7, 43


def config(**values) -> Config:
    """A models.json document given as keyword arguments (validated as the file would be)."""
    return parse_config(values, "models.json")


def seed(tracker, *rows: dict) -> None:
    """Store hand-made rows (``seed_row`` columns; defaults: a priced gpt-4o-mini call made now) in the tracker's
    database, through the writer's own path so the counters are maintained."""
    insert(tracker.database_url, [seed_row(**r) for r in rows])
