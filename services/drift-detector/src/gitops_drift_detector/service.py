"""drift-detector: the Observe and Orient steps, desired state and live watches to drift events.

It consumes the desired states (what Git says), the deploy events (what the deployer is doing)
and the suspend/resume commands, and watches every cluster for the kinds Git holds there
(``observing``). Each app environment has a worker that compares it with its cluster
(``gitops_kube.comparing``: server-side apply dry-runs, so server defaults are never drift) when
anything about it changes: a watch event on one of its objects, a new desired state, the end of a
deploy, or the periodic resync (a safety net, default every 5 minutes). Bursts of changes are
compared once (a short debounce), and nothing is compared while the deployer is applying.

What it finds is published as a DriftEvent only when it is news (see ``environments``): detected,
changed, resolved, with a fingerprint of objects and field paths. Where the environment's policy
says ``self_heal: true``, it asks the deployer to sync (a Command on the commands topic, so the
deployer stays the only writer), with backoff, and stops when the same drift keeps coming back
(``healing``).

Each comparison is a ``drift evaluation`` span: a child of the consumer span of the event that
caused it, or, for watch-triggered ones, a root span linked to the span that handled the current
desired state (and so to the revision's trace).

Trade-off: one replica. Every replica would watch every cluster and publish the same drift; work
is not yet split by partition between replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from gitops_bus import Publisher, tail
from gitops_config import GitopsConfig
from gitops_config.settings import KafkaSettings
from gitops_drift_detector import healing, reporting
from gitops_drift_detector.environments import EnvironmentState, Published
from gitops_drift_detector.metrics import DriftMetrics
from gitops_drift_detector.observing import ClusterWatch
from gitops_drift_detector.settings import DetectorSettings
from gitops_events import (
    Command,
    DeployEvent,
    DesiredState,
    DriftEvent,
    DriftStatus,
    Envelope,
    ResumeCommand,
    SuspendCommand,
    SyncCommand,
    subject_for,
)
from gitops_kube import comparing, ownership
from gitops_kube.clients import KubeApiError
from gitops_kube.comparing import Difference, ObjectId, Target
from gitops_kube.discovery import ResourceType
from gitops_kube.sessions import ConnectError, Sessions, target_for
from gitops_kube.watching import Change
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

SERVICE = "drift-detector"
REQUESTED_BY = "drift-detector"


_PRIORITY = ("desired", "deploy", "start", "resync", "timer", "watch")
"""Trigger reasons, the one that names a merged trigger first (consumed events before watches)."""


@dataclass(frozen=True)
class Trigger:
    """Why an environment is to be compared, and what that cause carries along."""

    reason: str
    # When the watch event that caused it arrived (time.monotonic()), for the detection latency.
    received: float | None = None
    # The trace context of the consumed event that caused it, if any.
    context: otel_context.Context | None = None

    def merged(self, earlier: Trigger | None) -> Trigger:
        """One trigger standing for this one and an earlier one not yet acted on."""
        if earlier is None:
            return self
        received = [t for t in (earlier.received, self.received) if t is not None]
        return Trigger(
            reason=min(earlier.reason, self.reason, key=_PRIORITY.index),
            received=min(received) if received else None,
            context=self.context or earlier.context,
        )


Evaluate = Callable[[EnvironmentState, Trigger], Awaitable[float | None]]


class Worker:
    """Compares one app environment, one comparison at a time, bursts of triggers merged."""

    def __init__(
        self, state: EnvironmentState, evaluate: Evaluate, settings: DetectorSettings
    ) -> None:
        """Compare ``state`` with ``evaluate``, which returns when to look again (or None)."""
        self.state = state
        self._evaluate = evaluate
        self._settings = settings
        self._pending: Trigger | None = None
        self._wake = asyncio.Event()
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Whether every comparison asked for so far is done (none pending, none running)."""
        return self._pending is None and not self._busy

    def poke(self, trigger: Trigger) -> None:
        """Ask for a comparison (soon, after the debounce)."""
        self._pending = trigger.merged(self._pending)
        self._wake.set()

    def start(self) -> None:
        """Start the worker's task (in the running event loop)."""
        if self._task is None:
            subject = subject_for(self.state.app, self.state.environment)
            self._task = asyncio.create_task(self._run(), name=f"drift:{subject}")

    async def stop(self) -> None:
        """Cancel the worker, including a comparison in progress."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        again: float | None = None
        while True:
            timeout = None if again is None else max(0.0, again - time.monotonic())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:
                self._pending = Trigger("timer").merged(self._pending)
            self._busy = True
            try:
                if self._settings.debounce_seconds:
                    await asyncio.sleep(self._settings.debounce_seconds)
                self._wake.clear()
                trigger, self._pending = self._pending, None
                if trigger is not None:
                    again = await self._evaluate(self.state, trigger)
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug, not a cluster problem (those are reported by evaluate): logged and
                # survived, so that one bad comparison does not stop the environment for good.
                log.exception(
                    "drift evaluation crashed",
                    extra={"subject": subject_for(self.state.app, self.state.environment)},
                )
                again = time.monotonic() + self._settings.retry_seconds
            finally:
                self._busy = False


class Detector:
    """Keeps every app environment's view, watches the clusters, compares and reports."""

    def __init__(
        self,
        config: GitopsConfig,
        publisher: Publisher,
        metrics: DriftMetrics,
        settings: DetectorSettings,
        *,
        kafka: KafkaSettings | None = None,
        default_kubeconfig: str | None = None,
    ) -> None:
        """Watch what ``config`` describes; ``kafka`` is where to rebuild from at start."""
        self._config = config
        self._publisher = publisher
        self._metrics = metrics
        self._settings = settings
        self._kafka = kafka
        self._default_kubeconfig = default_kubeconfig
        policy = settings.healing_policy()
        self._states = {
            subject_for(app.name, name): EnvironmentState(app, name, environment, policy)
            for app in config.apps
            for name, environment in app.environments.items()
        }
        self._workers: dict[str, Worker] = {}
        self._sessions = Sessions()
        self._clusters: dict[str, ClusterWatch] = {}
        self._cluster_lock = asyncio.Lock()
        # cluster → object → the environments whose desired state holds it.
        self._wanted_by: dict[str, dict[ObjectId, set[str]]] = {}
        self._rebuilt = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Whether the state from before a restart has been rebuilt."""
        return self._rebuilt.is_set()

    # --- life ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Rebuild from the topics, compare everything, then resync periodically until cancelled."""
        try:
            if self._kafka is not None:
                await self._rebuild(self._kafka)
            self._rebuilt.set()
            for state in self._states.values():
                if state.desired is not None:
                    self._worker(state).poke(Trigger("start"))
            while True:
                await asyncio.sleep(self._settings.resync_seconds)
                await self.resync()
        finally:
            await asyncio.gather(*(w.stop() for w in self._workers.values()))
            await asyncio.gather(*(c.stop() for c in self._clusters.values()))
            await self._sessions.close()

    def idle(self, app: str, environment: str) -> bool:
        """Whether every comparison of an app environment asked for so far is done."""
        worker = self._workers.get(subject_for(app, environment))
        return worker is None or worker.idle

    async def resync(self) -> None:
        """Start afresh: list every watched kind again and compare every environment."""
        for watch in self._clusters.values():
            await watch.stop()
            watch.forget_refusals()
        for state in self._states.values():
            state.dry_runs.clear()
            if state.desired is not None:
                self._worker(state).poke(Trigger("resync"))

    async def _rebuild(self, kafka: KafkaSettings) -> None:
        names = ("desired", "deploy", "drift", "commands")
        counts: Counter[str] = Counter()
        async for record in tail(
            kafka.bootstrap_servers,
            [kafka.topic_prefix + name for name in names],
            idle_timeout=self._settings.restore_idle_seconds,
        ):
            envelope = record.envelope
            if envelope is None:
                continue
            data = envelope.data
            state = self._states.get(envelope.subject)
            if state is None:
                continue
            if isinstance(data, DesiredState):
                state.record_desired(data)
            elif isinstance(data, DeployEvent):
                state.record_deploy(data, envelope.time)
            elif isinstance(data, DriftEvent):
                state.record_drift(data, envelope.time)
            elif isinstance(data, Command) and isinstance(
                data.command, SuspendCommand | ResumeCommand
            ):
                state.record_suspension(isinstance(data.command, SuspendCommand), envelope.time)
            counts[type(data).__name__] += 1
        log.info("rebuilt the environments from the topics", extra={"events": dict(counts)})

    def _worker(self, state: EnvironmentState) -> Worker:
        subject = subject_for(state.app, state.environment)
        worker = self._workers.get(subject)
        if worker is None:
            worker = Worker(state, self._evaluate, self._settings)
            worker.start()
            self._workers[subject] = worker
        return worker

    # --- consumed events -----------------------------------------------------------------------

    async def handle(self, envelope: Envelope) -> None:
        """Dispatch one consumed event (desired state, deploy event or command)."""
        await self._rebuilt.wait()
        data = envelope.data
        state = self._states.get(envelope.subject)
        if state is None:
            log.debug(
                "event about an environment gitops.yaml does not define",
                extra={"subject": envelope.subject},
            )
            return
        context = otel_context.get_current()
        if isinstance(data, DesiredState):
            if state.record_desired(data):
                state.revision_link = trace.get_current_span().get_span_context()
                self._worker(state).poke(Trigger("desired", context=context))
        elif isinstance(data, DeployEvent):
            if state.record_deploy(data, envelope.time) and state.desired is not None:
                self._worker(state).poke(Trigger("deploy", context=context))
        elif isinstance(data, Command) and isinstance(data.command, SuspendCommand | ResumeCommand):
            state.record_suspension(isinstance(data.command, SuspendCommand), envelope.time)

    # --- watches -------------------------------------------------------------------------------

    def _on_change(self, cluster: str, resource: ResourceType, change: Change) -> None:
        metadata = change.object.get("metadata") or {}
        namespace = str(metadata.get("namespace") or "") if resource.namespaced else ""
        object_id = ObjectId(resource.group, resource.kind, namespace, str(metadata.get("name")))
        subjects = set(self._wanted_by.get(cluster, {}).get(object_id, ()))
        owner = ownership.owner_of(change.object)
        if owner is not None:
            subject = subject_for(*owner)
            state = self._states.get(subject)
            if state is not None and state.cluster == cluster:
                subjects.add(subject)
        for subject in subjects:
            worker = self._workers.get(subject)
            if worker is not None:
                worker.poke(Trigger("watch", received=change.received))

    async def _cluster(self, name: str) -> ClusterWatch:
        async with self._cluster_lock:
            watch = self._clusters.get(name)
            if watch is None:
                cluster = self._config.clusters[name]
                session = await self._sessions.get(
                    name,
                    target_for(
                        kubeconfig=cluster.kubeconfig,
                        context=cluster.context,
                        in_cluster=cluster.in_cluster,
                        default_kubeconfig=self._default_kubeconfig,
                    ),
                )
                watch = ClusterWatch(session, self._on_change)
                self._clusters[name] = watch
            return watch

    def _index(self, state: EnvironmentState, targets: list[Target]) -> None:
        subject = subject_for(state.app, state.environment)
        wanted = self._wanted_by.setdefault(state.cluster, {})
        for object_id, subjects in list(wanted.items()):
            subjects.discard(subject)
            if not subjects:
                del wanted[object_id]
        for target in targets:
            wanted.setdefault(target.id, set()).add(subject)

    # --- comparing -----------------------------------------------------------------------------

    async def _evaluate(self, state: EnvironmentState, trigger: Trigger) -> float | None:
        """Compare one environment and report; when to look again (None: on the next trigger)."""
        now = time.monotonic()
        desired = state.desired
        if desired is None:
            return None
        hold = state.hold_until(now, self._settings.settle_seconds)
        if hold is not None:
            return hold
        app, environment = state.app, state.environment
        links = []
        if trigger.context is None and state.revision_link and state.revision_link.is_valid:
            links.append(trace.Link(state.revision_link))
        with tracing.tracer("gitops_drift_detector").start_as_current_span(
            "drift evaluation",
            context=trigger.context or otel_context.Context(),
            links=links,
            attributes={
                "gitops.app": app,
                "gitops.environment": environment,
                "gitops.revision": desired.revision,
                "gitops.trigger": trigger.reason,
            },
        ) as span:
            try:
                # Right after a deploy the watch cache may not have the deployer's writes yet
                # (they race the deploy event); those comparisons read the objects afresh.
                differences = await self._compare(state, desired, fresh=trigger.reason == "deploy")
            except (KubeApiError, ConnectError) as exc:
                log.warning(
                    "drift evaluation failed; retrying",
                    extra={
                        "subject": subject_for(app, environment),
                        "cluster": state.cluster,
                        "error": str(exc),
                        "retry_in": self._settings.retry_seconds,
                    },
                )
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._metrics.evaluations.labels(app, environment, trigger.reason, "error").inc()
                return now + self._settings.retry_seconds
            span.set_attribute("gitops.drifted_objects", len(differences))
            self._metrics.evaluations.labels(app, environment, trigger.reason, "ok").inc()
            if state.desired is not desired:
                # A newer desired state arrived meanwhile; its own comparison is already asked for.
                return None
            return await self._report(state, desired, differences, trigger)

    async def _compare(
        self, state: EnvironmentState, desired: DesiredState, *, fresh: bool
    ) -> list[Difference]:
        watch = await self._cluster(state.cluster)
        session = watch.session
        targets = state.targets
        if targets is None or any(t.resource is None for t in targets):
            targets = await comparing.targets(
                session.discovery,
                [(o.source, o.manifest) for o in desired.objects],
                app=state.app,
                environment=state.environment,
                namespace=state.settings.namespace,
                revision=desired.revision,
            )
            if state.desired is desired:
                state.targets = targets
                self._index(state, targets)
        resources = {
            (t.resource.group, t.resource.kind): t.resource
            for t in targets
            if t.resource is not None
        }
        for resource in resources.values():
            await watch.ensure(resource, state.settings.allowed_namespaces)

        async def live_of(target: Target) -> dict[str, Any] | None:
            if target.resource is not None and not fresh:
                cached = watch.cached(target.resource, target.id.namespace or None, target.id.name)
                if cached is not None:
                    return dict(cached)
            # Not cached: missing, or no longer labelled (then the labels are the drift).
            return await comparing.read_live(session.api, target)

        async def dry_run_of(target: Target, live: dict[str, Any]) -> dict[str, Any]:
            cached = state.cached_dry_run(target, live)
            if cached is not None:
                return cached
            result = await comparing.dry_run(session.api, target)
            self._metrics.dry_runs.labels(state.cluster).inc()
            state.cache_dry_run(target, live, result)
            return result

        owned = await watch.owned(
            resources.values(),
            app=state.app,
            environment=state.environment,
            namespaces=state.settings.allowed_namespaces,
            cluster_scoped=state.settings.allow_cluster_scoped,
            fresh=fresh,
        )
        return await comparing.compare(
            targets,
            live_of=live_of,
            dry_run_of=dry_run_of,
            owned=owned,
            app=state.app,
            environment=state.environment,
            rules=state.rules,
        )

    # --- reporting and healing -----------------------------------------------------------------

    async def _report(
        self,
        state: EnvironmentState,
        desired: DesiredState,
        differences: list[Difference],
        trigger: Trigger,
    ) -> float | None:
        now = time.monotonic()
        app, environment = state.app, state.environment
        fingerprint = comparing.fingerprint(differences)
        decision: healing.Decision | None = None
        if differences and state.settings.self_heal and not state.suspended:
            decision = state.heal.decide(now, fingerprint)
        gave_up = decision is not None and decision.action is healing.Action.GIVE_UP
        status = state.status_after(fingerprint)
        if status is None and gave_up:
            status = DriftStatus.CHANGED
        if status is not None:
            event = DriftEvent(
                app=app,
                environment=environment,
                revision=desired.revision,
                status=status,
                fingerprint=fingerprint or (state.published.fingerprint if state.published else ""),
                objects=reporting.object_drifts(differences),
                reason=healing.GAVE_UP_REASON if gave_up else None,
            )
            envelope = await self._publisher.publish(event)
            state.published = Published(status, event.fingerprint, envelope.time)
            if trigger.received is not None:
                self._metrics.detection_seconds.observe(time.monotonic() - trigger.received)
            log.log(
                logging.WARNING if status is not DriftStatus.RESOLVED else logging.INFO,
                f"drift {status.value}: {reporting.summary(differences)}",
                extra={
                    "subject": subject_for(app, environment),
                    "revision": desired.revision,
                    "fingerprint": event.fingerprint,
                    "reason": event.reason,
                },
            )
        self._count(state, differences)
        if not differences:
            if state.heal.resolved():
                self._metrics.self_heal.labels(app, environment, "resolved").inc()
            return None
        return await self._heal(state, decision)

    async def _heal(
        self, state: EnvironmentState, decision: healing.Decision | None
    ) -> float | None:
        if decision is None:
            return None
        app, environment = state.app, state.environment
        if decision.action is healing.Action.HEAL:
            await self._publisher.publish(
                Command(
                    app=app,
                    environment=environment,
                    command=SyncCommand(),
                    requested_by=REQUESTED_BY,
                )
            )
            self._metrics.self_heal.labels(app, environment, "requested").inc()
            log.info("self-heal: sync requested", extra={"subject": subject_for(app, environment)})
            return time.monotonic() + state.heal.policy.timeout_seconds
        if decision.action is healing.Action.GIVE_UP:
            self._metrics.self_heal.labels(app, environment, "gave-up").inc()
            log.warning(
                "self-heal gave up: the same drift keeps coming back; another writer changes "
                "these objects; change Git, add an ignore rule, or stop the other writer",
                extra={"subject": subject_for(app, environment)},
            )
            return None
        return decision.until

    def _count(self, state: EnvironmentState, differences: list[Difference]) -> None:
        kinds = Counter(d.id.kind for d in differences)
        for kind in state.kinds_reported | set(kinds):
            self._metrics.drift_objects.labels(state.app, state.environment, kind).set(kinds[kind])
        state.kinds_reported |= set(kinds)


def build_with(runtime: Runtime, config: GitopsConfig, settings: DetectorSettings) -> Detector:
    """Register the detector on a runtime with explicit settings; return it (for tests)."""
    detector = Detector(
        config,
        runtime.publisher,
        DriftMetrics(runtime.metrics.registry),
        settings,
        kafka=runtime.settings.kafka,
        default_kubeconfig=runtime.settings.kubeconfig,
    )
    runtime.consume(["desired", "deploy", "commands"], detector.handle)
    runtime.loop(detector.run)
    runtime.check("desired-state-rebuilt", lambda: detector.ready)
    return detector


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register drift-detector's consumers, watches and readiness check on a runtime."""
    build_with(runtime, config, DetectorSettings.from_environ(os.environ))
