"""``usage_context(metadata=...)``: stored per call through a real DSPy program, bounded, and usable in reports
(``breakdown("metadata:team")``, ``summary(metadata=...)``) with each backend's JSON functions."""

from __future__ import annotations

import json

import dspy
import pytest

from dspy_tokens import usage_context
from tests.support.db import stored_rows


def test_metadata_is_stored_per_call_and_reports_group_and_filter_by_it(tracker, server):
    """Calls in nested contexts store the merged metadata; reports group by one key (calls without it are the
    None group) and filter by several, numbers compared as their text, on every backend."""
    lm = server.lm()
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=lm, callbacks=[tracker]):
        with usage_context(user_id=1, metadata={"team": "a", "experiment": "b"}):
            predict(question="q1")
            with usage_context(metadata={"experiment": "c", "run": 7}):
                predict(question="q2")
        with usage_context(user_id=2, metadata={"team": "z"}):
            predict(question="q3")
        predict(question="q4")
    rows = stored_rows(tracker)
    stored = [json.loads(r["metadata"]) if r["metadata"] else {} for r in rows]
    assert {"team": "a", "experiment": "b"} in stored and {"team": "a", "experiment": "c", "run": 7} in stored
    groups = {g.key: g.calls for g in tracker.breakdown("metadata:team", "month")}
    assert groups == {"a": 2, "z": 1, None: 1}
    team_a = tracker.summary(metadata={"team": "a"})
    assert team_a.calls == 2 and team_a.total_tokens == sum(
        r["total_tokens"] for r in rows if r["metadata"] and json.loads(r["metadata"]).get("team") == "a")
    assert team_a.active_users == 1
    assert tracker.summary(metadata={"team": "a", "experiment": "c"}).calls == 1
    assert tracker.summary(metadata={"run": 7}).calls == 1 == tracker.summary(metadata={"run": "7"}).calls
    assert tracker.summary(metadata={"team": "nobody"}).calls == 0
    by_day = tracker.breakdown(("day", "metadata:experiment"), "month")
    assert sorted(((g.key[1] or ""), g.calls) for g in by_day) == [("", 2), ("b", 1), ("c", 1)]
    assert {(g.key, g.calls) for g in tracker.breakdown("user", "month", metadata={"team": "z"})} == {(2, 1)}


@pytest.mark.parametrize("metadata, problem", [
    ({"team": ["a"]}, "must be a string or a number"),
    ({"team": True}, "must be a string or a number"),
    ({"bad key": "a"}, "metadata keys are"),
    ({"k": "x" * 201}, "values hold at most 200"),
    ({f"k{i}": i for i in range(17)}, "at most 16"),
    ({f"key{i:02d}": "v" * 150 for i in range(15)}, "at most 2048"),
])
def test_metadata_outside_the_documented_bounds_is_refused_where_it_is_written(metadata, problem):
    """Wrong types, keys that are not names, long values, too many keys or too much JSON: a ValueError at
    ``usage_context(...)`` saying which bound, before any call is made."""
    with pytest.raises(ValueError, match=problem):
        usage_context(metadata=metadata)


def test_reports_refuse_a_metadata_key_that_is_not_a_name(sqlite_tracker):
    """A breakdown key outside the key rule never reaches the SQL text."""
    with pytest.raises(ValueError, match="metadata keys are"):
        sqlite_tracker.breakdown("metadata:team') OR 1=1 --")
