"""Drift: how fast an out-of-band edit is reported, and how fast a full comparison is.

Both run on a local control plane of their own (etcd, kube-apiserver, controller-manager,
scheduler, kwok) and the benchmark's broker.

Edit latency: the deployer and the drift detector run as their own processes (`gitops run`), as
in production, with their default settings. A Deployment (2 replicas) is deployed through the
deployer; then `kubectl scale` sets it alternately to 3 (drift detected) and back to 2 (drift
resolved). Each sample is one edit: the clock starts just before kubectl runs and stops when the
drift event it causes is read back from Kafka by the benchmark's own consumer.

Full scan: 2,000 ConfigMaps in one namespace, applied with `kubectl apply --server-side` in
exactly the form the deployer applies (its field manager, ownership labels and revision
annotation, from `gitops_kube.ownership.applied_form`). Ours is the comparison `gitops diff` makes
(`gitops_cli.diffing._compare`: discovery, listing the owned objects, then a read and a
server-side apply dry-run per object through `gitops_kube.comparing`), in-process, without the
CLI's start-up and the read of the desired state from Kafka. The baseline is `kubectl diff
--server-side` of the same 2,000 files with the same field manager, in the same run. Both must
find no difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import httpx

from gitops_bus import Publisher, tail
from gitops_cli import diffing
from gitops_config import Settings, load_config
from gitops_events import DeployEvent, DeployPhase, DesiredObject, DesiredState, DriftEvent
from gitops_kube import ownership
from gitops_kube.sessions import Sessions
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from tests.bench.report import Figure, Report
from tests.support.processes import ServiceProcess, start_service
from tests.support.waiting import eventually

EDITS = 50
"""Out-of-band edits, alternately scaling to 3 (detected) and back to 2 (resolved)."""

OBJECTS = 2000
"""ConfigMaps in the full scan."""

OURS_RUNS = 5
"""Full comparisons timed with the project's code."""

KUBECTL_RUNS = 3
"""Full comparisons timed with `kubectl diff --server-side`."""

APP, ENV, REVISION = "bench", "scan", "rev1"


# --- edit latency --------------------------------------------------------------------------------


def _deployment() -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "registry.local/web:1.0",
                            "resources": {"requests": {"cpu": "0.1", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def _evaluations(detector: ServiceProcess) -> float:
    """Comparisons the detector process has made, from its /metrics."""
    try:
        text = httpx.get(detector.url("/metrics"), timeout=2).text
    except httpx.HTTPError:
        return 0.0
    pattern = r'^gitops_drift_evaluations_total\{[^}]*outcome="ok"[^}]*\} ([0-9.e+]+)$'
    return sum(float(value) for value in re.findall(pattern, text, flags=re.MULTILINE))


async def _edit_latency(bootstrap: str, kube: ControlPlane, workdir: Path) -> list[float]:
    namespace = "bench-drift"
    kube.kubectl("create", "namespace", namespace)
    config = workdir / "gitops-drift.yaml"
    config.write_text(
        f"version: 1\nclusters:\n  local: {{kubeconfig: {kube.kubeconfig}}}\napps:\n"
        f"  - name: web\n    repo: file:///srv/git/web.git\n    environments:\n"
        f"      staging: {{branch: main, cluster: local, namespace: {namespace}}}\n"
    )
    prefix = f"drift{secrets.token_hex(3)}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GITOPS_TOPIC_PREFIX": prefix,
        "GITOPS_CONFIG": str(config),
        "KUBECONFIG": str(kube.kubeconfig),
        "GITOPS_LOG_LEVEL": "WARNING",
    }
    deployer = start_service("deployer", free_port(), env, workdir / "drift-deployer.log")
    detector = start_service("drift-detector", free_port(), env, workdir / "drift-detector.log")
    try:
        for service in (deployer, detector):
            await eventually(service.ready, timeout=60, what=f"{service.name} ready")
        return await _edits(bootstrap, kube, namespace, prefix, detector)
    finally:
        for service in (deployer, detector):
            service.terminate()


async def _edits(
    bootstrap: str, kube: ControlPlane, namespace: str, prefix: str, detector: ServiceProcess
) -> list[float]:
    """Deploy the Deployment, then time each edit to its drift event."""
    seen: list[tuple[float, Any]] = []

    async def watch() -> None:
        topics = [prefix + "deploy", prefix + "drift"]
        async for record in tail(bootstrap, topics, follow=True, idle_timeout=0.05):
            if record.envelope is not None:
                seen.append((time.perf_counter(), record.envelope.data))

    watching = asyncio.create_task(watch())
    publisher = Publisher(bootstrap, prefix, "gitops/bench")
    await publisher.start()
    samples: list[float] = []
    try:
        await publisher.publish(
            DesiredState(
                app="web",
                environment="staging",
                revision="r1",
                repo="file:///srv/git/web.git",
                branch="main",
                cluster="local",
                namespace=namespace,
                digest="sha256:r1",
                objects=[DesiredObject(source="web.yaml", manifest=_deployment())],
            )
        )
        await eventually(
            lambda: any(
                isinstance(d, DeployEvent) and d.phase is DeployPhase.HEALTHY for _, d in seen
            ),
            timeout=90,
            what="the Deployment deployed and healthy",
        )
        await eventually(
            lambda: _evaluations(detector) > 0, timeout=60, what="the detector's first comparison"
        )
        for edit in range(EDITS):
            replicas = 3 if edit % 2 == 0 else 2
            before = sum(1 for _, d in seen if isinstance(d, DriftEvent))
            started = time.perf_counter()
            result = kube.kubectl(
                "-n", namespace, "scale", "deployment/web", f"--replicas={replicas}"
            )
            if result.returncode != 0:
                raise RuntimeError(f"kubectl scale failed: {result.stderr}")

            def arrived(count: int = before) -> float:
                drift = [at for at, d in seen if isinstance(d, DriftEvent)]
                return drift[count] if len(drift) > count else 0.0

            at = await eventually(
                arrived, timeout=30, interval=0.002, what=f"drift event of edit {edit}"
            )
            samples.append(at - started)
        statuses = [d.status.value for _, d in seen if isinstance(d, DriftEvent)]
        expected = ["detected", "resolved"] * (EDITS // 2)
        if statuses != expected:
            raise RuntimeError(f"unexpected drift events: {statuses}")
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await publisher.stop()
    return samples


# --- full scan -----------------------------------------------------------------------------------


def _config_map(index: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"settings-{index:04d}", "labels": {"tier": "bench"}},
        "data": {
            "index": str(index),
            "settings.properties": f"cache.size={index * 16}\nlog.level=info\nregion=eu-west-1\n",
        },
    }


def _prepare_scan(kube: ControlPlane, workdir: Path, namespace: str) -> tuple[Path, Path]:
    """Write the applied form of every ConfigMap, apply them, and write the gitops config."""
    files = workdir / "scan"
    files.mkdir()
    for index in range(OBJECTS):
        applied = ownership.applied_form(
            _config_map(index),
            namespaced=True,
            namespace=namespace,
            app=APP,
            environment=ENV,
            revision=REVISION,
        )
        (files / f"settings-{index:04d}.yaml").write_text(json.dumps(applied))
    kube.kubectl("create", "namespace", namespace)
    result = kube.kubectl(
        "apply",
        "--server-side",
        f"--field-manager={ownership.FIELD_MANAGER}",
        "--force-conflicts",
        "-f",
        str(files),
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl apply failed: {result.stderr[-2000:]}")
    config = workdir / "gitops-scan.yaml"
    config.write_text(
        f"version: 1\nclusters:\n  local: {{kubeconfig: {kube.kubeconfig}}}\napps:\n"
        f"  - name: {APP}\n    repo: file:///srv/git/{APP}.git\n    environments:\n"
        f"      {ENV}: {{branch: main, cluster: local, namespace: {namespace}}}\n"
    )
    return files, config


def _kubectl_diff(kube: ControlPlane, files: Path) -> list[float]:
    samples = []
    for _ in range(KUBECTL_RUNS):
        started = time.perf_counter()
        result = kube.kubectl(
            "diff",
            "--server-side",
            f"--field-manager={ownership.FIELD_MANAGER}",
            "--force-conflicts",
            "-f",
            str(files),
        )
        samples.append(time.perf_counter() - started)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl diff found drift or failed: {result.stdout[-2000:]}")
    return samples


async def _ours(config_path: Path, namespace: str) -> list[float]:
    config = load_config(config_path)
    app = next(a for a in config.apps if a.name == APP)
    selected = diffing.Selected(app, ENV, app.environments[ENV])
    state = DesiredState(
        app=APP,
        environment=ENV,
        revision=REVISION,
        repo=f"file:///srv/git/{APP}.git",
        branch="main",
        cluster="local",
        namespace=namespace,
        digest=f"sha256:{REVISION}",
        objects=[
            DesiredObject(source=f"settings-{i:04d}.yaml", manifest=_config_map(i))
            for i in range(OBJECTS)
        ],
    )
    settings = Settings.from_env({})
    samples = []
    for _ in range(OURS_RUNS):
        # A new session per run, as each `gitops diff` connects afresh (discovery included).
        async with Sessions() as sessions:
            started = time.perf_counter()
            report = await diffing._compare(sessions, settings, config, selected, state)
            samples.append(time.perf_counter() - started)
        if report.differences:
            raise RuntimeError(f"our comparison found drift: {report.differences[:3]}")
    return samples


# --- the benchmark -------------------------------------------------------------------------------


async def run(report: Report, bootstrap: str, workdir: Path, cache: Path) -> None:
    """Measure both and add them to the report."""
    kube = ControlPlane.start(workdir / "drift-kube", cache)
    try:
        samples = await _edit_latency(bootstrap, kube, workdir)
        latency = report.add(
            Figure(
                "out-of-band edit to drift event (gitops)",
                "s",
                samples,
                notes=f"{EDITS} kubectl scale edits (2<->3), deployer + drift-detector "
                "processes, default settings; from before kubectl to the event at a consumer",
            )
        )
        print(f"edit latency p99 {latency.p99:.3f}s (goal <= 1 s)", flush=True)

        namespace = "bench-scan"
        files, config = _prepare_scan(kube, workdir, namespace)
        baseline = report.add(
            Figure(
                f"{OBJECTS} ConfigMaps, kubectl diff --server-side",
                "s",
                _kubectl_diff(kube, files),
                notes="same files, field manager gitops-deployer; no drift",
            )
        )
        ours = Figure(
            f"{OBJECTS} ConfigMaps, full comparison (gitops diff)",
            "s",
            await _ours(config, namespace),
            baseline=baseline.name,
        )
        speedup = baseline.median / ours.median
        ours.notes = (
            f"gitops_kube.comparing as gitops diff runs it, in-process; {speedup:.1f}x faster "
            "than kubectl diff (goal 20x); no drift"
        )
        report.add(ours)
        print(f"full scan: {speedup:.1f}x faster than kubectl diff (goal >= 20x)", flush=True)
    finally:
        kube.stop()
