"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json FILE] [--fresh] [--clean]``

Runs every benchmark (each figure beside its baseline, measured in the same run), prints one table and writes the
results as JSON. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # pricing offline, before dspy is imported

BENCHMARKS = {
    "overhead": ("benchmarks.bench_overhead", "1. caller-thread overhead per LM call"),
    "writer": ("benchmarks.bench_writer", "2. writer throughput"),
    "check": ("benchmarks.bench_check", "3. check() latency vs stored rows"),
    "reports": ("benchmarks.bench_reports", "4. reports and export at scale"),
    "eventloop": ("benchmarks.bench_eventloop", "5. event-loop impact of 100 concurrent acalls"),
    "web": ("benchmarks.bench_web", "6. web API and dashboard at scale (p50/p99 over HTTP)"),
    "copy": ("benchmarks.bench_copy", "7. dspy-tokens copy: SQLite into each backend"),
}
DEFAULT_CACHE = Path(os.environ.get("DSPY_TOKENS_BENCH_CACHE", Path(tempfile.gettempdir()) / "dspy-tokens-bench-cache"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small sizes and few rounds (under a minute)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", type=Path, default=None,
                        help="write results here (default: <cache dir>/latest[-quick].json)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help=f"generated datasets, reused between runs (default {DEFAULT_CACHE}; "
                             "env DSPY_TOKENS_BENCH_CACHE)")
    parser.add_argument("--fresh", action="store_true", help="rebuild cached datasets instead of reusing them")
    parser.add_argument("--clean", action="store_true",
                        help="delete the cache dir and the databases these benchmarks created "
                             "(dspy_tokens_bench_*) on PostgreSQL and MariaDB, and exit")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = names or list(BENCHMARKS)
    return args


def clean(cache_dir: Path) -> None:
    from .datagen import cached_databases, drop_database, server_available

    if cache_dir.exists():
        shutil.rmtree(cache_dir)
        print(f"removed {cache_dir}")
    if server_available("postgresql") is None:
        for name in cached_databases("postgresql"):
            drop_database("postgresql", name)
            print(f"dropped PostgreSQL database {name}")
    if server_available("mysql") is None:
        drop_database("mysql", "dspy_tokens_bench_writer")
        print("dropped MariaDB database dspy_tokens_bench_writer")


def load(name: str):
    """The benchmark module, or None when it does not exist (yet)."""
    module_name = BENCHMARKS[name][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise


def as_figures(results, name: str) -> list:
    """Benchmark modules return Figure objects; dicts with the same fields are accepted too."""
    from .common import Figure, Stat

    out = []
    for item in results or []:
        if isinstance(item, Figure):
            out.append(item)
            continue
        data = dict(item)
        for key in ("ours", "baseline"):
            value = data.get(key)
            if value is not None and not isinstance(value, Stat):
                data[key] = Stat(list(value) if isinstance(value, (list, tuple)) else [value])
        data.setdefault("bench", name)
        out.append(Figure(**data))
    return out


REPORT_ROWS = {"quick": 20_000, "full": 1_000_000}


def run_reports_main(module, ctx, extra: dict) -> list:
    """4. Reports: ``python -m benchmarks.bench_reports`` (its own command line) on SQLite — other backends with
    ``DSPY_TOKENS_BENCH_REPORT_BACKENDS=sqlite,postgresql``, other sizes with ``DSPY_TOKENS_BENCH_REPORT_ROWS`` —
    its load cached under the cache dir (``--reuse``). Its JSON becomes figures: the rollup-backed report beside
    the naive GROUP BY over raw rows for the two compared queries, and export throughput; every query's figures
    go to the JSON under ``raw``."""
    from .common import Figure, Stat
    from .datagen import private_database

    rows = int(os.environ.get("DSPY_TOKENS_BENCH_REPORT_ROWS", REPORT_ROWS["quick" if ctx.quick else "full"]))
    backends = [b for b in os.environ.get("DSPY_TOKENS_BENCH_REPORT_BACKENDS", "sqlite").split(",")
                if ctx.usable(b)]
    figures = []
    for backend in backends:
        if backend == "sqlite":
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{ctx.cache_dir / f'reports-{rows}.db'}"
        else:
            url = private_database(backend, f"dspy_tokens_bench_reports_{rows}")
        out = ctx.work_dir / f"reports-{backend}.json"
        argv = ["--rows", str(rows), "--database", url, "--repeat", "5" if ctx.quick else "30",
                "--naive-repeat", "3", "--json", str(out)] + ([] if ctx.fresh else ["--reuse"])
        # In its own process: its export's peak-RSS figure is then its own, not this process's.
        subprocess.run([sys.executable, "-m", module.__name__, *argv], check=True,
                       cwd=Path(__file__).resolve().parent.parent)
        data = json.loads(out.read_text())
        extra[f"reports-{backend}"] = data
        comparisons = data.get("comparisons", {})
        for name, ours in data.get("queries", {}).items():  # every report call, the compared ones with baseline
            naive = comparisons.get(name, {}).get("naive_group_by")
            figures.append(Figure("reports", f"{backend}, {rows:,} rows: {name}", "ms",
                                  Stat([ours["median_ms"]], samples=ours.get("samples_ms")),
                                  None if naive is None else Stat([naive["median_ms"]]),
                                  "naive GROUP BY over rows" if naive else "", percentile=99,
                                  notes=f"p99 {ours['p99_ms']:.2f} ms" + (
                                      f" vs {naive['p99_ms']:.1f} ms" if naive else "") + f"; {ours['runs']} runs"))
        export = data.get("export")
        if export:
            figures.append(Figure("reports", f"{backend}, {rows:,} rows: export {export['format']}", "rows/s",
                                  Stat([export["rows_per_s"]]), None, better="higher",
                                  notes=f"peak RSS {export['rss_peak_mb']:.0f} MB"))
    return figures


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.clean:
        clean(args.cache_dir)
        return 0
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from .common import Context, environment, render, server_versions, to_jsonable
    from .datagen import server_available
    from .goals import assess, render_goals

    started = time.perf_counter()
    work_dir = Path(tempfile.mkdtemp(prefix="dspy-tokens-bench-"))
    backends = {b: server_available(b) for b in ("sqlite", "postgresql", "mysql")}
    ctx = Context(quick=args.quick, work_dir=work_dir, cache_dir=args.cache_dir, fresh=args.fresh,
                  say=lambda text: print(text, flush=True), backends=backends)
    mode = "quick" if args.quick else "full"
    print(f"dspy-tokens benchmarks ({mode}); scratch {work_dir}; datasets cached in {args.cache_dir}")
    for backend, problem in backends.items():
        if problem:
            print(f"  {backend}: not available ({problem}); its figures are skipped")
    figures, errors, timings, extra = [], {}, {}, {}
    try:
        for name in args.names:
            title = BENCHMARKS[name][1]
            module = load(name)
            if module is None:
                print(f"\n{title}: skipped — {BENCHMARKS[name][0].replace('.', '/')}.py is not present")
                errors[name] = "not present"
                continue
            print(f"\n{title}", flush=True)
            begun = time.perf_counter()
            try:
                if hasattr(module, "run"):
                    figures += as_figures(module.run(ctx), name)
                else:  # bench_reports.py has its own command line: drive it through main()
                    figures += run_reports_main(module, ctx, extra)
            except Exception as exc:  # one failing benchmark must not hide the others' figures
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"
            timings[name] = round(time.perf_counter() - begun, 1)
            print(f"  ({timings[name]:.0f}s)", flush=True)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    table = render(figures)
    print(f"\nResults ({mode}, {seconds:.0f}s; ours/base < 1 is better for latency and overhead, > 1 for "
          f"throughput):\n")
    print(table)
    verdicts = assess(figures)
    print(f"\nGoals (issue 15; bounds in benchmarks/goals.py):\n\n{render_goals(verdicts)}")
    output = args.json or args.cache_dir / f"latest{'-quick' if args.quick else ''}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "mode": mode, "finished": datetime.now(timezone.utc).isoformat(), "seconds": round(seconds, 1),
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": environment(), "servers": server_versions(ctx), "timings": timings, "errors": errors,
        "figures": to_jsonable(figures), "table": table, "goals": verdicts, "raw": extra,
    }
    output.write_text(json.dumps(document, indent=2, default=str))
    print(f"\nJSON: {output}")
    failed = {k: v for k, v in errors.items() if v != "not present"}
    if failed:
        print(f"FAILED: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
