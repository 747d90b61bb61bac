"""Reports at scale: ``summary("month")`` and ``top(10, period="month")`` from the rollups, beside the naive GROUP BY
over the raw rows in the same run, plus export throughput and memory.

    python -m benchmarks.bench_reports [--rows 10000000] [--database URL] [--repeat 50] [--reuse]

The database should be dedicated to the benchmark: its dspy-tokens tables are dropped and reloaded (``--reuse``
keeps a previous load of the same size). Loading uses the fastest bulk path: one transaction, secondary indexes
dropped and rebuilt afterwards, rows through the driver (``executemany`` on SQLite/MySQL, ``COPY`` on PostgreSQL);
then the report rollups are built in SQL (``store.rebuild.rebuild_rollups``), not row by row. SQLite is not ``ANALYZE``d (as a
user's database would not be); PostgreSQL is, as autovacuum would do after such a load.

Shape: ``--users`` users (default 10,000; activity skewed, a few heavy users), ``--guilds`` guilds (500; each user
mostly in a home guild, 3% of calls without one), rows evenly over the last ``--days`` days (60) ending now, three
models (gpt-4o-mini 70%, gpt-4o 25%, an unpriced one 5%), eight features, 3% cache hits, 1% failed calls.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from dspy_tokens.reports import Reports
from dspy_tokens.store import ROW_COLUMNS, Store
from dspy_tokens.store._sql import pico_sql
from dspy_tokens.store.rebuild import rebuild_rollups

DEFAULT_URL = "sqlite:////tmp/dspy_tokens_bench_reports.db"
SHAPE_VERSION = 1
MODELS = (("openai/gpt-4o-mini", 0.70, 150_000, 600_000), ("openai/gpt-4o", 0.25, 2_500_000, 10_000_000),
          ("acme/unpriced", 0.05, None, None))  # picodollars per token
FEATURES = (("general_conversation", 40), ("setup_agent_1_intent", 15), ("setup_full_guide", 10),
            ("command_extract_create_params", 10), ("summarize", 10), ("command_extract_delete_params", 5),
            ("command_extract_announce_params", 5), (None, 5))
OUR_TABLES = ("token_usage", "token_usage_counters", "token_usage_model_counters", "token_reservations",
              "token_limit_locks", "token_usage_daily", "token_usage_rollups", "dspy_tokens_migrations",
              "bench_reports_meta")


def say(text: str) -> None:
    print(text, flush=True)


# -- synthetic rows --------------------------------------------------------------------------------------------------
def generate(n: int, users: int, guilds: int, days: int, end: datetime, seed: int = 1):
    """Yield n rows as tuples in ROW_COLUMNS order, in time order over ``[end - days, end)``; created_at is the
    stored text form (naive UTC with microseconds), which every backend accepts."""
    rnd = random.Random(seed)
    rand = rnd.random
    step = days * 86400 / n
    start = end.timestamp() - days * 86400
    bounds = list(itertools.accumulate(weight for _, weight in FEATURES))
    names = [name for name, _ in FEATURES]
    mini, gpt4o, unpriced = MODELS
    last_second, prefix = None, ""
    for i in range(n):
        moment = start + (i + rand()) * step
        second = int(moment)
        if second != last_second:
            prefix, last_second = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second)), second
        created = f"{prefix}.{int((moment - second) * 1e6):06d}"
        user = 1 + int(users * rand() * rand() ** 0.5)  # skewed: low ids are heavy users
        r = rand()
        guild = None if r < 0.03 else (1 + (user * 7919) % guilds if r < 0.9 else 1 + int(rand() * guilds))
        r = rand()
        model, _, rate_in, rate_out = mini if r < 0.70 else gpt4o if r < 0.95 else unpriced
        feature = names[bisect.bisect(bounds, rand() * bounds[-1])]
        outcome = rand()
        if outcome < 0.01:  # failed call
            prompt = completion = total = cached = reasoning = cost = None
            hit, error, source, reported = False, "APIError: 500", "no_usage", False
        elif outcome < 0.04:  # DSPy cache hit
            prompt = completion = total = cached = reasoning = 0
            cost, hit, error, source, reported = "0", True, None, "cache_hit", True
        else:
            prompt, completion = 50 + int(rand() * 2950), 10 + int(rand() * 790)
            total, cached, reasoning = prompt + completion, (int(prompt * rand()) if rand() < 0.3 else 0), 0
            hit, error, reported = False, None, True
            if rate_in is None:
                cost, source = None, "unknown"
            else:
                pico = prompt * rate_in + completion * rate_out
                cost, source = f"{pico // 10**12}.{pico % 10**12:012d}", "price_map"
        yield (f"bench-{i:030d}", f"s{i // 3}", i % 3, user, guild, None if guild is None else guild * 100 + i % 5,
               feature, "Predict", model, None, prompt, completion, total, cached, reasoning, cost, source, hit,
               reported, error, 200 + i % 2000, created) + LATER_COLUMNS


#: The row columns added after this generator was written, as a chat call without them would store them.
LATER_DEFAULTS = {"request_type": "chat", "metadata": None, "usage_estimated": False, "cache_write_tokens": None,
                  "audio_tokens": None, "service_tier": None, "price_version": None}
LATER_COLUMNS = tuple(LATER_DEFAULTS[name] for name in ROW_COLUMNS[22:])  # KeyError: a new column needs a default


class _CopyStream:
    """A file-like object feeding PostgreSQL COPY (text format) from the row generator."""

    def __init__(self, rows):
        self.rows = rows
        self.buffer = ""

    @staticmethod
    def _field(value) -> str:
        if value is None:
            return "\\N"
        if value is True or value is False:
            return "t" if value else "f"
        return str(value)

    def read(self, size: int = 65536) -> str:
        parts, length = [self.buffer], len(self.buffer)
        field = self._field
        while length < size:
            row = next(self.rows, None)
            if row is None:
                break
            line = "\t".join([field(v) for v in row]) + "\n"
            parts.append(line)
            length += len(line)
        text = "".join(parts)
        self.buffer = text[size:]
        return text[:size]

    readline = read


# -- loading ---------------------------------------------------------------------------------------------------------
def load(url: str, n: int, users: int, guilds: int, days: int, reuse: bool) -> tuple[Store, datetime]:
    store = Store(url)
    db = store.db
    signature = {"rows": n, "users": users, "guilds": guilds, "days": days, "shape": SHAPE_VERSION}
    db.connect(reuse_if_open=True)
    if reuse and "bench_reports_meta" in db.get_tables():
        meta = json.loads(db.execute_sql("SELECT value FROM bench_reports_meta").fetchone()[0])
        if {k: meta.get(k) for k in signature} == signature:
            say(f"reusing the {n:,} rows loaded at {meta['end']}")
            return store, datetime.fromisoformat(meta["end"])
    for table in OUR_TABLES:
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
    store.migrate()
    db.connect(reuse_if_open=True)
    if store.dialect == "sqlite":  # sort and build indexes in memory (as work_mem does on PostgreSQL below)
        db.execute_sql("PRAGMA temp_store = MEMORY")
        db.execute_sql("PRAGMA cache_size = -1000000")
    indexes = [i for i in db.get_indexes("token_usage") if not i.name.endswith("_pkey")]
    for index in indexes:
        db.execute_sql(f"DROP INDEX {index.name}" + (" ON token_usage" if store.dialect == "mysql" else ""))
    end = datetime.now(timezone.utc).replace(microsecond=0)
    rows = generate(n, users, guilds, days, end)
    columns = ", ".join(ROW_COLUMNS)
    started = time.perf_counter()
    with db.atomic():
        if store.dialect == "postgresql":
            db.cursor().copy_expert(f"COPY token_usage ({columns}) FROM STDIN", _CopyStream(rows))
        else:
            sql = f"INSERT INTO token_usage ({columns}) VALUES ({', '.join([db.param] * len(ROW_COLUMNS))})"
            cursor = db.cursor()
            while True:
                chunk = list(itertools.islice(rows, 50_000))
                if not chunk:
                    break
                cursor.executemany(sql, chunk)
    loaded = time.perf_counter() - started
    say(f"loaded {n:,} rows in {loaded:.1f}s ({n / loaded:,.0f} rows/s, one transaction, "
        f"{'COPY' if store.dialect == 'postgresql' else 'executemany'})")
    started = time.perf_counter()
    for index in indexes:
        columns_sql = ", ".join(index.columns)
        unique = "UNIQUE " if index.unique else ""
        db.execute_sql(f"CREATE {unique}INDEX {index.name} ON token_usage ({columns_sql})")
    say(f"rebuilt {len(indexes)} indexes in {time.perf_counter() - started:.1f}s")
    started = time.perf_counter()
    with db.atomic():
        if store.dialect == "postgresql":
            db.execute_sql("SET LOCAL work_mem = '256MB'")
        counts = rebuild_rollups(db, store.dialect)
    say(f"built the rollups in SQL in {time.perf_counter() - started:.1f}s: {counts['daily']:,} daily-cube rows, "
        f"{counts['rollups']:,} hour/day/month rollup rows")
    if store.dialect == "postgresql":
        started = time.perf_counter()
        for table in ("token_usage", "token_usage_daily", "token_usage_rollups"):
            db.execute_sql(f"VACUUM ANALYZE {table}")
        say(f"VACUUM ANALYZE in {time.perf_counter() - started:.1f}s")
    db.execute_sql("CREATE TABLE bench_reports_meta (value TEXT)")
    db.execute_sql(f"INSERT INTO bench_reports_meta (value) VALUES ({db.param})",
                   (json.dumps({**signature, "end": end.isoformat()}),))
    return store, end


# -- timing -----------------------------------------------------------------------------------------------------------
def timed(fn, repeat: int, warmup: int = 2) -> tuple[dict, object]:
    result = None
    for _ in range(warmup):
        result = fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p99 = samples[min(len(samples) - 1, max(0, round(0.99 * len(samples)) - 1))]
    return {"median_ms": statistics.median(samples), "p99_ms": p99, "runs": repeat, "samples_ms": samples}, result


def naive_queries(store: Store, since: datetime):
    """The straightforward SQL a report would run without rollups: GROUP BY over the raw rows."""
    db, p = store.db, store.db.param
    start = store.stored_time(since)
    pico = pico_sql(store.dialect)

    def summary():
        return db.execute_sql(
            f"SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens), SUM({pico}), "
            f"SUM(CASE WHEN cost_usd IS NULL AND error IS NULL THEN 1 ELSE 0 END), COUNT(DISTINCT user_id) "
            f"FROM token_usage WHERE created_at >= {p}", (start,)).fetchone()

    def top():
        return db.execute_sql(
            f"SELECT user_id, COALESCE(SUM(total_tokens), 0) AS tokens FROM token_usage WHERE created_at >= {p} "
            f"AND user_id IS NOT NULL GROUP BY user_id ORDER BY tokens DESC, user_id LIMIT 10", (start,)).fetchall()
    return summary, top


def export_in_subprocess(url: str, fmt: str) -> dict:
    """Export every row in a fresh process (so its peak RSS is the export's, not the load's)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_reports", "--export-only", "--database", url,
                          "--format", fmt], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class _Discard:
    def write(self, text):
        return len(text)


def peak_rss_mb() -> float:
    """This process image's peak resident set (VmHWM). Not ru_maxrss: Linux keeps that across execve, so a
    child would report its parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def export_only(url: str, fmt: str) -> None:
    import tracemalloc

    store = Store(url)
    reports = Reports(store)
    reports.store.connect()
    baseline = peak_rss_mb()
    started = time.perf_counter()
    rows = reports.export(fmt, _Discard())
    seconds = time.perf_counter() - started
    peak = peak_rss_mb()
    tracemalloc.start()  # Python-level allocations over the first 200k rows (tracemalloc slows the export)
    reports.export(fmt, _Discard(), until=_nth_created(store, 200_000))
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({"format": fmt, "rows": rows, "seconds": seconds, "rows_per_s": rows / seconds,
                      "rss_before_mb": baseline, "rss_peak_mb": peak,
                      "tracemalloc_peak_mb_200k": traced / 2**20}))


def _nth_created(store: Store, n: int) -> datetime | None:
    row = store.db.execute_sql(f"SELECT created_at FROM token_usage ORDER BY id LIMIT 1 OFFSET {n}").fetchone()
    if row is None:
        return None
    value = row[0]
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=timezone.utc)


# -- main -------------------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--database", default=DEFAULT_URL)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--guilds", type=int, default=500)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=50, help="timed runs of each rollup query")
    parser.add_argument("--naive-repeat", type=int, default=5, help="timed runs of each naive GROUP BY")
    parser.add_argument("--reuse", action="store_true", help="keep a previous load of the same shape")
    parser.add_argument("--format", default="csv", choices=["csv", "json", "jsonl"], help="export format")
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-export", action="store_true", help="skip the export (the report queries only)")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.export_only:
        export_only(args.database, args.format)
        return

    say(f"backend: {args.database}  rows: {args.rows:,}  users: {args.users:,}  guilds: {args.guilds}  "
        f"days: {args.days}")
    store, end = load(args.database, args.rows, args.users, args.guilds, args.days, args.reuse)
    reports = Reports(store)
    reports.store.connect()
    month_start = reports.bounds("month")[0]
    in_month = store.db.execute_sql(f"SELECT COUNT(*) FROM token_usage WHERE created_at >= {store.db.param}",
                                    (store.stored_time(month_start),)).fetchone()[0]
    say(f"month = since {month_start:%Y-%m-%d} 00:00 UTC: {in_month:,} raw rows")
    figures = {"rows": args.rows, "database": args.database.split("://")[0], "rows_in_month": in_month}

    thirty_days = reports.bounds("today")[0] - timedelta(days=29)
    fast = {
        'summary("month")': lambda: reports.summary("month"),
        'top(10, period="month")': lambda: reports.top(10, period="month"),
        'top(10, "cost", "guild", period="month")': lambda: reports.top(10, "cost", "guild", period="month"),
        'summary("today")': lambda: reports.summary("today"),
        'top(10, period="week")': lambda: reports.top(10, period="week"),
        'breakdown("model", "month")': lambda: reports.breakdown("model", "month"),
        'breakdown("day", "month")': lambda: reports.breakdown("day", "month"),
        'summary("month", user_id=1)': lambda: reports.summary("month", user_id=1),
        'summary("month", guild_id=7)': lambda: reports.summary("month", guild_id=7),
        'summary("7d") (rolling: partial day from hour buckets)': lambda: reports.summary("7d"),
        'top(10, period="7d")': lambda: reports.top(10, period="7d"),
        'breakdown("model", "7d")': lambda: reports.breakdown("model", "7d"),
        'summary("month", model="openai/gpt-4o")': lambda: reports.summary("month", model="openai/gpt-4o"),
        'summary("7d", model="openai/gpt-4o")': lambda: reports.summary("7d", model="openai/gpt-4o"),
        "summary(the dashboard's 30 whole days)": lambda: reports.summary(since=thirty_days),
        "top(10, the dashboard's 30 whole days)": lambda: reports.top(10, since=thirty_days),
    }
    results = {}
    say(f"\n{'query':<52} {'median':>10} {'p99':>10}")
    for name, fn in fast.items():
        stats, value = timed(fn, args.repeat)
        results[name] = (stats, value)
        say(f"{name:<52} {stats['median_ms']:>8.2f}ms {stats['p99_ms']:>8.2f}ms")
    naive_summary, naive_top = naive_queries(store, month_start)
    say("")
    comparisons = {}
    for name, fn, ours in (('summary("month")', naive_summary, 'summary("month")'),
                           ('top(10, period="month")', naive_top, 'top(10, period="month")')):
        stats, value = timed(fn, args.naive_repeat, warmup=1)
        mine = results[ours][0]
        ratio = stats["median_ms"] / mine["median_ms"]
        comparisons[name] = {"rollups": mine, "naive_group_by": stats, "speedup_median": ratio}
        say(f"naive GROUP BY for {name:<33} {stats['median_ms']:>8.1f}ms {stats['p99_ms']:>8.1f}ms   "
            f"rollups are {ratio:,.0f}x faster (median)")
        _check_same(name, value, results[ours][1])
    figures["queries"] = {name: stats for name, (stats, _) in results.items()}
    figures["comparisons"] = comparisons

    say("")
    if args.no_export:
        _write(args.json_out, figures)
        return
    export = export_in_subprocess(args.database, args.format)
    figures["export"] = export
    say(f"export {export['format']} of {export['rows']:,} rows: {export['seconds']:.1f}s = "
        f"{export['rows_per_s']:,.0f} rows/s; exporting process peak RSS {export['rss_before_mb']:.0f} MB "
        f"before, {export['rss_peak_mb']:.0f} MB after; tracemalloc peak over 200k rows "
        f"{export['tracemalloc_peak_mb_200k']:.1f} MB")
    _write(args.json_out, figures)


def _write(path, figures: dict) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(figures, fh, indent=2)


def _check_same(name: str, naive, ours) -> None:
    """The rollups must answer what the raw rows say."""
    if name.startswith("summary"):
        calls, prompt, completion, total, pico, unpriced, users = (int(v or 0) for v in naive)
        got = (ours.calls, ours.prompt_tokens, ours.completion_tokens, ours.total_tokens,
               int(ours.cost_usd * 10**12), ours.unknown_cost_calls, ours.active_users)
        expected = (calls, prompt, completion, total, pico, unpriced, users)
    else:
        expected = [(int(u), int(t or 0)) for u, t in naive]
        got = [(g.key, g.total_tokens) for g in ours]
    if got != expected:
        raise AssertionError(f"{name}: rollups say {got}, raw rows say {expected}")


if __name__ == "__main__":
    main()
