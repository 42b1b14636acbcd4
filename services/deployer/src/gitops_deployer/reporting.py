"""What the deployer tells the world: deploy events on the bus, Prometheus series, log lines.

Every phase of a deploy is published as a DeployEvent (the alerter, the console and people
tailing events all read those), counted in the deployer's metrics, and logged with its subject.
Messages are built by the deployer from names, counts and the API server's masked answers; they
never contain manifest values, so no Secret data can reach an event or a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gitops_bus import Publisher
from gitops_events import DeployEvent, DeployPhase, ObjectRef, Severity

log = logging.getLogger(__name__)

SYNCED = "Synced"
OUT_OF_SYNC = "OutOfSync"
UNKNOWN = "Unknown"
HEALTHY = "Healthy"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
SUSPENDED = "Suspended"


class DeployMetrics:
    """The deployer's own series, registered on the service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register every series on ``registry``."""
        by_environment = ["app", "environment"]
        self.apply_duration = Histogram(
            "gitops_apply_duration_seconds",
            "Time from the first write to the last of one deploy (both batches).",
            by_environment,
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
        self.objects_applied = Counter(
            "gitops_objects_applied_total",
            "Objects written by server-side apply.",
            by_environment,
            registry=registry,
        )
        self.objects_pruned = Counter(
            "gitops_objects_pruned_total",
            "Owned objects deleted because Git no longer has them.",
            by_environment,
            registry=registry,
        )
        self.deploys = Counter(
            "gitops_deploys_total",
            "Deploys by outcome: healthy, degraded, failed, rolled-back or superseded.",
            [*by_environment, "outcome"],
            registry=registry,
        )
        self.health_wait = Histogram(
            "gitops_health_wait_seconds",
            "Time spent waiting for applied objects to be healthy.",
            by_environment,
            registry=registry,
            buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
        )
        self.app_info = Gauge(
            "gitops_app_info",
            "Always 1; the labels say which revision runs, whether it is in sync and healthy.",
            [*by_environment, "revision", "sync_status", "health_status"],
            registry=registry,
        )


@dataclass
class _Status:
    revision: str
    sync_status: str
    health_status: str


class Reporter:
    """Publishes deploy events and keeps the metrics and the app_info series current."""

    def __init__(self, publisher: Publisher, metrics: DeployMetrics) -> None:
        """Publish with ``publisher``; count on ``metrics``."""
        self._publisher = publisher
        self.metrics = metrics
        self._status: dict[tuple[str, str], _Status] = {}

    async def publish(
        self,
        app: str,
        environment: str,
        revision: str | None,
        phase: DeployPhase,
        reason: str,
        message: str,
        *,
        severity: Severity = Severity.INFO,
        involved_object: ObjectRef | None = None,
        source: str | None = None,
        applied: int = 0,
        pruned: int = 0,
        unchanged: int = 0,
        duration_seconds: float | None = None,
    ) -> DeployEvent:
        """Publish one deploy event (and log it)."""
        event = DeployEvent(
            app=app,
            environment=environment,
            revision=revision,
            phase=phase,
            severity=severity,
            reason=reason,
            message=message,
            involved_object=involved_object,
            source=source,
            applied=applied,
            pruned=pruned,
            unchanged=unchanged,
            duration_seconds=round(duration_seconds, 3) if duration_seconds is not None else None,
        )
        level = logging.INFO if severity is Severity.INFO else logging.WARNING
        log.log(
            level,
            message,
            extra={
                "subject": event.subject(),
                "revision": revision,
                "phase": phase.value,
                "reason": reason,
            },
        )
        await self._publisher.publish(event)
        return event

    def outcome(self, app: str, environment: str, outcome: str) -> None:
        """Count one finished deploy."""
        self.metrics.deploys.labels(app, environment, outcome).inc()

    def status(
        self,
        app: str,
        environment: str,
        *,
        revision: str | None = None,
        sync_status: str | None = None,
        health_status: str | None = None,
    ) -> None:
        """Update the app_info series; unspecified labels keep their last value."""
        key = (app, environment)
        current = self._status.get(key)
        new = _Status(
            revision if revision is not None else (current.revision if current else ""),
            sync_status or (current.sync_status if current else UNKNOWN),
            health_status or (current.health_status if current else UNKNOWN),
        )
        if current is not None:
            self.metrics.app_info.remove(
                app, environment, current.revision, current.sync_status, current.health_status
            )
        self.metrics.app_info.labels(
            app, environment, new.revision, new.sync_status, new.health_status
        ).set(1)
        self._status[key] = new
