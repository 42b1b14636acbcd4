"""List and watch: a live cache of one resource, kept current by the API server's watch stream.

Polling a cluster finds a change only at the next poll; a watch hears of it within milliseconds.
An ``Informer`` is the client-go pattern in small: list the objects (one label selector, in one
namespace or cluster-wide), remember the list's ``resourceVersion``, then watch from it, applying
every ``ADDED``/``MODIFIED``/``DELETED`` event to its cache and passing it on with the moment it
arrived. Bookmarks keep the resourceVersion fresh on quiet streams; when the server ends a stream
(its timeout) the watch resumes from the last version, and when that version is too old (410
Gone) or the connection fails, the informer lists again and reports what changed in between.

Streams use the raw REST path (any kind, custom resources too) through the same ``ApiClient`` as
every other request; errors are described by ``_requests`` so no echoed value leaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from gitops_kube import _requests
from gitops_kube.clients import ApiClient, KubeApiError
from gitops_kube.discovery import ResourceType

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 290
"""How long one watch stream is asked to last before the server ends it and it is resumed."""

RETRY_BACKOFF_SECONDS = 0.5
RETRY_BACKOFF_MAX_SECONDS = 30.0

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True)
class Change:
    """One change to a watched object, and when it arrived (``time.monotonic()``)."""

    type: ChangeType
    object: dict[str, Any]
    received: float


Key = tuple[str, str]
"""(namespace or "", name) of a cached object."""

OnChange = Callable[["Informer", Change], None]
Transform = Callable[[dict[str, Any]], dict[str, Any]]


def key_of(obj: Mapping[str, Any]) -> Key:
    """The cache key of an object."""
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")


class Informer:
    """A list-then-watch cache of one resource with a label selector; run it as a task."""

    def __init__(
        self,
        api: ApiClient,
        resource: ResourceType,
        *,
        selector: str,
        on_change: OnChange,
        namespace: str | None = None,
        transform: Transform | None = None,
        timeout_seconds: int = WATCH_TIMEOUT_SECONDS,
    ) -> None:
        """Watch ``resource`` (in ``namespace``, or everywhere when None) by label ``selector``.

        ``on_change`` is called for every change after it was applied to the cache; ``transform``
        shapes each object before it is cached (e.g. hashing Secret values).
        """
        self.resource = resource
        self.namespace = namespace
        self.selector = selector
        self.cache: dict[Key, dict[str, Any]] = {}
        self.synced = asyncio.Event()
        self._api = api
        self._on_change = on_change
        self._transform = transform or (lambda obj: obj)
        self._timeout = timeout_seconds
        self._sensitive = resource.group == "" and resource.kind == "Secret"

    def __repr__(self) -> str:
        where = self.namespace or "all namespaces"
        return f"Informer({self.resource.kind}.{self.resource.group or 'core'} in {where})"

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A cached object by namespace and name."""
        return self.cache.get((namespace or "", name))

    async def run(self) -> None:
        """List and watch until cancelled.

        A refusal of the very first list (401, 403, 404) is raised: the caller may watch
        differently (per namespace) or report it. Later failures are retried with backoff.
        """
        version: str | None = None
        delay = RETRY_BACKOFF_SECONDS
        while True:
            try:
                if version is None:
                    version = await self._relist()
                version = await self._watch(version)
                delay = RETRY_BACKOFF_SECONDS
            except KubeApiError as exc:
                if not self.synced.is_set() and exc.status in (401, 403, 404):
                    raise
                log.warning(
                    "watch failed; listing again",
                    extra={"informer": repr(self), "error": str(exc), "retry_in": delay},
                )
                version = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_BACKOFF_MAX_SECONDS)

    async def _relist(self) -> str:
        items: list[dict[str, Any]] = []
        page: str | None = None
        version = ""
        while True:
            query = {"labelSelector": self.selector, "limit": "500"}
            if page:
                query["continue"] = page
            listing = await _requests.request(
                self._api,
                "GET",
                self.resource.collection_path(self.namespace),
                query=query,
                sensitive=self._sensitive,
            )
            items.extend(listing.get("items") or [])
            meta = listing.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            page = meta.get("continue")
            if not page:
                break
        received = time.monotonic()
        # List items do not say their type; watch events do. Cached objects all do.
        typed = [
            {"apiVersion": self.resource.api_version, "kind": self.resource.kind, **item}
            for item in items
        ]
        fresh = {key_of(item): self._transform(item) for item in typed}
        previous, self.cache = self.cache, fresh
        self.synced.set()
        for key, obj in fresh.items():
            old = previous.get(key)
            if old is None:
                self._on_change(self, Change("ADDED", obj, received))
            elif _version(old) != _version(obj):
                self._on_change(self, Change("MODIFIED", obj, received))
        for key, obj in previous.items():
            if key not in fresh:
                self._on_change(self, Change("DELETED", obj, received))
        return version

    async def _watch(self, version: str) -> str | None:
        """Follow one watch stream; the last resourceVersion, or None when it must relist."""
        query = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._timeout),
            "labelSelector": self.selector,
        }
        path = self.resource.collection_path(self.namespace)
        try:
            response = await self._api.call_api(
                path,
                "GET",
                query_params=list(query.items()),
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=30, sock_read=self._timeout + 30
                ),
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _requests.UnreachableError(f"watch {path}: {type(exc).__name__}: {exc}") from None
        try:
            if response.status != 200:
                body = await response.text()
                raise _requests.describe_status(response.status, body, sensitive=self._sensitive)
            while True:
                try:
                    line = await response.content.readline()
                except (aiohttp.ClientError, TimeoutError) as exc:
                    raise _requests.UnreachableError(
                        f"watch {path}: {type(exc).__name__}: {exc}"
                    ) from None
                if not line:
                    return version
                received = time.monotonic()
                try:
                    event = json.loads(line)
                except ValueError:
                    raise _requests.UnreachableError(f"watch {path}: malformed event") from None
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise _requests.describe_status(
                        int(obj.get("code") or 500), json.dumps(obj), sensitive=self._sensitive
                    )
                version = _version(obj) or version
                if kind == "BOOKMARK":
                    continue
                if kind not in ("ADDED", "MODIFIED", "DELETED"):
                    continue
                shaped = self._transform(obj)
                if kind == "DELETED":
                    self.cache.pop(key_of(shaped), None)
                else:
                    self.cache[key_of(shaped)] = shaped
                self._on_change(self, Change(kind, shaped, received))
        finally:
            response.close()


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
