"""The drift detector against a real broker, a real API server and the real deployer.

The deployer runs as a process (`gitops run deployer`, as users run it) and applies the desired
states the tests publish; the drift detector runs in-process on the real `Runtime`, so the tests
can read its metrics and spans. The cluster is then changed out of band with the real kubectl
(`kube.kubectl`): scaled, given another image, patched, objects deleted or added. Each test
judges the drift events and commands the detector publishes, read back from Kafka as any consumer
would, and what is on the cluster. Detection latencies are measured from just before kubectl
runs to the moment the drift event arrives at the test's own consumer, and must stay under 2 s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from gitops_bus import Publisher, tail
from gitops_config import load_config
from gitops_drift_detector import service
from gitops_drift_detector.settings import DetectorSettings
from gitops_events import (
    Command,
    DeployEvent,
    DeployPhase,
    DesiredObject,
    DesiredState,
    DriftEvent,
    DriftStatus,
    Envelope,
    SyncCommand,
)
from gitops_kube import applying
from gitops_kube.clients import ApiClient, connect, create, create_namespace
from gitops_kube.discovery import ResourceType
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing
from tests.support.kafka import KafkaTarget
from tests.support.processes import ServiceProcess, run_cli, start_service
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

DETECTION_DEADLINE = 2.0
"""Seconds from an out-of-band change to its drift event at a consumer."""

PASSWORD = "correct-horse-battery-staple"
DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments", namespaced=True)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- manifests -----------------------------------------------------------------------------------


def web_deployment(replicas: int = 2) -> dict[str, Any]:
    """A Deployment that leaves most fields to the server's defaults."""
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example.invalid/web:1",
                            "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def web_service() -> dict[str, Any]:
    """A Service without clusterIP, protocol or targetPort: all assigned by the server."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]},
    }


def settings_map(level: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"level": level},
    }


def credentials() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "credentials"},
        "stringData": {"password": PASSWORD},
    }


WEB_APP = [
    ("deploy/web.yaml", web_deployment()),
    ("deploy/web.yaml", web_service()),
    ("deploy/config.yaml", settings_map()),
    ("deploy/secret.yaml", credentials()),
]


# --- the system under test -----------------------------------------------------------------------


def write_config(
    path: Path,
    kube: ControlPlane,
    app: str,
    env: str,
    namespace: str,
    *,
    self_heal: bool = False,
    ignore: Sequence[dict[str, Any]] = (),
    kubeconfig: Path | None = None,
) -> Path:
    """A gitops.yaml with one app environment (JSON is YAML, and needs no YAML writer)."""
    config = {
        "version": 1,
        "clusters": {"local": {"kubeconfig": str(kubeconfig or kube.kubeconfig)}},
        "apps": [
            {
                "name": app,
                "repo": f"file:///srv/git/{app}.git",
                "ignore": list(ignore),
                "environments": {
                    env: {
                        "branch": "main",
                        "cluster": "local",
                        "namespace": namespace,
                        "self_heal": self_heal,
                        "health_timeout_seconds": 60,
                    }
                },
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass(frozen=True)
class Started:
    """When an out-of-band change began, on both clocks."""

    monotonic: float
    wall: float


@dataclass
class Seen:
    """An event as the test's consumer received it, with the moment it arrived."""

    envelope: Envelope
    arrived: float


@dataclass
class System:
    """The deployer process, the in-process drift detector, and what they published."""

    kafka: KafkaTarget
    kube: ControlPlane
    app: str
    env: str
    namespace: str
    config: Path
    deployer: ServiceProcess
    runtime: Runtime
    detector: service.Detector
    publisher: Publisher
    spans: InMemorySpanExporter
    seen: list[Seen] = field(default_factory=list)

    def drift(self) -> list[DriftEvent]:
        return [
            s.envelope.data
            for s in self.seen
            if isinstance(s.envelope.data, DriftEvent) and s.envelope.data.app == self.app
        ]

    def syncs(self) -> list[Command]:
        return [
            s.envelope.data
            for s in self.seen
            if isinstance(s.envelope.data, Command)
            and isinstance(s.envelope.data.command, SyncCommand)
            and s.envelope.data.app == self.app
        ]

    def deploys(self) -> list[DeployEvent]:
        return [
            s.envelope.data
            for s in self.seen
            if isinstance(s.envelope.data, DeployEvent) and s.envelope.data.app == self.app
        ]

    def metric(self, name: str, **labels: str) -> float:
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    def evaluations(self, trigger: str) -> float:
        return self.metric(
            "gitops_drift_evaluations_total",
            app=self.app,
            environment=self.env,
            trigger=trigger,
            outcome="ok",
        )

    def evaluations_done(self) -> float:
        return sum(
            self.evaluations(trigger)
            for trigger in ("desired", "deploy", "start", "resync", "timer", "watch")
        )

    def kubectl(self, *args: str) -> None:
        result = self.kube.kubectl("-n", self.namespace, *args)
        assert result.returncode == 0, result.stderr

    async def publish_desired(
        self, revision: str, objects: Sequence[tuple[str, dict[str, Any]]]
    ) -> None:
        await self.publisher.publish(
            DesiredState(
                app=self.app,
                environment=self.env,
                revision=revision,
                repo=f"file:///srv/git/{self.app}.git",
                branch="main",
                cluster="local",
                namespace=self.namespace,
                digest=f"sha256:{revision}",
                objects=[DesiredObject(source=s, manifest=m) for s, m in objects],
            )
        )

    async def deploy(
        self, revision: str, objects: Sequence[tuple[str, dict[str, Any]]] = WEB_APP
    ) -> None:
        """Publish a desired state, wait until it is healthy and the detector compared it."""
        before = self.evaluations("deploy")
        await self.publish_desired(revision, objects)
        await eventually(
            lambda: any(
                d.phase == DeployPhase.HEALTHY and d.revision == revision for d in self.deploys()
            ),
            timeout=90,
            what=f"revision {revision} healthy; deploy events: {self.deploys()}",
        )
        await eventually(
            lambda: self.evaluations("deploy") > before and self.detector.idle(self.app, self.env),
            timeout=30,
            what="the detector to compare after the deploy",
        )

    def change(self, *args: str) -> Started:
        """Run kubectl in the app's namespace; when it started."""
        started = Started(time.monotonic(), time.time())
        self.kubectl(*args)
        return started

    async def next_drift(
        self, change: str, started: Started, status: DriftStatus, *, after: int
    ) -> DriftEvent:
        """The first drift event with this status after the first `after` ones, within 2 s."""

        def found() -> tuple[DriftEvent, Seen] | None:
            events = [
                (s.envelope.data, s)
                for s in self.seen
                if isinstance(s.envelope.data, DriftEvent) and s.envelope.data.app == self.app
            ]
            return next(((e, s) for e, s in events[after:] if e.status == status), None)

        match = await eventually(
            found, timeout=15, interval=0.01, what=f"drift {status} ({change})"
        )
        assert match is not None
        event, seen = match
        observed = seen.arrived - started.monotonic
        published = seen.envelope.time.timestamp() - started.wall
        print(
            f"drift latency, {change}: {observed:.3f}s at a consumer ({published:.3f}s published)"
        )
        assert observed < DETECTION_DEADLINE, f"{change}: drift reported after {observed:.2f}s"
        return event

    async def settle(self) -> None:
        """Let the detector compare once more from scratch, and wait until it did."""
        before = self.evaluations_done()
        await self.detector.resync()
        await eventually(
            lambda: self.detector.idle(self.app, self.env) and self.evaluations_done() > before,
            timeout=30,
            what="a resync comparison",
        )


async def _collect(kafka: KafkaTarget, into: list[Seen]) -> None:
    topics = [kafka.prefix + name for name in ("drift", "commands", "deploy")]
    async for record in tail(kafka.bootstrap_servers, topics, follow=True, idle_timeout=0.05):
        if record.envelope is not None:
            into.append(Seen(record.envelope, time.monotonic()))


def detector_settings(**overrides: Any) -> DetectorSettings:
    values: dict[str, Any] = {
        "debounce_seconds": 0.05,
        "settle_seconds": 30,
        "restore_idle_seconds": 0.5,
        "self_heal_backoff_seconds": 0.5,
    }
    values.update(overrides)
    return DetectorSettings.model_validate(values)


@contextlib.asynccontextmanager
async def running_system(
    kafka: KafkaTarget,
    kube: ControlPlane,
    tmp_path: Path,
    admin: ApiClient,
    prefix: str,
    *,
    self_heal: bool = False,
    ignore: Sequence[dict[str, Any]] = (),
    settings: DetectorSettings | None = None,
    user: str | None = None,
) -> AsyncIterator[System]:
    """The system for one app environment in a new namespace; with `user`, both services reach
    the cluster as that user, who may edit that namespace only."""
    app, env = _unique(prefix), "staging"
    namespace = _unique(prefix)
    await create_namespace(admin, namespace)
    kubeconfig = None
    if user is not None:
        kubeconfig = kube.kubeconfig_for(user)
        await _grant_edit(admin, kube, namespace, user)
    config = write_config(
        tmp_path / "gitops.yaml",
        kube,
        app,
        env,
        namespace,
        self_heal=self_heal,
        ignore=ignore,
        kubeconfig=kubeconfig,
    )
    environment = {
        **kafka.env(),
        "GITOPS_CONFIG": str(config),
        "KUBECONFIG": str(kube.kubeconfig),
        "GITOPS_LOG_FORMAT": "console",
    }
    deployer = start_service("deployer", free_port(), environment, tmp_path / "deployer.log")
    spans = InMemorySpanExporter()
    # The bus binds its tracer when a consumer is built, before Runtime.run sets tracing up.
    tracing.setup_tracing(service.SERVICE, exporter=spans)
    runtime = Runtime(
        service.SERVICE,
        kafka.settings(
            GITOPS_HTTP_PORT=str(free_port()),
            KUBECONFIG=str(kube.kubeconfig),
            GITOPS_LOG_FORMAT="console",
        ),
        span_exporter=spans,
    )
    detector = service.build_with(runtime, load_config(config), settings or detector_settings())
    running = asyncio.create_task(runtime.run())
    publisher = Publisher(kafka.bootstrap_servers, kafka.prefix, "gitops/test")
    collector: asyncio.Task[None] | None = None
    try:
        await eventually(
            lambda: running.done() or all(runtime.readiness().values()),
            timeout=60,
            what="the drift detector to be ready",
        )
        assert not running.done(), "the drift detector stopped while starting"
        await eventually(deployer.ready, timeout=60, what="the deployer to be ready")
        await publisher.start()
        system = System(
            kafka, kube, app, env, namespace, config, deployer, runtime, detector, publisher, spans
        )
        collector = asyncio.create_task(_collect(kafka, system.seen))
        yield system
    finally:
        if collector is not None:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
        if publisher.started:
            await publisher.stop()
        runtime.request_stop()
        await asyncio.wait_for(running, 30)
        code = deployer.terminate()
        assert code == 0, f"the deployer exited with {code}:\n{deployer.output()[-3000:]}"


async def _grant_edit(admin: ApiClient, kube: ControlPlane, namespace: str, user: str) -> None:
    await create(
        admin,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-edit", "namespace": namespace},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        },
    )

    def granted() -> bool:
        answer = kube.kubectl(
            "auth", "can-i", "watch", "deployments", "-n", namespace, f"--as={user}"
        )
        return answer.stdout.strip() == "yes"

    # The binding reaches the authorizer through an informer: wait until it is seen.
    await eventually(granted, timeout=30, what=f"{user} to be allowed into {namespace}")
    denied = kube.kubectl(
        "auth", "can-i", "list", "deployments", "--all-namespaces", f"--as={user}"
    )
    assert denied.stdout.strip() == "no", "the test user may list across the cluster"


@pytest.fixture
async def admin(kube: ControlPlane) -> AsyncIterator[ApiClient]:
    async with connect(kube.kubeconfig) as api:
        yield api


def _fields(event: DriftEvent) -> dict[tuple[str, str], tuple[Any, Any]]:
    return {
        (f"{o.object.kind}/{o.object.name}", f.path): (f.desired, f.live)
        for o in event.objects
        for f in o.fields
    }


def _kinds(event: DriftEvent) -> set[tuple[str, str, str]]:
    return {(o.object.kind, o.object.name, o.drift) for o in event.objects}


async def _replicas(admin: ApiClient, namespace: str) -> int:
    live = await applying.get(admin, DEPLOYMENT, "web", namespace)
    assert live is not None
    return int(live["spec"]["replicas"])


# --- the tests -----------------------------------------------------------------------------------


async def test_a_fresh_deploy_shows_no_drift_despite_server_defaults(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "clean") as s:
        await s.deploy("rev1")
        await s.settle()

        assert s.drift() == [], [e.objects for e in s.drift()]
        live = await applying.get(
            admin,
            ResourceType("", "v1", "Service", "services", namespaced=True),
            "web",
            s.namespace,
        )
        assert live is not None
        assert live["spec"]["clusterIP"], "the server assigned no clusterIP"
        deployment = await applying.get(admin, DEPLOYMENT, "web", s.namespace)
        assert deployment is not None
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate", "no server default"
        requests = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
        assert requests["cpu"] == "500m", "the server did not normalise 0.5 CPU"
        assert s.metric("gitops_drift_dry_runs_total", cluster="local") >= 4
        # A second comparison of unchanged objects is answered from the dry-run cache.
        dry_runs = s.metric("gitops_drift_dry_runs_total", cluster="local")
        before = s.evaluations("timer") + s.evaluations("watch")
        s.kubectl("annotate", "configmap/settings", "example.com/note=not-in-git")
        await eventually(
            lambda: s.evaluations("watch") + s.evaluations("timer") > before,
            timeout=10,
            what="a comparison after the annotation",
        )
        assert s.drift() == [], "a field Git does not set was reported as drift"
        assert s.metric("gitops_drift_dry_runs_total", cluster="local") == dry_runs + 1


async def test_out_of_band_changes_are_reported_within_two_seconds_and_resolve_when_undone(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "oob") as s:
        await s.deploy("rev1")
        changes: list[tuple[str, tuple[str, ...], tuple[str, ...], str, tuple[Any, Any]]] = [
            (
                "kubectl scale",
                ("scale", "deployment/web", "--replicas=5"),
                ("scale", "deployment/web", "--replicas=2"),
                "Deployment/web /spec/replicas",
                (2, 5),
            ),
            (
                "kubectl set image",
                ("set", "image", "deployment/web", "app=example.invalid/web:2"),
                ("set", "image", "deployment/web", "app=example.invalid/web:1"),
                "Deployment/web /spec/template/spec/containers/0/image",
                ("example.invalid/web:1", "example.invalid/web:2"),
            ),
            (
                "kubectl patch configmap",
                ("patch", "configmap/settings", "-p", '{"data":{"level":"9"}}'),
                ("patch", "configmap/settings", "-p", '{"data":{"level":"1"}}'),
                "ConfigMap/settings /data/level",
                ("1", "9"),
            ),
        ]
        for name, change, undo, where, values in changes:
            count = len(s.drift())
            started = s.change(*change)
            detected = await s.next_drift(name, started, DriftStatus.DETECTED, after=count)
            obj, path = where.split(" ")
            assert _fields(detected) == {(obj, path): values}, detected.objects
            assert detected.revision == "rev1"
            assert detected.fingerprint
            assert detected.reason is None

            started = s.change(*undo)
            resolved = await s.next_drift(
                f"{name} undone", started, DriftStatus.RESOLVED, after=count
            )
            assert resolved.fingerprint == detected.fingerprint
            assert resolved.objects == []

        # A Secret's values never travel: compared by hash, reported masked.
        count = len(s.drift())
        encoded = base64.b64encode(b"hunter2").decode()
        started = s.change(
            "patch", "secret/credentials", "-p", json.dumps({"data": {"password": encoded}})
        )
        detected = await s.next_drift(
            "kubectl patch secret", started, DriftStatus.DETECTED, after=count
        )
        assert _fields(detected) == {
            ("Secret/credentials", "/data/password"): ("<masked>", "<masked>")
        }
        for seen in s.seen:
            text = seen.envelope.data.model_dump_json()
            for secret in (
                PASSWORD,
                "hunter2",
                encoded,
                base64.b64encode(PASSWORD.encode()).decode(),
            ):
                assert secret not in text

        assert s.metric("gitops_drift_detection_seconds_count") >= 7
        assert s.metric("gitops_drift_objects", app=s.app, environment=s.env, kind="Secret") == 1
        assert (
            s.metric("gitops_drift_objects", app=s.app, environment=s.env, kind="Deployment") == 0
        )

        spans = [sp for sp in s.spans.get_finished_spans() if sp.name == "drift evaluation"]
        by_trigger: dict[str, list[ReadableSpan]] = {}
        for span in spans:
            by_trigger.setdefault(str((span.attributes or {})["gitops.trigger"]), []).append(span)
        handles = {
            sp.context.span_id
            for sp in s.spans.get_finished_spans()
            if sp.name.startswith("handle io.gitops.deploy")
        }
        assert any(
            sp.parent is not None and sp.parent.span_id in handles for sp in by_trigger["deploy"]
        )
        watch_spans = by_trigger["watch"]
        assert all(sp.parent is None for sp in watch_spans)
        assert any(sp.links for sp in watch_spans), "no watch evaluation links to the revision"


async def test_a_deleted_object_is_missing_and_an_owned_stray_is_extra(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "gone") as s:
        await s.deploy("rev1")

        started = s.change("delete", "configmap/settings")
        missing = await s.next_drift("kubectl delete", started, DriftStatus.DETECTED, after=0)
        assert _kinds(missing) == {("ConfigMap", "settings", "missing")}

        started = Started(time.monotonic(), time.time())
        await create(
            admin,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "stray",
                    "namespace": s.namespace,
                    "labels": {"gitops.io/app": s.app, "gitops.io/environment": s.env},
                },
                "data": {"made": "by hand"},
            },
        )
        await create(
            admin,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "someone-elses",
                    "namespace": s.namespace,
                    "labels": {"gitops.io/app": "another-app", "gitops.io/environment": s.env},
                },
            },
        )
        changed = await s.next_drift("stray object", started, DriftStatus.CHANGED, after=1)
        assert _kinds(changed) == {
            ("ConfigMap", "settings", "missing"),
            ("ConfigMap", "stray", "extra"),
        }
        assert changed.fingerprint != missing.fingerprint

        # A sync puts the cluster back: the missing object is applied, the stray one pruned.
        await s.publisher.publish(
            Command(app=s.app, environment=s.env, command=SyncCommand(), requested_by="test")
        )
        await eventually(
            lambda: s.drift()[-1].status == DriftStatus.RESOLVED,
            timeout=30,
            what=f"the drift resolved by a sync; drift: {s.drift()}",
        )
        assert s.syncs()[0].requested_by == "test"
        assert len(s.syncs()) == 1, "a drift without self-heal asked for a sync"


async def test_self_heal_reverts_a_change_with_exactly_one_sync(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "heal", self_heal=True) as s:
        await s.deploy("rev1")

        started = s.change("scale", "deployment/web", "--replicas=5")
        detected = await s.next_drift("scale (self-heal)", started, DriftStatus.DETECTED, after=0)
        assert _fields(detected) == {("Deployment/web", "/spec/replicas"): (2, 5)}
        resolved = await eventually(
            lambda: next((e for e in s.drift() if e.status == DriftStatus.RESOLVED), None),
            timeout=30,
            what="the drift resolved by self-heal",
        )
        assert resolved is not None
        healed_after = time.monotonic() - started.monotonic
        print(f"self-heal: scaled back and resolved {healed_after:.2f}s after kubectl scale")
        assert resolved.fingerprint == detected.fingerprint
        assert await _replicas(admin, s.namespace) == 2

        await s.settle()
        assert [e.status for e in s.drift()] == [DriftStatus.DETECTED, DriftStatus.RESOLVED]
        syncs = s.syncs()
        assert len(syncs) == 1, syncs
        assert syncs[0].requested_by == "drift-detector"
        labels = {"app": s.app, "environment": s.env}
        assert s.metric("gitops_self_heal_total", **labels, outcome="requested") == 1
        assert s.metric("gitops_self_heal_total", **labels, outcome="resolved") == 1


async def test_self_heal_gives_up_when_another_writer_keeps_changing_the_object(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    settings = detector_settings(
        self_heal_attempts=2, self_heal_backoff_seconds=0.2, self_heal_window_seconds=300
    )
    async with running_system(
        kafka, kube, tmp_path, admin, "fight", self_heal=True, settings=settings
    ) as s:
        await s.deploy("rev1")

        async def scaled_back() -> bool:
            return await _replicas(admin, s.namespace) == 2

        for attempt in (1, 2):
            s.kubectl("scale", "deployment/web", "--replicas=7")
            await eventually(
                lambda: len(s.syncs()) >= attempt,  # noqa: B023 (awaited in this iteration)
                timeout=20,
                what=f"self-heal sync {attempt}",
            )
            await eventually(scaled_back, timeout=30, what="the deployment scaled back")
            await eventually(
                lambda: s.drift()[-1].status == DriftStatus.RESOLVED,
                timeout=30,
                what=f"resolution {attempt}",
            )

        s.kubectl("scale", "deployment/web", "--replicas=7")
        gave_up = await eventually(
            lambda: next((e for e in s.drift() if e.reason == "SelfHealGaveUp"), None),
            timeout=20,
            what="self-heal to give up",
        )
        assert gave_up is not None
        assert gave_up.status == DriftStatus.DETECTED
        assert _fields(gave_up) == {("Deployment/web", "/spec/replicas"): (2, 7)}
        await s.settle()
        assert len(s.syncs()) == 2, "self-heal kept fighting"
        assert await _replicas(admin, s.namespace) == 7
        labels = {"app": s.app, "environment": s.env}
        assert s.metric("gitops_self_heal_total", **labels, outcome="gave-up") == 1
        assert s.metric("gitops_self_heal_total", **labels, outcome="requested") == 2


async def test_ignore_rules_suppress_drift_on_the_pointed_field(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    ignore = [{"kind": "Deployment", "name": "web", "json_pointers": ["/spec/replicas"]}]
    async with running_system(kafka, kube, tmp_path, admin, "ignore", ignore=ignore) as s:
        await s.deploy("rev1")

        before = s.evaluations("watch")
        s.kubectl("scale", "deployment/web", "--replicas=4")
        await eventually(
            lambda: s.evaluations("watch") > before,
            timeout=10,
            what="a comparison after the scale",
        )
        await s.settle()
        assert s.drift() == [], "an ignored field was reported"

        started = s.change("set", "image", "deployment/web", "app=example.invalid/web:3")
        detected = await s.next_drift("set image (ignore)", started, DriftStatus.DETECTED, after=0)
        assert _fields(detected) == {
            ("Deployment/web", "/spec/template/spec/containers/0/image"): (
                "example.invalid/web:1",
                "example.invalid/web:3",
            )
        }


async def test_gitops_diff_exit_codes_and_json(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "cli") as s:
        await s.deploy("rev1")
        env = {**kafka.env(), "GITOPS_CONFIG": str(s.config)}

        def diff(*args: str, config: Path | None = None) -> Any:
            extra = {"GITOPS_CONFIG": str(config)} if config else {}
            return asyncio.to_thread(run_cli, "diff", *args, env={**env, **extra})

        clean = await diff(s.app, s.env)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "no drift" in clean.stdout
        everything = await diff()
        assert everything.returncode == 0, everything.stdout + everything.stderr

        s.kubectl("scale", "deployment/web", "--replicas=5")
        s.kubectl("delete", "configmap/settings")
        drifted = await diff(s.app, s.env)
        assert drifted.returncode == 2, drifted.stdout + drifted.stderr
        assert (
            f"*** Deployment {s.namespace}/web: /spec/replicas: desired 2 != live 5"
            in drifted.stdout
        ), drifted.stdout
        assert f"*** ConfigMap {s.namespace}/settings: missing" in drifted.stdout

        as_json = await diff(s.app, s.env, "--json")
        assert as_json.returncode == 2, as_json.stderr
        report = json.loads(as_json.stdout)
        assert report["drift"] is True
        [environment] = report["environments"]
        assert (environment["app"], environment["environment"]) == (s.app, s.env)
        assert environment["revision"] == "rev1"
        objects = {(o["object"]["kind"], o["drift"]): o for o in environment["objects"]}
        assert set(objects) == {("Deployment", "modified"), ("ConfigMap", "missing")}
        assert objects[("Deployment", "modified")]["fields"] == [
            {"path": "/spec/replicas", "desired": 2, "live": 5}
        ]
        assert PASSWORD not in as_json.stdout

        unknown = await diff("no-such-app", "staging")
        assert unknown.returncode == 1
        assert "no-such-app" in unknown.stderr
        assert "Traceback" not in unknown.stderr

        broken = write_config(
            tmp_path / "unreachable.yaml",
            kube,
            s.app,
            s.env,
            s.namespace,
            kubeconfig=tmp_path / "no-such-kubeconfig",
        )
        unreachable = await diff(s.app, s.env, config=broken)
        assert unreachable.returncode == 1, unreachable.stdout + unreachable.stderr
        assert "cluster 'local'" in unreachable.stderr
        assert "Traceback" not in unreachable.stderr


async def test_a_namespace_confined_identity_is_watched_per_namespace(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with running_system(kafka, kube, tmp_path, admin, "confined", user="deployer-1") as s:
        await s.deploy("rev1")
        await s.settle()
        assert s.drift() == []

        watched = s.evaluations("watch")
        started = s.change("scale", "deployment/web", "--replicas=3")
        detected = await s.next_drift("scale (confined)", started, DriftStatus.DETECTED, after=0)
        assert _fields(detected) == {("Deployment/web", "/spec/replicas"): (2, 3)}
        assert s.evaluations("watch") > watched, "found without a watch"

        started = Started(time.monotonic(), time.time())
        await create(
            admin,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "stray",
                    "namespace": s.namespace,
                    "labels": {"gitops.io/app": s.app, "gitops.io/environment": s.env},
                },
            },
        )
        changed = await s.next_drift("stray (confined)", started, DriftStatus.CHANGED, after=1)
        assert ("ConfigMap", "stray", "extra") in _kinds(changed)
