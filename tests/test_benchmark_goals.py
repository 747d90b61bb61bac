"""The benchmarks' verdict: each goal judges every figure it names, by the statistic it names, and a goal nothing
measured is reported as such rather than passed."""

from __future__ import annotations

from benchmarks.common import Figure, Stat
from benchmarks.goals import Goal, assess, render_goals

P99_GOAL = Goal("check p99", "check", r"10,000,000 rows", "p99", 1_000)
THROUGHPUT_GOAL = Goal("writer", "writer", r"^sqlite", "median", 20_000, "higher")


def latency(case: str, samples: list[float]) -> Figure:
    return Figure("check", case, "µs", Stat([sorted(samples)[len(samples) // 2]], samples=samples))


def test_the_p99_of_the_samples_is_judged_not_the_median():
    fast_median_slow_tail = latency("sqlite, 10,000,000 rows", [100.0] * 98 + [5_000.0] * 2)
    (verdict,) = assess([fast_median_slow_tail], [P99_GOAL])
    assert verdict["value"] == 5_000.0 and verdict["met"] is False


def test_every_matching_figure_gets_a_verdict_and_others_are_ignored():
    figures = [latency("sqlite, 10,000,000 rows", [500.0] * 100),
               latency("postgresql, 10,000,000 rows", [900.0] * 98 + [1_200.0] * 2),
               latency("sqlite, 1,000,000 rows", [9_999.0] * 100)]
    verdicts = assess(figures, [P99_GOAL])
    assert [(v["case"], v["met"]) for v in verdicts] == [("sqlite, 10,000,000 rows", True),
                                                         ("postgresql, 10,000,000 rows", False)]


def test_a_higher_is_better_goal_needs_at_least_its_bound():
    slow = Figure("writer", "sqlite: TokenTracker", "rows/s", Stat([19_999.0]), better="higher")
    fast = Figure("writer", "sqlite: TokenTracker", "rows/s", Stat([20_000.0]), better="higher")
    assert [v["met"] for v in assess([slow, fast], [THROUGHPUT_GOAL])] == [False, True]


def test_a_goal_nothing_measured_is_not_counted_as_met():
    (verdict,) = assess([], [P99_GOAL])
    assert verdict["met"] is None and "not measured" in verdict["case"]
    assert "0 of 0 judged figures meet their goal" in render_goals([verdict])
