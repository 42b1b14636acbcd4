"""Which REST resource serves a kind: the API server's discovery, asked once and cached.

A manifest names its type by ``apiVersion`` and ``kind``; a request needs the resource's plural
name and whether it lives in a namespace. Both come from the server (built-in kinds and custom
resources alike), never from a table in this code, so a cluster with other CRDs or other
versions is handled the same way. Lookups are cached per group-version; a miss asks the server
again, because a CRD applied a moment ago becomes served only once it is established.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from gitops_kube import _requests
from gitops_kube.clients import ApiClient


@dataclass(frozen=True)
class ResourceType:
    """A served resource: group, version, kind, plural name and scope."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        """``group/version``, or just ``version`` for the core group."""
        return f"{self.group}/{self.version}" if self.group else self.version

    def collection_path(self, namespace: str | None = None) -> str:
        """The REST path of the collection, in one namespace or across all of them."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{quote(namespace, safe='')}"
        return f"{base}/{self.plural}"

    def object_path(self, name: str, namespace: str | None = None) -> str:
        """The REST path of one object."""
        return f"{self.collection_path(namespace)}/{quote(name, safe='')}"


class UnknownKindError(Exception):
    """The API server serves no resource for this apiVersion and kind."""

    def __init__(self, api_version: str, kind: str) -> None:
        """Name the apiVersion and kind that nothing serves."""
        super().__init__(
            f"the cluster serves no kind {kind!r} in {api_version!r}; check the apiVersion and "
            "kind, or install the CRD that defines it"
        )
        self.api_version = api_version
        self.kind = kind


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` → ``("apps", "v1")``; ``v1`` → ``("", "v1")``."""
    group, _, version = api_version.rpartition("/")
    return group, version


def types_from_crd(manifest: Mapping[str, Any]) -> Iterator[ResourceType]:
    """The resource types a CustomResourceDefinition manifest will serve, one per version.

    Lets a desired state that brings its own CRD be planned before the CRD exists on the server.
    Yields nothing for a manifest that is not a well-formed v1 CRD.
    """
    spec = manifest.get("spec")
    if manifest.get("kind") != "CustomResourceDefinition" or not isinstance(spec, dict):
        return
    names = spec.get("names")
    if not isinstance(names, dict):
        return
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    if not (isinstance(group, str) and isinstance(kind, str) and isinstance(plural, str)):
        return
    for version in spec.get("versions") or []:
        if (
            isinstance(version, dict)
            and isinstance(version.get("name"), str)
            and version.get("served", True)
        ):
            yield ResourceType(
                group,
                version["name"],
                kind,
                plural,
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            )


class Discovery:
    """Resolves apiVersion and kind to a ResourceType for one API server, with a cache."""

    def __init__(self, api: ApiClient) -> None:
        """Use this API client for discovery requests."""
        self._api = api
        self._by_group_version: dict[str, dict[str, ResourceType]] = {}
        self._lock = asyncio.Lock()

    async def resolve(self, api_version: str, kind: str) -> ResourceType:
        """The resource serving ``kind`` in ``api_version``; UnknownKindError if there is none.

        Raises the request's KubeApiError when discovery itself fails (other than 404).
        """
        cached = self._by_group_version.get(api_version, {}).get(kind)
        if cached is not None:
            return cached
        async with self._lock:
            served = await self._fetch(api_version)
            self._by_group_version[api_version] = served
        found = served.get(kind)
        if found is None:
            raise UnknownKindError(api_version, kind)
        return found

    async def find(self, api_version: str, kind: str) -> ResourceType | None:
        """Like resolve, but None for a kind the server does not serve."""
        try:
            return await self.resolve(api_version, kind)
        except UnknownKindError:
            return None

    def forget(self) -> None:
        """Drop the cache, e.g. after CRDs were applied or removed."""
        self._by_group_version.clear()

    async def _fetch(self, api_version: str) -> dict[str, ResourceType]:
        group, version = split_api_version(api_version)
        if not version:
            return {}
        path = f"/apis/{group}/{version}" if group else f"/api/{version}"
        try:
            listing = await _requests.request(self._api, "GET", path)
        except _requests.RequestError as exc:
            if exc.status == 404:
                return {}
            raise
        served: dict[str, ResourceType] = {}
        for resource in listing.get("resources", []):
            name = resource.get("name", "")
            if "/" in name:  # a subresource such as deployments/status
                continue
            served[resource["kind"]] = ResourceType(
                group, version, resource["kind"], name, bool(resource.get("namespaced"))
            )
        return served
