"""Publishing events: envelope, trace context, durable send (acks from all in-sync replicas)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from opentelemetry import trace

from gitops_events import Envelope, Event, encode, topic_for
from gitops_telemetry import tracing
from gitops_telemetry.metrics import Metrics


class Publisher:
    """Sends events to their topics; `publish` returns once the broker has them."""

    def __init__(
        self,
        bootstrap_servers: str,
        prefix: str,
        source: str,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.prefix = prefix
        self.source = source
        self._metrics = metrics
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            client_id=source.replace("/", "-"),
            request_timeout_ms=15000,
        )
        self.started = False

    async def start(self) -> None:
        """Connect to the brokers."""
        await self._producer.start()
        self.started = True

    async def stop(self) -> None:
        """Flush and disconnect."""
        self.started = False
        await self._producer.stop()

    async def publish(self, event: Event) -> Envelope:
        """Publish one event to its topic, as a child span of the current one."""
        topic = topic_for(event, self.prefix)
        with tracing.tracer("gitops_bus").start_as_current_span(
            f"publish {event.EVENT_TYPE}",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": topic,
                "cloudevents.event_type": event.EVENT_TYPE,
                "cloudevents.event_subject": event.subject(),
            },
        ):
            carrier = tracing.inject_headers()
            envelope = Envelope.wrap(event, self.source).model_copy(
                update={
                    "traceparent": carrier.get("traceparent"),
                    "tracestate": carrier.get("tracestate"),
                }
            )
            key, value, headers = encode(envelope)
            trace.get_current_span().set_attribute("cloudevents.event_id", envelope.id)
            await self.send_raw(topic, key, value, headers)
        if self._metrics is not None:
            self._metrics.events_published.labels(topic, event.EVENT_TYPE).inc()
        return envelope

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send a record as given; for dead letters and for tests of broken input."""
        await self._producer.send_and_wait(topic, value=value, key=key, headers=headers)
