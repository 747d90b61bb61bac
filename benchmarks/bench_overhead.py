"""1. Caller-thread overhead per LM call.

A real ``dspy.Predict`` calls :class:`~dspy_tokens.testing.FakeLLMServer` over HTTP (cache off), and the same
Predict is served from DSPy's memory cache (an LM with ``cache=True`` asked the same question again). Each is
timed with no callback, with a no-op ``BaseCallback``, and with a ``TokenTracker`` — all passed through
``dspy.context(callbacks=[...])`` — in interleaved rounds (the order rotates every round), so drift on a shared
machine hits all variants alike.

``TokenTracker`` is the caller-thread cost: the writer is kept off the measurement — the tracker's observed calls
are collected in a list during the timed round (``emit`` replaced by ``list.append``, ~the cost of the queue put)
and handed to its writer after the round, then ``flush()``ed, outside the timing. ``TokenTracker, writer live``
is the same tracker unmodified, its writer thread committing during the round: on a 2-core machine the writer's
Python work (row building, journal, SQL) competes with the caller for the GIL, and that figure shows how much.

``CPU per recorded call`` is what recording costs the process in all its threads (caller, intake, committer):
on DSPy cache hits, the process CPU (``time.process_time()``) of a block of calls through the live tracker,
``flush()`` included, minus that of the same block under the no-op callback, in interleaved rounds.

Also reported: the time spent inside the tracker's own callback methods per call, from separately instrumented
rounds (each ``on_*`` method wrapped with a ``perf_counter`` pair).
"""

from __future__ import annotations

import statistics
import time

from .common import Context, Figure, Stat


class _Instrumented:
    """Wraps a callback's ``on_*`` methods, accumulating the seconds spent inside them."""

    def __init__(self, callback):
        self.seconds = 0.0
        for name in dir(type(callback)):
            if name.startswith("on_"):
                setattr(callback, name, self._wrap(getattr(callback, name)))

    def _wrap(self, method):
        clock = time.perf_counter

        def timed(*args, **kwargs):
            start = clock()
            try:
                return method(*args, **kwargs)
            finally:
                self.seconds += clock() - start
        return timed


def run(ctx: Context) -> list[Figure]:
    import dspy
    from dspy.utils.callback import BaseCallback

    from dspy_tokens import TokenTracker
    from dspy_tokens.testing import FakeLLMServer

    class NoOp(BaseCallback):
        """Does nothing: measures DSPy's own cost of having a callback at all."""

    rounds = 3 if ctx.quick else 5
    plans = [("Predict over HTTP", False, 25 if ctx.quick else 100),
             ("Predict, DSPy cache hit", True, 100 if ctx.quick else 500)]
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True,
                         disk_cache_dir=str(ctx.work_dir / "dspy_cache"))
    figures: list[Figure] = []

    def tracker(name: str) -> TokenTracker:
        return TokenTracker(f"sqlite:///{ctx.work_dir / f'overhead-{name}.db'}",
                            spill_dir=ctx.work_dir / f"overhead-spill-{name}")

    with FakeLLMServer() as server:
        deferred_tracker, live_tracker, instrumented_tracker = tracker("deferred"), tracker("live"), tracker("probe")
        collected: list = []
        submit = deferred_tracker.emit  # the writer's own submit
        deferred_tracker.emit = collected.append  # the writer sees these after the round
        probe = _Instrumented(instrumented_tracker)
        trackers = (deferred_tracker, live_tracker, instrumented_tracker)
        variants = {"none": [], "no-op callback": [NoOp()], "TokenTracker": [deferred_tracker],
                    "TokenTracker, writer live": [live_tracker]}
        predict = dspy.Predict("question -> answer")

        def settle() -> None:  # outside the timing
            for call in collected:
                submit(call)
            collected.clear()
            for t in trackers:
                assert t.flush(60), t.stats.last_error

        try:
            for label, cached, calls in plans:
                lm = server.lm("openai/gpt-4o-mini", cache=cached)
                question = "What is the capital of France?" if cached else None
                per_call = {name: [] for name in variants}

                def batch(callbacks, n):
                    with dspy.context(lm=lm, callbacks=callbacks):
                        start = time.perf_counter()
                        for i in range(n):
                            predict(question=question or f"question number {i}")
                        return (time.perf_counter() - start) / n * 1e6

                for callbacks in variants.values():  # warm up (and fill the cache)
                    batch(callbacks, 10)
                settle()
                answered_before = server.answered
                names = list(variants)
                for r in range(rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        per_call[name].append(batch(variants[name], calls))
                        settle()
                if cached:
                    assert server.answered == answered_before, "the cache-hit rounds reached the server"
                if cached:
                    cpu = {"TokenTracker": [], "no-op callback": []}
                    for r in range(rounds):
                        order = ["TokenTracker", "no-op callback"][::1 if r % 2 == 0 else -1]
                        for name in order:
                            callbacks = [live_tracker] if name == "TokenTracker" else variants["no-op callback"]
                            settle()
                            start_cpu = time.process_time()
                            batch(callbacks, calls)
                            if name == "TokenTracker":
                                assert live_tracker.flush(60), live_tracker.stats.last_error
                            cpu[name].append((time.process_time() - start_cpu) / calls * 1e6)
                    ours_cpu, noop_cpu = Stat(cpu["TokenTracker"]), Stat(cpu["no-op callback"])
                    added_cpu = Stat([a - b for a, b in zip(cpu["TokenTracker"], cpu["no-op callback"])])
                    figures += [
                        Figure("overhead", f"{label}: CPU per recorded call, all threads, flush included", "µs/call",
                               added_cpu, None, notes=f"process CPU of a {calls}-call block with the live tracker "
                               f"minus the same block with a no-op callback, {rounds} interleaved rounds"),
                        Figure("overhead", f"{label}: process CPU per call, TokenTracker block vs no-op block",
                               "µs/call", ours_cpu, noop_cpu, "no-op callback block",
                               notes="time.process_time(), all threads, flush included"),
                    ]
                    ctx.say(f"    {label}: process CPU per call: TokenTracker block {ours_cpu.median:.0f} µs, "
                            f"no-op block {noop_cpu.median:.0f} µs, added {added_cpu.median:.0f} µs "
                            f"({added_cpu.min:.0f}–{added_cpu.max:.0f})")
                inside = []
                for _ in range(rounds):
                    probe.seconds = 0.0
                    batch([instrumented_tracker], calls)
                    inside.append(probe.seconds / calls * 1e6)
                    settle()
                none, noop, ours, live = (Stat(per_call[n]) for n in names)

                def diff(a, b):
                    return Stat([x - y for x, y in zip(per_call[a], per_call[b])])

                figures += [
                    Figure("overhead", f"{label}: TokenTracker vs no callback", "µs/call", ours, none,
                           "no callback", notes=f"{calls} calls x {rounds} rounds, interleaved"),
                    Figure("overhead", f"{label}: TokenTracker vs no-op BaseCallback", "µs/call", ours, noop,
                           "no-op callback"),
                    Figure("overhead", f"{label}: added by TokenTracker over a no-op callback", "µs/call",
                           diff("TokenTracker", "no-op callback"), None, notes="same-round differences"),
                    Figure("overhead", f"{label}: added by any callback (DSPy's own cost)", "µs/call",
                           diff("no-op callback", "none"), None, ours_name="DSPy", notes="no-op minus none"),
                    Figure("overhead", f"{label}: time inside TokenTracker's callbacks", "µs/call",
                           Stat(inside), None, notes="instrumented rounds"),
                    Figure("overhead", f"{label}: TokenTracker, writer live vs no-op BaseCallback", "µs/call",
                           live, noop, "no-op callback", notes="writer committing on its thread meanwhile"),
                ]
                ctx.say(f"    {label}: none {none.median:.0f} µs, no-op {noop.median:.0f} µs, TokenTracker "
                        f"{ours.median:.0f} µs (writer live {live.median:.0f} µs), inside the tracker "
                        f"{statistics.median(inside):.1f} µs")
            for t in trackers:
                assert t.stats.last_error is None, t.stats.last_error
        finally:
            for t in trackers:
                t.close()
    return figures
