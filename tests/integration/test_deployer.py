"""The deployer against a real broker and a real API server: apply, prune, health, rollback.

The deployer runs in-process on the same Runtime the service process uses, is driven only by
events published to Kafka (desired states, revisions, commands), and is judged by the deploy
events it publishes and by what is really on the cluster, read back with an admin client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from opentelemetry.sdk.trace import ReadableSpan

from gitops_bus import Publisher, tail
from gitops_config.models import App, Cluster, Environment, GitopsConfig
from gitops_deployer import service
from gitops_events import (
    Command,
    DeployEvent,
    DeployPhase,
    DesiredObject,
    DesiredState,
    ObjectRef,
    RenderError,
    ResumeCommand,
    Revision,
    SuspendCommand,
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
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 6  # gitops_bus.admin.DEFAULT_PARTITIONS
PASSWORD = "hunter2-do-not-leak"

CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True)
SECRET = ResourceType("", "v1", "Secret", "secrets", namespaced=True)
DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments", namespaced=True)
CLUSTER_ROLE = ResourceType(
    "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False
)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# --- manifests -----------------------------------------------------------------------------------


def config_map(name: str, data: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def deployment(name: str, replicas: int = 1, **pod_spec: Any) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok runs no containers: the image is never pulled.
                "spec": {
                    "containers": [{"name": "app", "image": "example.invalid/app:1"}],
                    **pod_spec,
                },
            },
        },
    }


def secret(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {"password": PASSWORD},
    }


# --- the deployer under test ---------------------------------------------------------------------


def environment(namespace: str, **overrides: Any) -> Environment:
    fields: dict[str, Any] = {
        "branch": "main",
        "cluster": "local",
        "namespace": namespace,
        "health_timeout_seconds": 60,
    }
    fields.update(overrides)
    return Environment.model_validate(fields)


@dataclass
class Deployed:
    """A running deployer, a publisher to drive it, and what it published."""

    kafka: KafkaTarget
    runtime: Runtime
    publisher: Publisher
    spans: InMemorySpanExporter
    events: list[DeployEvent] = field(default_factory=list)

    async def desired(
        self, app: str, env: str, revision: str, objects: Sequence[tuple[str, dict[str, Any]]]
    ) -> DesiredState:
        state = DesiredState(
            app=app,
            environment=env,
            revision=revision,
            repo="file:///srv/git/app.git",
            branch="main",
            cluster="local",
            namespace="unused",
            digest=f"sha256:{revision}",
            objects=[
                DesiredObject(source=source, manifest=manifest) for source, manifest in objects
            ],
        )
        await self.publisher.publish(state)
        return state

    async def command(
        self, app: str, env: str, action: SyncCommand | SuspendCommand | ResumeCommand
    ) -> None:
        await self.publisher.publish(
            Command(app=app, environment=env, command=action, requested_by="test")
        )

    def of(self, app: str, env: str) -> list[DeployEvent]:
        return [e for e in self.events if e.app == app and e.environment == env]

    async def wait_for(
        self,
        app: str,
        env: str,
        phase: DeployPhase,
        revision: str | None = None,
        *,
        timeout: float = 60,
        reason: str | None = None,
    ) -> DeployEvent:
        async def found() -> DeployEvent | None:
            return next(
                (
                    e
                    for e in self.of(app, env)
                    if e.phase == phase
                    and (revision is None or e.revision == revision)
                    and (reason is None or e.reason == reason)
                ),
                None,
            )

        try:
            event: DeployEvent | None = await eventually(
                found, timeout=timeout, what=f"{phase} {reason or ''} {revision or ''}"
            )
        except AssertionError as exc:
            seen = [(e.revision, e.phase.value, e.reason, e.message) for e in self.of(app, env)]
            raise AssertionError(f"{exc}; events of {app}/{env}: {seen}") from None
        assert event is not None
        return event

    def metric(self, name: str, **labels: str) -> float | None:
        return self.runtime.metrics.registry.get_sample_value(name, labels)


async def _collect(kafka: KafkaTarget, into: list[DeployEvent]) -> None:
    async for record in tail(
        kafka.bootstrap_servers, [kafka.prefix + "deploy"], follow=True, idle_timeout=0.2
    ):
        if record.envelope is not None and isinstance(record.envelope.data, DeployEvent):
            into.append(record.envelope.data)


@contextlib.asynccontextmanager
async def running_deployer(
    kafka: KafkaTarget, kube: ControlPlane, config: GitopsConfig
) -> AsyncIterator[Deployed]:
    settings = kafka.settings(
        GITOPS_HTTP_PORT=str(free_port()),
        KUBECONFIG=str(kube.kubeconfig),
        GITOPS_LOG_FORMAT="console",
    )
    spans = InMemorySpanExporter()
    # The bus binds its tracer when a consumer is built, before Runtime.run sets tracing up; an
    # earlier test's provider would get the consumer spans, so this test's comes first.
    tracing.setup_tracing(service.SERVICE, exporter=spans)
    runtime = Runtime(service.SERVICE, settings, span_exporter=spans)
    service.build(runtime, config)
    running = asyncio.create_task(runtime.run())
    publisher = Publisher(kafka.bootstrap_servers, kafka.prefix, "gitops/test")
    collector: asyncio.Task[None] | None = None
    try:
        await eventually(
            lambda: running.done() or all(runtime.readiness().values()),
            timeout=60,
            what="the deployer to be ready",
        )
        assert not running.done(), "the deployer stopped while starting"
        await publisher.start()
        deployed = Deployed(kafka, runtime, publisher, spans)
        collector = asyncio.create_task(_collect(kafka, deployed.events))
        yield deployed
    finally:
        if collector is not None:
            collector.cancel()
            await asyncio.gather(collector, return_exceptions=True)
        if publisher.started:
            await publisher.stop()
        runtime.request_stop()
        await asyncio.wait_for(running, 30)


def single_app(kube: ControlPlane, app: str, env: str, settings: Environment) -> GitopsConfig:
    return GitopsConfig(
        clusters={"local": Cluster(kubeconfig=kube.kubeconfig)},
        apps=[App(name=app, repo="file:///srv/git/app.git", environments={env: settings})],
    )


@pytest.fixture
async def admin(kube: ControlPlane) -> AsyncIterator[ApiClient]:
    async with connect(kube.kubeconfig) as api:
        yield api


async def _namespace(api: ApiClient, prefix: str) -> str:
    name = _unique(prefix)
    await create_namespace(api, name)
    return name


async def _get(
    api: ApiClient, resource: ResourceType, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    return await applying.get(api, resource, name, namespace)


def _assert_no_secret_leaked(events: Sequence[DeployEvent]) -> None:
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    for event in events:
        text = event.model_dump_json()
        assert PASSWORD not in text
        assert encoded not in text


# --- the tests -----------------------------------------------------------------------------------


async def test_desired_state_is_applied_updated_pruned_and_healthy(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "web", "staging"
    ns = await _namespace(admin, "apply")
    await create(admin, config_map("unowned", {"keep": "me"}, ns))
    rev1 = [
        ("deploy/config.yaml", config_map("settings", {"level": "1"})),
        ("deploy/config.yaml", config_map("extra", {"x": "y"})),
        ("deploy/secret.yaml", secret("creds")),
        ("deploy/web.yaml", deployment("web", replicas=2)),
    ]
    rev2 = [
        ("deploy/config.yaml", config_map("settings", {"level": "2"})),
        ("deploy/secret.yaml", secret("creds")),
        ("deploy/web.yaml", deployment("web", replicas=3)),
    ]

    async with running_deployer(kafka, kube, single_app(kube, app, env, environment(ns))) as d:
        await d.desired(app, env, "rev1", rev1)
        healthy = await d.wait_for(app, env, DeployPhase.HEALTHY, "rev1")
        assert [e.phase for e in d.of(app, env)] == [
            DeployPhase.STARTED,
            DeployPhase.APPLIED,
            DeployPhase.HEALTHY,
        ]
        assert (healthy.applied, healthy.unchanged, healthy.pruned) == (4, 0, 0)
        assert healthy.duration_seconds is not None

        settings = await _get(admin, CONFIG_MAP, "settings", ns)
        assert settings is not None
        assert settings["data"] == {"level": "1"}
        assert settings["metadata"]["labels"]["gitops.io/app"] == app
        assert settings["metadata"]["labels"]["gitops.io/environment"] == env
        assert settings["metadata"]["annotations"]["gitops.io/revision"] == "rev1"
        managers = {f["manager"] for f in settings["metadata"]["managedFields"]}
        assert managers == {"gitops-deployer"}
        web = await _get(admin, DEPLOYMENT, "web", ns)
        assert web is not None
        assert web["status"]["availableReplicas"] == 2
        assert await _get(admin, SECRET, "creds", ns) is not None

        await d.desired(app, env, "rev2", rev2)
        healthy = await d.wait_for(app, env, DeployPhase.HEALTHY, "rev2")
        pruned = await d.wait_for(app, env, DeployPhase.PRUNED, "rev2")
        assert pruned.pruned == 1
        assert "1 owned objects" in pruned.message

        settings = await _get(admin, CONFIG_MAP, "settings", ns)
        assert settings is not None
        assert settings["data"] == {"level": "2"}
        assert settings["metadata"]["annotations"]["gitops.io/revision"] == "rev2"
        assert await _get(admin, CONFIG_MAP, "extra", ns) is None
        unowned = await _get(admin, CONFIG_MAP, "unowned", ns)
        assert unowned is not None, "prune deleted an object the app does not own"
        assert unowned["data"] == {"keep": "me"}
        assert "gitops.io/app" not in (unowned["metadata"].get("labels") or {})
        web = await _get(admin, DEPLOYMENT, "web", ns)
        assert web is not None
        assert web["status"]["availableReplicas"] == 3
        inventory = await _get(admin, CONFIG_MAP, f"gitops-inventory.{app}.{env}", ns)
        assert inventory is not None
        assert inventory["data"]["revision"] == "rev2"
        assert '"name":"extra"' not in inventory["data"]["objects"]
        assert '"name":"web"' in inventory["data"]["objects"]

        # A sync of the same revision writes nothing: the dry-run equals the live objects.
        await d.command(app, env, SyncCommand())
        await eventually(
            lambda: len([e for e in d.of(app, env) if e.phase == DeployPhase.HEALTHY]) == 3,
            timeout=60,
            what="the third healthy event",
        )
        resync = [e for e in d.of(app, env) if e.phase == DeployPhase.APPLIED][-1]
        assert (resync.applied, resync.unchanged) == (0, 3)

        assert d.metric("gitops_deploys_total", app=app, environment=env, outcome="healthy") == 3
        assert d.metric("gitops_objects_pruned_total", app=app, environment=env) == 1
        assert d.metric("gitops_objects_applied_total", app=app, environment=env) == 7
        assert (
            d.metric(
                "gitops_app_info",
                app=app,
                environment=env,
                revision="rev2",
                sync_status="Synced",
                health_status="Healthy",
            )
            == 1
        )
        assert d.metric("gitops_apply_duration_seconds_count", app=app, environment=env) == 3
        assert d.metric("gitops_health_wait_seconds_count", app=app, environment=env) == 3
        _assert_no_secret_leaked(d.events)

        handles = {
            s.context.span_id: s
            for s in d.spans.get_finished_spans()
            if s.name == "handle io.gitops.desired.v1"
        }
        children: dict[str, list[ReadableSpan]] = {}
        for span in d.spans.get_finished_spans():
            if span.parent is not None and span.parent.span_id in handles:
                children.setdefault(span.name, []).append(span)
        assert {"dry-run", "apply", "prune", "health wait"} <= set(children)
        assert len(children["apply"]) == 4  # two batches for each of two revisions


@dataclass(frozen=True)
class BadRevision:
    """A revision the deployer must refuse, and what the failed event must say."""

    reason: str
    source: str
    kind: str
    name: str
    objects: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    render_error: bool = False
    mentions: str = ""


def _bad_revisions() -> Iterator[Any]:
    changed = ("deploy/config.yaml", config_map("settings", {"level": "2"}))
    invalid = deployment("web")
    invalid["spec"]["replicas"] = "three"
    yield pytest.param(
        BadRevision(
            "DryRunFailed",
            "deploy/web.yaml",
            "Deployment",
            "web",
            [changed, ("deploy/web.yaml", invalid)],
            mentions=".spec.replicas",
        ),
        id="schema-invalid",
    )
    unknown_field = deployment("web")
    unknown_field["spec"]["replicaz"] = 2
    yield pytest.param(
        BadRevision(
            "DryRunFailed",
            "deploy/web.yaml",
            "Deployment",
            "web",
            [changed, ("deploy/web.yaml", unknown_field)],
            mentions="replicaz",
        ),
        id="unknown-field",
    )
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    yield pytest.param(
        BadRevision(
            "UnknownKind",
            "deploy/widget.yaml",
            "Widget",
            "w",
            [changed, ("deploy/widget.yaml", widget)],
        ),
        id="unknown-kind",
    )
    yield pytest.param(
        BadRevision(
            "NamespaceNotAllowed",
            "deploy/escape.yaml",
            "ConfigMap",
            "escape",
            [changed, ("deploy/escape.yaml", config_map("escape", {}, "kube-system"))],
        ),
        id="outside-allowed-namespaces",
    )
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "gitops-test-reader"},
        "rules": [],
    }
    yield pytest.param(
        BadRevision(
            "ClusterScopedNotAllowed",
            "deploy/rbac.yaml",
            "ClusterRole",
            "gitops-test-reader",
            [changed, ("deploy/rbac.yaml", role)],
        ),
        id="cluster-scoped-not-allowed",
    )
    yield pytest.param(
        BadRevision(
            "MalformedYaml", "deploy/broken.yaml", "ConfigMap", "broken", render_error=True
        ),
        id="render-error",
    )


@pytest.mark.parametrize("bad", list(_bad_revisions()))
async def test_a_bad_revision_applies_nothing_and_names_file_and_object(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient, bad: BadRevision
) -> None:
    app, env = "shop", "staging"
    ns = await _namespace(admin, "reject")
    good = [
        ("deploy/config.yaml", config_map("settings", {"level": "1"})),
        ("deploy/web.yaml", deployment("web")),
    ]

    async with running_deployer(kafka, kube, single_app(kube, app, env, environment(ns))) as d:
        await d.desired(app, env, "good", good)
        await d.wait_for(app, env, DeployPhase.HEALTHY, "good")

        if bad.render_error:
            await d.publisher.publish(
                Revision(
                    app=app,
                    environment=env,
                    repo="file:///srv/git/app.git",
                    branch="main",
                    revision="bad",
                    render_error=RenderError(
                        reason="MalformedYaml",
                        message="line 3: mapping values are not allowed",
                        source=bad.source,
                        involved_object=ObjectRef(
                            api_version="v1", kind="ConfigMap", name="broken", namespace=ns
                        ),
                    ),
                )
            )
        else:
            await d.desired(app, env, "bad", bad.objects)
        failed = await d.wait_for(app, env, DeployPhase.FAILED, "bad")

        assert failed.reason == bad.reason
        assert failed.source == bad.source
        assert failed.involved_object is not None
        assert (failed.involved_object.kind, failed.involved_object.name) == (bad.kind, bad.name)
        assert bad.mentions in failed.message
        if not bad.render_error:
            assert "nothing was applied" in failed.message
        assert failed.severity == "error"
        assert not [
            e
            for e in d.of(app, env)
            if e.revision == "bad" and e.phase in (DeployPhase.APPLIED, DeployPhase.HEALTHY)
        ]

        settings = await _get(admin, CONFIG_MAP, "settings", ns)
        assert settings is not None
        assert settings["data"] == {"level": "1"}
        assert settings["metadata"]["annotations"]["gitops.io/revision"] == "good"
        assert await _get(admin, CONFIG_MAP, "escape", "kube-system") is None
        assert await _get(admin, CLUSTER_ROLE, "gitops-test-reader") is None
        assert d.metric("gitops_deploys_total", app=app, environment=env, outcome="failed") == 1


@pytest.mark.parametrize("rollback", [True, False], ids=["rollback", "no-rollback"])
async def test_a_rollout_that_never_becomes_healthy_degrades_and_rolls_back(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient, rollback: bool
) -> None:
    app, env = "api", "production"
    ns = await _namespace(admin, "degrade")
    settings = environment(ns, health_timeout_seconds=5, rollback_on_failure=rollback)
    healthy = [("deploy/web.yaml", deployment("web", replicas=2))]
    # kwok makes a pod ready once it is scheduled; no node carries this label.
    stuck = [
        (
            "deploy/web.yaml",
            deployment("web", replicas=2, nodeSelector={"gitops.io/no-such-node": "true"}),
        )
    ]

    async with running_deployer(kafka, kube, single_app(kube, app, env, settings)) as d:
        await d.desired(app, env, "v1", healthy)
        await d.wait_for(app, env, DeployPhase.HEALTHY, "v1")
        await d.desired(app, env, "v2", stuck)

        degraded = await d.wait_for(app, env, DeployPhase.DEGRADED, "v2", timeout=30)
        assert degraded.reason == "HealthCheckTimeout"
        assert degraded.involved_object == ObjectRef(
            api_version="apps/v1", kind="Deployment", name="web", namespace=ns
        )
        assert degraded.source == "deploy/web.yaml"
        assert degraded.duration_seconds is not None
        assert degraded.duration_seconds < 20

        if rollback:
            rolled = await d.wait_for(app, env, DeployPhase.ROLLED_BACK, "v1", timeout=60)
            assert "v2" in rolled.message
            web = await _get(admin, DEPLOYMENT, "web", ns)
            assert web is not None
            assert "nodeSelector" not in web["spec"]["template"]["spec"]
            assert web["metadata"]["annotations"]["gitops.io/revision"] == "v1"
            assert web["status"].get("availableReplicas") == 2
            assert (
                d.metric("gitops_deploys_total", app=app, environment=env, outcome="rolled-back")
                == 1
            )
            assert (
                d.metric(
                    "gitops_app_info",
                    app=app,
                    environment=env,
                    revision="v1",
                    sync_status="OutOfSync",
                    health_status="Healthy",
                )
                == 1
            )
        else:
            assert (
                d.metric("gitops_deploys_total", app=app, environment=env, outcome="degraded") == 1
            )
            web = await _get(admin, DEPLOYMENT, "web", ns)
            assert web is not None
            assert web["spec"]["template"]["spec"]["nodeSelector"]
            assert not [e for e in d.of(app, env) if e.phase == DeployPhase.ROLLED_BACK]


def _same_partition_apps(env: str, count: int) -> list[str]:
    """App names whose subjects land on one partition, so one consumer handles them in turn."""
    by_partition: dict[int, list[str]] = {}
    for index in range(200):
        name = f"app{index}"
        partition = (murmur2(f"{name}/{env}".encode()) & 0x7FFFFFFF) % PARTITIONS
        by_partition.setdefault(partition, []).append(name)
        if len(by_partition[partition]) == count:
            return by_partition[partition]
    raise AssertionError("no partition with enough apps")


async def test_environments_deploy_in_parallel_and_do_not_block_each_other(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    env = "staging"
    slow, fast = _same_partition_apps(env, 2)
    slow_ns, fast_ns = await _namespace(admin, "slow"), await _namespace(admin, "fast")
    config = GitopsConfig(
        clusters={"local": Cluster(kubeconfig=kube.kubeconfig)},
        apps=[
            App(
                name=slow,
                repo="file:///srv/git/slow.git",
                environments={env: environment(slow_ns, health_timeout_seconds=30)},
            ),
            App(
                name=fast, repo="file:///srv/git/fast.git", environments={env: environment(fast_ns)}
            ),
        ],
    )
    stuck = deployment("web", nodeSelector={"gitops.io/no-such-node": "true"})

    async with running_deployer(kafka, kube, config) as d:
        await d.desired(slow, env, "s1", [("deploy/web.yaml", stuck)])
        await d.wait_for(slow, env, DeployPhase.APPLIED, "s1")
        await d.desired(fast, env, "f1", [("deploy/web.yaml", deployment("web"))])

        await d.wait_for(fast, env, DeployPhase.HEALTHY, "f1", timeout=20)
        assert not [
            e for e in d.of(slow, env) if e.phase in (DeployPhase.HEALTHY, DeployPhase.DEGRADED)
        ], "the fast app had to wait for the slow one"
        assert await _get(admin, DEPLOYMENT, "web", fast_ns) is not None


async def test_desired_states_in_quick_succession_end_at_the_latest(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "burst", "staging"
    ns = await _namespace(admin, "burst")
    revisions = [f"r{i}" for i in range(1, 6)]

    async with running_deployer(kafka, kube, single_app(kube, app, env, environment(ns))) as d:
        for revision in revisions:
            await d.desired(
                app,
                env,
                revision,
                [
                    ("deploy/config.yaml", config_map("settings", {"revision": revision})),
                    ("deploy/web.yaml", deployment("web")),
                ],
            )
        await d.wait_for(app, env, DeployPhase.HEALTHY, revisions[-1])

        started = [e.revision for e in d.of(app, env) if e.phase == DeployPhase.STARTED]
        assert started[-1] == revisions[-1]
        assert started == sorted(started, key=lambda r: revisions.index(str(r))), (
            "an older revision came later"
        )
        settings = await _get(admin, CONFIG_MAP, "settings", ns)
        assert settings is not None
        assert settings["data"] == {"revision": revisions[-1]}
        assert settings["metadata"]["annotations"]["gitops.io/revision"] == revisions[-1]


async def test_suspended_environment_applies_nothing_until_resumed(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "paused", "staging"
    ns = await _namespace(admin, "suspend")

    async with running_deployer(kafka, kube, single_app(kube, app, env, environment(ns))) as d:
        await d.command(app, env, SuspendCommand())
        await d.command(app, env, SyncCommand())
        await d.wait_for(app, env, DeployPhase.FAILED, reason="Suspended")

        await d.desired(
            app, env, "held", [("deploy/config.yaml", config_map("settings", {"a": "1"}))]
        )
        await eventually(
            lambda: d.metric(
                "gitops_app_info",
                app=app,
                environment=env,
                revision="",
                sync_status="OutOfSync",
                health_status="Suspended",
            ),
            timeout=30,
            what="the desired state recorded while suspended",
        )
        await d.command(app, env, SyncCommand())
        await eventually(
            lambda: len([e for e in d.of(app, env) if e.reason == "Suspended"]) == 2,
            timeout=30,
            what="the second refused sync",
        )
        assert not [e for e in d.of(app, env) if e.phase == DeployPhase.STARTED]
        assert await _get(admin, CONFIG_MAP, "settings", ns) is None

        await d.command(app, env, ResumeCommand())
        await d.wait_for(app, env, DeployPhase.HEALTHY, "held")
        assert await _get(admin, CONFIG_MAP, "settings", ns) is not None


async def test_without_auto_sync_only_a_sync_command_applies(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "manual", "production"
    ns = await _namespace(admin, "manual")
    settings = environment(ns, auto_sync=False)

    async with running_deployer(kafka, kube, single_app(kube, app, env, settings)) as d:
        await d.desired(app, env, "m1", [("deploy/config.yaml", config_map("settings", {}))])
        await eventually(
            lambda: d.metric(
                "gitops_app_info",
                app=app,
                environment=env,
                revision="",
                sync_status="OutOfSync",
                health_status="Unknown",
            ),
            timeout=30,
            what="the desired state recorded without auto-sync",
        )
        assert await _get(admin, CONFIG_MAP, "settings", ns) is None
        await d.command(app, env, SyncCommand())
        await d.wait_for(app, env, DeployPhase.HEALTHY, "m1")
        assert await _get(admin, CONFIG_MAP, "settings", ns) is not None


async def test_the_environment_namespace_is_created_when_missing(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "fresh", "staging"
    ns = _unique("fresh")
    namespaces = ResourceType("", "v1", "Namespace", "namespaces", namespaced=False)
    assert await _get(admin, namespaces, ns) is None

    async with running_deployer(kafka, kube, single_app(kube, app, env, environment(ns))) as d:
        await d.desired(app, env, "n1", [("deploy/web.yaml", deployment("web"))])
        await d.wait_for(app, env, DeployPhase.HEALTHY, "n1")

    created = await _get(admin, namespaces, ns)
    assert created is not None
    assert created["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "gitops-deployer"
    assert await _get(admin, DEPLOYMENT, "web", ns) is not None


async def test_a_crd_and_its_objects_apply_in_one_revision_and_the_objects_prune(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "crds", "staging"
    ns = await _namespace(admin, "crds")
    group = f"{_unique('widgets')}.example.com"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": "Widget",
                "plural": "widgets",
                "singular": "widget",
                "listKind": "WidgetList",
            },
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer"}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    widget = {
        "apiVersion": f"{group}/v1",
        "kind": "Widget",
        "metadata": {"name": "w1"},
        "spec": {"size": 3},
    }
    widgets = ResourceType(group, "v1", "Widget", "widgets", namespaced=True)
    settings = environment(ns, allow_cluster_scoped=["CustomResourceDefinition"])

    async with running_deployer(kafka, kube, single_app(kube, app, env, settings)) as d:
        await d.desired(app, env, "c1", [("crds/widget.yaml", crd), ("deploy/widget.yaml", widget)])
        await d.wait_for(app, env, DeployPhase.HEALTHY, "c1")
        live = await _get(admin, widgets, "w1", ns)
        assert live is not None
        assert live["spec"] == {"size": 3}
        assert live["metadata"]["labels"]["gitops.io/app"] == app

        await d.desired(app, env, "c2", [("crds/widget.yaml", crd)])
        pruned = await d.wait_for(app, env, DeployPhase.PRUNED, "c2")
        assert pruned.pruned == 1
        assert await _get(admin, widgets, "w1", ns) is None
        crds = ResourceType(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            namespaced=False,
        )
        assert await _get(admin, crds, f"widgets.{group}") is not None, "a CRD was pruned"


async def test_a_second_cluster_is_reached_with_its_own_namespace_confined_identity(
    kafka: KafkaTarget, kube: ControlPlane, admin: ApiClient
) -> None:
    app, env = "tenant", "staging"
    ns = await _namespace(admin, "tenant")
    await create(
        admin,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "deployer-edit", "namespace": ns},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "edit",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "deployer-2"}
            ],
        },
    )
    config = GitopsConfig(
        clusters={
            "local": Cluster(kubeconfig=kube.kubeconfig),
            "tenant-cluster": Cluster(kubeconfig=kube.kubeconfig_for("deployer-2")),
        },
        apps=[
            App(
                name=app,
                repo="file:///srv/git/app.git",
                environments={env: environment(ns, cluster="tenant-cluster")},
            )
        ],
    )
    async with running_deployer(kafka, kube, config) as d:
        await d.desired(
            app,
            env,
            "t1",
            [("deploy/a.yaml", config_map("a", {})), ("deploy/b.yaml", config_map("b", {}))],
        )
        # The binding reaches the authorizer through an informer: retry until it is seen.
        await _until_healthy(d, app, env, "t1")
        await d.desired(app, env, "t2", [("deploy/a.yaml", config_map("a", {}))])
        await d.wait_for(app, env, DeployPhase.HEALTHY, "t2")

        a = await _get(admin, CONFIG_MAP, "a", ns)
        assert a is not None
        assert {f["manager"] for f in a["metadata"]["managedFields"]} == {"gitops-deployer"}
        assert await _get(admin, CONFIG_MAP, "b", ns) is None


async def _until_healthy(d: Deployed, app: str, env: str, revision: str) -> None:
    async def healthy_or_retry() -> bool:
        if any(e.phase == DeployPhase.HEALTHY and e.revision == revision for e in d.of(app, env)):
            return True
        failures = [e for e in d.of(app, env) if e.phase == DeployPhase.FAILED]
        started = [e for e in d.of(app, env) if e.phase == DeployPhase.STARTED]
        if failures and len(failures) == len(started):
            assert "Forbidden" in failures[-1].message, failures[-1].message
            await d.command(app, env, SyncCommand())
            await eventually(
                lambda: (
                    len([e for e in d.of(app, env) if e.phase == DeployPhase.STARTED])
                    > len(started)
                ),
                timeout=10,
                what="the retried deploy to start",
            )
        return False

    await eventually(
        healthy_or_retry,
        timeout=60,
        interval=0.5,
        what=f"{revision} healthy with the confined identity",
    )
