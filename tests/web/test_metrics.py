"""``/metrics``: Prometheus text read from the database's rollups — the same numbers from every process, summing
every recording process, with bounded labels only."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dspy_tokens import Config
from dspy_tokens.web import create_app
from tests.support.web import ADMIN_TOKEN, MODELS, READ_TOKEN, ServedApp, client, totals

WORKER = "tests/support/workers/web_writer.py"


def scrape(served, token=READ_TOKEN) -> dict[tuple, float]:
    """(sample name, sorted labels) -> value."""
    response = client(served, token).get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def by_label(samples: dict, name: str, **fixed) -> dict[str, float]:
    out = {}
    for (sample, labels), value in samples.items():
        labels = dict(labels)
        if sample == name and all(labels.get(k) == v for k, v in fixed.items()):
            key = labels.get("model", labels.get("feature"))
            out[key] = value
    return out


class TestValues:
    def test_counters_per_model_and_feature_equal_the_rows(self, sqlite_served, sqlite_seeded):
        """Calls, tokens by type, cost and unknown-cost calls per model (and per feature), all time."""
        samples = scrape(sqlite_served)
        rows = sqlite_seeded.rows
        per_model = {m: totals([r for r in rows if r["model"] == m]) for m in MODELS}
        assert by_label(samples, "dspy_tokens_calls_total") == {m: t["calls"] for m, t in per_model.items()}
        assert by_label(samples, "dspy_tokens_tokens_total", token_type="input") == {
            m: t["prompt_tokens"] for m, t in per_model.items()}
        assert by_label(samples, "dspy_tokens_tokens_total", token_type="output") == {
            m: sum(r["completion_tokens"] or 0 for r in rows if r["model"] == m) for m in MODELS}
        cost = by_label(samples, "dspy_tokens_cost_usd_total")
        assert {m: Decimal(str(v)) for m, v in cost.items()} == pytest.approx(
            {m: t["cost_usd"] for m, t in per_model.items()})
        assert by_label(samples, "dspy_tokens_unknown_cost_calls_total") == {
            m: t["unknown_cost_calls"] for m, t in per_model.items()}
        assert by_label(samples, "dspy_tokens_feature_calls_total") == {
            f: sum(1 for r in rows if r["feature"] == f) for f in ("chat", "search")}
        assert samples[("dspy_tokens_database_up", ())] == 1

    def test_labels_are_bounded_never_user_or_guild_ids(self, sqlite_served):
        """Only model, feature and token_type label a sample."""
        labels = {name for (_, pairs) in scrape(sqlite_served) for name, _ in pairs}
        assert labels <= {"model", "feature", "token_type", "request_type"}
        assert labels >= {"model", "feature", "token_type"}

    def test_a_reader_app_has_no_writer_gauges_but_a_recording_tracker_has(self, sqlite_served, make_tracker,
                                                                          sqlite_url):
        """Writer backlog gauges describe this process's own tracker: absent for a reader."""
        assert not [k for k in scrape(sqlite_served) if k[0].startswith("dspy_tokens_writer")]
        with ServedApp(create_app(make_tracker(sqlite_url), read_token=READ_TOKEN)) as running:
            samples = scrape(running)
        assert samples[("dspy_tokens_writer_pending_rows", ())] == 0
        assert samples[("dspy_tokens_writer_up", ())] == 1


class TestSeveralProcesses:
    @pytest.mark.slow
    def test_every_process_reports_the_sum_of_all_recording_processes(self, database_url, server, tmp_path,
                                                                     make_tracker):
        """Two processes record at the same time; two other app instances both report their sum exactly."""
        make_tracker(database_url).close()  # the schema, before two processes race to create it
        workers = [subprocess.Popen([sys.executable, WORKER, database_url, server.url, str(tmp_path / f"spill{i}"),
                                     model, feature, "6"])
                   for i, (model, feature) in enumerate(((MODELS[0], "chat"), (MODELS[1], "search")))]
        assert [w.wait(120) for w in workers] == [0, 0]
        with ServedApp(create_app(database_url, read_token=READ_TOKEN, config=Config())) as one, \
                ServedApp(create_app(database_url, read_token=READ_TOKEN, config=Config())) as two:
            first, second = scrape(one), scrape(two)
        assert first == second
        assert by_label(first, "dspy_tokens_calls_total") == {MODELS[0]: 6, MODELS[1]: 6}
        assert by_label(first, "dspy_tokens_feature_calls_total") == {"chat": 6, "search": 6}
        sent = sum(r.usage["prompt_tokens"] for r in server.requests if r.usage)
        assert sum(by_label(first, "dspy_tokens_tokens_total", token_type="input").values()) == sent

    def test_metrics_need_a_token_when_tokens_are_set(self, sqlite_served):
        """/metrics is a read endpoint: a scraper sends the read token as a bearer token."""
        assert client(sqlite_served, token=None).get("/metrics").status_code == 401
        assert client(sqlite_served, ADMIN_TOKEN).get("/metrics").status_code == 200
