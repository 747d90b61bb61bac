"""The issue's numbered budget cases 1–4 and 6, each reproduced and now held: small limits, per-model limits named
by label, reservations on the database's clock, errors that are not outages, and used vs reserved in messages."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import dspy
import pytest

import dspy_tokens.limits.limiter as limiter_module
from dspy_tokens import Config, TokenLimitExceeded
from tests.support.limits import GUILD, NOW, USER, config, seed

MINI = {"label": "mini", "name": "gpt-4o-mini", "provider": "openai"}


class TestCase1SmallLimits:
    def test_a_new_user_under_a_limit_smaller_than_the_default_estimate_is_admitted(self, make_tracker, database_url,
                                                                                    server):
        """user_limit 3,000 < the default estimate 4,000: check() and guard() admit a new user, holding what is
        left, and say so; the run really executes."""
        tracker = make_tracker(database_url, config(user_limit=3_000))
        decision = tracker.check(USER)
        assert decision.allowed and decision.estimate_source == "left" and decision.requested == 3_000
        assert "sized to what is left (3,000)" in decision.message
        with dspy.context(lm=server.lm(), callbacks=[tracker]), tracker.guard(USER) as held:
            assert held.allowed and held.reservation_id
            dspy.Predict("question -> answer")(question="hello")
        assert len(server.requests) == 1

    def test_at_48_percent_the_user_is_admitted(self, make_tracker, database_url):
        """1,440 of 3,000 used: allowed, sized to the 1,560 left."""
        tracker = make_tracker(database_url, config(user_limit=3_000))
        seed(tracker, dict(user_id=USER, prompt_tokens=1_440, completion_tokens=0, created_at=NOW))
        decision = tracker.check(USER, now=NOW)
        assert decision.allowed and decision.used == 1_440 and decision.requested == 1_560

    def test_at_the_limit_the_user_is_refused(self, make_tracker, database_url):
        tracker = make_tracker(database_url, config(user_limit=3_000))
        seed(tracker, dict(user_id=USER, prompt_tokens=3_000, completion_tokens=0, created_at=NOW))
        assert not tracker.check(USER, now=NOW).allowed

    def test_the_estimate_comes_from_the_real_prompt_plus_the_output_cap(self, make_tracker, sqlite_url):
        """``prompt=`` is counted with litellm.token_counter; the model's max_tokens is the output cap."""
        import litellm

        tracker = make_tracker(sqlite_url, config(user_limit=100_000, models=[{**MINI, "max_tokens": 500}]))
        messages = [{"role": "user", "content": "How many tokens is this short question?"}]
        decision = tracker.check(USER, model="mini", prompt=messages)
        counted = litellm.token_counter(model="openai/gpt-4o-mini", messages=messages)
        assert decision.estimate_source == "prompt" and decision.requested == counted + 500

    def test_an_explicit_estimate_is_never_cut_down(self, make_tracker, sqlite_url):
        tracker = make_tracker(sqlite_url, config(user_limit=3_000))
        decision = tracker.check(USER, estimate=4_000)
        assert not decision.allowed and decision.estimate_source == "given"
        assert "larger than the whole limit" in decision.message


class TestCase2ModelNames:
    @pytest.mark.parametrize("named", ["mini", "gpt-4o-mini", "openai/gpt-4o-mini"])
    def test_a_reservation_under_any_name_counts_for_the_per_model_rule(self, make_tracker, database_url, named):
        """guard(model=<label | bare name | provider/name>) holds under the key the per-model rule sums."""
        tracker = make_tracker(database_url, config(models=[{**MINI, "user_limit": 10_000}]))
        with tracker.guard(USER, model=named, estimate=6_000):
            other = tracker.check(USER, model="mini", estimate=6_000)
            assert not other.allowed and other.reserved == 6_000 and other.used == 0

    def test_racing_guards_by_label_admit_only_what_fits(self, make_tracker, database_url, server):
        """12 threads, guard(model="mini") asking 5,000 against a per-model limit of 20,000: 4 admitted."""
        tracker = make_tracker(database_url, config(models=[{**MINI, "user_limit": 20_000}]))
        start, decided, outcome = threading.Barrier(12), threading.Barrier(12), []

        def run():
            start.wait()
            try:
                with tracker.guard(USER, model="mini", estimate=5_000):
                    outcome.append("admitted")
                    decided.wait(timeout=30)
            except TokenLimitExceeded:
                outcome.append("refused")
                decided.wait(timeout=30)

        threads = [threading.Thread(target=run) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcome.count("admitted") == 4


class _Skewed(datetime):
    """A host whose clock runs 700 s ahead (beyond the 600 s reservation TTL)."""

    @classmethod
    def now(cls, tz=None):
        return datetime.now(tz) + timedelta(seconds=700)


class TestCase3DatabaseClock:
    def test_a_host_ahead_of_the_others_still_sees_their_reservations(self, make_tracker, database_url,
                                                                      monkeypatch):
        """Runs hold 4 × 5,000 of 20,000; a process 700 s ahead then asks: it sees every hold and is refused, and
        its decision deletes none of them."""
        tracker = make_tracker(database_url, config(user_limit=20_000))
        holds = [tracker.guard(USER, estimate=5_000) for _ in range(4)]
        for hold in holds:
            assert hold.__enter__().allowed
        monkeypatch.setattr(limiter_module, "datetime", _Skewed)
        ahead = make_tracker(database_url, config(user_limit=20_000))
        with pytest.raises(TokenLimitExceeded) as refused:
            with ahead.guard(USER, estimate=5_000):
                pass
        assert refused.value.decision.reserved == 20_000
        assert tracker.check(USER, estimate=0).reserved == 20_000
        for hold in reversed(holds):
            hold.__exit__(None, None, None)


class TestCase4ErrorsThatAreNotOutages:
    def test_an_evaluation_error_refuses_even_with_fail_open(self, make_tracker, sqlite_url, caplog):
        """A window too large to compute (a Config built without validation) raises inside the check: that is
        not an outage, so fail_open does not admit; the error is logged."""
        tracker = make_tracker(sqlite_url, Config(user_limit=1_000, time_window_days=3_000_000, fail_open=True))
        decision = tracker.check(USER, estimate=10)
        assert not decision.allowed and "could not be evaluated" in decision.message
        assert "could not be evaluated" in caplog.text

    def test_a_real_outage_still_follows_fail_open(self, make_tracker, tmp_path):
        """An unreachable database is an outage: fail_open admits (with a warning)."""
        tracker = make_tracker("postgresql://nobody@127.0.0.1:1/none", config(user_limit=1_000), _record=False)
        decision = tracker.check(USER, estimate=10)
        assert decision.allowed and decision.warning and "could not be checked" in decision.message


class TestCase6UsedAndReserved:
    def test_tokens_held_by_a_killed_process_are_not_called_used(self, make_tracker, database_url):
        """0 used, 5,000 held (a process that died mid-run): the decision and message keep them apart."""
        tracker = make_tracker(database_url, config(user_limit=5_000))
        hold = tracker.guard(USER, GUILD, estimate=5_000)
        hold.__enter__()  # never exited: as if the process was killed
        decision = tracker.check(USER, GUILD, estimate=1)
        assert (decision.used, decision.reserved, decision.allowed) == (0, 5_000, False)
        assert "You have used 0 of 5,000 tokens" in decision.message
        # No hold outlasts its time to live (600 s by default) from now.
        assert decision.held_until is not None
        assert 0 < (decision.held_until - datetime.now(timezone.utc)).total_seconds() <= 600
        latest = decision.held_until.replace(second=0, microsecond=0) + timedelta(minutes=1)
        clock = f"{latest:%H:%M}" if latest.date() == datetime.now(timezone.utc).date() else f"{latest:%Y-%m-%d %H:%M}"
        assert (f"5,000 more are held by requests in progress (released by {clock} UTC at the latest)"
                in decision.message)
        assert "in flight must finish first" in decision.message
        hold.__exit__(None, None, None)  # unbinds the block's attribution from this thread
