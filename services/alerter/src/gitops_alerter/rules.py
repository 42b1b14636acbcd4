"""What deserves an alert: the rules that turn deploy and drift events into alert observations.

Only these rules know the event schemas; everything after them (routing, grouping, silences,
sinks) works on `Alert` alone. The rules are fixed, so that an alert means the same thing in
every installation:

| event | alert |
|---|---|
| deploy `failed` | firing, critical, the deploy's reason |
| deploy `degraded` | firing, warning, the deploy's reason |
| deploy `healthy` or `rolled-back` | resolves the app environment's deploy alerts |
| drift `detected` or `changed` | firing, warning, reason `DriftDetected`, field paths listed |
| drift `resolved` | resolves the app environment's drift alert |

Other deploy phases (started, applied, pruned) are progress, not news for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from gitops_alerter import routing
from gitops_events import (
    Alert,
    AlertStatus,
    DeployEvent,
    DeployPhase,
    DriftEvent,
    DriftStatus,
    ObjectDrift,
    Severity,
)

DEPLOY = "deploy"
"""Origin of alerts raised by deploy events (the `origin` label)."""
DRIFT = "drift"
"""Origin of alerts raised by drift events (the `origin` label)."""
DRIFT_REASON = "DriftDetected"
"""The reason of every drift alert, for routes and silences."""

ORIGIN_LABEL = "origin"
"""The label naming which kind of event raised an alert."""

_FIRING_PHASES = {DeployPhase.FAILED: Severity.CRITICAL, DeployPhase.DEGRADED: Severity.WARNING}
_RESOLVING_PHASES = {DeployPhase.HEALTHY, DeployPhase.ROLLED_BACK}

MAX_DRIFT_OBJECTS = 30
"""Objects listed in a drift alert's description; the rest are counted."""
MAX_DRIFT_FIELDS = 10
"""Field paths listed per object; the rest are counted."""


@dataclass(frozen=True)
class Resolution:
    """Every firing alert of one origin in one app environment has stopped."""

    app: str
    environment: str
    origin: str
    at: datetime
    revision: str | None
    description: str


Observation = Alert | Resolution
"""What one event says: an alert fires, or the alerts of an origin stop."""


def playbook_link(base: str | None, app: str, environment: str, reason: str) -> str | None:
    """The playbook of a reason: `<base>/playbooks/<reason>.md`, or None without a base.

    The base may name `{app}` and `{environment}`, for one config repository per app. The link
    is not checked (the alerter never reads Git): a reason without a playbook gives a dead link.
    """
    if not base:
        return None
    root = base.replace("{app}", quote(app, safe="")).replace(
        "{environment}", quote(environment, safe="")
    )
    return f"{root.rstrip('/')}/playbooks/{quote(reason, safe='')}.md"


def from_deploy(
    event: DeployEvent, at: datetime, playbook_base: str | None = None
) -> Observation | None:
    """The alert (or resolution) a deploy event raises, if any."""
    severity = _FIRING_PHASES.get(event.phase)
    if severity is not None:
        return Alert(
            app=event.app,
            environment=event.environment,
            fingerprint=routing.fingerprint(DEPLOY, event.app, event.environment, event.reason),
            status=AlertStatus.FIRING,
            severity=severity,
            reason=event.reason,
            summary=f"{event.app}/{event.environment}: deploy {event.phase.value} ({event.reason})",
            description=_deploy_description(event),
            revision=event.revision,
            playbook=playbook_link(playbook_base, event.app, event.environment, event.reason),
            labels={ORIGIN_LABEL: DEPLOY},
            starts_at=at,
        )
    if event.phase in _RESOLVING_PHASES:
        return Resolution(
            app=event.app,
            environment=event.environment,
            origin=DEPLOY,
            at=at,
            revision=event.revision,
            description=event.message,
        )
    return None


def from_drift(event: DriftEvent, at: datetime, playbook_base: str | None = None) -> Observation:
    """The alert (or resolution) a drift event raises."""
    if event.status is DriftStatus.RESOLVED:
        return Resolution(
            app=event.app,
            environment=event.environment,
            origin=DRIFT,
            at=at,
            revision=event.revision,
            description="the cluster matches Git again",
        )
    count = len(event.objects)
    return Alert(
        app=event.app,
        environment=event.environment,
        fingerprint=routing.fingerprint(DRIFT, event.app, event.environment, DRIFT_REASON),
        status=AlertStatus.FIRING,
        severity=Severity.WARNING,
        reason=DRIFT_REASON,
        summary=f"{event.app}/{event.environment}: live state differs from Git "
        f"({count} object{'' if count == 1 else 's'})",
        description=drift_description(event.objects),
        revision=event.revision,
        playbook=playbook_link(playbook_base, event.app, event.environment, DRIFT_REASON),
        labels={ORIGIN_LABEL: DRIFT},
        starts_at=at,
    )


def drift_description(objects: list[ObjectDrift]) -> str:
    """One line per drifted object with the JSON pointers of its differing fields."""
    lines = []
    for drift in objects[:MAX_DRIFT_OBJECTS]:
        line = f"{drift.object} {drift.drift}"
        paths = [field.path for field in drift.fields]
        if paths:
            shown = ", ".join(paths[:MAX_DRIFT_FIELDS])
            more = len(paths) - MAX_DRIFT_FIELDS
            line += f": {shown}" + (f" and {more} more" if more > 0 else "")
        lines.append(line)
    hidden = len(objects) - MAX_DRIFT_OBJECTS
    if hidden > 0:
        lines.append(f"and {hidden} more objects")
    return "\n".join(lines) if lines else "the live state differs from Git"


def _deploy_description(event: DeployEvent) -> str:
    lines = [event.message]
    if event.involved_object is not None:
        lines.append(f"object: {event.involved_object}")
    if event.source:
        lines.append(f"file: {event.source}")
    return "\n".join(lines)
