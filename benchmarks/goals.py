"""The performance goals the benchmarks are held to, and the one-screen verdict printed after the figures.

A goal names the figures it judges (benchmark and a pattern of their case), the statistic (median or p99) and the
bound in the figure's unit. Every matching figure is judged (one per backend and dataset size); a goal no figure
of this run measured says so instead of passing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .common import Figure, fmt


@dataclass(frozen=True)
class Goal:
    name: str
    bench: str
    case: str  # regular expression searched in Figure.case
    statistic: str  # "median" or "p99"
    bound: float  # in the figure's unit
    better: str = "lower"  # "lower": at most ``bound``; "higher": at least ``bound``

    def matches(self, figure: Figure) -> bool:
        return figure.bench == self.bench and re.search(self.case, figure.case) is not None

    def value(self, figure: Figure) -> float | None:
        if self.statistic == "median":
            return figure.ours.median
        return figure.ours.percentile(99)

    def met(self, value: float) -> bool:
        return value <= self.bound if self.better == "lower" else value >= self.bound


#: Issue 15's goals (see benchmarks/README.md).
GOALS: tuple[Goal, ...] = (
    Goal("CPU per recorded call, all threads, flush included", "overhead", r"CPU per recorded call", "median", 40),
    Goal("caller's wall time over a no-op callback", "overhead", r"cache hit: added by TokenTracker over a no-op",
         "median", 20),
    Goal("writer throughput, SQLite", "writer", r"^sqlite.*TokenTracker", "median", 20_000, "higher"),
    Goal("writer throughput, PostgreSQL", "writer", r"^postgresql.*TokenTracker", "median", 15_000, "higher"),
    Goal("check() p99 at 10M rows", "check", r"10,000,000 rows", "p99", 1_000),
    Goal("every report call p99 at 10M rows", "reports", r"10,000,000 rows", "p99", 20),
    Goal("web API and dashboard p99 at 10M rows", "web", r"10,000,000 rows", "p99", 50),
)


def assess(figures: Sequence[Figure], goals: Sequence[Goal] = GOALS) -> list[dict]:
    """One verdict per (goal, matching figure); a goal nothing measured gets a row with ``met`` None."""
    verdicts = []
    for goal in goals:
        judged = [f for f in figures if goal.matches(f)]
        for figure in judged:
            value = goal.value(figure)
            verdicts.append({"goal": goal.name, "case": figure.case, "statistic": goal.statistic,
                             "value": value, "bound": goal.bound, "unit": figure.unit,
                             "met": None if value is None else goal.met(value)})
        if not judged:
            verdicts.append({"goal": goal.name, "case": "(not measured in this run)", "statistic": goal.statistic,
                             "value": None, "bound": goal.bound, "unit": "", "met": None})
    return verdicts


def render_goals(verdicts: Sequence[dict]) -> str:
    lines = ["| goal | case | statistic | measured | bound | met |", "|---|---|---|---:|---:|---|"]
    for v in verdicts:
        mark = {True: "yes", False: "**no**", None: "-"}[v["met"]]
        measured = "-" if v["value"] is None else f"{fmt(v['value'])} {v['unit']}"
        lines.append(f"| {v['goal']} | {v['case']} | {v['statistic']} | {measured} | {fmt(v['bound'])} | {mark} |")
    met = sum(1 for v in verdicts if v["met"])
    judged = sum(1 for v in verdicts if v["met"] is not None)
    lines.append(f"\n{met} of {judged} judged figures meet their goal.")
    return "\n".join(lines)
