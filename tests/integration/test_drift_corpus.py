"""No false positives: a corpus of realistic manifests, deployed for real, shows no drift.

The corpus (``tests/data/drift-corpus/``, 32 objects) is what a real app repository holds:
Deployments with probes and resources in mixed units, Services whose clusterIP, protocol,
targetPort and nodePort the server fills in, StatefulSets (one with volumeClaimTemplates), CronJobs,
an Ingress, an autoscaling/v2 HPA, RBAC, ConfigMaps with multi-line and binary data, Secrets
written as ``stringData``, a NetworkPolicy, a LimitRange, a ResourceQuota, a PodDisruptionBudget,
and a CRD with schema defaults and two custom resources. The files are loaded with git-watcher's
own YAML loader, so they reach the deployer as a rendered revision would.

The real deployer (a ``gitops run deployer`` process) applies them to the real control plane, the
drift detector runs in-process (as test_drift.py's ``running_system`` sets them up, with a config
that allows the CRD), and the test then asserts that for a settle period, a forced full resync
included, the detector publishes no drift event, and that ``gitops diff`` exits 0. As a control,
one real out-of-band change (``kubectl scale``) is then reported, and only it.

The local control plane has no storage provisioner: the claims of the ``db`` StatefulSet stay
Pending, so its pod is never scheduled and that StatefulSet never becomes healthy. The deploy
therefore ends ``degraded`` (HealthCheckTimeout) with ``db`` as the only culprit; the test asserts
that, checks that every other object is healthy, and asserts no drift anyway, since drift is about
configuration, not health.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gitops_bus import Publisher
from gitops_config import load_config
from gitops_drift_detector import service
from gitops_events import DeployEvent, DeployPhase, DriftStatus
from gitops_git_watcher.manifests import load_objects
from gitops_kube import health
from gitops_kube.clients import ApiClient, connect, create_namespace
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing
from tests.integration.test_drift import System, _collect, detector_settings
from tests.support.kafka import KafkaTarget
from tests.support.processes import run_cli, start_service
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parents[1] / "data" / "drift-corpus"

HEALTH_TIMEOUT = 30.0
"""Seconds the deployer waits for health; the claim-bound StatefulSet uses all of it."""

SETTLE_SECONDS = 15.0
"""How long the detector is watched after the deploy ended, before a forced resync."""

NEVER_HEALTHY = {("StatefulSet", "db")}
"""Objects that cannot become healthy here: their claims wait for a provisioner."""


def load_corpus(namespace: str, suffix: str) -> list[tuple[str, dict[str, Any]]]:
    """Every corpus object as (source file, manifest), placeholders filled in."""
    objects: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        text = path.read_text().replace("__NAMESPACE__", namespace).replace("__SUFFIX__", suffix)
        source = f"deploy/{path.name}"
        objects += [(source, o) for o in load_objects(text.encode(), source, max_alias_nodes=100)]
    return objects


def _config(path: Path, kube: ControlPlane, app: str, env: str, namespace: str) -> Path:
    config = {
        "version": 1,
        "clusters": {"local": {"kubeconfig": str(kube.kubeconfig)}},
        "apps": [
            {
                "name": app,
                "repo": f"file:///srv/git/{app}.git",
                "environments": {
                    env: {
                        "branch": "main",
                        "cluster": "local",
                        "namespace": namespace,
                        "allow_cluster_scoped": ["CustomResourceDefinition"],
                        "health_timeout_seconds": HEALTH_TIMEOUT,
                    }
                },
            }
        ],
    }
    path.write_text(json.dumps(config, indent=2))
    return path


@contextlib.asynccontextmanager
async def corpus_system(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> AsyncIterator[System]:
    """The deployer process and the in-process detector for one app environment.

    As test_drift.running_system, with a config that lets the environment apply its CRD.
    """
    suffix = uuid.uuid4().hex[:8]
    app, env, namespace = f"corpus-{suffix}", "staging", f"corpus-{suffix}"
    await create_namespace(admin, namespace)
    config = _config(tmp_path / "gitops.yaml", kube, app, env, namespace)
    environment = {
        **kafka.env(),
        "GITOPS_CONFIG": str(config),
        "KUBECONFIG": str(kube.kubeconfig),
        "GITOPS_LOG_FORMAT": "console",
    }
    deployer = start_service("deployer", free_port(), environment, tmp_path / "deployer.log")
    spans = InMemorySpanExporter()
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
    detector = service.build_with(runtime, load_config(config), detector_settings())
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


@pytest.fixture
async def admin(kube: ControlPlane) -> AsyncIterator[ApiClient]:
    async with connect(kube.kubeconfig) as api:
        yield api


def _ended(s: System, revision: str) -> DeployEvent | None:
    ends = (DeployPhase.HEALTHY, DeployPhase.DEGRADED, DeployPhase.FAILED)
    return next((d for d in s.deploys() if d.revision == revision and d.phase in ends), None)


def _live(kube: ControlPlane, namespace: str, manifest: Mapping[str, Any]) -> dict[str, Any]:
    group = str(manifest["apiVersion"]).rpartition("/")[0]
    resource = f"{manifest['kind']}.{group}" if group else str(manifest["kind"])
    name = manifest["metadata"]["name"]
    result = kube.kubectl("-n", namespace, "get", f"{resource}/{name}", "-o", "json")
    assert result.returncode == 0, result.stderr
    live: dict[str, Any] = json.loads(result.stdout)
    return live


async def test_a_realistic_corpus_shows_no_drift_once_deployed(
    kafka: KafkaTarget, kube: ControlPlane, tmp_path: Path, admin: ApiClient
) -> None:
    async with corpus_system(kafka, kube, tmp_path, admin) as s:
        corpus = load_corpus(s.namespace, s.app.removeprefix("corpus-"))
        kinds = {m["kind"] for _, m in corpus}
        assert len(corpus) >= 30, len(corpus)
        assert {"Deployment", "StatefulSet", "CronJob", "HorizontalPodAutoscaler"} <= kinds
        assert {"CustomResourceDefinition", "Widget", "Secret", "RoleBinding"} <= kinds

        await s.publish_desired("rev1", corpus)
        await eventually(
            lambda: any(
                d.phase == DeployPhase.APPLIED and d.revision == "rev1" for d in s.deploys()
            ),
            timeout=60,
            what=f"revision rev1 applied; deploy events: {s.deploys()}",
        )
        applied = next(d for d in s.deploys() if d.phase == DeployPhase.APPLIED)
        assert applied.applied + applied.unchanged >= len(corpus), applied

        # The deploy ends degraded, with the claim-bound StatefulSet as the culprit (see above).
        ended = await eventually(
            lambda: _ended(s, "rev1"),
            timeout=HEALTH_TIMEOUT + 60,
            what=f"the deploy of rev1 to end; deploy events: {s.deploys()}",
        )
        assert ended is not None
        assert ended.phase == DeployPhase.DEGRADED, ended
        assert ended.reason == "HealthCheckTimeout", ended
        assert ended.involved_object is not None
        culprit = (ended.involved_object.kind, ended.involved_object.name)
        if culprit not in NEVER_HEALTHY:
            events = kube.kubectl("-n", s.namespace, "get", "events,pods,rs", "-o", "wide")
            raise AssertionError(f"{ended.message}\n{events.stdout}")
        for _, manifest in corpus:
            if (manifest["kind"], manifest["metadata"]["name"]) in NEVER_HEALTHY:
                continue
            live = _live(kube, s.namespace, manifest)
            verdict = health.assess(live)
            assert verdict.state is health.HealthState.HEALTHY, (manifest["kind"], verdict)

        # Settle: controllers keep writing status (rollouts, the HPA, the quota, the StatefulSet
        # controller) and the detector compares on every such watch event; then a full resync.
        await eventually(
            lambda: s.evaluations("deploy") >= 1 and s.detector.idle(s.app, s.env),
            timeout=30,
            what="the detector to compare after the deploy",
        )
        await asyncio.sleep(SETTLE_SECONDS)
        await s.settle()
        assert s.drift() == [], [e.objects for e in s.drift()]
        assert s.evaluations_done() >= 2
        assert s.metric("gitops_drift_dry_runs_total", cluster="local") >= len(corpus)

        env = {**kafka.env(), "GITOPS_CONFIG": str(s.config)}
        diff = await asyncio.to_thread(run_cli, "diff", s.app, s.env, env=env)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert "no drift" in diff.stdout, diff.stdout

        # A control: the same detector does see a real change among these objects.
        started = s.change("scale", "deployment/worker", "--replicas=3")
        detected = await s.next_drift("scale in corpus", started, DriftStatus.DETECTED, after=0)
        assert [(o.object.kind, o.object.name, o.drift) for o in detected.objects] == [
            ("Deployment", "worker", "modified")
        ]
        assert [(f.path, f.desired, f.live) for f in detected.objects[0].fields] == [
            ("/spec/replicas", 2, 3)
        ]
        print(
            f"corpus: {len(corpus)} objects, {len(kinds)} kinds, "
            f"{s.evaluations_done():.0f} comparisons, no drift; gitops diff: {diff.stdout.strip()}"
        )
