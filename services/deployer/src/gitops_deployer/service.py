"""The deployer's event handling: desired state, revisions and commands in, deploy events out.

The deployer is the only service that writes to clusters (the Act step). It records the latest
desired state of every app environment, and a per-environment worker (see ``workers``) applies it:
right away with ``auto_sync``, otherwise on a sync command; never while suspended. A deploy is
plan (confinement, ownership), dry-run, apply, prune, then a health wait with the environment's
timeout, and, when that fails and ``rollback_on_failure`` is set, a rollback to the last revision
that became healthy (kept in memory). A revision that could not be rendered is reported as a
failed deploy, and nothing is applied. Each step is published as a DeployEvent and traced as a
child of the span of the event that asked for it.

On start the deployer reads the compacted ``desired`` topic (and the commands, for suspensions)
from the beginning to rebuild what it knew before a restart, so that a sync command works at once;
records its consumer group redelivers after that are applied as usual.

The deployer also holds the sealing keys (see ``keyrings``): it loads or makes them in its own
namespace at start, renews them, serves the newest certificate at ``/v1/cert.pem`` for
``gitops seal`` and ``kubeseal --cert``, and opens SealedSecrets just before it applies them
(see ``unsealing``). Its own settings come from environment variables read once, here (see
``settings``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from gitops_bus import tail
from gitops_config import GitopsConfig
from gitops_config.models import Environment
from gitops_config.settings import KafkaSettings
from gitops_deployer import keyrings, reporting, rollouts, unsealing
from gitops_deployer.planning import DeployError, RejectedError
from gitops_deployer.reporting import DeployMetrics, Reporter
from gitops_deployer.settings import DeployerSettings, cluster_target
from gitops_deployer.workers import Worker
from gitops_events import (
    Command,
    DeployPhase,
    DesiredState,
    Envelope,
    ResumeCommand,
    Revision,
    Severity,
    SuspendCommand,
    SyncCommand,
    subject_for,
)
from gitops_kube.sessions import ConnectError, Session, Sessions
from gitops_runtime.runtimes import Runtime
from gitops_sealing import certs

log = logging.getLogger(__name__)

SERVICE = "deployer"

REBUILD_IDLE_SECONDS = 2.0
"""Reading the topics at start-up ends once no record arrived for this long."""


class Deployer:
    """Tracks desired state and suspensions per app environment, deploys, and answers commands."""

    def __init__(
        self,
        config: GitopsConfig,
        reporter: Reporter,
        *,
        unseal: unsealing.Unseal,
        kafka: KafkaSettings | None = None,
        default_kubeconfig: str | None = None,
        health_poll_seconds: float = 1.0,
    ) -> None:
        """Deploy what ``config`` describes and report every step with ``reporter``.

        ``unseal`` opens the SealedSecrets of a desired state before it is planned; ``kafka`` is
        where to rebuild the desired states from at start (None: start empty);
        ``default_kubeconfig`` is used for clusters that name a context but no kubeconfig.
        """
        self._config = config
        self._reporter = reporter
        self._unseal = unseal
        self._kafka = kafka
        self._default_kubeconfig = default_kubeconfig
        self._health_poll_seconds = health_poll_seconds
        self._workers: dict[str, Worker] = {}
        self._sessions = Sessions()
        self._rebuilt = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Whether the state from before a restart has been rebuilt."""
        return self._rebuilt.is_set()

    def worker(self, app: str, environment: str) -> Worker | None:
        """The worker of an app environment that gitops.yaml defines (None otherwise)."""
        subject = subject_for(app, environment)
        found = self._workers.get(subject)
        if found is not None:
            return found
        settings = self._environment(app, environment)
        if settings is None:
            return None
        created = Worker(
            subject, self._deploy, auto_sync=settings.auto_sync, suspended=settings.suspended
        )
        created.start()
        self._workers[subject] = created
        return created

    async def run(self) -> None:
        """Rebuild the state from the topics, then keep the workers until cancelled."""
        try:
            if self._kafka is not None:
                await self._rebuild(self._kafka)
            self._rebuilt.set()
            await asyncio.Event().wait()
        finally:
            await asyncio.gather(*(w.stop() for w in self._workers.values()))
            await self._sessions.close()

    async def handle(self, envelope: Envelope) -> None:
        """Dispatch one consumed event."""
        await self._rebuilt.wait()
        if isinstance(envelope.data, DesiredState):
            await self._on_desired(envelope.data)
        elif isinstance(envelope.data, Revision):
            await self._on_revision(envelope.data)
        elif isinstance(envelope.data, Command):
            await self._on_command(envelope.data)

    # --- events --------------------------------------------------------------------------------

    async def _on_desired(self, state: DesiredState) -> None:
        worker = self.worker(state.app, state.environment)
        if worker is None:
            await self._fail_unknown(
                state.app, state.environment, state.revision, "a desired state arrived"
            )
            return
        if not worker.record(state, apply=True):
            return
        if worker.suspended:
            log.info(
                "desired state recorded; suspended, applied on resume",
                extra={"subject": worker.subject, "revision": state.revision},
            )
            self._reporter.status(
                state.app,
                state.environment,
                sync_status=reporting.OUT_OF_SYNC,
                health_status=reporting.SUSPENDED,
            )
        elif not worker.pending:
            log.info(
                "desired state recorded; auto_sync is off, waiting for a sync command",
                extra={"subject": worker.subject, "revision": state.revision},
            )
            self._reporter.status(state.app, state.environment, sync_status=reporting.OUT_OF_SYNC)

    async def _on_revision(self, revision: Revision) -> None:
        error = revision.render_error
        if error is None:
            return  # its desired state follows on the desired topic
        await self._reporter.publish(
            revision.app,
            revision.environment,
            revision.revision,
            DeployPhase.FAILED,
            error.reason,
            f"revision {revision.revision} of {revision.app}/{revision.environment} could not "
            f"be rendered, nothing was applied: {error.message}",
            severity=Severity.ERROR,
            source=error.source,
            involved_object=error.involved_object,
        )
        self._reporter.outcome(revision.app, revision.environment, "failed")
        self._reporter.status(revision.app, revision.environment, sync_status=reporting.OUT_OF_SYNC)

    async def _on_command(self, command: Command) -> None:
        subject = command.subject()
        action = command.command
        if isinstance(action, SuspendCommand | ResumeCommand):
            worker = self.worker(command.app, command.environment)
            if worker is None:
                log.warning(
                    "suspend or resume for an environment gitops.yaml does not define",
                    extra={"subject": subject},
                )
            elif isinstance(action, SuspendCommand):
                worker.suspend()
                log.info("suspended", extra={"subject": subject})
            else:
                worker.resume()
                log.info("resumed", extra={"subject": subject})
        elif isinstance(action, SyncCommand):
            await self._on_sync(command)

    async def _on_sync(self, command: Command) -> None:
        subject = command.subject()
        worker = self.worker(command.app, command.environment)
        if worker is None:
            await self._fail_unknown(command.app, command.environment, None, "sync requested")
            return
        if worker.suspended:
            await self._publish_failure(
                command.app,
                command.environment,
                "Suspended",
                f"sync requested for {subject}, which is suspended; resume it first",
            )
            return
        if worker.latest is None:
            await self._publish_failure(
                command.app,
                command.environment,
                "NoDesiredState",
                f"sync requested for {subject}, but no desired state has been rendered yet; "
                "check that git-watcher runs and can read the repository",
            )
            return
        worker.sync()
        log.info("sync requested", extra={"subject": subject, "revision": worker.latest.revision})

    async def _fail_unknown(
        self, app: str, environment: str, revision: str | None, what: str
    ) -> None:
        await self._publish_failure(
            app,
            environment,
            "UnknownEnvironment",
            f"{what} for {subject_for(app, environment)}, which gitops.yaml does not define; "
            "check the app and environment names",
            revision=revision,
        )

    async def _publish_failure(
        self, app: str, environment: str, reason: str, message: str, *, revision: str | None = None
    ) -> None:
        await self._reporter.publish(
            app,
            environment,
            revision,
            DeployPhase.FAILED,
            reason,
            message,
            severity=Severity.WARNING,
        )

    # --- deploying -----------------------------------------------------------------------------

    async def _deploy(self, worker: Worker, state: DesiredState) -> None:
        """Deploy one desired state and report every phase; never raises for a failed deploy."""
        environment = self._environment(state.app, state.environment)
        if environment is None:
            await self._fail_unknown(state.app, state.environment, state.revision, "a deploy")
            return
        try:
            await self._deploy_in(worker, state, environment)
        except Exception as exc:
            log.exception(
                "deploy failed unexpectedly",
                extra={"subject": worker.subject, "revision": state.revision},
            )
            await self._reporter.publish(
                state.app,
                state.environment,
                state.revision,
                DeployPhase.FAILED,
                "InternalError",
                f"the deployer failed unexpectedly ({type(exc).__name__}); see its log",
                severity=Severity.ERROR,
            )
            self._reporter.outcome(state.app, state.environment, "failed")

    async def _deploy_in(
        self, worker: Worker, state: DesiredState, environment: Environment
    ) -> None:
        app, env_name, revision = state.app, state.environment, state.revision
        started = time.perf_counter()
        await self._reporter.publish(
            app,
            env_name,
            revision,
            DeployPhase.STARTED,
            "Started",
            f"deploying revision {revision} of {app}/{env_name}: {len(state.objects)} objects "
            f"to cluster {environment.cluster}, namespace {environment.namespace}",
        )
        self._reporter.status(app, env_name, health_status=reporting.PROGRESSING)
        try:
            session = await self._session(environment.cluster)
            rollout = rollouts.Rollout(session, environment, state, unseal=self._unseal)
            plan, existing = await rollout.plan()

            async def announce(applied: rollouts.Result) -> None:
                metrics = self._reporter.metrics
                metrics.apply_duration.labels(app, env_name).observe(applied.apply_seconds)
                metrics.objects_applied.labels(app, env_name).inc(applied.applied)
                await self._reporter.publish(
                    app,
                    env_name,
                    revision,
                    DeployPhase.APPLIED,
                    "Applied",
                    f"revision {revision} applied: {applied.applied} objects written, "
                    f"{applied.unchanged} unchanged",
                    applied=applied.applied,
                    unchanged=applied.unchanged,
                    duration_seconds=applied.apply_seconds,
                )

            result = await rollout.converge(plan, existing, on_applied=announce)
        except DeployError as problem:
            await self._report_problem(state, problem, time.perf_counter() - started)
            self._reporter.outcome(app, env_name, "failed")
            self._reporter.status(
                app, env_name, sync_status=reporting.OUT_OF_SYNC, health_status=reporting.UNKNOWN
            )
            return

        self._reporter.metrics.objects_pruned.labels(app, env_name).inc(result.pruned)
        if result.pruned:
            await self._reporter.publish(
                app,
                env_name,
                revision,
                DeployPhase.PRUNED,
                "Pruned",
                f"revision {revision}: {result.pruned} owned objects that Git no longer has "
                "were deleted",
                pruned=result.pruned,
            )
        self._reporter.status(app, env_name, revision=revision, sync_status=reporting.SYNCED)

        report = await rollout.wait_healthy(
            result,
            limit_seconds=environment.health_timeout_seconds,
            interval=self._health_poll_seconds,
            superseded=worker.superseded,
        )
        self._reporter.metrics.health_wait.labels(app, env_name).observe(report.waited_seconds)
        if report.verdict is rollouts.Verdict.SUPERSEDED:
            log.info(
                "a newer desired state arrived; stopped waiting for health",
                extra={"subject": worker.subject, "revision": revision},
            )
            self._reporter.outcome(app, env_name, "superseded")
            return
        if report.verdict is rollouts.Verdict.HEALTHY:
            worker.last_healthy = state
            await self._reporter.publish(
                app,
                env_name,
                revision,
                DeployPhase.HEALTHY,
                "Healthy",
                f"revision {revision} is healthy: {len(result.plan.objects)} objects ready",
                applied=result.applied,
                pruned=result.pruned,
                unchanged=result.unchanged,
                duration_seconds=time.perf_counter() - started,
            )
            self._reporter.outcome(app, env_name, "healthy")
            self._reporter.status(app, env_name, health_status=reporting.HEALTHY)
            return

        timed_out = report.verdict is rollouts.Verdict.TIMED_OUT
        culprit = report.culprit
        why = (
            f"not healthy after {environment.health_timeout_seconds:g}s" if timed_out else "failed"
        )
        cause = report.health.reason if report.health else "Unhealthy"
        await self._reporter.publish(
            app,
            env_name,
            revision,
            DeployPhase.DEGRADED if timed_out else DeployPhase.FAILED,
            "HealthCheckTimeout" if timed_out else cause,
            f"revision {revision}: {culprit.describe() if culprit else 'an object'} {why}: "
            f"{cause}: {report.health.message if report.health else ''}",
            severity=Severity.WARNING if timed_out else Severity.ERROR,
            involved_object=culprit.ref if culprit else None,
            source=culprit.source if culprit else None,
            applied=result.applied,
            pruned=result.pruned,
            unchanged=result.unchanged,
            duration_seconds=time.perf_counter() - started,
        )
        self._reporter.status(app, env_name, health_status=reporting.DEGRADED)
        if environment.rollback_on_failure:
            await self._rollback(worker, state, environment, session)
        else:
            self._reporter.outcome(app, env_name, "degraded" if timed_out else "failed")

    async def _rollback(
        self, worker: Worker, failed: DesiredState, environment: Environment, session: Session
    ) -> None:
        app, env_name = failed.app, failed.environment
        target = worker.last_healthy
        if target is None or target.digest == failed.digest:
            await self._reporter.publish(
                app,
                env_name,
                failed.revision,
                DeployPhase.FAILED,
                "NoRollbackTarget",
                f"revision {failed.revision} is unhealthy and no earlier revision of "
                f"{app}/{env_name} was healthy since the deployer started; nothing to roll back to",
                severity=Severity.ERROR,
            )
            self._reporter.outcome(app, env_name, "failed")
            return
        started = time.perf_counter()
        rollout = rollouts.Rollout(session, environment, target, unseal=self._unseal)
        try:
            plan, existing = await rollout.plan()
            result = await rollout.converge(plan, existing)
            report = await rollout.wait_healthy(
                result,
                limit_seconds=environment.health_timeout_seconds,
                interval=self._health_poll_seconds,
                superseded=worker.superseded,
            )
        except DeployError as problem:
            await self._reporter.publish(
                app,
                env_name,
                target.revision,
                DeployPhase.FAILED,
                "RollbackFailed",
                f"rolling back from {failed.revision} to {target.revision} failed: "
                f"{problem.message}",
                severity=Severity.CRITICAL,
                source=problem.source,
                involved_object=problem.involved_object,
            )
            self._reporter.outcome(app, env_name, "failed")
            return
        if report.verdict is rollouts.Verdict.SUPERSEDED:
            self._reporter.outcome(app, env_name, "superseded")
            return
        self._reporter.metrics.objects_applied.labels(app, env_name).inc(result.applied)
        self._reporter.metrics.objects_pruned.labels(app, env_name).inc(result.pruned)
        if report.verdict is not rollouts.Verdict.HEALTHY:
            culprit = report.culprit.describe() if report.culprit else "an object"
            await self._reporter.publish(
                app,
                env_name,
                target.revision,
                DeployPhase.FAILED,
                "RollbackUnhealthy",
                f"rolled back from {failed.revision} to {target.revision}, but {culprit} is not "
                "healthy either",
                severity=Severity.CRITICAL,
            )
            self._reporter.outcome(app, env_name, "failed")
            return
        await self._reporter.publish(
            app,
            env_name,
            target.revision,
            DeployPhase.ROLLED_BACK,
            "RolledBack",
            f"revision {failed.revision} was unhealthy; rolled back to {target.revision}, "
            "which is healthy again",
            severity=Severity.WARNING,
            applied=result.applied,
            pruned=result.pruned,
            unchanged=result.unchanged,
            duration_seconds=time.perf_counter() - started,
        )
        self._reporter.outcome(app, env_name, "rolled-back")
        self._reporter.status(
            app,
            env_name,
            revision=target.revision,
            sync_status=reporting.OUT_OF_SYNC,
            health_status=reporting.HEALTHY,
        )

    async def _report_problem(
        self, state: DesiredState, problem: DeployError, duration: float
    ) -> None:
        partly = isinstance(problem, rollouts.PartlyAppliedError)
        suffix = (
            "; the revision is partly applied"
            if partly
            else "; nothing was applied, the cluster keeps the previous revision"
        )
        await self._reporter.publish(
            state.app,
            state.environment,
            state.revision,
            DeployPhase.FAILED,
            problem.reason,
            f"revision {state.revision}: {problem.message}{suffix}",
            severity=Severity.ERROR,
            source=problem.source,
            involved_object=problem.involved_object,
            duration_seconds=duration,
        )

    # --- configuration and connections ---------------------------------------------------------

    def _environment(self, app: str, environment: str) -> Environment | None:
        for candidate in self._config.apps:
            if candidate.name == app:
                return candidate.environments.get(environment)
        return None

    async def _session(self, cluster_name: str) -> Session:
        """The cluster's session; RejectedError (ClusterUnreachable) when it cannot be set up."""
        target = cluster_target(self._config.clusters[cluster_name], self._default_kubeconfig)
        try:
            return await self._sessions.get(cluster_name, target)
        except ConnectError as exc:
            raise RejectedError("ClusterUnreachable", str(exc)) from exc

    async def _rebuild(self, kafka: KafkaSettings) -> None:
        topics = [kafka.topic_prefix + "desired", kafka.topic_prefix + "commands"]
        seen = 0
        async for record in tail(
            kafka.bootstrap_servers, topics, idle_timeout=REBUILD_IDLE_SECONDS
        ):
            data = record.envelope.data if record.envelope is not None else None
            if isinstance(data, DesiredState):
                worker = self.worker(data.app, data.environment)
                if worker is not None:
                    worker.record(data, apply=False)
                    seen += 1
            elif isinstance(data, Command) and isinstance(
                data.command, SuspendCommand | ResumeCommand
            ):
                worker = self.worker(data.app, data.environment)
                if worker is not None:
                    if isinstance(data.command, SuspendCommand):
                        worker.suspend()
                    else:
                        worker.resume()
        log.info("rebuilt desired states from the topics", extra={"desired_states": seen})


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register the deployer on a runtime, with its own settings from the environment."""
    build_with(runtime, config, DeployerSettings.from_environ(os.environ))


def build_with(runtime: Runtime, config: GitopsConfig, settings: DeployerSettings) -> None:
    """Register the deployer's consumers, loops, certificate route and readiness checks.

    Raises ConfigError when the settings name a cluster that gitops.yaml does not define.
    """
    cluster, target = settings.sealing_target(config, runtime.settings.kubeconfig)
    keyring = keyrings.Keyring(target, cluster, settings.key_settings())
    reporter = Reporter(runtime.publisher, DeployMetrics(runtime.metrics.registry))
    deployer = Deployer(
        config,
        reporter,
        unseal=unsealing.Unsealer(keyring),
        kafka=runtime.settings.kafka,
        default_kubeconfig=runtime.settings.kubeconfig,
    )
    runtime.consume(["desired", "revisions", "commands"], deployer.handle)
    runtime.loop(keyring.run)
    runtime.loop(deployer.run)
    runtime.routes(certs.cert_routes(lambda: keyring.ring))
    runtime.check("desired-state-rebuilt", lambda: deployer.ready)
    runtime.check("sealing-keys", lambda: keyring.loaded)
