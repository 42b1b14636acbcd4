"""Service processes for end-to-end tests: `gitops run SERVICE` as users and containers run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

GITOPS = str(Path(sys.executable).parent / "gitops")


@dataclass
class ServiceProcess:
    """A running service and its HTTP port."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def url(self, path: str) -> str:
        """A URL on the service's HTTP server."""
        return f"http://127.0.0.1:{self.port}{path}"

    def ready(self) -> bool:
        """Whether /readyz answers 200."""
        try:
            return httpx.get(self.url("/readyz"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def terminate(self, timeout: float = 20) -> int:
        """SIGTERM, wait, and return the exit code (SIGKILL after the timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None

    def output(self) -> str:
        """What the service logged."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start_service(name: str, port: int, env: Mapping[str, str], log: Path) -> ServiceProcess:
    """Start `gitops run NAME` with env on top of this process's environment."""
    out = log.open("wb")
    proc = subprocess.Popen(
        [GITOPS, "run", name],
        env={**os.environ, **env, "GITOPS_HTTP_PORT": str(port)},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    out.close()
    return ServiceProcess(name, port, proc, log)


def run_cli(
    *args: str, env: Mapping[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the gitops CLI to completion."""
    return subprocess.run(
        [GITOPS, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
