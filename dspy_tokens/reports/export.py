"""Streaming export of the raw rows as CSV, a JSON array or JSON lines, optionally anonymised.

Columns are the table's (:data:`~dspy_tokens.store.EXPORT_COLUMNS`; OTel GenAI equivalents in
:data:`OTEL_ALIASES`). Times are ISO 8601 UTC, costs exact decimals (strings in JSON, like ids), NULL is empty in CSV and null
in JSON. ``anonymize=True`` replaces user, guild and channel ids by a salted hash (HMAC-SHA256, 16 hex digits):
equal ids get equal hashes within one export; the salt is random per export, so two exports do not link. Memory
stays constant: rows are read in keyset pages by id.
"""

from __future__ import annotations

import csv
import json
import os
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Callable

from ..store import EXPORT_COLUMNS, TEXT_LIMITS, Store
from .pseudonyms import Pseudonyms

EXPORT_FORMATS = ("csv", "json", "jsonl")
ANONYMIZED_COLUMNS = ("user_id", "guild_id", "channel_id")
# OpenTelemetry GenAI names of the exported columns, for readers mapping an export onto OTel conventions.
OTEL_ALIASES = {
    "prompt_tokens": "gen_ai.usage.input_tokens",
    "completion_tokens": "gen_ai.usage.output_tokens",
    "cached_tokens": "gen_ai.usage.cache_read.input_tokens",
    "reasoning_tokens": "gen_ai.usage.reasoning.output_tokens",
    "model": "gen_ai.request.model",
    "response_model": "gen_ai.response.model",
    "session_id": "gen_ai.conversation.id",
}
# Strings in JSON: every text column, and 64-bit ids and money (a JSON number loses an id's digits past 2**53 in
# most readers). metadata is JSON text already: written as the object it is.
_JSON_TEXT = {*TEXT_LIMITS, "created_at", "id", "user_id", "guild_id", "channel_id", "cost_usd"}


def export(store: Store, fmt: str, out, *, filters: dict, since=None, until=None, anonymize: bool = False,
           batch_size: int = 5000, progress: Callable[[int], None] | None = None) -> int:
    """Write the rows matching ``filters`` in ``[since, until)`` to ``out`` (a text file object, or a path;
    open files with ``newline=""`` for CSV). Returns the number of rows."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(EXPORT_FORMATS)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if out is None:
        raise ValueError("export needs out=: a text file object or a path")
    if isinstance(out, (str, os.PathLike)):
        with open(Path(out), "w", encoding="utf-8", newline="") as fh:
            return export(store, fmt, fh, filters=filters, since=since, until=until, anonymize=anonymize,
                          batch_size=batch_size, progress=progress)
    anonymizer = _Anonymizer() if anonymize else None
    sink = _SINKS[fmt](out, anonymize)
    where, params = store.spans.raw_where(filters, since, until)
    written = 0
    sink.start()
    for page in store.records.export_pages(where, params, batch_size):
        if anonymizer is not None:
            page = [anonymizer.apply(cells) for cells in page]
        sink.rows(page)
        written += len(page)
        if progress is not None:
            progress(written)
    sink.finish()
    return written


class _Anonymizer:
    """User/guild/channel ids of export cells -> pseudonyms: stable within one export, unlinkable across exports."""

    def __init__(self):
        self.pseudonyms = Pseudonyms()
        self.positions = [(EXPORT_COLUMNS.index(c), c) for c in ANONYMIZED_COLUMNS]

    def apply(self, row: list) -> list:
        for position, column in self.positions:
            if row[position] is not None:
                row[position] = self.pseudonyms(column, row[position])
        return row


class _CsvSink:
    def __init__(self, out, anonymize: bool = False):
        self.writer = csv.writer(out)

    def start(self):
        self.writer.writerow(EXPORT_COLUMNS)

    def rows(self, rows):
        self.writer.writerows(rows)  # None is written as an empty field

    def finish(self):
        pass


class _JsonLinesSink:
    """One JSON object per line. Ids (row, user, guild, channel) and costs are strings, exact whatever the reader
    (``jq`` turns 111111111111111111 as a number into 111111111111111100); metadata is a JSON object."""

    def __init__(self, out, anonymize: bool = False):
        self.out = out
        text = _JSON_TEXT | (set(ANONYMIZED_COLUMNS) if anonymize else set())
        self.columns = [(json.dumps(c) + ":", c in text) for c in EXPORT_COLUMNS]

    def encode(self, row) -> str:
        quote = encode_basestring
        return "{" + ",".join(
            key + ("null" if value is None else quote(str(value)) if is_text else str(value))
            for (key, is_text), value in zip(self.columns, row)) + "}"

    def start(self):
        pass

    def rows(self, rows):
        encode = self.encode
        self.out.write("".join(encode(row) + "\n" for row in rows))

    def finish(self):
        pass


class _JsonArraySink(_JsonLinesSink):
    """A valid JSON array written incrementally: ``[``, objects separated by commas, ``]``."""

    def start(self):
        self.out.write("[")
        self.separator = "\n"

    def rows(self, rows):
        encode = self.encode
        parts = []
        for row in rows:
            parts.append(self.separator)
            parts.append(encode(row))
            self.separator = ",\n"
        self.out.write("".join(parts))

    def finish(self):
        self.out.write("\n]\n")


_SINKS: dict[str, Callable[[Any, bool], _CsvSink | _JsonLinesSink]] = {
    "csv": _CsvSink, "json": _JsonArraySink, "jsonl": _JsonLinesSink}
