"""A separate process making guarded DSPy calls; used by the cross-process limit race test
(``tests/limits/test_race.py``), which starts it with multiprocessing's spawn as
``tests.support.workers.race_worker.run``."""

from __future__ import annotations

import os
import threading

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def run(database_url: str, config: dict, threads: int, barrier, results, spill_dir: str) -> None:
    import dspy

    from dspy_tokens import TokenLimitExceeded, TokenTracker
    from dspy_tokens.config import parse_config
    from dspy_tokens.testing import FakeLLMServer, Reply

    tracker = TokenTracker(database_url, parse_config(config, "race"), spill_dir=spill_dir)
    outcome = []
    with FakeLLMServer(delay=0.05) as server:
        server.enqueue(*[Reply(prompt_tokens=4_000, completion_tokens=1_000) for _ in range(threads)])
        lm = server.lm()
        predict = dspy.Predict("question -> answer")

        def request(i):
            barrier.wait()
            try:
                with dspy.context(lm=lm, callbacks=[tracker]), tracker.guard(42, estimate=5_000):
                    predict(question=f"request {os.getpid()}-{i}")
                outcome.append("admitted")
            except TokenLimitExceeded:
                outcome.append("refused")

        workers = [threading.Thread(target=request, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        tracker.close(timeout=30)
        results.put((outcome.count("admitted"), outcome.count("refused"), server.usage_totals()["total_tokens"]))
