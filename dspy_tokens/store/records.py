"""Per-call reads: a session's calls, a user's recent calls, and export pages in portable text form."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterator

from .rows import EXPORT_COLUMNS, UsageRow

Q12 = Decimal("1e-12")
_COST, _HIT, _REPORTED, _CREATED, _ESTIMATED, _METADATA = (EXPORT_COLUMNS.index(c) for c in (
    "cost_usd", "cache_hit", "usage_reported", "created_at", "usage_estimated", "metadata"))


class Records:
    def __init__(self, store):
        self.store = store
        self.db = store.db
        self._p = store.db.param
        self._sqlite = store.dialect == "sqlite"
        self._select = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM token_usage"

    def session(self, session_id: str) -> list[dict]:
        """Every stored call of a session in call order, as dicts of :data:`EXPORT_COLUMNS`."""
        cursor = self.db.execute_sql(f"{self._select} WHERE session_id = {self._p} ORDER BY call_index, id",
                                     (str(session_id),))
        return [self._record(row) for row in cursor.fetchall()]

    def recent(self, user_id: int, guild_id: int | None = None, limit: int = 10) -> list[dict]:
        """A user's last ``limit`` calls (in one guild, if given), newest first."""
        p = self._p
        where, params = f"user_id = {p}", [user_id]
        if guild_id is not None:
            where += f" AND guild_id = {p}"
            params.append(guild_id)
        cursor = self.db.execute_sql(f"{self._select} WHERE {where} ORDER BY created_at DESC, id DESC "
                                     f"LIMIT {int(limit)}", params)
        return [self._record(row) for row in cursor.fetchall()]

    def latest_sessions(self, where: str, params: list, limit: int, scan: int) -> list[str]:
        """The ids of the ``limit`` sessions with the latest calls, latest first, among the last ``scan`` calls
        matching ``where`` (from :meth:`SpanReader.raw_where`): an index walk on ``created_at``, never a scan."""
        cursor = self.db.execute_sql(f"SELECT session_id FROM token_usage{' WHERE ' + where if where else ''} "
                                     f"ORDER BY created_at DESC, id DESC LIMIT {int(scan)}", params)
        found: dict[str, None] = {}
        for (session_id,) in cursor.fetchall():
            found.setdefault(session_id)
            if len(found) == limit:
                break
        return list(found)

    def export_pages(self, where: str, params: list, batch_size: int) -> Iterator[list[list]]:
        """Pages of rows (id order, keyset pagination: constant memory) as *cells*: NULL as None, ints and text
        as stored, booleans ``"true"``/``"false"``, times ISO 8601 UTC with microseconds, costs exact decimal
        text. ``where``/``params`` come from :meth:`SpanReader.raw_where`."""
        sql = (f"{self._select} WHERE id > {self._p}{' AND ' + where if where else ''} "
               f"ORDER BY id LIMIT {int(batch_size)}")
        last_id = 0
        while True:
            page = self.db.execute_sql(sql, (last_id, *params)).fetchall()
            if not page:
                return
            last_id = page[-1][0]
            yield [self._cells(raw) for raw in page]
            if len(page) < batch_size:
                return

    def row_count(self) -> int:
        """How many calls ``token_usage`` holds (an exact count: a progress bar's end)."""
        return int(self.db.execute_sql("SELECT COUNT(*) FROM token_usage").fetchone()[0])

    def usage_row_pages(self, batch_size: int, after_id: int = 0) -> Iterator[tuple[int, list[UsageRow]]]:
        """Every row after ``after_id`` as :class:`UsageRow` values (exact ``Decimal`` costs, UTC-aware times),
        in pages of ``batch_size`` in id order (keyset pagination: constant memory); yields ``(last id, rows)``."""
        sql = f"{self._select} WHERE id > {self._p} ORDER BY id LIMIT {int(batch_size)}"
        last_id = after_id
        while True:
            page = self.db.execute_sql(sql, (last_id,)).fetchall()
            if not page:
                return
            last_id = page[-1][0]
            yield last_id, [self.usage_row(raw) for raw in page]
            if len(page) < batch_size:
                return

    def usage_row(self, raw: Any) -> UsageRow:
        """A raw ``SELECT`` of :data:`EXPORT_COLUMNS` as a :class:`UsageRow` (exact costs, UTC-aware times)."""
        return UsageRow(*self._python(raw)[1:])

    def _record(self, raw: Any) -> dict[str, Any]:
        """A call as a report returns it: :meth:`_python`'s values, its metadata as a dict."""
        row = self._python(raw)
        if row[_METADATA] is not None:
            row[_METADATA] = json.loads(row[_METADATA])
        return dict(zip(EXPORT_COLUMNS, row))

    def _python(self, raw: Any) -> list[Any]:
        """Raw SELECT tuple -> Python values: aware UTC times, exact Decimal costs, booleans."""
        row = list(raw)
        cost = row[_COST]
        if cost is not None:
            row[_COST] = (cost if isinstance(cost, Decimal) else Decimal(cost)).quantize(Q12)
        row[_HIT] = bool(row[_HIT])
        row[_REPORTED] = bool(row[_REPORTED])
        row[_ESTIMATED] = bool(row[_ESTIMATED])
        created = row[_CREATED]
        if self._sqlite:
            row[_CREATED] = None if created is None else datetime.fromisoformat(created).replace(tzinfo=timezone.utc)
        else:
            row[_CREATED] = None if created is None else created.replace(tzinfo=timezone.utc)
        return row

    def _cells(self, raw: Any) -> list[Any]:
        # Only these five columns are converted (a few µs per row); the rest go out as the driver returned them.
        row = list(raw)
        cost = row[_COST]
        if cost is not None:
            # SQLite: the double nearest to a 12-place decimal, so 12 places recover it; others: NUMERIC(24,12).
            text = f"{cost:.12f}" if self._sqlite else format(cost, "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            row[_COST] = text
        row[_HIT] = "true" if row[_HIT] else "false"
        row[_REPORTED] = "true" if row[_REPORTED] else "false"
        row[_ESTIMATED] = "true" if row[_ESTIMATED] else "false"
        created = row[_CREATED]
        if isinstance(created, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS.ffffff'
            row[_CREATED] = (created[:10] + "T" + created[11:] + "+00:00" if len(created) == 26
                             else datetime.fromisoformat(created).isoformat(timespec="microseconds") + "+00:00")
        else:
            row[_CREATED] = created.replace(tzinfo=None).isoformat(timespec="microseconds") + "+00:00"
        return row
