"""The web API and dashboard at scale: p50/p99 of ``/api/usage/stats?period=month`` and of every data call the
dashboard page makes (and the whole page), over HTTP on a real socket, beside the naive GROUP BY over the month's
raw rows in the same run.

    python -m benchmarks.bench_web [--rows 10000000] [--database URL] [--repeat 200] [--reuse]

The data set is bench_reports's (same loader, same shape, same cache: ``--reuse`` keeps a load of that size).
The app is ``create_app(url)`` served by uvicorn in this process; a keep-alive HTTP client times each request
from send to the last byte, so a figure includes routing, auth, the report calls and JSON (or HTML) rendering.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from datetime import datetime, timedelta, timezone

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx  # noqa: E402

from dspy_tokens import Config  # noqa: E402
from dspy_tokens.store._sql import pico_sql  # noqa: E402

from .bench_reports import DEFAULT_URL, load, say  # noqa: E402

TOKEN = "bench-read-token-0123456789abcdef"


def endpoints(now: datetime) -> dict[str, str]:
    since_30d = (now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)).date().isoformat()
    return {
        "/api/usage/stats?period=month": "/api/usage/stats?period=month",
        "/api/usage?period=month": "/api/usage?period=month",
        "/api/usage/daily (30 days, by model)": f"/api/usage/daily?since={since_30d}",
        "/api/usage/models?period=month": "/api/usage/models?period=month",
        "/api/usage/features?period=month": "/api/usage/features?period=month",
        "/api/usage/users?by=cost&period=month": "/api/usage/users?by=cost&period=month",
        "/api/usage/guilds?by=cost&period=month": "/api/usage/guilds?by=cost&period=month",
        "/api/sessions?limit=10": "/api/sessions?limit=10",
        "/metrics": "/metrics",
        "dashboard page / (30 days: every call above)": "/?period=30d",
        "dashboard page /?period=month": "/?period=month",
    }


class Served:
    """The app on 127.0.0.1 (a free port) in an event loop of its own thread."""

    def __init__(self, app):
        self.app, self.url, self.ready = app, "", threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from dspy_tokens.web import serve_in_background

        async def main():
            self.loop, self.stop_event = asyncio.get_running_loop(), asyncio.Event()
            web = await serve_in_background(self.app, port=0)
            self.url = web.url
            self.ready.set()
            await self.stop_event.wait()
            await web.stop()
        asyncio.run(main())

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(60)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(30)


def percentiles(samples: list[float]) -> dict:
    samples = sorted(samples)
    pick = lambda q: samples[min(len(samples) - 1, max(0, round(q * len(samples)) - 1))]  # noqa: E731
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "runs": len(samples), "samples_ms": samples}


def timed(fn, repeat: int, warmup: int = 3) -> tuple[dict, object]:
    result = None
    for _ in range(warmup):
        result = fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples), result


def naive_stats(store, since: datetime):
    """What the stats endpoint would run without rollups: totals and per-feature totals over the raw rows."""
    db, p = store.db, store.db.param
    start = store.stored_time(since)
    pico = pico_sql(store.dialect)

    def run():
        total = db.execute_sql(
            f"SELECT COUNT(*), SUM(total_tokens), SUM({pico}), SUM(CASE WHEN cost_usd IS NULL AND error IS NULL "
            f"THEN 1 ELSE 0 END) FROM token_usage WHERE created_at >= {p}", (start,)).fetchone()
        features = db.execute_sql(
            f"SELECT feature, COUNT(*), SUM(total_tokens), SUM({pico}) FROM token_usage WHERE created_at >= {p} "
            "GROUP BY feature", (start,)).fetchall()
        return total, features
    return run


def measure(url: str, rows: int, repeat: int, naive_repeat: int, reuse: bool) -> dict:
    from dspy_tokens.web import create_app

    store, _ = load(url, rows, 10_000, 500, 60, reuse)
    now = datetime.now(timezone.utc)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    app = create_app(url, read_token=TOKEN, config=Config())
    figures: dict = {"rows": rows, "database": url.split("://")[0], "endpoints": {}}
    with Served(app) as served, httpx.Client(base_url=served.url, headers={"Authorization": f"Bearer {TOKEN}"},
                                            timeout=120) as client:
        say(f"\n{'request':<52} {'p50':>9} {'p99':>9}")
        stats_body = None
        for name, path in endpoints(now).items():
            def call(path=path):
                response = client.get(path)
                response.raise_for_status()
                return response
            stats, response = timed(call, repeat)
            if name.startswith("/api/usage/stats"):
                stats_body = response.json()
            figures["endpoints"][name] = stats
            say(f"{name:<52} {stats['p50_ms']:>7.2f}ms {stats['p99_ms']:>7.2f}ms")
    naive, (total, _) = timed(naive_stats(store, month_start), naive_repeat, warmup=1)
    figures["naive_group_by"] = naive
    stats = figures["endpoints"]["/api/usage/stats?period=month"]
    say(f"{'naive GROUP BY over the month rows (SQL only)':<52} {naive['p50_ms']:>7.1f}ms {naive['p99_ms']:>7.1f}ms"
        f"   the endpoint is {naive['p50_ms'] / stats['p50_ms']:,.0f}x faster (p50)")
    if int(total[0]) != stats_body["total_calls"] or int(total[1] or 0) != stats_body["total_tokens"]:
        raise AssertionError(f"the endpoint says {stats_body['total_calls']} calls / {stats_body['total_tokens']} "
                             f"tokens, the raw rows {total[0]} / {total[1]}")
    return figures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database", default=DEFAULT_URL)
    parser.add_argument("--repeat", type=int, default=200, help="timed requests per endpoint")
    parser.add_argument("--naive-repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep a previous load of the same size")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)
    say(f"backend: {args.database}  rows: {args.rows:,}")
    figures = measure(args.database, args.rows, args.repeat, args.naive_repeat, args.reuse)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(figures, fh, indent=2)


def run(ctx) -> list:
    """``python -m benchmarks``: SQLite (and the servers in DSPY_TOKENS_BENCH_REPORT_BACKENDS) at
    DSPY_TOKENS_BENCH_REPORT_ROWS rows (quick: 20k, full: 1M), the datasets bench_reports caches."""
    from .__main__ import REPORT_ROWS
    from .common import Figure, Stat
    from .datagen import private_database

    rows = int(os.environ.get("DSPY_TOKENS_BENCH_REPORT_ROWS", REPORT_ROWS["quick" if ctx.quick else "full"]))
    backends = [b for b in os.environ.get("DSPY_TOKENS_BENCH_REPORT_BACKENDS", "sqlite").split(",") if ctx.usable(b)]
    out = []
    for backend in backends:
        if backend == "sqlite":
            ctx.cache_dir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{ctx.cache_dir / f'reports-{rows}.db'}"
        else:
            url = private_database(backend, f"dspy_tokens_bench_reports_{rows}")
        found = measure(url, rows, 30 if ctx.quick else 200, 3, not ctx.fresh)
        naive = found["naive_group_by"]
        for name, stats in found["endpoints"].items():
            is_stats = name.startswith("/api/usage/stats")
            out.append(Figure("web", f"{backend}, {rows:,} rows: {name}", "ms",
                              Stat([stats["p50_ms"]], samples=stats["samples_ms"]),
                              Stat([naive["p50_ms"]]) if is_stats else None,
                              "naive GROUP BY over the month's rows" if is_stats else "", percentile=99,
                              notes=f"p99 {stats['p99_ms']:.2f} ms; {stats['runs']} requests"))
    return out


if __name__ == "__main__":
    main()
