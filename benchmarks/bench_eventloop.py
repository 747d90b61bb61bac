"""5. Event-loop impact: 100 concurrent ``acall``s, untracked vs tracked vs tracked behind ``tracker.guard``.

The server answers after 50 ms (a fast LLM), so the 100 calls overlap. Three variants run in interleaved rounds:
``untracked`` (no callback), ``tracked`` (``callbacks=[tracker]``) and ``guarded`` (``async with
tracker.guard(user, guild)`` around each call with user and guild limits set: a reservation is taken in a worker
thread before the call and settled by the writer after it; 100 users in 10 guilds). Reported: wall time of the
whole gather, and the worst event-loop stall seen by a 1 ms ticker task running beside it.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from .common import Context, Figure, Stat

CONCURRENCY = 100
DELAY = 0.05


async def _ticker(stop: asyncio.Event, stalls: list) -> None:
    loop = asyncio.get_running_loop()
    worst = 0.0
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        worst = max(worst, loop.time() - start - 0.001)
    stalls.append(worst * 1000)


async def _gather(predict, lm, callbacks, tracker, guarded: bool, tag: str) -> tuple[float, float]:
    import dspy

    async def one(i: int):
        if guarded:
            async with tracker.guard(user_id=1 + i, guild_id=1 + i % 10, estimate=1000):
                return await predict.acall(question=f"{tag} question {i}")
        return await predict.acall(question=f"{tag} question {i}")

    stop, stalls = asyncio.Event(), []
    with dspy.context(lm=lm, callbacks=callbacks):
        ticker = asyncio.create_task(_ticker(stop, stalls))
        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(CONCURRENCY)))
        wall = time.perf_counter() - start
        stop.set()
        await ticker
    return wall * 1000, stalls[0]


def run(ctx: Context) -> list[Figure]:
    import dspy

    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config
    from dspy_tokens.store import Store
    from dspy_tokens.testing import FakeLLMServer

    from .datagen import private_database

    rounds = 2 if ctx.quick else 6
    backends = ["sqlite"] + ([] if ctx.quick or not ctx.usable("postgresql") else ["postgresql"])
    config = parse_config({"user_limit": 10**9, "guild_limit": 10**10}, "bench")
    figures = []
    with FakeLLMServer(delay=DELAY) as server:
        lm = server.lm("openai/gpt-4o-mini")
        predict = dspy.Predict("question -> answer")
        for backend in backends:
            url = (f"sqlite:///{ctx.work_dir / 'eventloop.db'}" if backend == "sqlite"
                   else private_database(backend, "dspy_tokens_bench_eventloop", recreate=True))
            tracker = TokenTracker(url, config, spill_dir=ctx.work_dir / f"eventloop-spill-{backend}")
            variants = {"untracked": ([], False), "tracked": ([tracker], False), "guarded": ([tracker], True)}
            wall = {name: [] for name in variants}
            stall = {name: [] for name in variants}

            async def main():
                for name, (callbacks, guarded) in variants.items():  # warm up
                    await _gather(predict, lm, callbacks, tracker, guarded, f"warm-{name}")
                tracker.flush()
                names = list(variants)
                for r in range(rounds):
                    for name in names[r % 3:] + names[:r % 3]:
                        callbacks, guarded = variants[name]
                        ms, worst = await _gather(predict, lm, callbacks, tracker, guarded, f"{r}-{name}")
                        wall[name].append(ms)
                        stall[name].append(worst)
                        await asyncio.to_thread(tracker.flush)

            try:
                asyncio.run(main())
                assert tracker.flush(60) and tracker.stats.last_error is None
                store = Store(url)
                with store.db.connection_context():
                    left = store.models.Reservation.select().count()
                assert left == 0, f"{left} reservations were not settled"
            finally:
                tracker.close()
            base = Stat(wall["untracked"])
            for name in ("tracked", "guarded"):
                figures.append(Figure("eventloop", f"{backend}: {CONCURRENCY} concurrent acall, {name}", "ms wall",
                                      Stat(wall[name]), base, "untracked",
                                      notes=f"server latency {DELAY * 1000:.0f} ms, {rounds} rounds"))
                figures.append(Figure("eventloop", f"{backend}: added wall time, {name}", "ms",
                                      Stat([t - u for t, u in zip(wall[name], wall["untracked"])]), None))
                figures.append(Figure("eventloop", f"{backend}: worst loop stall, {name}", "ms",
                                      Stat(stall[name]), Stat(stall["untracked"]), "untracked"))
            ctx.say(f"    {backend}: wall untracked {statistics.median(wall['untracked']):.0f} ms, tracked "
                    f"{statistics.median(wall['tracked']):.0f} ms, guarded {statistics.median(wall['guarded']):.0f} ms")
    return figures
