"""Session fixtures that give every test the real broker and the real control plane.

By default both are started locally from the project's own cache (`.cache/`, filled by
deploy/local scripts): Apache Kafka in KRaft mode and etcd + kube-apiserver +
kube-controller-manager + kube-scheduler + kwok. An external Kafka or cluster is used instead
when GITOPS_TEST_KAFKA_BOOTSTRAP_SERVERS or GITOPS_TEST_KUBECONFIG is set, and testcontainers
start Kafka (apache/kafka, the same version) where a Docker engine is there to use
(GITOPS_TEST_DOCKER=1). Each is started only when a test asks for it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitops_localstack.kafka import KafkaBroker
from gitops_localstack.kubernetes import ControlPlane
from tests.support.kafka import KafkaTarget

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("GITOPS_CACHE_DIR", REPO / ".cache"))


def _docker_requested() -> bool:
    return os.environ.get("GITOPS_TEST_DOCKER") == "1"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker for the whole session."""
    external = os.environ.get("GITOPS_TEST_KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    if _docker_requested():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    broker = KafkaBroker.start(tmp_path_factory.mktemp("kafka"), CACHE, REPO)
    yield broker.bootstrap_servers
    broker.stop()


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A real Kubernetes control plane (with kwok nodes) for the whole session."""
    external = os.environ.get("GITOPS_TEST_KUBECONFIG")
    if external:
        yield ControlPlane.external(Path(external), CACHE)
        return
    plane = ControlPlane.start(tmp_path_factory.mktemp("kube"), CACHE)
    yield plane
    plane.stop()


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaTarget:
    """The session broker with a fresh topic prefix for this test."""
    return KafkaTarget(kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}.")
