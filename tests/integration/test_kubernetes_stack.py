"""The local control plane is a real Kubernetes: Deployments roll out and RBAC is enforced."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gitops_kube.clients import (
    KubeApiError,
    connect,
    create,
    create_namespace,
    list_deployments,
    wait_deployment_available,
)
from gitops_localstack.kubernetes import ControlPlane

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _deployment(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                # kwok runs no containers, so the image is never pulled.
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
            },
        },
    }


def _role_binding(namespace: str, user: str, cluster_role: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": f"{user}-{cluster_role}", "namespace": namespace},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        },
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }


async def _forbidden(call: Awaitable[object]) -> bool:
    try:
        await call
    except KubeApiError as exc:
        if exc.status == 403:
            return True
        raise
    return False


async def _until_allowed(call: Callable[[], Awaitable[object]]) -> None:
    # The RBAC authorizer reads bindings through an informer: a new binding takes effect
    # shortly after it is created, not at once.
    while True:
        if not await _forbidden(call()):
            return
        await asyncio.sleep(0.1)


async def test_deployment_becomes_available(kube: ControlPlane) -> None:
    namespace = _unique("rollout")
    async with connect(kube.kubeconfig) as api:
        await create_namespace(api, namespace)
        await create(api, _deployment(namespace, "web", replicas=2))
        async with asyncio.timeout(30):
            deployment = await wait_deployment_available(api, namespace, "web")

    assert deployment["status"]["availableReplicas"] == 2
    assert deployment["status"]["readyReplicas"] == 2


async def test_rbac_confines_a_non_admin_user_to_its_bound_namespace(kube: ControlPlane) -> None:
    allowed, other = _unique("granted"), _unique("other")
    async with (
        connect(kube.kubeconfig) as admin,
        connect(kube.kubeconfig_for("developer")) as developer,
    ):
        for namespace in (allowed, other):
            await create_namespace(admin, namespace)

        # Authenticated but bound to nothing: every namespaced read and write is refused.
        assert await _forbidden(list_deployments(developer, allowed))
        assert await _forbidden(create(developer, _deployment(allowed, "app", replicas=1)))

        await create(admin, _role_binding(allowed, "developer", "edit"))
        async with asyncio.timeout(10):
            await _until_allowed(lambda: list_deployments(developer, allowed))

        created = await create(developer, _deployment(allowed, "app", replicas=1))
        assert created["metadata"]["namespace"] == allowed
        names = [d["metadata"]["name"] for d in await list_deployments(developer, allowed)]
        assert names == ["app"]

        # The binding is namespaced: the other namespace stays closed.
        assert await _forbidden(list_deployments(developer, other))
        assert await _forbidden(create(developer, _deployment(other, "app", replicas=1)))
        # And the admin saw the user's write for real, in the right namespace only.
        assert [d["metadata"]["name"] for d in await list_deployments(admin, allowed)] == ["app"]
        assert await list_deployments(admin, other) == []
