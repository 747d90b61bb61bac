"""Text the write path must store exactly as given on every backend: PostgreSQL writes rows with ``COPY``, whose
text format gives tabs, newlines, backslashes and ``\\N`` a meaning of their own."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

from tests.support.db import all_rows
from tests.support.rows import insert, seed_row

AWKWARD = [
    "tab\there", "new\nline", "carriage\rreturn", "crlf\r\n", "back\\slash", "\\N", "\\.", "\\", "ends with \\",
    "\\\\N\\t", 'quote " and \'', "caf\u00e9 \u65e5\u672c\u8a9e \U0001f600 e\u0301", "", " ", "a,b;c|d", "\x0b\x08\x1b",
]


def test_awkward_text_and_values_round_trip_exactly(database_url):
    """Every awkward text (COPY's own escapes among them) comes back as written, in every text column; an empty
    string stays empty (not NULL), a literal ``\\N`` stays text; exponent decimals and whole-second times too."""
    moment = datetime(2025, 3, 12, 10, 30, tzinfo=timezone.utc)
    rows = [seed_row(feature=text, module=text, error=text or None, session_id=f"s{i}{text}", created_at=moment,
                     metadata=f'{{"k": "{i}"}}', cost_usd=Decimal("1E-7"), call_index=i)
            for i, text in enumerate(AWKWARD)]
    insert(database_url, rows)
    stored = {row["call_index"]: row for row in all_rows(database_url)}
    assert len(stored) == len(AWKWARD)
    for i, text in enumerate(AWKWARD):
        row = stored[i]
        assert (row["feature"], row["module"], row["error"], row["session_id"]) == (text, text, text or None,
                                                                                      f"s{i}{text}"), i
        assert Decimal(str(row["cost_usd"])) == Decimal("1E-7")
        assert row["metadata"] == f'{{"k": "{i}"}}'
        assert row["user_id"] is None and row["cache_hit"] in (False, 0)
