"""A real OTLP/HTTP trace receiver on loopback, so tests can see spans of other processes.

Service processes export with the production OTLP exporter; this receiver decodes the same
protobuf a collector would and keeps the spans for assertions.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    """What a test needs of an exported span."""

    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: int
    # (trace id, span id) of every span this one links to, in hex.
    links: tuple[tuple[str, str], ...] = ()


class OtlpReceiver:
    """Accepts POST /v1/traces and records the spans."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def endpoint(self) -> str:
        """The base URL to give OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.add_routes([web.post("/v1/traces", self._receive)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        for resource_spans in message.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "?",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        ReceivedSpan(
                            service=service,
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            kind=span.kind,
                            links=tuple(
                                (link.trace_id.hex(), link.span_id.hex()) for link in span.links
                            ),
                        )
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def named(self, service: str, name: str) -> list[ReceivedSpan]:
        """Spans of one service with one name."""
        return [s for s in self.spans if s.service == service and s.name == name]
