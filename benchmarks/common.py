"""Shared pieces of the benchmarks: the run context, figures (ours beside a baseline), statistics and the table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence


@dataclass
class Context:
    """What every benchmark module's ``run(ctx)`` receives."""

    quick: bool
    work_dir: Path  # scratch space for this invocation (deleted at the end)
    cache_dir: Path  # generated datasets, kept between invocations
    fresh: bool = False  # rebuild cached datasets
    say: Callable[[str], None] = print
    backends: dict[str, str | None] = field(default_factory=dict)  # backend -> None if usable, else why not

    def usable(self, backend: str) -> bool:
        return self.backends.get(backend) is None


@dataclass
class Stat:
    """One measured quantity over several runs: the per-run values, and optionally every sample (latencies)."""

    values: list[float]
    samples: list[float] | None = None  # pooled per-operation samples, for percentiles

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def percentile(self, q: float) -> float | None:
        data = sorted(self.samples or [])
        if not data:
            return None
        k = min(len(data) - 1, max(0, math.ceil(q / 100 * len(data)) - 1))
        return data[k]

    def to_json(self) -> dict:
        out = {"median": self.median, "min": self.min, "max": self.max, "runs": len(self.values),
               "values": self.values}
        if self.samples:
            out.update(samples=len(self.samples), p50=self.percentile(50), p99=self.percentile(99))
        return out


@dataclass
class Figure:
    """A result row: ours beside a baseline measured in the same run."""

    bench: str
    case: str
    unit: str
    ours: Stat
    baseline: Stat | None = None
    baseline_name: str = ""
    ours_name: str = "dspy-tokens"
    better: str = "lower"  # "lower" (latency, overhead) or "higher" (throughput)
    percentile: float | None = None  # show this percentile of the samples beside the median (e.g. 99)
    notes: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline.median:
            return None
        return self.ours.median / self.baseline.median

    def to_json(self) -> dict:
        data = {"bench": self.bench, "case": self.case, "unit": self.unit, "ours_name": self.ours_name,
                "ours": self.ours.to_json(), "baseline_name": self.baseline_name,
                "baseline": self.baseline.to_json() if self.baseline else None, "ratio": self.ratio,
                "better": self.better, "notes": self.notes}
        return data


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 10_000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.0f}"
    elif magnitude >= 10:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3g}"
    return text


def describe(stat: Stat | None, percentile: float | None = None) -> str:
    if stat is None:
        return "-"
    text = f"{fmt(stat.median)} ({fmt(stat.min)}–{fmt(stat.max)})"
    if percentile is not None and stat.samples:
        text += f" p{percentile:g} {fmt(stat.percentile(percentile))}"
    return text


def ratio_text(figure: Figure) -> str:
    ratio = figure.ratio
    if ratio is None:
        return "-"
    if figure.better == "higher":
        return f"{ratio:.1f}x" if ratio >= 10 else f"{ratio:.2f}x"
    return f"{ratio:.3g}x" if ratio < 0.01 else f"{ratio:.2f}x"


def render(figures: Sequence[Figure]) -> str:
    headers = ["bench", "case", "unit", "ours: median (min–max)", "baseline", "baseline: median (min–max)",
               "ours/base"]
    rows = [[f.bench, f.case, f.unit, describe(f.ours, f.percentile), f.baseline_name or "-",
             describe(f.baseline, f.percentile), ratio_text(f)] for f in figures]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def environment() -> dict:
    import peewee
    import sqlite3

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "sqlite": sqlite3.sqlite_version, "peewee": peewee.__version__}
    try:
        import dspy
        info["dspy"] = dspy.__version__
    except Exception:  # pragma: no cover
        pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    return info


def server_versions(ctx: Context) -> dict:
    from .datagen import _connect_raw, server_url

    out = {}
    for backend in ("postgresql", "mysql"):
        if not ctx.usable(backend):
            out[backend] = f"unavailable: {ctx.backends.get(backend)}"
            continue
        conn = _connect_raw(server_url(backend))
        try:
            cur = conn.cursor()
            cur.execute("SELECT version()")
            out[backend] = str(cur.fetchone()[0]).split(" on ")[0]
        finally:
            conn.close()
    return out


def to_jsonable(figures: Sequence[Figure]) -> list[dict]:
    return [f.to_json() for f in figures]


__all__ = ["Context", "Stat", "Figure", "render", "environment", "server_versions", "to_jsonable"]
