"""Reading and creating Secrets, for the things the system keeps in its own namespace.

The deployer keeps its sealing key pairs as labelled Secrets next to itself; these calls are
all it needs. Secrets come back in the API's JSON form (``data`` values base64-encoded), and a
refusal is a :class:`~gitops_kube.clients.KubeApiError` as everywhere in this package. The
server's messages about Secrets name the object and the field, not the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kubernetes_asyncio.client as _client_module

from gitops_kube.clients import ApiClient, _as_dict, _translated

# The generated client has no annotations; calls through this name are deliberately untyped.
_k8s: Any = _client_module


async def list_secrets(api: ApiClient, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """The Secrets of a namespace that match a label selector (e.g. ``"key=value"``)."""
    with _translated():
        result = await _k8s.CoreV1Api(api).list_namespaced_secret(
            namespace, label_selector=label_selector
        )
    return [_as_dict(api, item) for item in result.items]


async def read_secret(api: ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """One Secret. Raises KubeApiError (404) when it does not exist."""
    with _translated():
        secret = await _k8s.CoreV1Api(api).read_namespaced_secret(name, namespace)
    return _as_dict(api, secret)


async def create_secret(api: ApiClient, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create a Secret in the namespace its metadata names; return it as created.

    ``metadata.generateName`` works: the returned object has the name the server chose.
    Raises KubeApiError, e.g. 404 when the namespace does not exist or 409 when the name is
    taken.
    """
    namespace = manifest["metadata"]["namespace"]
    with _translated():
        created = await _k8s.CoreV1Api(api).create_namespaced_secret(namespace, dict(manifest))
    return _as_dict(api, created)
