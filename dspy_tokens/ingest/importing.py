"""Usage from elsewhere into a store: another dspy-tokens database (:func:`copy_rows`), our own exports (JSON lines
or CSV) and GePeTo's SQLite table (:func:`import_file`).

Every row goes in through :meth:`Store.write_batch`, the writer's own path: one transaction per batch, the hourly
counters, the daily cube and the rollups maintained with the rows, and a row whose ``call_uuid`` is already stored
skipped. So a second run adds nothing, and an interrupted run is resumed by running it again.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .._ids import optional_id
from ..errors import ConfigurationError
from ..pricing import PriceBook
from .._metadata import metadata_text
from ..store import ROW_COLUMNS, Store, UsageRow
from ..store.foreign import GepetoTable
from .gepeto import gepeto_row
from .rows import storable

IMPORT_FORMATS = ("jsonl", "csv", "gepeto-sqlite")
#: ``progress(rows_read, total)``; ``total`` is ``None`` when it is not known in advance (CSV).
Progress = Callable[[int, "int | None"], None]
_INTS = ("call_index", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens",
         "latency_ms", "cache_write_tokens", "audio_tokens")
#: Columns added after the first release: an older export without them imports with NULLs.
_IDS = ("user_id", "guild_id", "channel_id")
_OPTIONAL_TEXT = ("feature", "module", "response_model", "error", "service_tier", "price_version")


@dataclass(frozen=True)
class TransferResult:
    """What a copy or an import did: rows ``read`` from the source, ``added`` to the store, and ``skipped``
    because their ``call_uuid`` was already there (a second run skips them all)."""

    read: int
    added: int

    @property
    def skipped(self) -> int:
        return self.read - self.added


def zone_of(value: str | tzinfo | None) -> tzinfo | None:
    """A time zone from its IANA name (``Europe/Berlin``, ``UTC``), or a ``ConfigurationError`` naming the fix."""
    if value is None or isinstance(value, tzinfo):
        return value
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigurationError("import", "timezone", value,
                                 "must be an IANA time zone name such as Europe/Berlin, America/New_York or UTC"
                                 ) from None


def copy_rows(source: Store, target: Store, *, batch_size: int = 5000,
              progress: Progress | None = None) -> TransferResult:
    """Copy every row of ``source`` into ``target`` (creating its schema), with the aggregates rebuilt there from
    the rows. Rows keep their ``call_uuid``; ``target`` gives them its own ids, in the source's order."""
    if source.url == target.url:
        raise ConfigurationError("copy", "--to", target.redacted_url, "must be another database than --from")
    total = source.records.row_count()
    pages = (rows for _, rows in source.records.usage_row_pages(batch_size))
    return _write(target, pages, total, progress)


def import_file(store: Store, path: str | Path, fmt: str, *, timezone: str | tzinfo | None = None,
                prices: PriceBook | None = None, batch_size: int = 5000,
                progress: Progress | None = None) -> TransferResult:
    """Add the calls in ``path`` to ``store``.

    ``fmt`` is ``jsonl`` or ``csv`` (a ``dspy-tokens export``, not anonymized: it round-trips exactly, JSON
    lines including the difference between NULL and empty text) or ``gepeto-sqlite`` (GePeTo's ``token_usage``
    or ``usage`` table: naive local timestamps are read in ``timezone``, which they need; each row gets a
    ``call_uuid`` derived from its content, so importing the file again adds nothing; costs are priced by
    ``prices`` (from ``models.json`` or the price map) and marked ``import:<source>`` in ``cost_source``).
    ``timezone`` also places naive times of the other formats; our exports have none.
    """
    if fmt not in IMPORT_FORMATS:
        raise ConfigurationError("import", "format", fmt, f"must be one of {', '.join(IMPORT_FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    zone = zone_of(timezone)
    if fmt == "gepeto-sqlite":
        if prices is None:
            raise ValueError("import_file: gepeto-sqlite needs prices= (a PriceBook) to price the calls")
        table = GepetoTable(path)
        try:
            pages = ([gepeto_row(raw, zone, prices) for raw in page] for page in table.pages(batch_size))
            return _write(store, pages, table.count(), progress)
        finally:
            table.close()
    with open(Path(path), encoding="utf-8", newline="") as fh:
        if fmt == "jsonl":
            total = sum(1 for line in fh if line.strip())
            fh.seek(0)
            rows = _jsonl_rows(fh, str(path), zone)
        else:
            total = None
            rows = _csv_rows(fh, str(path), zone)
        return _write(store, _batched(rows, batch_size), total, progress)


def _write(store: Store, pages: Iterable[list[UsageRow]], total: int | None,
           progress: Progress | None) -> TransferResult:
    read = added = 0
    if progress is not None:
        progress(0, total)
    for page in pages:
        added += store.write_batch([storable(row) for row in page])
        read += len(page)
        if progress is not None:
            progress(read, total)
    return TransferResult(read, added)


def _batched(rows: Iterator[UsageRow], size: int) -> Iterator[list[UsageRow]]:
    batch: list[UsageRow] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _jsonl_rows(lines: Iterable[str], name: str, zone: tzinfo | None) -> Iterator[UsageRow]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        if line.strip() == "[":
            raise ValueError(f"{where}: a JSON array (`export --format json`); import reads JSON lines: export "
                             "with --format jsonl")
        try:
            cells = json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            raise ValueError(f"{where}: not a JSON object ({exc})") from None
        if not isinstance(cells, dict):
            raise ValueError(f"{where}: not a JSON object")
        yield _export_row(cells, where, zone, csv_cells=False)


def _csv_rows(lines: Iterable[str], name: str, zone: tzinfo | None) -> Iterator[UsageRow]:
    reader = csv.DictReader(lines)
    for cells in reader:
        yield _export_row(cells, f"{name}:{reader.line_num}", zone, csv_cells=True)


def _export_row(cells: dict[str, Any], where: str, zone: tzinfo | None, *, csv_cells: bool) -> UsageRow:
    """One exported row (cells as CSV text or JSON values) as a :class:`UsageRow`, or a ValueError naming the line
    and column."""
    missing = [c for c in ROW_COLUMNS if c not in cells and c not in UsageRow._field_defaults]
    if missing:
        raise ValueError(f"{where}: not a dspy-tokens export (missing columns: {', '.join(missing)})")
    if csv_cells:  # CSV writes NULL as an empty field
        cells = {key: None if value == "" else value for key, value in cells.items()}
    values: dict[str, Any] = {}
    column = ""
    try:
        for column in ROW_COLUMNS:
            if column not in cells:  # an export from before the column existed
                values[column] = UsageRow._field_defaults[column]
                continue
            value = cells[column]
            if column in _IDS:
                values[column] = optional_id(value)
            elif column in _INTS:
                values[column] = None if value is None else _integer(value)
            elif column == "metadata":
                values[column] = None if value is None else _metadata(value)
            elif column in ("cache_hit", "usage_reported", "usage_estimated"):
                values[column] = _boolean(value)
            elif column == "cost_usd":
                values[column] = None if value is None else _decimal(value)
            elif column == "created_at":
                values[column] = _moment(value, zone)
            elif column in _OPTIONAL_TEXT:
                values[column] = None if value is None else str(value)
            else:  # call_uuid, session_id, model, cost_source, request_type: never NULL
                if value is None or value == "":
                    raise ValueError("must not be empty")
                values[column] = str(value)
    except (ValueError, TypeError, InvalidOperation) as exc:
        told = str(exc) if "got" in str(exc) else f"{exc}, got {cells[column]!r}"
        hint = " (anonymized exports cannot be imported)" if column in _IDS else ""
        raise ValueError(f"{where}: {column} {told}{hint}") from None
    if values["call_index"] is None:
        raise ValueError(f"{where}: call_index must not be empty")
    return UsageRow(**values)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("must be an integer")
    return int(value)


def _metadata(value: Any) -> str:
    """Exported metadata (an object in JSON exports, its JSON text in CSV) as the stored JSON text."""
    if isinstance(value, str):
        value = json.loads(value, parse_float=Decimal)
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return metadata_text(value)


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError("must be true or false")


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, str, Decimal)):
        raise ValueError("must be a decimal number")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a non-negative decimal number")
    return amount


def _moment(value: Any, zone: tzinfo | None) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        if zone is None:
            raise ValueError("is a time without a zone: give the zone it was written in (--timezone)")
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(timezone.utc)
