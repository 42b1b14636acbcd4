"""The deployer's event handling: desired state and commands in, deploy events out.

The deployer is the only service that writes to clusters. It keeps the latest desired state of
every app environment it has seen, and acts on it when told to sync.
"""

from __future__ import annotations

import logging

from gitops_bus import Publisher
from gitops_config import GitopsConfig
from gitops_events import (
    Command,
    DeployEvent,
    DeployPhase,
    DesiredState,
    Envelope,
    ResumeCommand,
    Severity,
    SuspendCommand,
    SyncCommand,
)
from gitops_runtime.runtimes import Runtime

log = logging.getLogger(__name__)

SERVICE = "deployer"


class Deployer:
    """Tracks desired state and suspensions per app environment and answers commands."""

    def __init__(self, publisher: Publisher, config: GitopsConfig) -> None:
        self._publisher = publisher
        self._config = config
        self._desired: dict[str, DesiredState] = {}
        self._suspended: set[str] = set()

    async def handle(self, envelope: Envelope) -> None:
        """Dispatch one consumed event."""
        if isinstance(envelope.data, DesiredState):
            self._desired[envelope.subject] = envelope.data
        elif isinstance(envelope.data, Command):
            await self._on_command(envelope.data)

    async def _on_command(self, command: Command) -> None:
        subject = command.subject()
        action = command.command
        if isinstance(action, SuspendCommand):
            self._suspended.add(subject)
            log.info("suspended", extra={"subject": subject})
        elif isinstance(action, ResumeCommand):
            self._suspended.discard(subject)
            log.info("resumed", extra={"subject": subject})
        elif isinstance(action, SyncCommand):
            await self._on_sync(command)

    async def _on_sync(self, command: Command) -> None:
        subject = command.subject()
        if not self._known(command.app, command.environment):
            await self._publish_failure(
                command, "UnknownEnvironment",
                f"sync requested for {subject}, which gitops.yaml does not define; "
                "check the app and environment names",
            )
            return
        desired = self._desired.get(subject)
        if desired is None:
            await self._publish_failure(
                command, "NoDesiredState",
                f"sync requested for {subject}, but no desired state has been rendered yet; "
                "check that git-watcher runs and can read the repository",
            )
            return
        log.info("sync requested", extra={"subject": subject, "revision": desired.revision})

    def _known(self, app: str, environment: str) -> bool:
        return any(a.name == app and environment in a.environments for a in self._config.apps)

    async def _publish_failure(self, command: Command, reason: str, message: str) -> None:
        await self._publisher.publish(
            DeployEvent(
                app=command.app,
                environment=command.environment,
                revision=None,
                phase=DeployPhase.FAILED,
                severity=Severity.WARNING,
                reason=reason,
                message=message,
            )
        )


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register the deployer's consumers on a runtime."""
    deployer = Deployer(runtime.publisher, config)
    runtime.consume(["desired", "commands"], deployer.handle)
