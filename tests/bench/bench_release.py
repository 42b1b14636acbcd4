"""Release latency: a signed webhook in, every object of a 20-object app applied on the cluster.

git-watcher and deployer run as their own processes (`gitops run`), as in production. Each
sample is one commit: the clock starts when the webhook is sent and stops when the deployer's
`applied` event for that commit's revision is read back from Kafka. The baseline applies the
same 20 files with `kubectl apply --server-side` (the project's own kubectl) into a namespace of
its own, also once per change, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import secrets
import subprocess
import time
from pathlib import Path

import httpx

from gitops_bus import tail
from gitops_events import DeployEvent, DeployPhase
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from tests.bench.report import Figure, Report
from tests.support.processes import ServiceProcess, start_service
from tests.support.waiting import eventually

COMMITS = 50
DEPLOYMENTS = 6
SERVICES = 6
CONFIGMAPS = 8


def _manifests(namespace: str | None, value: int) -> dict[str, str]:
    ns = f"  namespace: {namespace}\n" if namespace else ""
    files = {}
    for i in range(DEPLOYMENTS):
        files[f"deploy-{i}.yaml"] = (
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-{i}\n{ns}"
            f"spec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web-{i}}}}}\n"
            f"  template:\n    metadata: {{labels: {{app: web-{i}}}}}\n"
            f"    spec: {{containers: [{{name: web, image: 'registry.local/web:1.0.{i}'}}]}}\n"
        )
    for i in range(SERVICES):
        files[f"svc-{i}.yaml"] = (
            f"apiVersion: v1\nkind: Service\nmetadata:\n  name: web-{i}\n{ns}"
            f"spec:\n  selector: {{app: web-{i}}}\n  ports: [{{port: 80}}]\n"
        )
    for i in range(CONFIGMAPS):
        data = f"'{value}'" if i == 0 else "'static'"
        files[f"cm-{i}.yaml"] = (
            f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{i}\n{ns}"
            f"data:\n  value: {data}\n"
        )
    return files


def _write(directory: Path, files: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@gitops.local", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _kubectl_baseline(kube: ControlPlane, workdir: Path) -> list[float]:
    manifests = workdir / "kubectl"
    namespace = "bench-kubectl"
    kube.kubectl("create", "namespace", namespace)
    samples = []
    for value in range(COMMITS + 1):
        _write(manifests, _manifests(namespace, value))
        started = time.perf_counter()
        result = kube.kubectl(
            "apply", "--server-side", "--field-manager=bench", "-f", str(manifests)
        )
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {result.stderr}")
        if value:  # the first apply creates everything; the samples are updates, like ours
            samples.append(elapsed)
    return samples


def _applied_at(applied: dict[str, float], revision: str) -> float:
    """When the revision was seen applied (0.0, falsy, until then)."""
    return applied.get(revision, 0.0)


async def run(report: Report, bootstrap: str, workdir: Path, cache: Path) -> None:
    """Measure both and add them to the report."""
    kube = ControlPlane.start(workdir / "kube", cache)
    services: list[ServiceProcess] = []
    try:
        report.add(
            Figure(
                "20 objects, kubectl apply --server-side",
                "s",
                _kubectl_baseline(kube, workdir),
                notes="one apply per change, same files",
            )
        )
        await _ours(report, bootstrap, kube, workdir, services)
    finally:
        for service in services:
            service.terminate()
        kube.stop()


async def _ours(
    report: Report,
    bootstrap: str,
    kube: ControlPlane,
    workdir: Path,
    services: list[ServiceProcess],
) -> None:
    work, bare = workdir / "repo", workdir / "repo.git"
    _write(work / "app", _manifests(None, 0))
    _git("init", "-q", "-b", "staging", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "initial", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=workdir)
    _git("remote", "add", "origin", str(bare), cwd=work)
    config = workdir / "gitops.yaml"
    config.write_text(
        f"version: 1\nclusters:\n  local: {{kubeconfig: {kube.kubeconfig}}}\napps:\n"
        f"  - name: bench\n    repo: file://{bare}\n    path: app\n    environments:\n"
        f"      staging: {{branch: staging, cluster: local, namespace: bench}}\n"
    )
    secret = secrets.token_hex(16)
    prefix = f"bench{secrets.token_hex(3)}."
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "GITOPS_TOPIC_PREFIX": prefix,
        "GITOPS_CONFIG": str(config),
        "GITOPS_WEBHOOK_SECRET": secret,
        "GITOPS_POLL_INTERVAL_SECONDS": "3600",
        "GITOPS_KUBECTL": str(kube.bin_dir / "kubectl"),
        "GITOPS_GIT_CACHE_DIR": str(workdir / "git-cache"),
        # The deployer keeps its sealing keys on its default cluster: this one.
        "KUBECONFIG": str(kube.kubeconfig),
        "GITOPS_LOG_LEVEL": "WARNING",
    }
    watcher = start_service("git-watcher", free_port(), env, workdir / "git-watcher.log")
    services.append(watcher)  # the caller stops them, whatever happens next
    services.append(start_service("deployer", free_port(), env, workdir / "deployer.log"))
    for service in services:
        await eventually(service.ready, timeout=60, what=f"{service.name} ready")

    applied: dict[str, float] = {}

    async def watch() -> None:
        async for record in tail(bootstrap, [prefix + "deploy"], follow=True, idle_timeout=0.05):
            data = record.envelope.data if record.envelope else None
            if (
                isinstance(data, DeployEvent)
                and data.phase is DeployPhase.APPLIED
                and data.revision
            ):
                applied.setdefault(data.revision, time.perf_counter())

    watching = asyncio.create_task(watch())
    samples = []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for value in range(COMMITS + 1):
                if value:
                    _write(work / "app", _manifests(None, value))
                    _git("commit", "-q", "-am", f"value {value}", cwd=work)
                _git("push", "-q", "origin", "staging", cwd=work)
                revision = _git("rev-parse", "HEAD", cwd=work)
                body = json.dumps(
                    {"repository": f"file://{bare}", "ref": "refs/heads/staging"}
                ).encode()
                signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
                started = time.perf_counter()
                answer = await http.post(
                    watcher.url("/webhooks/generic"),
                    content=body,
                    headers={
                        "X-Gitops-Signature": f"sha256={signature}",
                        "Content-Type": "application/json",
                    },
                )
                if answer.status_code not in (200, 202):
                    raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text}")
                done = await eventually(
                    functools.partial(_applied_at, applied, revision),
                    timeout=60,
                    interval=0.005,
                    what=f"{revision[:8]} applied",
                )
                if value:  # the first release creates the namespace and every object
                    samples.append(done - started)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    report.add(
        Figure(
            "20 objects, webhook to applied (gitops)",
            "s",
            samples,
            baseline="20 objects, kubectl apply --server-side",
            notes=f"{COMMITS} commits; git-watcher + deployer processes; "
            "includes fetch, render, Kafka, dry-run and apply",
        )
    )
