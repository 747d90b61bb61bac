"""A separate process for the fault tests. Prints one JSON object per line (``{"event": ...}``).

    child.py record  DB_URL LLM_URL SPILL_DIR THREADS [signals]
                                                          make tracked calls until killed ("signals": drain on
                                                          SIGTERM with tracker.install_signal_handlers())
    child.py drain   DB_URL SPILL_DIR SECONDS             a tracker that replays what waits, stays SECONDS, exits
    child.py contend DB_URL LLM_URL SPILL_DIR THREADS SECONDS CONFIG_JSON
                                                          guarded calls + checks + plain calls, then report
    child.py hold    DB_URL SPILL_DIR CONFIG_JSON USER ESTIMATE
                                                          enter tracker.guard() and wait inside it until killed
    child.py alerts  DB_URL SPILL_DIR CONFIG_JSON USER START_AT CHECKS
                                                          at START_AT (epoch seconds) check USER CHECKS times from
                                                          4 threads; report the budget alerts this process fired
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
import litellm  # noqa: E402, F401 - pricing's first use imports it (~2 s); here, before the timed part


def emit(event: str, **values) -> None:
    print(json.dumps({"event": event, **values}), flush=True)


def make_lm(llm_url: str):
    import dspy
    return dspy.LM("openai/gpt-4o-mini", api_base=llm_url, api_key="test", cache=False)


def record(db_url: str, llm_url: str, spill_dir: str, threads: str, signals: str = "") -> None:
    """Tracked calls from several threads, forever; reports how many calls returned so far."""
    import dspy

    from dspy_tokens import TokenTracker, usage_context

    tracker = TokenTracker(db_url, spill_dir=spill_dir)
    if signals and hasattr(tracker, "install_signal_handlers"):  # versions without it die at SIGTERM's default
        tracker.install_signal_handlers()
    lm, predict = make_lm(llm_url), dspy.Predict("question -> answer")
    done = [0]
    lock = threading.Lock()

    def worker(n: int) -> None:
        i = 0
        while True:
            with dspy.context(lm=lm, callbacks=[tracker]), usage_context(user_id=1 + n, feature="crash"):
                predict(question=f"pid {os.getpid()} thread {n} call {i}")
            i += 1
            with lock:
                done[0] += 1

    for n in range(int(threads)):
        threading.Thread(target=worker, args=(n,), daemon=True).start()
    emit("started", pid=os.getpid())
    while True:
        time.sleep(0.05)
        emit("progress", calls=done[0], committed=tracker.stats.committed)


class _Problems(logging.Handler):
    """Counts the library's warnings and errors (e.g. a lock error that was retried, or a fail-open check)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}"[:300])


def contend(db_url: str, llm_url: str, spill_dir: str, threads: str, seconds: str, config_json: str) -> None:
    """Each thread loops: a guarded call, a check(), a plain tracked call. Everything a user could see is
    counted: exceptions, refusals, decisions that say the limits could not be checked, library log lines."""
    import dspy

    from dspy_tokens import TokenLimitExceeded, TokenTracker
    from dspy_tokens.config import parse_config

    problems = _Problems()
    logging.getLogger("dspy_tokens").addHandler(problems)
    tracker = TokenTracker(db_url, parse_config(json.loads(config_json), "contend"), spill_dir=spill_dir)
    lm, predict = make_lm(llm_url), dspy.Predict("question -> answer")
    stats = {"guarded": 0, "checks": 0, "plain": 0, "refused": 0, "unchecked": 0, "errors": []}
    lock = threading.Lock()
    deadline = time.monotonic() + float(seconds)

    def bump(key, value=1):
        with lock:
            if key == "errors":
                stats[key].append(value)
            else:
                stats[key] += value

    def worker(n: int) -> None:
        user, guild = 1 + (os.getpid() * 10 + n) % 50, 1 + n % 3
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                with dspy.context(lm=lm, callbacks=[tracker]):
                    try:
                        with tracker.guard(user_id=user, guild_id=guild, estimate=500) as decision:
                            if "could not be checked" in decision.message:
                                bump("unchecked")
                            predict(question=f"guarded {os.getpid()} {n} {i}")
                        bump("guarded")
                    except TokenLimitExceeded:
                        bump("refused")
                    decision = tracker.check(user_id=user, guild_id=guild)
                    if "could not be checked" in decision.message:
                        bump("unchecked")
                    bump("checks")
                    predict(question=f"plain {os.getpid()} {n} {i}")
                    bump("plain")
            except Exception as exc:  # anything here escaped to the user's code
                bump("errors", f"{type(exc).__name__}: {exc}"[:300])

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(int(threads))]
    emit("started", pid=os.getpid())
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    flushed = tracker.flush(60)
    tracker.close()
    emit("done", flushed=flushed, last_error=tracker.stats.last_error, problems=problems.messages[:20],
         problem_count=len(problems.messages), **stats)


def drain(db_url: str, spill_dir: str, seconds: str) -> None:
    """A tracker that only replays what waits in the spill directory, stays up for SECONDS, then closes."""
    from dspy_tokens import TokenTracker

    tracker = TokenTracker(db_url, spill_dir=spill_dir)
    emit("started", pid=os.getpid())
    flushed = tracker.flush(60)
    time.sleep(float(seconds))
    emit("done", flushed=flushed, committed=tracker.stats.committed, closed=tracker.close(30))


def hold(db_url: str, spill_dir: str, config_json: str, user: str, estimate: str) -> None:
    """Take a reservation inside tracker.guard() and never leave the block."""
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config

    tracker = TokenTracker(db_url, parse_config(json.loads(config_json), "hold"), spill_dir=spill_dir)
    with tracker.guard(user_id=int(user), estimate=int(estimate)) as decision:
        emit("held", reservation=decision.reservation_id, allowed=decision.allowed, at=time.time())
        time.sleep(3600)


def alerts(db_url: str, spill_dir: str, config_json: str, user: str, start_at: str, checks: str) -> None:
    """Checks racing another process's on the same database; every alert this process fires is reported."""
    from dspy_tokens import TokenTracker
    from dspy_tokens.config import parse_config

    tracker = TokenTracker(db_url, parse_config(json.loads(config_json), "alerts"), spill_dir=spill_dir)
    fired = []
    tracker.on_alert(lambda alert: fired.append(alert.threshold))
    time.sleep(max(0.0, float(start_at) - time.time()))

    def worker() -> None:
        for _ in range(int(checks)):
            tracker.check(int(user), estimate=0)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    tracker.close(timeout=10)  # posts what the webhook queue still holds
    emit("fired", thresholds=fired)


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    {"record": record, "contend": contend, "hold": hold, "drain": drain, "alerts": alerts}[command](*arguments)
