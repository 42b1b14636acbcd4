"""docker-compose.yml cannot run here (no Docker engine), so check it against the code instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gitops_cli.app import SERVICES
from gitops_config.settings import ENVIRONMENT_VARIABLES
from gitops_git_watcher.settings import WatcherSettings
from gitops_runtime.runtimes import DEFAULT_PORTS

REPO = Path(__file__).resolve().parents[2]
INFRA = {"kafka", "kafka-ui", "jaeger"}
SERVICE_VARIABLES = {
    "git-watcher": {str(f.validation_alias) for f in WatcherSettings.model_fields.values()},
}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def test_every_service_is_in_compose_and_runs_by_its_cli_name() -> None:
    services = _compose()["services"]
    assert set(services) - INFRA == set(SERVICES)
    for name in SERVICES:
        assert services[name]["command"] == ["run", name]
        assert services[name]["healthcheck"]["test"], name


def test_ports_and_variables_are_the_ones_the_code_reads() -> None:
    services = _compose()["services"]
    for name in SERVICES:
        env = services[name]["environment"]
        unknown = set(env) - set(ENVIRONMENT_VARIABLES) - SERVICE_VARIABLES.get(name, set())
        assert not unknown, f"{name} sets variables no code reads: {unknown}"
        port = int(env["GITOPS_HTTP_PORT"])
        assert port == DEFAULT_PORTS[name]
        assert services[name]["ports"] == [f"{port}:{port}"]
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"


def test_kafka_image_is_the_version_the_tests_run() -> None:
    pom = (REPO / "deploy" / "local" / "kafka-pom.xml").read_text()
    match = re.search(r"<kafka.version>(.+)</kafka.version>", pom)
    assert match is not None
    assert _compose()["services"]["kafka"]["image"] == f"apache/kafka:{match.group(1)}"


def test_image_entrypoint_is_the_cli_that_pyproject_installs() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["gitops"]' in dockerfile
    assert 'gitops = "gitops_cli.app:main"' in (REPO / "cli" / "pyproject.toml").read_text()
