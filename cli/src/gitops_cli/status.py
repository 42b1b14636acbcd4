"""`gitops status`: where each app environment stands, folded from the event topics.

The CLI has no database to ask: it reads the desired, deploy, drift and alerts topics from the
beginning and keeps the latest word of each, the same way any service rebuilds its view.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from gitops_events import (
    Alert,
    AlertStatus,
    DeployEvent,
    DeployPhase,
    DesiredState,
    DriftEvent,
    DriftStatus,
    Envelope,
)

_HEALTH = {
    DeployPhase.STARTED: "Progressing",
    DeployPhase.APPLIED: "Progressing",
    DeployPhase.PRUNED: "Progressing",
    DeployPhase.HEALTHY: "Healthy",
    DeployPhase.DEGRADED: "Degraded",
    DeployPhase.FAILED: "Failed",
    DeployPhase.ROLLED_BACK: "RolledBack",
}


@dataclass
class EnvironmentStatus:
    """What is known of one app environment."""

    app: str
    environment: str
    desired_revision: str | None = None
    deployed_revision: str | None = None
    last_phase: DeployPhase | None = None
    last_reason: str | None = None
    drift: DriftStatus | None = None
    drifted_objects: int = 0
    firing: dict[str, Alert] = field(default_factory=dict)

    @property
    def sync(self) -> str:
        """Synced when the last healthy or applied revision is the desired one."""
        if self.desired_revision is None:
            return "Unknown"
        return "Synced" if self.deployed_revision == self.desired_revision else "OutOfSync"

    @property
    def health(self) -> str:
        """Health from the last deploy phase."""
        return _HEALTH[self.last_phase] if self.last_phase else "Unknown"


def fold(envelopes: Iterable[Envelope]) -> dict[tuple[str, str], EnvironmentStatus]:
    """The status of every app environment the events mention, oldest event first."""
    states: dict[tuple[str, str], EnvironmentStatus] = {}

    def state(app: str, environment: str) -> EnvironmentStatus:
        return states.setdefault((app, environment), EnvironmentStatus(app, environment))

    for envelope in envelopes:
        data = envelope.data
        if isinstance(data, DesiredState):
            state(data.app, data.environment).desired_revision = data.revision
        elif isinstance(data, DeployEvent):
            current = state(data.app, data.environment)
            current.last_phase = data.phase
            current.last_reason = data.reason
            if data.phase in (DeployPhase.APPLIED, DeployPhase.HEALTHY, DeployPhase.ROLLED_BACK):
                current.deployed_revision = data.revision
        elif isinstance(data, DriftEvent):
            current = state(data.app, data.environment)
            current.drift = data.status
            current.drifted_objects = (
                0 if data.status is DriftStatus.RESOLVED else len(data.objects)
            )
        elif isinstance(data, Alert):
            current = state(data.app, data.environment)
            if data.status is AlertStatus.FIRING:
                current.firing[data.fingerprint] = data
            else:
                current.firing.pop(data.fingerprint, None)
    return states
