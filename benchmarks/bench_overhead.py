"""1. Caller-thread overhead per LM call.

A real ``dspy.Predict`` calls :class:`~dspy_tokens.testing.FakeLLMServer` over HTTP (cache off), and the same
Predict is served from DSPy's memory cache (an LM with ``cache=True`` asked the same question again). Each is
timed with no callback, with a no-op ``BaseCallback``, and with a ``TokenTracker`` — all passed through
``dspy.context(callbacks=[...])`` — in interleaved rounds (the order rotates every round), so drift on a shared
machine hits all three alike. The writer commits on its own thread during the rounds (that is the design: the
caller only enqueues); ``flush()`` runs between rounds, outside the timing.

Also reported: the time spent inside the tracker's own callback methods per call, from a separately instrumented
round (each ``on_*`` method wrapped with a ``perf_counter`` pair).
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

    rounds = 3 if ctx.quick else 7
    plans = [("Predict over HTTP", False, 30 if ctx.quick else 120),
             ("Predict, DSPy cache hit", True, 150 if ctx.quick else 600)]
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True,
                         disk_cache_dir=str(ctx.work_dir / "dspy_cache"))
    figures: list[Figure] = []
    with FakeLLMServer() as server:
        tracker = TokenTracker(f"sqlite:///{ctx.work_dir / 'overhead.db'}", spill_dir=ctx.work_dir / "overhead-spill")
        instrumented_tracker = TokenTracker(f"sqlite:///{ctx.work_dir / 'overhead-instrumented.db'}",
                                            spill_dir=ctx.work_dir / "overhead-spill2")
        probe = _Instrumented(instrumented_tracker)
        variants = {"none": [], "no-op callback": [NoOp()], "TokenTracker": [tracker]}
        predict = dspy.Predict("question -> answer")
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
                tracker.flush()
                answered_before = server.answered
                names = list(variants)
                for r in range(rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        per_call[name].append(batch(variants[name], calls))
                        tracker.flush()  # outside the timing
                if cached:
                    assert server.answered == answered_before, "the cache-hit rounds reached the server"
                # Time inside the tracker's methods, from separate instrumented rounds.
                inside = []
                for _ in range(rounds):
                    probe.seconds = 0.0
                    batch([instrumented_tracker], calls)
                    inside.append(probe.seconds / calls * 1e6)
                    instrumented_tracker.flush()
                none, noop, ours = (Stat(per_call[n]) for n in names)
                added_noop = Stat([t - o for t, o in zip(per_call["TokenTracker"], per_call["no-op callback"])])
                added_none = Stat([t - o for t, o in zip(per_call["TokenTracker"], per_call["none"])])
                dspy_cost = Stat([o - n for o, n in zip(per_call["no-op callback"], per_call["none"])])
                figures += [
                    Figure("overhead", f"{label}: TokenTracker vs no callback", "µs/call", ours, none,
                           "no callback", notes=f"{calls} calls x {rounds} rounds"),
                    Figure("overhead", f"{label}: TokenTracker vs no-op BaseCallback", "µs/call", ours, noop,
                           "no-op callback"),
                    Figure("overhead", f"{label}: added by TokenTracker over no-op callback", "µs/call",
                           added_noop, None, notes="per-round difference, same round"),
                    Figure("overhead", f"{label}: added by any callback (DSPy's own cost)", "µs/call",
                           dspy_cost, None, ours_name="DSPy", notes="no-op callback minus none"),
                    Figure("overhead", f"{label}: added by TokenTracker over no callback", "µs/call",
                           added_none, None),
                    Figure("overhead", f"{label}: time inside TokenTracker's callbacks", "µs/call",
                           Stat(inside), None, notes="instrumented rounds"),
                ]
                ctx.say(f"    {label}: none {statistics.median(per_call['none']):.0f} µs, no-op "
                        f"{statistics.median(per_call['no-op callback']):.0f} µs, TokenTracker "
                        f"{statistics.median(per_call['TokenTracker']):.0f} µs, inside tracker "
                        f"{statistics.median(inside):.1f} µs")
            assert tracker.flush(30) and tracker.writer.last_error is None
        finally:
            tracker.close()
            instrumented_tracker.close()
    return figures
