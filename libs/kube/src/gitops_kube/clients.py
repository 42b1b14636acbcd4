"""Connecting to the Kubernetes API, and the few calls built on the connection.

kubernetes_asyncio is only imported in this package. Its generated API is untyped, so the
module objects are bound to ``Any`` names below: that keeps the untyped surface in one place
while the functions here expose typed signatures, plain ``dict`` objects (the API's JSON form)
and one exception type, :class:`KubeApiError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_asyncio.client as _client_module
import kubernetes_asyncio.config as _config_module
import kubernetes_asyncio.utils as _utils_module

# The generated client has no annotations; calls through these names are deliberately untyped.
_k8s: Any = _client_module
_config: Any = _config_module
_utils: Any = _utils_module

ApiClient = Any
"""A ``kubernetes_asyncio.client.ApiClient``; obtain one from :func:`connect`."""


class KubeApiError(Exception):
    """The API server refused a request (e.g. 403 Forbidden, 404 Not Found, 409 Conflict)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        """Keep the HTTP status, its reason phrase and the server's message."""
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


@contextlib.asynccontextmanager
async def connect(kubeconfig: Path | None, context: str | None = None) -> AsyncIterator[ApiClient]:
    """Open an API client from a kubeconfig file, or in-cluster when kubeconfig is None.

    The client (and its HTTP session) is closed when the block ends.
    """
    configuration = _k8s.Configuration()
    if kubeconfig is None:
        _config.load_incluster_config(client_configuration=configuration)
    else:
        await _config.load_kube_config(
            config_file=str(kubeconfig),
            context=context,
            client_configuration=configuration,
            persist_config=False,
        )
    api = _k8s.ApiClient(configuration=configuration)
    try:
        yield api
    finally:
        await api.close()


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Turn the client's ApiException (also inside FailToCreateError) into KubeApiError."""
    try:
        yield
    except _utils.FailToCreateError as failure:
        raise _to_error(failure.api_exceptions[0]) from failure
    except _k8s.ApiException as exc:
        raise _to_error(exc) from exc


def _to_error(exc: Any) -> KubeApiError:
    status = int(exc.status or 0)
    reason = str(exc.reason or "")
    message = str(exc.body or "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(exc.body).get("message", message))
    return KubeApiError(status, reason, message)


def _as_dict(api: ApiClient, obj: Any) -> dict[str, Any]:
    data = api.sanitize_for_serialization(obj)
    if not isinstance(data, dict):
        raise TypeError(f"expected an object, got {type(data).__name__}")
    return data


async def create(api: ApiClient, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create one object from its manifest (namespace taken from its metadata); return it.

    Raises KubeApiError when the server refuses, e.g. status 403 without RBAC permission or
    409 when it already exists.
    """
    with _translated():
        created = await _utils.create_from_dict(api, dict(manifest))
    return _as_dict(api, created[0])


async def create_namespace(api: ApiClient, name: str) -> dict[str, Any]:
    """Create a namespace; return it."""
    return await create(api, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


async def list_deployments(api: ApiClient, namespace: str) -> list[dict[str, Any]]:
    """List the Deployments of a namespace. Raises KubeApiError (e.g. 403) when refused."""
    with _translated():
        result = await _k8s.AppsV1Api(api).list_namespaced_deployment(namespace)
    return [_as_dict(api, item) for item in result.items]


async def read_deployment(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """Read a Deployment, status included. Raises KubeApiError when refused or missing."""
    with _translated():
        deployment = await _k8s.AppsV1Api(api).read_namespaced_deployment_status(name, namespace)
    return _as_dict(api, deployment)


def deployment_available(deployment: Mapping[str, Any]) -> bool:
    """Whether the Deployment's current generation runs all its replicas, all available."""
    spec = deployment.get("spec", {})
    status = deployment.get("status", {})
    wanted = spec.get("replicas", 1)
    available = any(
        c.get("type") == "Available" and c.get("status") == "True"
        for c in status.get("conditions", [])
    )
    return bool(
        available
        and status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
    )


async def wait_deployment_available(
    api: ApiClient, namespace: str, name: str, *, interval: float = 0.2
) -> dict[str, Any]:
    """Poll the Deployment until all its replicas are available; return it.

    Polls without end: bound it with ``asyncio.timeout``. A missing Deployment raises
    KubeApiError (404) at once rather than being waited for.
    """
    while True:
        deployment = await read_deployment(api, namespace, name)
        if deployment_available(deployment):
            return deployment
        await asyncio.sleep(interval)
