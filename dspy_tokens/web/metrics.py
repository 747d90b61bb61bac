"""``GET /metrics``: Prometheus text, read from the database's rollups at each scrape.

Every process serving this app reports the same numbers, however many processes record calls: the totals are
the database's (all time; the rollups are kept by retention, so counters never go down), not counters kept in
memory. Labels are bounded: ``model`` on the main families, ``feature`` on the ``*_feature_*`` families (the
rollups hold each dimension on its own; a model x feature cross would read the daily cube, as large as the rows),
and ``token_type``; ``dspy_tokens_limit_refusals_total`` (the database's refusal counts) by model, feature and the
refusing rule's scope and metric. Never a user or guild id. The writer gauges describe this process's own tracker
and are present only when the app was given a recording tracker (a bot serving its own dashboard).

Families per dimension come from :data:`METRIC_DIMENSIONS`: a ``request_type`` dimension joins by itself once
the reports API knows it (``dspy_tokens_request_type_*``).
"""

from __future__ import annotations

import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from dspy_tokens import StorageError, TokenTracker
from dspy_tokens.reports import BREAKDOWNS

log = logging.getLogger("dspy_tokens.web")
CONTENT_TYPE = CONTENT_TYPE_LATEST  # what /metrics answers with
METRIC_DIMENSIONS = tuple(d for d in ("model", "feature", "request_type") if d in BREAKDOWNS)
TOKEN_TYPES = (("input", "prompt_tokens"), ("output", "completion_tokens"), ("cached", "cached_tokens"),
               ("reasoning", "reasoning_tokens"))
COUNTS = (("calls", "calls", "LM calls recorded"),
          ("unknown_cost_calls", "unknown_cost_calls", "answered calls without a known price (not in the cost)"),
          ("cache_hits", "cache_hits", "calls DSPy answered from its cache"),
          ("errors", "errors", "failed calls"))


class UsageCollector:
    """A prometheus-client collector over one tracker (registered in the app's own registry)."""

    def __init__(self, tracker: TokenTracker):
        self.tracker = tracker

    def describe(self):
        return []  # collected at scrape time only: registering must not read the database

    def collect(self):
        up = GaugeMetricFamily("dspy_tokens_database_up", "1 when the usage database answered this scrape")
        try:
            groups = {dim: self.tracker.breakdown(dim) for dim in METRIC_DIMENSIONS}
            refused = self.tracker.limit_refusals()
        except StorageError as exc:
            log.warning("dspy-tokens web: /metrics could not read the database: %s", exc)
            up.add_metric([], 0)
            yield up
            yield from self._writer()
            return
        up.add_metric([], 1)
        yield up
        for dim, found in groups.items():
            prefix = "dspy_tokens" if dim == "model" else f"dspy_tokens_{dim}"
            of = f" by {dim}" if dim != "model" else ""
            labels = [g.key if g.key is not None else "" for g in found]
            for name, attr, text in COUNTS:
                family = CounterMetricFamily(f"{prefix}_{name}", f"{text}{of}", labels=[dim])
                for label, g in zip(labels, found):
                    family.add_metric([label], getattr(g, attr))
                yield family
            tokens = CounterMetricFamily(f"{prefix}_tokens", f"tokens by type{of} (cached lie within input, "
                                         "reasoning within output)", labels=[dim, "token_type"])
            cost = CounterMetricFamily(f"{prefix}_cost_usd", f"cost of the priced calls in USD{of}", labels=[dim])
            for label, g in zip(labels, found):
                for token_type, attr in TOKEN_TYPES:
                    tokens.add_metric([label, token_type], getattr(g, attr))
                cost.add_metric([label], float(g.cost_usd))
            yield tokens
            yield cost
        refusals = CounterMetricFamily("dspy_tokens_limit_refusals", "guarded runs refused by a limit, by the "
                                       "refusing rule's scope and metric", labels=["model", "feature", "scope",
                                                                                   "metric"])
        for r in refused:
            refusals.add_metric([r.model, r.feature, r.scope, r.metric], r.refusals)
        yield refusals
        yield from self._writer()

    def _writer(self):
        stats = self.tracker.stats
        if stats is None:
            return
        pending = GaugeMetricFamily("dspy_tokens_writer_pending_rows", "rows observed but not yet committed")
        pending.add_metric([], stats.pending)
        committed = CounterMetricFamily("dspy_tokens_writer_committed_rows", "rows this process's writer committed")
        committed.add_metric([], stats.committed)
        alive = GaugeMetricFamily("dspy_tokens_writer_up", "1 while this process's writer threads run")
        alive.add_metric([], 1 if stats.alive else 0)
        failing = GaugeMetricFamily("dspy_tokens_writer_failing", "1 while the last write failed (rows wait)")
        failing.add_metric([], 1 if stats.last_error else 0)
        yield from (pending, committed, alive, failing)


def registry_for(tracker: TokenTracker) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(UsageCollector(tracker))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
