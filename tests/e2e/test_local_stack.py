"""`make up`, `make down` and `make run` as a newcomer runs them, in a state folder of their own."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gitops_bus import list_topics
from gitops_events import TOPICS
from gitops_localstack.processes import ManagedProcess
from tests.conftest import REPO
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

PYTHON = sys.executable


def _stack(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "gitops_localstack", *args, "--root", str(REPO), "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _pids(state: Path) -> list[int]:
    return [p["pid"] for p in json.loads((state / "stack.json").read_text())["processes"]]


def test_up_is_idempotent_and_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    state = tmp_path / "local"
    first = _stack("up", state=state)
    assert first.returncode == 0, first.stderr
    try:
        env = dict(line.split("=", 1) for line in (state / "env").read_text().splitlines())
        assert env["KAFKA_BOOTSTRAP_SERVERS"].startswith("127.0.0.1:")
        assert Path(env["KUBECONFIG"]).is_file()
        pids = _pids(state)
        assert len(pids) == 6  # kafka, etcd, apiserver, controller-manager, scheduler, kwok
        nodes = subprocess.run(
            [
                env["GITOPS_KUBECTL"],
                "--kubeconfig",
                env["KUBECONFIG"],
                "get",
                "nodes",
                "-o",
                "name",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert nodes.stdout.strip() == "node/kwok-node-0"

        again = _stack("up", state=state)
        assert again.returncode == 0
        assert "already running" in again.stdout
        assert _pids(state) == pids
        assert _stack("status", state=state).returncode == 0
    finally:
        down = _stack("down", state=state)
    assert down.returncode == 0
    assert "stopped 6 stack process(es)" in down.stdout
    assert not (state / "env").exists()
    assert not any(ManagedProcess("p", pid, Path()).alive() for pid in pids)
    assert _stack("status", state=state).returncode == 3


async def test_make_run_reaches_ready_and_prints_where_to_look(tmp_path: Path) -> None:
    state = tmp_path / "local"
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [PYTHON, "-m", "gitops_localstack.demo", "--state-dir", str(state)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        await eventually(
            lambda: "Ctrl-C stops everything." in log.read_text(),
            timeout=120,
            what="make run to print where to look",
        )
        printed = log.read_text()
        for service in ("git-watcher", "config-updater", "deployer", "drift-detector", "alerter"):
            line = next(li for li in printed.splitlines() if li.strip().startswith(service))
            readyz = line.split()[1]
            assert httpx.get(readyz, timeout=5).status_code == 200, service
        assert "Kafka bootstrap" in printed
        assert "kubeconfig" in printed
        assert "git push origin staging" in printed
        bootstrap = next(li.split()[-1] for li in printed.splitlines() if "Kafka bootstrap" in li)
        names = {f"gitops.{spec.name}" for spec in TOPICS}
        assert names <= await list_topics(bootstrap)
    finally:
        demo.send_signal(signal.SIGINT)
        code = await asyncio.to_thread(demo.wait, 90)
    assert code == 0, log.read_text()[-3000:]
    assert not (state / "stack.json").exists()
