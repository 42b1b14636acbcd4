"""A real Kubernetes control plane on loopback, for tests and the local stack.

The project's machines have no Docker, so neither kind nor k3s can run; yet the deployer and
the drift detector must be tested against a real API server (real validation, real RBAC, real
controllers), never a fake. This module starts the same set of processes as
``kwokctl --runtime binary``, from binaries that ``deploy/local/build-kubernetes.sh`` builds
into ``<cache>/bin``:

1. etcd (``--unsafe-no-fsync``: the data is thrown away anyway),
2. kube-apiserver with static-token authentication (``--token-auth-file``) and
   ``--authorization-mode=Node,RBAC``; it self-signs its serving certificate into
   ``<workdir>/pki``, which the kubeconfigs then trust through ``certificate-authority``,
3. kube-controller-manager and kube-scheduler, so Deployments really roll out,
4. kwok as the fake kubelet, with the stage files from ``<cache>/kwok-stages``,

then registers one fake Node and waits until it is Ready and schedulable. Everything listens
on 127.0.0.1 on free ports and logs under the work directory.

Rate limits lifted (as kwokctl's ``--disable-qps-limits`` does), so that benchmarks measure
this project rather than the control plane's client throttling; benchmark reports should say so:

- kube-apiserver: ``--max-requests-inflight=0``, ``--max-mutating-requests-inflight=0`` and
  ``--enable-priority-and-fairness=false`` (no in-flight limit, no API priority and fairness);
- kube-controller-manager: ``--kube-api-qps=5000 --kube-api-burst=10000`` (default 20/30);
- kube-scheduler: ``clientConnection.qps=5000`` and ``burst=10000`` in its configuration file
  (default 50/100);
- kwok: none needed, its client already runs without a rate limiter.

Identities: an admin token in ``system:masters`` and one random token per test user (by default
:data:`DEFAULT_USERS`, none of which has any RBAC binding), each with its own kubeconfig, so tests
can prove that a non-admin identity is confined to what RBAC grants it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gitops_localstack.processes import (
    ManagedProcess,
    StackError,
    free_port,
    port_open,
    spawn,
    wait_until,
)

ADMIN_USER = "it-admin"
"""The static-token user in ``system:masters`` that the admin kubeconfig uses."""

DEFAULT_USERS: Mapping[str, Sequence[str]] = {
    "developer": (),
    "deployer-1": (),
    "deployer-2": (),
    "deployer-3": (),
}
"""Non-admin users (name to groups) that get a token and a kubeconfig; none has RBAC bindings."""

NODE_NAME = "kwok-node-0"
"""The fake Node that kwok manages and every Pod is scheduled onto."""

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "kubectl",
)

KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)

_API_QPS = "5000"
_API_BURST = "10000"
_HEALTH_PATHS = "/healthz,/readyz,/livez,/metrics"


@dataclass
class ControlPlane:
    """A running control plane: where it listens, how to reach it, and its processes."""

    workdir: Path
    kubeconfig: Path
    server: str
    admin_token: str
    bin_dir: Path
    processes: list[ManagedProcess]
    user_kubeconfigs: dict[str, Path] = field(default_factory=dict)
    ca_file: Path = Path()

    @classmethod
    def start(
        cls,
        workdir: Path,
        cache_dir: Path,
        *,
        timeout: float = 120.0,
        users: Mapping[str, Sequence[str]] = DEFAULT_USERS,
    ) -> ControlPlane:
        """Start etcd, kube-apiserver, controller-manager, scheduler and kwok under workdir.

        Binaries come from ``cache_dir/bin`` and kwok stages from ``cache_dir/kwok-stages``.
        Returns once the fake Node is Ready and schedulable; raises StackError (after stopping
        whatever it had started) with the failing component's log tail otherwise.
        """
        workdir = workdir.resolve()
        bin_dir = (cache_dir / "bin").resolve()
        stages = (cache_dir / "kwok-stages").resolve()
        _check_inputs(bin_dir, stages)
        deadline = time.monotonic() + timeout
        pki = workdir / "pki"
        logs = workdir / "logs"
        for d in (pki, logs, workdir / "etcd"):
            d.mkdir(parents=True, exist_ok=True)

        api_port = free_port()
        server = f"https://127.0.0.1:{api_port}"
        ca_file = pki / "apiserver.crt"  # written by kube-apiserver (--cert-dir) at start
        sa_key = pki / "sa.key"
        _generate_rsa_key(sa_key)

        admin_token = secrets.token_hex(24)
        tokens = [(admin_token, ADMIN_USER, ["system:masters"])]
        user_kubeconfigs: dict[str, Path] = {}
        for user, groups in users.items():
            token = secrets.token_hex(24)
            tokens.append((token, user, list(groups)))
            user_kubeconfigs[user] = _write_kubeconfig(
                workdir / f"kubeconfig-{user}", server, ca_file, user, token
            )
        token_file = pki / "tokens.csv"
        _write_token_file(token_file, tokens)
        kubeconfig = _write_kubeconfig(
            workdir / "kubeconfig", server, ca_file, ADMIN_USER, admin_token
        )

        plane = cls(
            workdir=workdir,
            kubeconfig=kubeconfig,
            server=server,
            admin_token=admin_token,
            bin_dir=bin_dir,
            processes=[],
            user_kubeconfigs=user_kubeconfigs,
            ca_file=ca_file,
        )
        try:
            plane._start_processes(deadline, api_port, token_file, sa_key, stages, logs)
        except BaseException:
            plane.stop()
            raise
        return plane

    @classmethod
    def external(cls, kubeconfig: Path, cache_dir: Path) -> ControlPlane:
        """A cluster someone else runs, reached through its kubeconfig (nothing to start).

        It has no static-token test users, so tests that need non-admin identities from
        kubeconfig_for fail with a clear KeyError there.
        """
        return cls(
            workdir=kubeconfig.parent,
            kubeconfig=kubeconfig,
            server="",
            admin_token="",
            bin_dir=(cache_dir / "bin").resolve(),
            processes=[],
        )

    def _start_processes(
        self,
        deadline: float,
        api_port: int,
        token_file: Path,
        sa_key: Path,
        stages: Path,
        logs: Path,
    ) -> None:
        b = self.bin_dir
        w = self.workdir
        pki = w / "pki"

        etcd_port, peer_port = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(b / "etcd"),
                "--name=node0",
                f"--data-dir={w / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=node0={peer_url}",
                "--auto-compaction-retention=1",
                "--quota-backend-bytes=8589934592",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            logs,
        )
        wait_until(
            lambda: _etcd_healthy(etcd_url),
            timeout=_left(deadline),
            what="etcd /health",
            process=etcd,
        )

        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(b / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                "--etcd-prefix=/registry",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={pki}",
                f"--token-auth-file={token_file}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_key}",
                f"--service-account-signing-key-file={sa_key}",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--max-requests-inflight=0",
                "--max-mutating-requests-inflight=0",
            ],
            logs,
        )
        # kube-apiserver self-signs its serving certificate into --cert-dir before it listens,
        # so once the port is open the certificate is complete.
        wait_until(
            functools.partial(port_open, api_port),
            timeout=_left(deadline),
            what=f"kube-apiserver to listen on {api_port}",
            process=apiserver,
        )
        with self._http() as http:
            wait_until(
                lambda: _get_ok(http, f"{self.server}/readyz"),
                timeout=_left(deadline),
                what="kube-apiserver /readyz",
                process=apiserver,
            )

        kcm_port, sched_port, kwok_port = free_port(), free_port(), free_port()
        kcm_certs, sched_certs = w / "kcm-certs", w / "scheduler-certs"
        kcm = self._spawn(
            "kube-controller-manager",
            [
                str(b / "kube-controller-manager"),
                f"--kubeconfig={self.kubeconfig}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={kcm_certs}",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={self.ca_file}",
                f"--authorization-always-allow-paths={_HEALTH_PATHS}",
                f"--kube-api-qps={_API_QPS}",
                f"--kube-api-burst={_API_BURST}",
            ],
            logs,
        )
        sched_config = w / "kube-scheduler.yaml"
        sched_config.write_text(
            json.dumps(
                {
                    "apiVersion": "kubescheduler.config.k8s.io/v1",
                    "kind": "KubeSchedulerConfiguration",
                    "clientConnection": {
                        "kubeconfig": str(self.kubeconfig),
                        "qps": int(_API_QPS),
                        "burst": int(_API_BURST),
                    },
                    "leaderElection": {"leaderElect": False},
                },
                indent=2,
            )
        )
        scheduler = self._spawn(
            "kube-scheduler",
            [
                str(b / "kube-scheduler"),
                f"--config={sched_config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                f"--cert-dir={sched_certs}",
                f"--authorization-always-allow-paths={_HEALTH_PATHS}",
            ],
            logs,
        )
        kwok = self._spawn(
            "kwok",
            [
                str(b / "kwok"),
                f"--kubeconfig={self.kubeconfig}",
                "--manage-all-nodes=true",
                *(f"--config={stages / s}" for s in KWOK_STAGES),
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.1/16",
                f"--server-address=127.0.0.1:{kwok_port}",
            ],
            logs,
        )

        # Each component self-signs the certificate of its health port into its --cert-dir
        # before it listens.
        for proc, cert, port in (
            (kcm, kcm_certs / "kube-controller-manager.crt", kcm_port),
            (scheduler, sched_certs / "kube-scheduler.crt", sched_port),
        ):
            wait_until(
                functools.partial(port_open, port),
                timeout=_left(deadline),
                what=f"{proc.name} to listen on {port}",
                process=proc,
            )
            with _http_client(cert) as http:
                url = f"https://127.0.0.1:{port}/healthz"
                wait_until(
                    functools.partial(_get_ok, http, url),
                    timeout=_left(deadline),
                    what=f"{proc.name} /healthz",
                    process=proc,
                )
        with httpx.Client(timeout=5.0) as http:
            wait_until(
                lambda: _get_ok(http, f"http://127.0.0.1:{kwok_port}/healthz"),
                timeout=_left(deadline),
                what="kwok /healthz",
                process=kwok,
            )

        with self._http() as http:
            self._create_node(http)
            wait_until(
                lambda: self._node_schedulable(http),
                timeout=_left(deadline),
                what=f"node {NODE_NAME} Ready without the not-ready taint "
                "(kwok marks it Ready, the controller-manager lifts the taint)",
                process=kwok,
            )
            dead = [p for p in self.processes if not p.alive()]
            if dead:
                raise StackError(f"{dead[0].name} exited; log {dead[0].log}:\n{dead[0].log_tail()}")

    def _spawn(self, name: str, argv: list[str], logs: Path) -> ManagedProcess:
        proc = spawn(name, argv, logs / f"{name}.log", cwd=self.workdir)
        self.processes.append(proc)
        return proc

    @contextlib.contextmanager
    def _http(self) -> Iterator[httpx.Client]:
        """Open an admin HTTP client that trusts the apiserver's self-signed certificate."""
        with _http_client(self.ca_file, self.admin_token) as client:
            yield client

    def _create_node(self, http: httpx.Client) -> None:
        node: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {
                    "node.alpha.kubernetes.io/ttl": "0",
                    "kwok.x-k8s.io/node": "fake",
                },
                "labels": {
                    "kubernetes.io/hostname": NODE_NAME,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }
        resp = http.post(f"{self.server}/api/v1/nodes", json=node)
        if resp.status_code not in (201, 409):
            raise StackError(
                f"creating node {NODE_NAME} failed: HTTP {resp.status_code} {resp.text}"
            )

    def _node_schedulable(self, http: httpx.Client) -> bool:
        try:
            resp = http.get(f"{self.server}/api/v1/nodes/{NODE_NAME}")
        except httpx.HTTPError:
            return False
        if resp.status_code != 200:
            return False
        node = resp.json()
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        tainted = any(
            t.get("key") == "node.kubernetes.io/not-ready"
            for t in node.get("spec", {}).get("taints", []) or []
        )
        return ready and not tainted

    def stop(self) -> None:
        """Stop exactly the processes this control plane started, newest first."""
        for proc in reversed(self.processes):
            proc.stop()

    def kubeconfig_for(self, user: str) -> Path:
        """Return the kubeconfig of a non-admin test user (one of the users given to start).

        The user authenticates with its own static token and has no RBAC bindings until a test
        creates some. Raises KeyError for a user that start did not provision.
        """
        try:
            return self.user_kubeconfigs[user]
        except KeyError:
            known = ", ".join(sorted(self.user_kubeconfigs)) or "none"
            raise KeyError(
                f"no test user {user!r} on this control plane (known: {known})"
            ) from None

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (admin unless kubeconfig is given).

        Does not raise on a non-zero exit status; check ``returncode``.
        """
        return subprocess.run(
            [str(self.bin_dir / "kubectl"), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input_text,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )


def _check_inputs(bin_dir: Path, stages: Path) -> None:
    missing = [b for b in BINARIES if not (bin_dir / b).is_file()]
    missing += [str(stages / s) for s in KWOK_STAGES if not (stages / s).is_file()]
    if missing:
        raise StackError(
            f"missing Kubernetes binaries or kwok stages: {', '.join(missing)} "
            f"(in {bin_dir.parent}); build them with deploy/local/build-kubernetes.sh"
        )


def _left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.1)


def _generate_rsa_key(path: Path) -> None:
    """Write an RSA key for signing service-account tokens (with openssl)."""
    if path.exists():
        return
    result = subprocess.run(
        ["openssl", "genrsa", "-out", str(path), "2048"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"openssl genrsa failed: {result.stderr.strip()}")
    path.chmod(0o600)


def _write_token_file(path: Path, tokens: list[tuple[str, str, list[str]]]) -> None:
    lines = []
    for token, user, groups in tokens:
        line = f"{token},{user},{user}"
        if groups:
            line += ',"' + ",".join(groups) + '"'
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)


def _write_kubeconfig(path: Path, server: str, ca_file: Path, user: str, token: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "local", "user": user}}],
        "current-context": user,
    }
    path.write_text(json.dumps(config, indent=2) + "\n")  # JSON is valid kubeconfig YAML
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def _http_client(ca_file: Path, token: str | None = None) -> Iterator[httpx.Client]:
    """Open an HTTP client that trusts exactly the self-signed certificate in ca_file."""
    context = ssl.create_default_context(cafile=str(ca_file))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(verify=context, headers=headers, timeout=5.0) as client:
        yield client


def _etcd_healthy(url: str) -> bool:
    try:
        resp = httpx.get(f"{url}/health", timeout=2.0)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.json().get("health") == "true"


def _get_ok(http: httpx.Client, url: str) -> bool:
    try:
        resp = http.get(url)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200 and resp.text.strip() == "ok"
