"""The `gitops` command as users run it: clear errors for mistakes, status from real topics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gitops_bus import Publisher, ensure_topics
from gitops_events import DeployEvent, DeployPhase, DesiredState
from tests.support.kafka import KafkaTarget
from tests.support.processes import run_cli

pytestmark = pytest.mark.e2e

BAD_CONFIGS = {
    "unknown field": (
        "version: 1\nclusters: {c: {in_cluster: true}}\napps:\n"
        "  - name: a\n    repo: /r\n    rpeo: x\n    environments:\n"
        "      s: {branch: s, cluster: c, namespace: n}\n",
        ["apps[0]", "unknown field 'rpeo'", "did you mean 'repo'"],
    ),
    "wrong type": (
        "version: 1\nclusters: {c: {in_cluster: true}}\napps:\n"
        "  - name: a\n    repo: /r\n    environments:\n      s: {branch: s, cluster: c,"
        " namespace: n, prune: maybe}\n",
        ["apps[0].environments.s.prune"],
    ),
    "missing repo": (
        "version: 1\nclusters: {c: {in_cluster: true}}\napps:\n"
        "  - name: a\n    environments:\n      s: {branch: s, cluster: c,"
        " namespace: n}\n",
        ["apps[0]", "repo"],
    ),
    "duplicate app": (
        "version: 1\nclusters: {c: {in_cluster: true}}\napps:\n"
        "  - {name: a, repo: /r, environments: {s: {branch: s, cluster: c,"
        " namespace: n}}}\n"
        "  - {name: a, repo: /s, environments: {s: {branch: s, cluster: c,"
        " namespace: m}}}\n",
        ["apps[1].name", "duplicate"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_config_mistakes_stop_a_service_with_one_clear_error(case: str, tmp_path: Path) -> None:
    text, needles = BAD_CONFIGS[case]
    config = tmp_path / "gitops.yaml"
    config.write_text(text)
    result = run_cli("run", "deployer", env={"GITOPS_CONFIG": str(config)})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert str(config) in result.stderr or "gitops.yaml" in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_unknown_service_and_unknown_app_are_usage_errors(tmp_path: Path) -> None:
    result = run_cli("run", "kubelet", env={})
    assert result.returncode == 2
    assert "unknown service 'kubelet'" in result.stderr
    config = tmp_path / "gitops.yaml"
    config.write_text(
        "version: 1\nclusters: {c: {in_cluster: true}}\napps:\n"
        "  - {name: shop, repo: /r, environments: {prod: {branch: main, cluster: c,"
        " namespace: shop}}}\n"
    )
    result = run_cli("sync", "shpo", "prod", env={"GITOPS_CONFIG": str(config)})
    assert result.returncode == 2
    assert "unknown app 'shpo'" in result.stderr
    assert "shop" in result.stderr


async def test_status_folds_the_topics(kafka: KafkaTarget) -> None:
    await ensure_topics(kafka.bootstrap_servers, kafka.prefix)
    publisher = Publisher(kafka.bootstrap_servers, kafka.prefix, "gitops/test")
    await publisher.start()
    try:
        await publisher.publish(
            DesiredState(
                app="shop",
                environment="prod",
                revision="0123456789abcdef",
                repo="r",
                branch="main",
                cluster="c",
                namespace="shop",
                digest="d",
                objects=[],
            )
        )
        await publisher.publish(
            DeployEvent(
                app="shop",
                environment="prod",
                revision="0123456789abcdef",
                phase=DeployPhase.HEALTHY,
                reason="RolloutComplete",
                message="ok",
            )
        )
    finally:
        await publisher.stop()
    result = run_cli("status", "shop", "--json", env=kafka.env())
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout.splitlines()[0])
    assert row["sync"] == "Synced"
    assert row["health"] == "Healthy"
    assert row["desired_revision"] == "0123456789abcdef"
    result = run_cli("status", "nothing-here", env=kafka.env())
    assert result.returncode == 1
    assert "no events about app 'nothing-here'" in result.stderr
