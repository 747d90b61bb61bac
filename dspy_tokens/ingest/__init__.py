"""Ingest: from an observed call to a durable committed row, on background threads (row building, journal,
batched commits, spill and replay).

Documented for operators (the ``dspy-tokens spill`` commands use it): :class:`SpillDirectory` (what waits where),
:func:`default_spill_dir`, :func:`replay_directory` and :class:`ReplayResult`, and :class:`Health`. Importers (the
``dspy-tokens copy`` and ``import`` commands): :func:`copy_rows`, :func:`import_file`, :class:`TransferResult`.
"""

from .health import Health
from .importing import IMPORT_FORMATS, TransferResult, copy_rows, import_file
from .journal import Journal
from .replay import ReplayResult, replay_directory
from .rows import RowBuilder, log_row
from .spill import KINDS, SpillDirectory, SpillFile, default_spill_dir
from .writer import UsageWriter, WriterStats

__all__ = ["Health", "IMPORT_FORMATS", "Journal", "KINDS", "ReplayResult", "RowBuilder", "SpillDirectory",
           "SpillFile", "TransferResult", "UsageWriter", "WriterStats", "copy_rows", "default_spill_dir",
           "import_file", "log_row", "replay_directory"]
