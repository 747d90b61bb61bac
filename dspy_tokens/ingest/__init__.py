"""Ingest: from an observed call to a durable committed row, on background threads (row building, journal,
batched commits, spill and replay)."""

from .rows import RowBuilder, log_row
from .spill import SpillDirectory, default_spill_dir
from .writer import UsageWriter, WriterStats

__all__ = ["RowBuilder", "SpillDirectory", "UsageWriter", "WriterStats", "default_spill_dir", "log_row"]
