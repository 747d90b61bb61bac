"""3. ``tracker.check(user, guild)`` latency vs stored rows, beside a naive SUM over the raw rows.

Datasets come from :mod:`benchmarks.datagen` (10k users in 500 guilds, rows spread over 35 days, hourly counters
built). For each backend and size, a tracker with ``user_limit`` and ``guild_limit`` set (high, so every request
is allowed: the common path) answers ``check(user_id, guild_id)`` for a fixed list of users that have rows; a second
tracker, whose user limit those users are over, answers the same users refused, with the time the rolling window
frees enough (``resets_at``).

The baseline is what GePeTo-style trackers do on every request: ``SELECT SUM(total_tokens) FROM token_usage
WHERE user_id = ? AND created_at >= ?`` plus the same per guild, over the library's own ``(user_id, created_at)``
and ``(guild_id, created_at)`` indexes, as raw SQL through the same Peewee connection (no query-builder cost). Its
window starts at the same hour boundary as the counters' rolling window, and both must report the same usage
for the sampled users (checked before timing).

Latencies are per call (both scopes), in µs. The naive baseline is time-boxed per round, so it has fewer samples
at 10M rows (its p99 is then close to its maximum).
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone

from .common import Context, Figure, Stat
from .datagen import USERS


def _naive(db, dialect: str, since):
    p = db.param
    user_sql = f"SELECT COALESCE(SUM(total_tokens), 0) FROM token_usage WHERE user_id = {p} AND created_at >= {p}"
    guild_sql = f"SELECT COALESCE(SUM(total_tokens), 0) FROM token_usage WHERE guild_id = {p} AND created_at >= {p}"

    def check(user: int, guild: int) -> tuple[int, int]:
        used_user = db.execute_sql(user_sql, (user, since)).fetchone()[0]
        used_guild = db.execute_sql(guild_sql, (guild, since)).fetchone()[0]
        return int(used_user), int(used_guild)
    return check


def _prewarm(dataset, db) -> str:
    """Read the dataset into the OS page cache before timing: steady-state latency, as for a bot whose recent
    usage is hot, not whatever another process left in memory. Returns how."""
    if dataset.backend == "sqlite":
        path = db.database
        with open(path, "rb") as fh:
            while fh.read(16 << 20):
                pass
        return "file read once"
    try:
        db.execute_sql("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        db.execute_sql("SELECT pg_prewarm(c.oid::regclass, 'read') FROM pg_class c WHERE c.relname IN "
                       "('token_usage', 'tokenusage_user_id_created_at', 'tokenusage_guild_id_created_at', "
                       "'token_usage_counters', 'token_usage_counters_pkey', 'token_reservations', "
                       "'token_limit_overrides', 'token_limit_reset_baselines')")
        return "pg_prewarm"
    except Exception as exc:  # the extension is not installed: measure as found
        return f"not prewarmed ({type(exc).__name__})"


def _timed(fn, targets, budget: float | None = None) -> list[float]:
    samples = []
    clock = time.perf_counter
    deadline = clock() + budget if budget else None
    for user, guild in targets:
        start = clock()
        fn(user, guild)
        samples.append((clock() - start) * 1e6)
        if deadline and clock() > deadline and len(samples) >= 20:
            break
    return samples


def _refusing_config(size: int):
    """A user limit every sampled user with usage is over (about a sixth of a user's 35 days), the guild's high:
    the user rule refuses, and a rolling refusal says when the window frees enough (``resets_at``)."""
    from dspy_tokens.config import parse_config

    per_user_rows = max(size // USERS, 1)
    return parse_config({"user_limit": 100 * per_user_rows, "guild_limit": 10**13, "time_window_days": 30}, "bench")


REFUSED_ESTIMATE = 50  # tokens: below every refusing limit, so each refusal has a reset time


def run(ctx: Context) -> list[Figure]:
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config
    from dspy_tokens.store import Store
    from dspy_tokens.store.units import hour_of

    from .datagen import check_targets

    sizes = [10_000, 100_000] if ctx.quick else [10_000, 1_000_000, 10_000_000]
    backends = [b for b in ("sqlite", "postgresql") if ctx.usable(b)]
    rounds = 3 if ctx.quick else 5
    per_round = 150 if ctx.quick else 1000
    naive_budget = 0.2 if ctx.quick else 1.0
    config = parse_config({"user_limit": 10**12, "guild_limit": 10**13, "time_window_days": 30}, "bench")
    figures, round_trips = [], {}
    datasets = _build_all(ctx, backends, sizes)
    for size in sizes:
        for backend in backends:
            dataset = datasets[(backend, size)]
            spill = ctx.work_dir / f"check-spill-{backend}-{size}"
            tracker = TokenTracker(dataset.url, config, spill_dir=spill)
            refusing = TokenTracker(dataset.url, _refusing_config(size), spill_dir=spill.with_name(spill.name + "-r"))
            try:
                now = datetime.now(timezone.utc)
                start_hour = hour_of(now) - 24 * config.time_window_days
                since = datetime.fromtimestamp(start_hour * 3600, timezone.utc)
                store = Store(dataset.url)
                db = store.db
                since_param = store.stored_time(since)
                naive = _naive(db, backend, since_param)
                targets = check_targets(dataset, per_round * rounds)
                db.connect(reuse_if_open=True)
                warmed = _prewarm(dataset, db)
                # Same answers: the counters' rolling window equals the naive SUM from the same hour boundary.
                for user, guild in targets[:5]:
                    decision = tracker.check(user, guild)
                    assert decision.allowed, decision.message
                    used = {d.scope: d.used for d in (decision, *decision.others)}
                    assert (used["user"], used["guild"]) == naive(user, guild), (used, naive(user, guild))

                def refused(user: int, guild: int):
                    return refusing.check(user, guild, estimate=REFUSED_ESTIMATE)
                # The refused case times users over their limit only (a user whose rows all left the window fits).
                over = []
                for user, guild in targets:
                    decision = refused(user, guild)
                    if not decision.allowed:
                        assert decision.resets_at is not None, decision.message
                        over.append((user, guild))
                assert len(over) >= len(targets) // 2, f"only {len(over)} of {len(targets)} sampled users refused"
                over = (over * (len(targets) // len(over) + 1))[:len(targets)]
                # Warm up: on PostgreSQL this also prepares each statement on the connection, before timing.
                for user, guild in targets[:200]:
                    tracker.check(user, guild)
                    refused(user, guild)
                cases = {"allowed": (tracker.check, targets), "refused": (refused, over)}
                stats = {name: ([], []) for name in cases}
                base, trip, base_samples, trip_samples = [], [], [], []
                for r in range(rounds):
                    for name, (fn, chosen) in cases.items():
                        samples = _timed(fn, chosen[r * per_round:(r + 1) * per_round])
                        stats[name][0].append(statistics.median(samples))
                        stats[name][1].extend(samples)
                    chunk = targets[r * per_round:(r + 1) * per_round]
                    samples = _timed(naive, chunk, naive_budget)
                    base.append(statistics.median(samples))
                    base_samples += samples
                    samples = _timed(lambda u, g: db.execute_sql("SELECT 1").fetchone(), chunk[:200])
                    trip.append(statistics.median(samples))
                    trip_samples += samples
            finally:
                tracker.close()
                refusing.close()
            labels = {"allowed": "check(user, guild), allowed",
                      "refused": "check(user, guild), refused (user over its limit, with resets_at)"}
            for name, (medians, samples) in stats.items():
                figure = Figure("check", f"{backend}, {size:,} rows: {labels[name]}", "µs",
                                Stat(medians, samples), Stat(base, base_samples), "naive SUM over rows",
                                percentile=99, notes=f"{len(samples)} / {len(base_samples)} samples; {warmed}")
                figures.append(figure)
                p99_ours, p99_base = figure.ours.percentile(99), figure.baseline.percentile(99)
                ctx.say(f"    {backend} {size:>10,} rows {name:>8}: check median {figure.ours.median:.0f} µs p99 "
                        f"{p99_ours:.0f} µs | naive median {figure.baseline.median:.0f} µs p99 {p99_base:.0f} µs")
            round_trips[(backend, size)] = Stat(trip, trip_samples)
            ctx.say(f"    {backend} {size:>10,} rows: SELECT 1 median {round_trips[(backend, size)].median:.0f} µs "
                    f"p99 {round_trips[(backend, size)].percentile(99):.0f} µs")
    for (backend, size), stat in round_trips.items():
        figures.append(Figure("check", f"{backend}: one query round trip (SELECT 1) beside the "
                              f"{size:,}-row checks", "µs", stat, None, percentile=99,
                              notes="the floor of any check that asks the database"))
    return figures


def _build_backend(backend: str, sizes, cache_dir, fresh: bool) -> dict:
    from .datagen import ensure_dataset

    return {size: ensure_dataset(backend, size, cache_dir, fresh=fresh) for size in sizes}


def _build_all(ctx: Context, backends, sizes) -> dict:
    """Build (or reuse) every dataset: one process per backend, side by side — so the builds' memory (numpy
    arrays, row text for COPY) never stays in the benchmark process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    out = {}
    with ProcessPoolExecutor(max_workers=len(backends) or 1, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {b: pool.submit(_build_backend, b, sizes, ctx.cache_dir, ctx.fresh) for b in backends}
        for backend, future in futures.items():
            for size, dataset in future.result().items():
                out[(backend, size)] = dataset
    return out
