"""Ingest: from an observed call to a durable committed row, on background threads (row building, journal,
batched commits, spill and replay).

Documented for operators (the ``dspy-tokens spill`` commands use it): :class:`SpillDirectory` (what waits where),
:func:`default_spill_dir`, :func:`replay_directory` and :class:`ReplayResult`, and :class:`Health`.
"""

from .health import Health
from .journal import Journal
from .replay import ReplayResult, replay_directory
from .rows import RowBuilder, log_row
from .spill import KINDS, SpillDirectory, SpillFile, default_spill_dir
from .writer import UsageWriter, WriterStats

__all__ = ["Health", "Journal", "KINDS", "ReplayResult", "RowBuilder", "SpillDirectory", "SpillFile", "UsageWriter",
           "WriterStats", "default_spill_dir", "log_row", "replay_directory"]
