"""What the detector knows about one app environment, and the life of its drift.

Per environment: the latest desired state, where its deployer stands (a deploy in progress is not
drift), whether it is suspended, what was last published about its drift, its self-heal memory,
and its cached dry-run results. All of it can be rebuilt from the topics after a restart
(desired, deploy, drift, commands), so a restart neither repeats a drift alert nor misses the
resolution of one.

A drift's life is told by its fingerprint: a new non-empty set of differences is ``detected``,
a different one while the drift lasts is ``changed``, an empty one ends it as ``resolved``; the
same fingerprint again is not news and is not published.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanContext

from gitops_config.models import App, Environment
from gitops_drift_detector import healing
from gitops_events import DeployEvent, DeployPhase, DesiredState, DriftEvent, DriftStatus
from gitops_kube import comparing
from gitops_kube.comparing import IgnoreRule, ObjectId, Target

ENDED_REVISIONS_KEPT = 32
"""Revisions whose deploy ended, remembered to know a desired state was already applied."""


def next_status(
    previous: DriftStatus | None, previous_fingerprint: str, fingerprint: str
) -> DriftStatus | None:
    """The status to publish after a comparison with this fingerprint ("" for no drift).

    ``previous`` is the status last published (None if never); None means nothing to publish.
    """
    active = previous is not None and previous is not DriftStatus.RESOLVED
    if not fingerprint:
        return DriftStatus.RESOLVED if active else None
    if not active:
        return DriftStatus.DETECTED
    return DriftStatus.CHANGED if fingerprint != previous_fingerprint else None


@dataclass(frozen=True)
class Published:
    """The last drift event published for an environment."""

    status: DriftStatus
    fingerprint: str
    at: datetime


class EnvironmentState:
    """One app environment as the detector sees it."""

    def __init__(self, app: App, name: str, settings: Environment, policy: healing.Policy) -> None:
        """Start knowing only the configuration."""
        self.app = app.name
        self.environment = name
        self.settings = settings
        self.rules = tuple(
            IgnoreRule(tuple(rule.json_pointers), rule.kind, rule.name) for rule in app.ignore
        )
        self.desired: DesiredState | None = None
        self.desired_seen = 0.0
        # The span that handled the current desired state: watch-triggered evaluations link to
        # it, so a drift is found from the trace of the revision it departs from.
        self.revision_link: SpanContext | None = None
        self.targets: list[Target] | None = None
        self.dry_runs: dict[ObjectId, tuple[str, dict[str, Any]]] = {}
        self.suspended = settings.suspended
        self.heal = healing.SelfHeal(policy)
        self.published: Published | None = None
        self.kinds_reported: set[str] = set()
        self._deploy_at: datetime | None = None
        self._deploy_started: float | None = None
        self._ended: OrderedDict[str, None] = OrderedDict()
        self._command_at: datetime | None = None

    @property
    def cluster(self) -> str:
        """The cluster the environment deploys to."""
        return self.settings.cluster

    def record_desired(self, state: DesiredState, *, now: float | None = None) -> bool:
        """Take a new desired state; False (nothing changed) for an older or repeated one."""
        current = self.desired
        if current is not None and (
            state.rendered_at < current.rendered_at
            or (state.rendered_at == current.rendered_at and state.digest == current.digest)
        ):
            return False
        if current is None or current.digest != state.digest:
            self.heal.reset()
        self.desired = state
        self.desired_seen = time.monotonic() if now is None else now
        self.targets = None
        self.dry_runs.clear()
        return True

    def record_deploy(self, event: DeployEvent, at: datetime, *, now: float | None = None) -> bool:
        """Follow the deployer; True when this event ends a deploy (its writes are done).

        Events older than one already seen (redelivered, or read from another partition) are
        ignored.
        """
        if self._deploy_at is not None and at <= self._deploy_at:
            return False
        self._deploy_at = at
        clock = time.monotonic() if now is None else now
        if event.phase is DeployPhase.STARTED:
            age = max(0.0, (datetime.now(UTC) - at).total_seconds())
            self._deploy_started = clock - age
            return False
        self._deploy_started = None
        if event.revision:
            self._ended[event.revision] = None
            self._ended.move_to_end(event.revision)
            while len(self._ended) > ENDED_REVISIONS_KEPT:
                self._ended.popitem(last=False)
        self.heal.deploy_finished()
        return True

    def record_drift(self, event: DriftEvent, at: datetime) -> None:
        """Remember a drift event published before (read back at start-up)."""
        if self.published is not None and at <= self.published.at:
            return
        self.published = Published(event.status, event.fingerprint, at)

    def record_suspension(self, suspended: bool, at: datetime) -> None:
        """Follow suspend and resume commands (self-heal never syncs a suspended environment)."""
        if self._command_at is not None and at <= self._command_at:
            return
        self._command_at = at
        self.suspended = suspended

    def hold_until(self, now: float, settle_seconds: float) -> float | None:
        """Until when to leave the environment alone because the deployer is applying.

        From a deploy's start to its end, and from a new desired state (with auto-sync) until
        the deployer ends a deploy of it; at most ``settle_seconds`` either way. None: compare.
        """
        if self._deploy_started is not None and now < self._deploy_started + settle_seconds:
            return self._deploy_started + settle_seconds
        desired = self.desired
        if (
            desired is not None
            and self.settings.auto_sync
            and not self.suspended
            and desired.revision not in self._ended
            and now < self.desired_seen + settle_seconds
        ):
            return self.desired_seen + settle_seconds
        return None

    def status_after(self, fingerprint: str) -> DriftStatus | None:
        """The status to publish after a comparison with this fingerprint, if any."""
        if self.published is None:
            return next_status(None, "", fingerprint)
        return next_status(self.published.status, self.published.fingerprint, fingerprint)

    @property
    def drifting(self) -> bool:
        """Whether the last published drift is still open."""
        return self.published is not None and self.published.status is not DriftStatus.RESOLVED

    def cached_dry_run(self, target: Target, live: dict[str, Any]) -> dict[str, Any] | None:
        """A dry-run result still valid for this live object, if one is cached."""
        cached = self.dry_runs.get(target.id)
        if cached is not None and cached[0] == comparing.dry_run_key(target, live):
            return cached[1]
        return None

    def cache_dry_run(self, target: Target, live: dict[str, Any], result: dict[str, Any]) -> None:
        """Keep a dry-run result for as long as the live object and the manifest stay the same."""
        self.dry_runs[target.id] = (comparing.dry_run_key(target, live), result)
