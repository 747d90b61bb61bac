"""OpenTelemetry metrics under the GenAI semantic conventions, fed by the tracker's rows (the ``[otel]`` extra).

    from dspy_tokens.otel import instrument
    instrument(tracker)                      # the global MeterProvider, or meter_provider=...

Each recorded LM call adds to ``gen_ai.client.token.usage`` (a histogram in ``{token}``, one point per call and
``gen_ai.token.type``: ``input`` / ``output``) and ``gen_ai.client.operation.duration`` (seconds), with
``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model`` and, for
failed calls, ``error.type``. Calls DSPy answered from its cache reached no model and are not operations; calls
without reported usage add a duration only. Never a user or guild id: attributes stay bounded. These are this
process's calls (OpenTelemetry aggregates across processes in its collector); ``/metrics`` reads the database.
"""

from __future__ import annotations

import logging

from .errors import ConfigurationError
from .store import UsageRow

log = logging.getLogger("dspy_tokens")

# The semantic conventions' advisory bucket boundaries.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
#: LiteLLM's provider prefix -> the conventions' ``gen_ai.provider.name``.
PROVIDERS = {"bedrock": "aws.bedrock", "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini",
             "azure": "azure.ai.openai", "azure_ai": "azure.ai.inference", "mistral": "mistral_ai",
             "watsonx": "ibm.watsonx.ai", "xai": "x_ai"}
#: Our request types -> ``gen_ai.operation.name``.
OPERATIONS = {"chat": "chat", "responses": "chat", "completion": "text_completion", "embedding": "embeddings"}


def provider_of(model: str) -> str:
    prefix, _, rest = model.partition("/")
    return PROVIDERS.get(prefix, prefix) if rest else "openai"  # LiteLLM treats a bare name as OpenAI's


def attributes_of(row: UsageRow) -> dict[str, str]:
    request_type = getattr(row, "request_type", None) or "chat"
    found = {"gen_ai.operation.name": OPERATIONS.get(request_type, request_type),
             "gen_ai.provider.name": provider_of(row.model), "gen_ai.request.model": row.model}
    if row.response_model:
        found["gen_ai.response.model"] = row.response_model
    if row.error:
        found["error.type"] = row.error.split(":", 1)[0].strip() or "error"
    return found


class GenAIMetrics:
    """The two GenAI instruments, recorded from each row the tracker builds (on its intake thread)."""

    def __init__(self, meter_provider=None):
        try:
            from opentelemetry import metrics
        except ImportError as exc:
            raise ConfigurationError("OpenTelemetry metrics need the extra: pip install 'dspy-tokens[otel]'") from exc
        meter = metrics.get_meter("dspy_tokens", meter_provider=meter_provider)
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS))
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS))

    def __call__(self, row: UsageRow) -> None:
        if row.cache_hit:
            return
        attributes = attributes_of(row)
        if row.latency_ms is not None:
            self.duration.record(row.latency_ms / 1000, attributes)
        for token_type, count in (("input", row.prompt_tokens), ("output", row.completion_tokens)):
            if count is not None:
                self.tokens.record(count, {**attributes, "gen_ai.token.type": token_type})


def instrument(tracker, meter_provider=None) -> GenAIMetrics:
    """Record ``tracker``'s calls as OpenTelemetry GenAI metrics from now on; returns the instruments."""
    metrics = GenAIMetrics(meter_provider)
    tracker.on_row(metrics)
    return metrics
