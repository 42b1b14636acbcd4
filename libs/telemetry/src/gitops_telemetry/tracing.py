"""Tracer provider set-up and W3C trace-context propagation through message headers.

One trace per release: git-watcher starts it, and every service continues it from the
`traceparent` header of the event it consumes. The exporter is OTLP over HTTP when an
endpoint is configured; tests pass their own (in-memory) exporter instead.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

_provider: TracerProvider | None = None


def setup_tracing(
    service_name: str,
    *,
    otlp_endpoint: str | None = None,
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install the process-wide tracer provider for a service.

    With an explicit exporter (tests), spans are exported synchronously as they end; with an
    OTLP endpoint they are batched. With neither, spans are still created (so trace ids reach
    logs and headers) but go nowhere.
    """
    global _provider
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service_name}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    elif otlp_endpoint:
        endpoint = otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if _provider is None:
        trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def tracer(name: str) -> trace.Tracer:
    """A tracer from the provider set up for this process."""
    if _provider is not None:
        return _provider.get_tracer(name)
    return trace.get_tracer(name)


def shutdown_tracing() -> None:
    """Flush and stop the exporter; call once at process exit."""
    if _provider is not None:
        _provider.force_flush()
        _provider.shutdown()


def inject_headers() -> dict[str, str]:
    """The W3C trace-context headers of the current span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str]) -> otel_context.Context:
    """The trace context carried by message headers (empty context when there is none)."""
    return propagate.extract(dict(headers))


def current_ids() -> tuple[str | None, str | None]:
    """Hex trace and span ids of the current span, or (None, None) outside any span."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")
