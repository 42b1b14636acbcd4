"""The alerter's wiring: deploy and drift events in; alerts to the alerts topic and to sinks.

The alerter is the only service that talks to people (Decide and Act for them). For each event
it asks the rules whether an alert fires or resolves (`rules`), lets the book decide what to
publish and notify (`state`), publishes state changes to the alerts topic inside the event's
handling span (so the alert is in the release's trace), and queues notifications for the sinks
(`deliveries`) without waiting for them. A timer loop sends what becomes due later: group waits
that end, reminders, silences that end.

Silences arrive as `SilenceCommand`s on the commands topic. Every replica must know every
silence, so they are read in a consumer group of this process's own, from the beginning of the
topic: a restart therefore gets its silences back (ended ones are ignored). After a restart,
the firing alerts are read back from the alerts topic before any event is handled, so an alert
that fired before is neither announced again nor left unresolved. Dead letters are not
consumed: operators read them with `gitops events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping

from opentelemetry import context as otel_context

from gitops_alerter import deliveries, rules, sinks, state
from gitops_alerter.metrics import SUPPRESSED, AlerterMetrics
from gitops_alerter.settings import AlerterSettings
from gitops_bus import Publisher, tail
from gitops_config import ConfigError, GitopsConfig
from gitops_events import Alert, Command, DeployEvent, DriftEvent, Envelope, SilenceCommand
from gitops_runtime.runtimes import Runtime

log = logging.getLogger(__name__)

SERVICE = "alerter"

Clock = Callable[[], float]
"""Seconds since the epoch (`time.time`); the book's notion of now."""


class Alerter:
    """Turns deploy and drift events into alerts, and decides who hears about them when."""

    def __init__(
        self,
        config: GitopsConfig,
        settings: AlerterSettings,
        publisher: Publisher,
        outbox: deliveries.Deliveries,
        metrics: AlerterMetrics,
        *,
        bootstrap_servers: str,
        topic_prefix: str,
        clock: Clock = time.time,
    ) -> None:
        """An alerter publishing with `publisher` and delivering through `outbox`."""
        self._settings = settings
        self._publisher = publisher
        self._outbox = outbox
        self._metrics = metrics
        self._bootstrap_servers = bootstrap_servers
        self._alerts_topic = topic_prefix + "alerts"
        self._clock = clock
        self._book = state.Book(config.alerts.routes)
        self._restored = asyncio.Event()
        self._wake = asyncio.Event()

    @property
    def restored(self) -> bool:
        """Whether the alerts of before the last restart have been read back."""
        return self._restored.is_set()

    async def handle(self, envelope: Envelope) -> None:
        """Handle one deploy or drift event: publish what changed, queue notifications."""
        await self._restored.wait()
        event = envelope.data
        base = self._settings.playbook_base_url
        observation: rules.Observation | None
        if isinstance(event, DeployEvent):
            observation = rules.from_deploy(event, envelope.time, base)
        elif isinstance(event, DriftEvent):
            observation = rules.from_drift(event, envelope.time, base)
        else:
            return
        if observation is None:
            return
        now, trace_context = self._clock(), otel_context.get_current()
        if isinstance(observation, Alert):
            decided = self._book.fire(observation, now, trace_context)
        else:
            decided = self._book.resolve(observation, now, trace_context)
        # Queue first: a failed publish makes the consumer retry, and the book then owes only
        # the publish (it remembers what reached the topic), so nobody is notified twice.
        self._dispatch(decided)
        for alert in decided.publish:
            await self._publisher.publish(alert)
            self._book.published(alert)
            log.info(
                "alert published",
                extra={
                    "subject": alert.subject(),
                    "fingerprint": alert.fingerprint,
                    "reason": alert.reason,
                    "status": alert.status.value,
                    "severity": alert.severity.value,
                },
            )
        self._metrics.firing.set(len(self._book.firing()))
        self._wake.set()

    async def handle_command(self, envelope: Envelope) -> None:
        """Take a silence from the commands topic; other commands are not the alerter's."""
        command = envelope.data
        if not isinstance(command, Command) or not isinstance(command.command, SilenceCommand):
            return
        silence = command.command
        now = self._clock()
        added = self._book.silence(
            state.Silence(
                app=command.app,
                environment=command.environment,
                until=command.requested_at.timestamp() + silence.duration_seconds,
                reason=silence.reason,
                fingerprint=silence.fingerprint,
            ),
            now,
        )
        log.info(
            "silence added" if added else "silence already over; ignored",
            extra={
                "subject": command.subject(),
                "reason": silence.reason,
                "fingerprint": silence.fingerprint,
                "duration_seconds": silence.duration_seconds,
                "requested_by": command.requested_by,
            },
        )
        self._metrics.silences.set(len(self._book.silences(now)))
        self._wake.set()

    async def run(self) -> None:
        """Read back the alerts of before a restart, then send what falls due, as it does."""
        await self._restore()
        while True:
            self._wake.clear()
            now = self._clock()
            self._dispatch(self._book.flush(now))
            silences = self._book.silences(now)
            self._metrics.silences.set(len(silences))
            deadlines = [silence.until for silence in silences]
            due = self._book.next_due()
            if due is not None:
                deadlines.append(due)
            timeout = max(0.0, min(deadlines) - self._clock()) if deadlines else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _restore(self) -> None:
        restored = 0
        async for record in tail(self._bootstrap_servers, [self._alerts_topic]):
            envelope = record.envelope
            if envelope is not None and isinstance(envelope.data, Alert):
                self._book.restore(envelope.data, envelope.time.timestamp())
                restored += 1
        firing = len(self._book.firing())
        self._metrics.firing.set(firing)
        self._restored.set()
        log.info("alerts read back", extra={"alerts": restored, "firing": firing})

    def _dispatch(self, decided: state.Decisions) -> None:
        for notification in decided.notify:
            self._outbox.submit(notification)
        for suppression in decided.suppressed:
            for sink in suppression.sinks:
                self._metrics.alerts.labels(sink, SUPPRESSED).inc()
            log.info(
                "notification suppressed",
                extra={
                    "subject": suppression.alert.subject(),
                    "fingerprint": suppression.alert.fingerprint,
                    "why": suppression.why.value,
                },
            )


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register the alerter on a runtime, with its settings from the environment."""
    build_with(runtime, config, AlerterSettings.from_environ(os.environ))


def build_with(runtime: Runtime, config: GitopsConfig, settings: AlerterSettings) -> None:
    """Register the alerter's consumers, loops and readiness check on a runtime."""
    by_name = {name: sinks.from_config(name, sink) for name, sink in config.alerts.sinks.items()}
    _check_credentials(by_name)
    metrics = AlerterMetrics(runtime.metrics.registry, by_name)
    outbox = deliveries.Deliveries(by_name, settings, metrics)
    alerter = Alerter(
        config,
        settings,
        runtime.publisher,
        outbox,
        metrics,
        bootstrap_servers=runtime.settings.kafka.bootstrap_servers,
        topic_prefix=runtime.settings.kafka.topic_prefix,
    )
    runtime.consume(["deploy", "drift"], alerter.handle)
    runtime.consume(
        ["commands"], alerter.handle_command, group=f"gitops-alerter-silences-{uuid.uuid4().hex}"
    )
    runtime.loop(alerter.run)
    if by_name:
        runtime.loop(outbox.run)
    runtime.check("alerts-restored", lambda: alerter.restored)


def _check_credentials(by_name: Mapping[str, sinks.Sink]) -> None:
    """Say at start-up which sinks cannot deliver yet; deliveries read the secrets again."""
    for name, sink in by_name.items():
        for reference in sink.credentials():
            try:
                reference.resolve()
            except ConfigError as error:
                log.warning(
                    "a sink's credential cannot be read; deliveries to it fail until it can",
                    extra={"sink": name, "error": str(error)},
                )
