"""`make run`: the local stack, all five services and a demo config repo, until Ctrl-C.

The demo repo is a real Git repository on disk with one app (`demo`) and two environment
branches (`staging`, `production`); gitops.yaml points the services at it and at the local
cluster. Everything is under `.local/`; Ctrl-C stops the services, then the stack.
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from gitops_localstack import processes, stack

SERVICES = ("git-watcher", "config-updater", "deployer", "drift-detector", "alerter")
PREFERRED_PORTS = dict(zip(SERVICES, range(8081, 8086), strict=True))

MANIFESTS = {
    "deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: registry.local/demo/web:1.0.0
          ports: [{containerPort: 8080}]
""",
    "service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
""",
    "configmap.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
data:
  greeting: hello from Git
""",
}


def _git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)


def make_demo_repo(base: Path) -> Path:
    """A bare repo with the demo app on `staging` and `production`; returns its path."""
    bare = base / "demo-config.git"
    if bare.is_dir():
        return bare
    work = base / "demo-config"
    (work / "apps" / "demo").mkdir(parents=True, exist_ok=True)
    for name, text in MANIFESTS.items():
        (work / "apps" / "demo" / name).write_text(text)
    _git("init", "-q", "-b", "staging", cwd=work)
    _git("-c", "user.name=demo", "-c", "user.email=demo@gitops.local", "add", ".", cwd=work)
    _git(
        "-c",
        "user.name=demo",
        "-c",
        "user.email=demo@gitops.local",
        "commit",
        "-q",
        "-m",
        "demo app: web Deployment, Service and ConfigMap",
        cwd=work,
    )
    _git("branch", "production", cwd=work)
    _git("clone", "-q", "--bare", str(work), str(bare), cwd=base)
    _git("remote", "add", "origin", str(bare), cwd=work)
    _git("fetch", "-q", "origin", cwd=work)
    _git("branch", "-u", "origin/staging", "staging", cwd=work)
    return bare


def write_config(base: Path, repo: Path, kubeconfig: str) -> Path:
    """The demo gitops.yaml."""
    path = base / "gitops.yaml"
    path.write_text(f"""\
# Demo configuration written by `make run`.
version: 1
clusters:
  local:
    kubeconfig: {kubeconfig}
apps:
  - name: demo
    repo: file://{repo}
    path: apps/demo
    environments:
      staging:
        branch: staging
        cluster: local
        namespace: demo-staging
        self_heal: true
      production:
        branch: production
        cluster: local
        namespace: demo-production
""")
    return path


def _port(service: str) -> int:
    preferred = PREFERRED_PORTS[service]
    return processes.free_port() if processes.port_open(preferred) else preferred


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Start everything, print where to look, and wait for Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m gitops_localstack.demo",
        description="The local stack, all services and a demo.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where to keep state, logs and the demo repo (default: .local)",
    )
    args = parser.parse_args(argv)
    paths = stack.StackPaths(
        Path.cwd().resolve(), args.state_dir.resolve() if args.state_dir else None
    )
    env = stack.up(paths)
    base = paths.local / "demo"
    base.mkdir(parents=True, exist_ok=True)
    repo = make_demo_repo(base)
    config = write_config(base, repo, env["KUBECONFIG"])
    gitops = Path(sys.executable).parent / "gitops"
    webhook_secret = secrets.token_hex(16)
    secret_file = base / "webhook-secret"
    secret_file.touch(mode=0o600)
    secret_file.write_text(webhook_secret)
    running: dict[str, tuple[processes.ManagedProcess, int]] = {}
    interrupted = False

    def _interrupt(*_: object) -> None:
        nonlocal interrupted
        interrupted = True

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for service in SERVICES:
            port = _port(service)
            proc = processes.spawn(
                service,
                [str(gitops), "run", service],
                paths.local / "run" / f"{service}.log",
                env={
                    **_inherited(),
                    **env,
                    "GITOPS_CONFIG": str(config),
                    "GITOPS_HTTP_PORT": str(port),
                    "GITOPS_LOG_FORMAT": "json",
                    "GITOPS_POLL_INTERVAL_SECONDS": "5",
                    "GITOPS_WEBHOOK_SECRET": webhook_secret,
                    "GITOPS_GIT_CACHE_DIR": str(paths.local / "git-cache"),
                },
            )
            running[service] = (proc, port)
        for service, (proc, port) in running.items():
            processes.wait_until(
                functools.partial(_ready, port),
                timeout=60,
                what=f"{service} to be ready",
                process=proc,
            )
        _print_where_to_look(paths, env, config, repo, running, secret_file)
        while not interrupted:
            dead = [s for s, (p, _) in running.items() if not p.alive()]
            if dead:
                print(
                    f"service(s) exited: {', '.join(dead)}; see the logs in {paths.local / 'run'}",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.5)
        return 0
    except processes.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        print("\nstopping services and the stack ...", file=sys.stderr)
        for proc, _ in running.values():
            proc.stop()
        stack.down(paths)


def _inherited() -> dict[str, str]:
    """The services need PATH and the user's environment, then the stack's settings on top."""
    return dict(os.environ)


def _print_where_to_look(
    paths: stack.StackPaths,
    env: dict[str, str],
    config: Path,
    repo: Path,
    running: dict[str, tuple[processes.ManagedProcess, int]],
    secret_file: Path,
) -> None:
    lines = ["", "GitOps demo is running. Where to look:", ""]
    for service, (proc, port) in running.items():
        lines.append(f"  {service:<15} http://127.0.0.1:{port}/readyz  /metrics   log {proc.log}")
    lines += [
        "",
        f"  Kafka bootstrap  {env['KAFKA_BOOTSTRAP_SERVERS']}",
        f"  kubeconfig       {env['KUBECONFIG']}",
        f"  kubectl          {env['GITOPS_KUBECTL']} --kubeconfig {env['KUBECONFIG']} get all -A",
        f"  config           {config}",
        f"  demo repo        {repo} (work tree: {repo.parent / 'demo-config'})",
        "",
        "  Events:          .venv/bin/gitops events --follow",
        f"  Push a change:   cd {repo.parent / 'demo-config'} && edit apps/demo/*.yaml && "
        "git commit -am change && git push origin staging",
        f"  Request a sync:  GITOPS_CONFIG={config} .venv/bin/gitops sync demo staging",
        "",
        f"  Webhooks:        POST http://127.0.0.1:{running['git-watcher'][1]}/webhooks/"
        f"<github|gitlab|gitea|bitbucket|generic> signed with the secret in {secret_file}",
        "                   (git-watcher also polls every 5 s)",
        "",
        "Ctrl-C stops everything.",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
