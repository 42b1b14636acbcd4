"""The alerter's event handling: deploy and drift events in, alerts out.

The alerter is the only service that talks to people. Every alert goes to the alerts topic,
where operators subscribe; sinks (webhooks, chat, Alertmanager) read the same decisions.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime

from gitops_bus import Publisher
from gitops_config import GitopsConfig
from gitops_events import Alert, AlertStatus, DeployEvent, DeployPhase, Envelope, Severity
from gitops_runtime.runtimes import Runtime

log = logging.getLogger(__name__)

SERVICE = "alerter"

_FAILING = {DeployPhase.FAILED, DeployPhase.DEGRADED}


def fingerprint(*parts: str) -> str:
    """A stable id for an alert: the same cause gives the same fingerprint, whatever the text."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


class Alerter:
    """Turns failing deploys into firing alerts and healthy ones into resolutions."""

    def __init__(self, publisher: Publisher, config: GitopsConfig) -> None:
        self._publisher = publisher
        self._config = config
        self._firing: dict[str, Alert] = {}

    async def handle(self, envelope: Envelope) -> None:
        """Dispatch one consumed event."""
        if isinstance(envelope.data, DeployEvent):
            await self._on_deploy(envelope.data)

    async def _on_deploy(self, event: DeployEvent) -> None:
        key = fingerprint("deploy", event.app, event.environment)
        if event.phase in _FAILING:
            alert = Alert(
                app=event.app,
                environment=event.environment,
                fingerprint=key,
                status=AlertStatus.FIRING,
                severity=Severity.CRITICAL
                if event.phase is DeployPhase.FAILED
                else Severity.WARNING,
                reason=event.reason,
                summary=f"deploy {event.phase.value} for {event.app}/{event.environment}",
                description=event.message,
                revision=event.revision,
            )
            self._firing[key] = alert
            await self._publisher.publish(alert)
        elif event.phase is DeployPhase.HEALTHY and key in self._firing:
            firing = self._firing.pop(key)
            resolved = firing.model_copy(
                update={
                    "status": AlertStatus.RESOLVED,
                    "ends_at": datetime.now(UTC),
                    "revision": event.revision,
                }
            )
            await self._publisher.publish(resolved)


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register the alerter's consumers on a runtime."""
    alerter = Alerter(runtime.publisher, config)
    runtime.consume(["deploy", "drift"], alerter.handle)
