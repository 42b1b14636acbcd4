"""`make up` / `make down`: the whole local stack as detached processes, with its settings on disk.

`up` starts Kafka and the Kubernetes control plane under `.local/`, records their pids in
`.local/stack.json` and writes `.local/env` (shell KEY=VALUE lines) for the other targets and
the CLI. Running `up` again while the stack runs changes nothing. `down` stops exactly the
recorded processes and nothing else.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from gitops_localstack import processes
from gitops_localstack.kafka import KafkaBroker
from gitops_localstack.kubernetes import ControlPlane


@dataclass(frozen=True)
class StackPaths:
    """Where the stack keeps its state: `.local/` of the repository unless told otherwise."""

    root: Path
    state_dir: Path | None = None

    @property
    def cache(self) -> Path:
        """Downloaded and built binaries (kept across runs); GITOPS_CACHE_DIR moves it."""
        return Path(os.environ.get("GITOPS_CACHE_DIR") or self.root / ".cache")

    @property
    def local(self) -> Path:
        """Runtime state of the running stack."""
        return self.state_dir or self.root / ".local"

    @property
    def env_file(self) -> Path:
        """Connection settings for other targets and the CLI."""
        return self.local / "env"

    @property
    def state_file(self) -> Path:
        """The pids and logs of the stack's processes."""
        return self.local / "stack.json"


def _recorded(paths: StackPaths) -> list[processes.ManagedProcess]:
    try:
        state = json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return []
    return [
        processes.ManagedProcess(p["name"], int(p["pid"]), Path(p["log"]))
        for p in state.get("processes", [])
    ]


def running(paths: StackPaths) -> bool:
    """Whether every recorded stack process is alive."""
    recorded = _recorded(paths)
    return bool(recorded) and all(p.alive() for p in recorded)


def up(paths: StackPaths) -> dict[str, str]:
    """Start the stack unless it runs already; return the settings written to the env file."""
    if running(paths) and paths.env_file.is_file():
        print(f"stack already running; settings in {paths.env_file}")
        return _read_env(paths.env_file)
    down(paths, quiet=True)
    started = time.monotonic()
    kafka = KafkaBroker.start(paths.local / "kafka", paths.cache, paths.root)
    try:
        kube = ControlPlane.start(paths.local / "kube", paths.cache)
    except Exception:
        kafka.stop()
        raise
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KUBECONFIG": str(kube.kubeconfig),
        "GITOPS_KUBECTL": str(kube.bin_dir / "kubectl"),
    }
    paths.state_file.write_text(
        json.dumps(
            {
                "processes": [
                    {"name": p.name, "pid": p.pid, "log": str(p.log)}
                    for p in [*kafka.processes, *kube.processes]
                ],
                "env": env,
            },
            indent=2,
        )
    )
    paths.env_file.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    print(f"stack up in {time.monotonic() - started:.1f}s; settings in {paths.env_file}")
    return env


def down(paths: StackPaths, *, quiet: bool = False) -> None:
    """Stop the recorded processes (newest first) and forget them."""
    recorded = _recorded(paths)
    for proc in reversed(recorded):
        proc.stop()
    paths.state_file.unlink(missing_ok=True)
    paths.env_file.unlink(missing_ok=True)
    for name in ("kafka", "kube"):
        shutil.rmtree(paths.local / name, ignore_errors=True)
    if not quiet:
        print(f"stopped {len(recorded)} stack process(es)" if recorded else "stack not running")


def _read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        values[key] = shlex.split(value)[0] if value else ""
    return values
