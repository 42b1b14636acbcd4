"""Act for people: deliver notifications to sinks, each sink on its own queue and worker.

The Kafka handler only decides and enqueues (`submit` never waits), so a slow or hanging sink
can hold back neither the consumer nor another sink: every sink has a bounded queue and one
worker that delivers in order (a resolution never overtakes its firing notification), with a
timeout per request and retries with exponential backoff.

The trade-off: the consumer commits an event's offset once it is decided and its alerts are on
the alerts topic, not once every sink has it. A crash can lose the notifications still queued
(the alerts topic still has the alerts, and reminders go on after a restart), where waiting for
sinks would let one dead receiver stop all alerting. So the alerts topic is at-least-once, and
a notification to people may be lost in a crash, the reminder then being the next one they get.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from gitops_alerter import metrics as alerter_metrics
from gitops_alerter import sinks as alert_sinks
from gitops_alerter.settings import AlerterSettings
from gitops_alerter.state import Notification
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

Transport = Callable[[alert_sinks.HttpRequest, float], Awaitable[None]]
"""Sends one request with a timeout, raising `DeliveryError`: HTTP in the service."""
Sleep = Callable[[float], Awaitable[None]]


class Deliveries:
    """One queue and one worker per sink; `run` serves them for the life of the service."""

    def __init__(
        self,
        sinks: Mapping[str, alert_sinks.Sink],
        settings: AlerterSettings,
        metrics: alerter_metrics.AlerterMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Deliver to these sinks (by name) with the retry settings; `sleep` waits between tries."""
        self._sinks = dict(sinks)
        self._settings = settings
        self._metrics = metrics
        self._sleep = sleep
        self._queues: dict[str, asyncio.Queue[Notification]] = {
            name: asyncio.Queue(maxsize=settings.queue_size) for name in self._sinks
        }

    def submit(self, notification: Notification) -> None:
        """Queue a notification for each of its sinks; never waits.

        A sink whose queue is full (its receiver has been failing for a long time) loses the
        notification, which is counted as failed and logged, rather than holding back others.
        """
        for name in notification.sinks:
            sink = self._sinks[name]
            if not sink.wants(notification):
                continue
            try:
                self._queues[name].put_nowait(notification)
            except asyncio.QueueFull:
                self._metrics.alerts.labels(name, alerter_metrics.FAILED).inc(
                    len(notification.alerts)
                )
                log.warning(
                    "sink queue full; notification dropped",
                    extra={"sink": name, "fingerprints": _fingerprints(notification)},
                )

    def pending(self) -> int:
        """Notifications waiting in all queues."""
        return sum(queue.qsize() for queue in self._queues.values())

    async def run(self) -> None:
        """Serve every sink's queue until cancelled."""
        if not self._sinks:
            return
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=10)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            transport: Transport = functools.partial(alert_sinks.send, session)
            async with asyncio.TaskGroup() as workers:
                for name, sink in self._sinks.items():
                    workers.create_task(
                        self._work(sink, self._queues[name], transport), name=f"sink:{name}"
                    )

    async def deliver(
        self, sink: alert_sinks.Sink, notification: Notification, transport: Transport
    ) -> bool:
        """Deliver one notification to one sink, trying again with backoff; True if delivered.

        The delivery is an `alert delivery <sink>` span, a child of the span that handled the
        event behind the notification; it names the sink, never its URL.
        """
        started = time.perf_counter()
        count = len(notification.alerts)
        with tracing.tracer(__name__).start_as_current_span(
            f"alert delivery {sink.name}",
            context=notification.context,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gitops.sink.name": sink.name,
                "gitops.sink.kind": sink.kind,
                "gitops.alert.count": count,
                "gitops.alert.fingerprints": _fingerprints(notification),
                "gitops.alert.status": alert_sinks.group_status(notification.alerts).value,
                "gitops.alert.reminder": notification.reminder,
            },
        ) as span:
            error = await self._attempts(sink, notification, transport, span)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
        outcome = alerter_metrics.FAILED if error else alerter_metrics.DELIVERED
        self._metrics.alerts.labels(sink.name, outcome).inc(count)
        self._metrics.delivery_seconds.labels(sink.name).observe(time.perf_counter() - started)
        if error is not None:
            log.warning(
                "alert delivery failed",
                extra={
                    "sink": sink.name,
                    "error": error,
                    "fingerprints": _fingerprints(notification),
                },
            )
        else:
            log.info(
                "alert delivered",
                extra={"sink": sink.name, "fingerprints": _fingerprints(notification)},
            )
        return error is None

    async def _attempts(
        self,
        sink: alert_sinks.Sink,
        notification: Notification,
        transport: Transport,
        span: Span,
    ) -> str | None:
        """Try until delivered, a permanent failure, or the last attempt; the error if any."""
        attempt = 0
        while True:
            attempt += 1
            span.set_attribute("gitops.delivery.attempts", attempt)
            try:
                for request in sink.requests(notification, datetime.now(UTC)):
                    await transport(request, self._settings.sink_timeout_seconds)
                return None
            except alert_sinks.DeliveryError as failure:
                message = str(failure)
                if not failure.retryable or attempt >= self._settings.sink_attempts:
                    return message
                delay = self._settings.backoff(attempt)
                span.add_event(
                    "retry", {"attempt": attempt, "error": message, "backoff_seconds": delay}
                )
                await self._sleep(delay)

    async def _work(
        self,
        sink: alert_sinks.Sink,
        queue: asyncio.Queue[Notification],
        transport: Transport,
    ) -> None:
        while True:
            notification = await queue.get()
            try:
                await self.deliver(sink, notification, transport)
            except Exception:
                # A defect in building a request must not stop this sink for good.
                log.exception("alert delivery crashed", extra={"sink": sink.name})
                self._metrics.alerts.labels(sink.name, alerter_metrics.FAILED).inc(
                    len(notification.alerts)
                )
            finally:
                queue.task_done()


def _fingerprints(notification: Notification) -> list[str]:
    return [alert.fingerprint for alert in notification.alerts]
