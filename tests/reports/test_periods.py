"""Period math: calendar periods (UTC day, Monday-based week, month, leap years), rolling periods, and the plan
that cuts a range into partial days (raw rows), whole days and whole months (rollup buckets)."""

from __future__ import annotations

from datetime import timedelta

from dspy_tokens.reports import period_bounds, plan_spans
from dspy_tokens.store.spans import Span
from dspy_tokens.store.units import GRAIN_DAY, GRAIN_HOUR, GRAIN_MONTH
from tests.support.rows import NOW, at


def test_a_range_is_cut_into_partial_days_whole_days_and_whole_months():
    """The plan behind the speed: ``month`` is one month bucket; rolling edges become raw-row spans."""
    assert plan_spans(at(2025, 3, 1), None) == [Span(GRAIN_MONTH, 2025 * 12 + 2, None)]
    assert plan_spans(at(2025, 3, 12), None, now=NOW) == [Span(GRAIN_DAY, 20159, None)]  # today: day buckets onwards
    # Without a clock every day costs the same: March minus its first eleven days beats its last twenty.
    assert plan_spans(at(2025, 3, 12), None) == [Span(GRAIN_MONTH, 2025 * 12 + 2, None),
                                                 Span(GRAIN_DAY, 20148, 20159, -1)]
    assert plan_spans(None, None) == [Span(GRAIN_MONTH, None, None)]
    assert plan_spans(at(2025, 3, 12, 9), at(2025, 3, 12, 10)) == [Span("raw", at(2025, 3, 12, 9), at(2025, 3, 12, 10))]
    assert plan_spans(at(2025, 1, 15, 13), at(2025, 3, 3, 7)) == [
        Span("raw", at(2025, 1, 15, 13), at(2025, 1, 16)), Span("raw", at(2025, 3, 3), at(2025, 3, 3, 7)),
        Span(GRAIN_MONTH, 2025 * 12 + 1, 2025 * 12 + 2),  # February
        Span(GRAIN_DAY, 20104, 20120), Span(GRAIN_DAY, 20148, 20150)]  # Jan 16-31, Mar 1-2
    assert plan_spans(at(2025, 1, 15), at(2025, 2, 3), months=False) == [Span(GRAIN_DAY, 20103, 20122)]
    assert period_bounds("week", now=at(2025, 3, 16, 23, 59)) == (at(2025, 3, 10), at(2025, 3, 17))  # Sunday
    assert period_bounds("month", now=at(2024, 2, 29, 12)) == (at(2024, 2, 1), at(2024, 3, 1))  # leap year
    assert period_bounds("month", now=at(2024, 12, 31, 23)) == (at(2024, 12, 1), at(2025, 1, 1))
    assert period_bounds("7d", now=NOW) == (NOW - timedelta(days=7), None)  # rolling: open-ended
    # Calendar periods are single buckets: one day, one month.
    assert plan_spans(*period_bounds("today", now=NOW), now=NOW) == [Span(GRAIN_DAY, 20159, 20160)]
    assert plan_spans(*period_bounds("month", now=NOW), now=NOW) == [Span(GRAIN_MONTH, 2025 * 12 + 2, 2025 * 12 + 3)]


def test_a_month_mostly_covered_is_read_as_the_month_minus_the_days_outside_the_range():
    """The dashboard's 30 days up to 2025-03-12 (from Feb 11): February minus its first ten days, plus March so far
    (one open month span), instead of 18 February day buckets; a short edge is still read as its days."""
    feb_1, feb_11, mar_1 = 20120, 20130, 20148
    assert plan_spans(at(2025, 2, 11), None, now=NOW) == [Span(GRAIN_MONTH, 2025 * 12 + 1, None),
                                                           Span(GRAIN_DAY, feb_1, feb_11, -1)]
    # One month without its first two and last three days; days after now cost nothing to subtract.
    assert plan_spans(at(2025, 2, 3), at(2025, 2, 26)) == [
        Span(GRAIN_MONTH, 2025 * 12 + 1, 2025 * 12 + 2), Span(GRAIN_DAY, 20120, 20122, -1),
        Span(GRAIN_DAY, 20145, 20148, -1)]
    assert plan_spans(*period_bounds("week", now=NOW), now=NOW) == [Span(GRAIN_DAY, 20157, 20164)]  # 3 days so far
    assert plan_spans(at(2025, 3, 3), at(2025, 3, 30), now=NOW) == [
        Span(GRAIN_MONTH, 2025 * 12 + 2, 2025 * 12 + 3), Span(GRAIN_DAY, mar_1, 20150, -1),
        Span(GRAIN_DAY, 20177, 20179, -1)]
    assert plan_spans(at(2025, 2, 25), None, now=NOW) == [Span(GRAIN_MONTH, 2025 * 12 + 2, None),
                                                           Span(GRAIN_DAY, 20144, mar_1)]


def test_a_partial_day_is_read_as_its_rows_or_as_its_day_minus_the_rows_outside_the_range():
    """Whichever side of the cut holds less of the day: a rolling week at 10:30 is that day's bucket minus its rows
    before 10:30; a range across one midnight is two raw spans, each within its day (a breakdown by day keys each
    raw span by its day); what lies after now has no rows and costs nothing."""
    mar_5, mar_12 = 20152, 20159
    assert plan_spans(*period_bounds("7d", now=NOW), now=NOW) == [  # ... and March minus its first four days
        Span("raw", at(2025, 3, 5), at(2025, 3, 5, 10, 30), -1), Span(GRAIN_MONTH, 2025 * 12 + 2, None),
        Span(GRAIN_DAY, 20148, mar_5, -1)]
    assert plan_spans(at(2025, 3, 1, 20), at(2025, 3, 2, 5)) == [
        Span("raw", at(2025, 3, 1, 20), at(2025, 3, 2)), Span("raw", at(2025, 3, 2), at(2025, 3, 2, 5))]
    assert plan_spans(at(2025, 2, 3, 1), at(2025, 2, 3, 23)) == [
        Span(GRAIN_DAY, 20122, 20123), Span("raw", at(2025, 2, 3), at(2025, 2, 3, 1), -1),
        Span("raw", at(2025, 2, 3, 23), at(2025, 2, 4), -1)]
    # Today until 20:00, asked at 10:30: no row lies after 20:00 yet, so it is today's bucket minus (no) rows.
    assert plan_spans(at(2025, 3, 12), at(2025, 3, 12, 20), now=NOW) == [
        Span(GRAIN_DAY, mar_12, mar_12 + 1), Span("raw", at(2025, 3, 12, 20), at(2025, 3, 13), -1)]
    assert plan_spans(at(2025, 3, 12, 1), None, now=NOW) == [
        Span("raw", at(2025, 3, 12), at(2025, 3, 12, 1), -1), Span(GRAIN_DAY, mar_12, None)]


def test_with_hour_rollups_a_partial_day_is_hours_and_at_most_two_partial_hours_of_rows():
    """Where hour rollups answer, a partial day is its whole hours (or its day minus the hours outside), and each
    partial hour its raw rows or its hour bucket minus the rows outside: at most an hour of raw rows per range."""
    mar_5, mar_11 = 20152, 20158
    h5, h11 = mar_5 * 24, mar_11 * 24
    # A rolling week at 10:30: March 5th minus its first ten hours and the half hour after them.
    assert plan_spans(*period_bounds("7d", now=NOW), now=NOW, hours=True) == [
        Span(GRAIN_HOUR, h5, h5 + 10, -1), Span("raw", at(2025, 3, 5, 10), at(2025, 3, 5, 10, 30), -1),
        Span(GRAIN_MONTH, 2025 * 12 + 2, None), Span(GRAIN_DAY, 20148, mar_5, -1)]
    # Inside one hour, less than half of it: its rows.
    assert plan_spans(at(2025, 3, 11, 9, 17), at(2025, 3, 11, 9, 44), hours=True) == [
        Span("raw", at(2025, 3, 11, 9, 17), at(2025, 3, 11, 9, 44))]
    # Most of one hour: the hour minus its first and last five minutes of rows.
    assert plan_spans(at(2025, 3, 11, 9, 5), at(2025, 3, 11, 9, 55), hours=True) == [
        Span(GRAIN_HOUR, h11 + 9, h11 + 10), Span("raw", at(2025, 3, 11, 9), at(2025, 3, 11, 9, 5), -1),
        Span("raw", at(2025, 3, 11, 9, 55), at(2025, 3, 11, 10), -1)]
    # 02:40 to 22:10: the day minus hours 0-2 and 23, minus hour 2 and 22 but for their minutes inside the range.
    assert plan_spans(at(2025, 3, 11, 2, 40), at(2025, 3, 11, 22, 10), hours=True) == [
        Span(GRAIN_DAY, mar_11, mar_11 + 1), Span(GRAIN_HOUR, h11, h11 + 2, -1), Span(GRAIN_HOUR, h11 + 2, h11 + 3, -1),
        Span("raw", at(2025, 3, 11, 2, 40), at(2025, 3, 11, 3)), Span(GRAIN_HOUR, h11 + 23, h11 + 24, -1),
        Span(GRAIN_HOUR, h11 + 22, h11 + 23, -1), Span("raw", at(2025, 3, 11, 22), at(2025, 3, 11, 22, 10))]
    # Whole hours only: hour buckets and no raw rows.
    assert plan_spans(at(2025, 3, 10, 13), at(2025, 3, 11, 6), hours=True) == [
        Span(GRAIN_HOUR, h11 - 11, h11), Span(GRAIN_HOUR, h11, h11 + 6)]
