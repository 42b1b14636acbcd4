"""Consuming events: decode, continue the trace, handle, then commit; dead-letter what fails.

Delivery is at-least-once: the offset of a record is committed only after its handler
returned (or after the record went to the dead-letter topic), so a crash replays it, and
handlers must be idempotent. Records of one partition are handled in order, one at a time;
partitions are keyed by app/environment, so one environment's events keep their order while
different environments proceed independently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from gitops_bus.producing import Publisher
from gitops_events import DeadLetter, DecodeError, Envelope, decode, event_type_of
from gitops_telemetry import tracing
from gitops_telemetry.metrics import Metrics

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

MAX_DEAD_LETTER_VALUE = 64 * 1024


class Consumer:
    """One consumer group member over some topics, feeding records to a handler."""

    def __init__(
        self,
        bootstrap_servers: str,
        prefix: str,
        group: str,
        topics: Sequence[str],
        handler: Handler,
        publisher: Publisher,
        *,
        metrics: Metrics | None = None,
        attempts: int = 3,
        retry_backoff: float = 0.5,
        from_beginning: bool = True,
    ) -> None:
        self.group = group
        self.topics = [prefix + name for name in topics]
        self._handler = handler
        self._publisher = publisher
        self._metrics = metrics
        self._attempts = attempts
        self._retry_backoff = retry_backoff
        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            client_id=f"{group}-consumer",
            session_timeout_ms=10000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=300000,
        )
        self._stopping = asyncio.Event()
        self.started = False

    @property
    def assigned(self) -> bool:
        """Whether the group gave this member at least one partition."""
        return self.started and bool(self._consumer.assignment())

    async def start(self) -> None:
        """Join the group."""
        await self._consumer.start()
        self.started = True

    async def stop(self) -> None:
        """Leave the group after the record in hand is done."""
        self._stopping.set()
        if self.started:
            self.started = False
            await self._consumer.stop()

    async def run(self) -> None:
        """Fetch and handle records until stopped."""
        while not self._stopping.is_set():
            batches = await self._consumer.getmany(timeout_ms=500, max_records=200)
            for tp, records in batches.items():
                for record in records:
                    if self._stopping.is_set():
                        return
                    await self._process(tp, record)
                    await self._consumer.commit({tp: record.offset + 1})
                self._update_lag(tp, records[-1].offset if records else None)

    def _update_lag(self, tp: TopicPartition, last_offset: int | None) -> None:
        if self._metrics is None or last_offset is None:
            return
        end = self._consumer.highwater(tp)
        if end is not None:
            self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                max(0, end - last_offset - 1)
            )

    async def _process(self, tp: TopicPartition, record: Any) -> None:
        headers: list[tuple[str, bytes]] = list(record.headers or [])
        event_type = event_type_of(headers) or "unknown"
        try:
            envelope = decode(headers, record.value)
        except DecodeError as exc:
            log.warning(
                "undecodable record sent to dead letters",
                extra={
                    "topic": tp.topic,
                    "offset": record.offset,
                    "reason": exc.reason,
                    "error": str(exc),
                },
            )
            await self._dead_letter(tp, record, exc.reason, str(exc))
            self._count(tp.topic, event_type, exc.reason)
            return
        parent = tracing.extract_context(
            {
                k: v.decode("utf-8", "replace")
                for k, v in headers
                if k in ("traceparent", "tracestate")
            }
        )
        started = time.perf_counter()
        with tracing.tracer("gitops_bus").start_as_current_span(
            f"handle {envelope.type}",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": tp.topic,
                "messaging.kafka.partition": tp.partition,
                "messaging.kafka.offset": record.offset,
                "messaging.consumer.group.name": self.group,
                "cloudevents.event_id": envelope.id,
                "cloudevents.event_type": envelope.type,
                "cloudevents.event_subject": envelope.subject,
            },
        ) as span:
            error = await self._handle_with_retries(envelope)
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                await self._dead_letter(
                    tp, record, "handler-failed", f"{type(error).__name__}: {error}"
                )
                self._count(tp.topic, envelope.type, "handler-failed")
            else:
                self._count(tp.topic, envelope.type, "ok")
        if self._metrics is not None:
            self._metrics.handle_seconds.labels(envelope.type).observe(
                time.perf_counter() - started
            )

    async def _handle_with_retries(self, envelope: Envelope) -> Exception | None:
        for attempt in range(1, self._attempts + 1):
            try:
                await self._handler(envelope)
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "handler failed",
                    exc_info=True,
                    extra={
                        "event_id": envelope.id,
                        "event_type": envelope.type,
                        "subject": envelope.subject,
                        "attempt": attempt,
                    },
                )
                if attempt == self._attempts:
                    return exc
                await asyncio.sleep(self._retry_backoff * 2 ** (attempt - 1))
        return None

    def _count(self, topic: str, event_type: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.events_consumed.labels(topic, event_type, outcome).inc()
            if outcome != "ok":
                self._metrics.dead_letters.labels(topic, outcome).inc()

    async def _dead_letter(self, tp: TopicPartition, record: Any, reason: Any, error: str) -> None:
        value: bytes = record.value or b""
        letter = DeadLetter(
            topic=tp.topic,
            partition=tp.partition,
            offset=record.offset,
            consumer_group=self.group,
            reason=reason,
            error=error[:4000],
            key=record.key.decode("utf-8", "replace") if record.key else None,
            headers={k: v.decode("utf-8", "replace") for k, v in (record.headers or [])},
            value=value[:MAX_DEAD_LETTER_VALUE].decode("utf-8", "replace"),
        )
        await self._publisher.publish(letter)
