"""Case 6 of "loses nothing": misuse, tried as a new user would. A call after ``close()`` is recorded (with one
warning); a guard or usage_context whose calls reach no registered tracker warns once, naming the fix; a
misconfiguration is a ConfigurationError at construction, with the fix; the tracker survives DSPy's own pickling
(``dspy.settings.save``, ``program.save(save_program=True)``); SIGTERM drains when asked to; ``close()`` on a dead
database does not block for its whole timeout."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dspy
import pytest

from dspy_tokens import ConfigurationError, TokenTracker, usage_context
from dspy_tokens.config import parse_config
from tests.support.db import CLOSED_PORT_URL, rows_in
from tests.support.reliability import WORKERS, report
from tests.support.wire import ask


@pytest.fixture
def library_warnings(caplog):
    """The library's warnings from here on (the misuse warnings are once per process: reset them)."""
    caplog.set_level(logging.WARNING, logger="dspy_tokens")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "dspy_tokens" and r.levelno >= logging.WARNING]


@pytest.fixture
def fresh_misuse_warning(monkeypatch):
    """The "no tracker saw these calls" warning is given once per process; let this test see it afresh."""
    import dspy_tokens.capture.watch as watch
    monkeypatch.setattr(watch, "_warned", False)


class TestAfterClose:
    def test_calls_after_close_are_recorded_with_one_warning(self, make_tracker, sqlite_url, server,
                                                             library_warnings):
        """close(), then more calls through the same tracker: they are recorded (the tracker reopens), flush()
        is true only once they are committed, and one warning says what happened and what to do."""
        tracker = make_tracker(sqlite_url)
        ask(tracker, server, 2)
        assert tracker.close() is True
        ask(tracker, server, 3, start=2)
        flushed = tracker.flush(timeout=30)
        warned = [m for m in library_warnings() if "after close()" in m]
        report("6 calls after close()", {"calls_after_close": 3, "recorded": len(rows_in(sqlite_url)) - 2,
                                          "flush": flushed, "warnings": len(warned)})
        assert flushed and len(rows_in(sqlite_url)) == 5
        assert len(warned) == 1 and "Close the tracker when the program is done" in warned[0]


class TestUnregisteredTracker:
    @pytest.mark.parametrize("block", ["guard", "usage_context"])
    def test_a_block_whose_calls_no_tracker_sees_warns_once(self, make_tracker, sqlite_url, server,
                                                            library_warnings, fresh_misuse_warning, block):
        """A tracker never given to dspy.configure/dspy.context/the LM: its guard() admits (or a usage_context
        attributes), the calls inside are recorded by nobody — one warning names the fix (twice used, still
        one)."""
        tracker = make_tracker(sqlite_url, parse_config({"user_limit": 1000}, "unregistered"))
        predict = dspy.Predict("question -> answer")
        with dspy.context(lm=server.lm()):
            for i in range(2):
                with tracker.guard(user_id=1, estimate=10) if block == "guard" else usage_context(user_id=1):
                    predict(question=f"unseen {i}")
        assert tracker.flush(timeout=30)
        warned = [m for m in library_warnings() if "reached no TokenTracker" in m]
        report(f"6 {block} with no registered tracker", {"calls": 2, "recorded": len(rows_in(sqlite_url)),
                                                      "warnings": len(warned)})
        assert len(warned) == 1 and "dspy.configure(callbacks=[tracker])" in warned[0]

    @pytest.mark.parametrize("where", ["context-inside-the-guard", "on-the-lm", "configure"])
    def test_no_warning_when_the_tracker_sees_the_calls(self, make_tracker, sqlite_url, server, library_warnings,
                                                        fresh_misuse_warning, where):
        """Registered globally, on the LM, or with dspy.context inside the guard: recorded, no warning."""
        tracker = make_tracker(sqlite_url)
        predict = dspy.Predict("question -> answer")
        lm = server.lm(callbacks=[tracker]) if where == "on-the-lm" else server.lm()
        saved = dspy.settings.callbacks
        try:
            if where == "configure":
                dspy.configure(callbacks=[tracker])
            with dspy.context(lm=lm), usage_context(user_id=2):
                with tracker.guard(user_id=1, estimate=10):
                    if where == "context-inside-the-guard":
                        with dspy.context(callbacks=[tracker]):
                            predict(question="seen")
                    else:
                        predict(question="seen")
        finally:
            dspy.configure(callbacks=saved)
        assert tracker.flush(timeout=30)
        assert len(rows_in(sqlite_url)) == 1
        assert not [m for m in library_warnings() if "reached no TokenTracker" in m]


class TestMisconfiguration:
    @pytest.mark.parametrize("url, fix", [
        ("sqlite://usage.db", "sqlite:///usage.db"),
        ("sqlite:///:memory:", "cannot be shared by the writer thread"),
        ("sqlite://", "cannot be shared by the writer thread"),
    ])
    def test_a_sqlite_url_that_cannot_work_is_refused_with_the_fix(self, tmp_path, url, fix):
        """Two slashes (the file name read as a host: an in-memory database) and in-memory SQLite (each thread its
        own empty database) are ConfigurationErrors at construction, naming the fix."""
        with pytest.raises(ConfigurationError, match=fix.replace("[", r"\[")):
            TokenTracker(url, spill_dir=tmp_path / "spill")

    @pytest.mark.parametrize("url, blocked, extra", [
        ("postgresql://postgres@127.0.0.1:5432/test", ("psycopg2", "psycopg"), "dspy-tokens[postgres]"),
        ("mysql://root@127.0.0.1:3306/test", ("pymysql", "MySQLdb"), "dspy-tokens[mysql]"),
    ])
    def test_a_missing_driver_is_refused_with_the_extra_to_install(self, tmp_path, url, blocked, extra):
        """In an interpreter without the driver, TokenTracker(url) raises ConfigurationError naming the extra to
        install — not an outage that warns forever while rows pile up on disk."""
        code = textwrap.dedent(f"""
            import sys
            for name in {blocked!r}:
                sys.modules[name] = None  # as if it were not installed
            from dspy_tokens import ConfigurationError, TokenTracker
            try:
                TokenTracker({url!r}, spill_dir={str(tmp_path / 'spill')!r})
            except ConfigurationError as exc:
                print("refused:", exc)
            else:
                print("constructed")
        """)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.stdout.startswith("refused:"), done.stdout + done.stderr
        assert extra in done.stdout


class TestPickling:
    @pytest.mark.parametrize("kind", ["settings", "program"])
    @pytest.mark.parametrize("loading", ["live", "none"])
    def test_a_tracker_survives_dspys_own_save_and_load(self, make_tracker, database_url, server, tmp_path, kind,
                                                        loading):
        """dspy.settings.save with the tracker in callbacks, or program.save(save_program=True) with the tracker
        on the LM, then a fresh process loads it: the loaded callback is the live tracker of the same database
        (or, loaded before any exists, a reference that finds it, with one warning); its calls are recorded."""
        tracker = make_tracker(database_url)
        path = tmp_path / ("settings.pkl" if kind == "settings" else "program")
        saved = dspy.settings.callbacks
        try:
            if kind == "settings":
                dspy.configure(callbacks=[tracker])
                dspy.settings.save(str(path), exclude_keys=["lm"])
            else:
                program = dspy.Predict("question -> answer")
                program.set_lm(server.lm(callbacks=[tracker]))
                program.save(str(path), save_program=True)
        finally:
            dspy.configure(callbacks=saved)
        done = subprocess.run([sys.executable, str(WORKERS / "pickled.py"), kind, database_url,
                               str(tmp_path / "child-spill"), str(path), server.url, loading],
                              capture_output=True, text=True, timeout=180, cwd=str(WORKERS),
                              env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                                   # settings.save pickles the whole global settings, which may hold objects that
                                   # other tests of this process left there: their modules must import
                                   "PYTHONPATH": str(WORKERS.resolve().parents[2])})
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert result["flushed"] and result["committed"] == 1
        if loading == "live":
            assert result["loaded_is_tracker"] and not result["warnings"]
        else:
            assert result["loaded"] == "TrackerReference"
            assert len([m for m in result["warnings"] if "restored from a pickle" in m]) == 1

    def test_a_pickled_tracker_carries_no_thread_lock_or_password(self, make_tracker, tmp_path):
        """What is pickled is the database's identity: no lock, no connection, and not the URL's password."""
        import pickle

        tracker = make_tracker("postgresql://someone:s3cret-word@127.0.0.1:1/usage")
        data = pickle.dumps(tracker)
        assert b"s3cret-word" not in data
        assert pickle.loads(data) is tracker  # restored in the same process: the same live tracker

    def test_dspy_settings_save_no_longer_raises(self, tracker, tmp_path):
        """The issue's one-liner: dspy.configure(callbacks=[tracker]); dspy.settings.save("s.pkl")."""
        saved = dspy.settings.callbacks
        try:
            dspy.configure(callbacks=[tracker])
            try:
                dspy.settings.save(str(tmp_path / "s.pkl"))
                outcome = "saved"
            except RuntimeError as exc:
                outcome = str(exc)
        finally:
            dspy.configure(callbacks=saved)
        report("6 dspy.settings.save with the tracker in callbacks", {"outcome": outcome[:80]})
        assert outcome == "saved"


SIGTERM_CHILD = """
import os, signal, sys, time
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
sys.path.insert(0, {root!r})
from dspy_tokens import TokenTracker
from tests.support.wire import ask
from dspy_tokens.testing import FakeLLMServer
marks = []
signal.signal(signal.SIGTERM, lambda n, f: print("previous handler ran", flush=True))
tracker = TokenTracker({url!r}, spill_dir={spill!r})
tracker.install_signal_handlers()
with FakeLLMServer() as server:
    ask(tracker, server, 7)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


class TestSignals:
    @pytest.mark.parametrize("previous", ["python-handler", "default"])
    def test_sigterm_drains_then_runs_what_was_there_before(self, tmp_path, previous):
        """install_signal_handlers(): on SIGTERM the pending rows go to disk (database down), then the handler
        installed before runs — or, where there was none, the process exits with 143 as SIGTERM would end it."""
        from pathlib import Path

        root = str(Path(__file__).resolve().parents[1])
        code = SIGTERM_CHILD.format(root=root, url=CLOSED_PORT_URL, spill=str(tmp_path / "spill"))
        if previous == "default":
            code = code.replace('signal.signal(signal.SIGTERM, lambda n, f: print("previous handler ran", '
                                'flush=True))\n', "")
        else:  # the previous handler does not exit: end the child ourselves afterwards
            code = code.replace("while True:", "for _ in range(50):")
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        try:
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(signal.SIGTERM)
            out, err = child.communicate(timeout=30)
        finally:
            child.kill()
        spilled = sum(len(p.read_text().splitlines()) for p in (tmp_path / "spill").glob("spill-*.jsonl"))
        assert spilled == 7, err[-2000:]
        if previous == "default":
            assert child.returncode == 143
        else:
            assert "previous handler ran" in out and child.returncode == 0

    def test_only_the_main_thread_can_install_them(self, sqlite_tracker):
        """Python runs signal handlers in the main thread only: elsewhere it is an error that says so."""
        errors = []
        worker = threading.Thread(target=lambda: errors.append(_raised(sqlite_tracker.install_signal_handlers)))
        worker.start()
        worker.join()
        assert isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])


def _raised(fn):
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        return exc
    return None


def test_close_on_a_dead_database_returns_promptly(make_tracker, server, tmp_path):
    """close() while the database is unreachable spills at once instead of waiting out its timeout."""
    down = make_tracker(CLOSED_PORT_URL, spill_dir=tmp_path / "spill")
    ask(down, server, 5)
    time.sleep(0.5)  # the writer has tried and failed
    started = time.monotonic()
    committed = down.close(timeout=10)
    took = time.monotonic() - started
    report("6 close() with the database down", {"seconds": round(took, 1)})
    assert committed is False and took < 3
    assert sum(len(p.read_text().splitlines()) for p in (tmp_path / "spill").glob("spill-*.jsonl")) == 5
