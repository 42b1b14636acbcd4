"""The Observe step: one live cache per cluster, kept by watches on the kinds Git holds.

For each kind some desired state on a cluster holds, one informer lists and watches the objects
carrying the `gitops.io/app` label (every object the deployer applied carries it, and so does
anything else claiming to belong to an app). One cluster-wide watch per kind keeps the number of
open streams small whatever the number of apps; an identity that may not list a kind across the
cluster (403) gets one watch per allowed namespace of the environments using it instead. Kinds
nobody may watch are still compared, by direct reads, at every evaluation and resync.

Every change is handed on with the moment it arrived, so the detector can react (and measure how
fast it did). Secret values are hashed before they enter the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from gitops_kube import comparing, ownership
from gitops_kube.clients import KubeApiError
from gitops_kube.discovery import ResourceType
from gitops_kube.sessions import Session
from gitops_kube.watching import Change, Informer

log = logging.getLogger(__name__)

SYNC_TIMEOUT_SECONDS = 10.0
"""How long an evaluation waits for a new informer's first list before reading directly."""

OnChange = Callable[[str, ResourceType, Change], None]
"""Called with the cluster name, the resource and the change."""

Kind = tuple[str, str]
"""(group, kind)."""


class ClusterWatch:
    """The informers of one cluster, started on demand."""

    def __init__(self, session: Session, on_change: OnChange) -> None:
        """Watch through ``session``; hand every change to ``on_change``."""
        self.session = session
        self._on_change = on_change
        self._informers: dict[tuple[Kind, str | None], Informer] = {}
        self._tasks: dict[tuple[Kind, str | None], asyncio.Task[None]] = {}
        self._namespaced_only: set[Kind] = set()
        self._refused: set[tuple[Kind, str | None]] = set()

    @property
    def name(self) -> str:
        """The cluster's name in gitops.yaml."""
        return self.session.name

    async def ensure(self, resource: ResourceType, namespaces: Sequence[str]) -> None:
        """Watch a resource (cluster-wide if allowed, else in ``namespaces``) and wait for it.

        Returns once the informers are synced, refused, or after SYNC_TIMEOUT_SECONDS.
        """
        kind = (resource.group, resource.kind)
        if (kind, None) in self._informers:
            await self._synced([(kind, None)])
            return
        if kind not in self._namespaced_only and (kind, None) not in self._refused:
            self._start(resource, None)
            await self._synced([(kind, None)])
            if (kind, None) in self._informers or not resource.namespaced:
                return
        scopes = [(kind, ns) for ns in namespaces if (kind, ns) not in self._refused]
        for scope in scopes:
            if scope not in self._informers:
                self._start(resource, scope[1])
        await self._synced(scopes)

    def cached(self, resource: ResourceType, namespace: str | None, name: str) -> Any:
        """The cached object, or None (not cached, or no synced informer covers it)."""
        kind = (resource.group, resource.kind)
        for scope in ((kind, None), (kind, namespace)):
            informer = self._informers.get(scope)
            if informer is not None and informer.synced.is_set():
                found = informer.get(namespace, name)
                if found is not None:
                    return found
        return None

    async def owned(
        self,
        resources: Iterable[ResourceType],
        *,
        app: str,
        environment: str,
        namespaces: Sequence[str],
        cluster_scoped: Sequence[str],
        fresh: bool = False,
    ) -> list[tuple[ResourceType, dict[str, Any]]]:
        """Live objects labelled as the app environment's, inside its confinement.

        Read from the caches; a scope no synced informer covers (or every scope, with
        ``fresh``) is listed directly.
        """
        found: list[tuple[ResourceType, dict[str, Any]]] = []
        for resource in resources:
            if not resource.namespaced and resource.kind not in cluster_scoped:
                continue
            kind = (resource.group, resource.kind)
            scopes: list[str | None] = list(namespaces) if resource.namespaced else [None]
            wide = self._informers.get((kind, None))
            for namespace in scopes:
                informer = wide or self._informers.get((kind, namespace))
                if fresh or informer is None or not informer.synced.is_set():
                    found += await self._list_owned(resource, namespace, app, environment)
                    continue
                found += [
                    (resource, obj)
                    for obj in informer.cache.values()
                    if ownership.owner_of(obj) == (app, environment)
                    and (
                        namespace is None
                        or (obj.get("metadata") or {}).get("namespace") == namespace
                    )
                ]
        return found

    async def _list_owned(
        self, resource: ResourceType, namespace: str | None, app: str, environment: str
    ) -> list[tuple[ResourceType, dict[str, Any]]]:
        try:
            return await comparing.list_owned(
                self.session.api,
                [resource],
                app=app,
                environment=environment,
                namespaces=[namespace] if namespace else [],
            )
        except KubeApiError as exc:
            if exc.status != 403:
                raise
            # Refused like the watch before it (logged then): extra objects cannot be seen here.
            return []

    def forget_refusals(self) -> None:
        """Try watches that were refused again (at a full resync: RBAC may have changed)."""
        self._refused.clear()
        self._namespaced_only.clear()

    async def stop(self) -> None:
        """Stop every informer."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._informers.clear()

    def _start(self, resource: ResourceType, namespace: str | None) -> None:
        scope = ((resource.group, resource.kind), namespace)
        secret = comparing.is_secret(resource.api_version, resource.kind)
        informer = Informer(
            self.session.api,
            resource,
            namespace=namespace,
            selector=ownership.APP_LABEL,
            on_change=lambda _, change: self._on_change(self.name, resource, change),
            transform=lambda obj: comparing.hashed(obj, secret=secret),
        )
        self._informers[scope] = informer
        task = asyncio.create_task(informer.run(), name=f"watch:{self.name}:{informer!r}")
        task.add_done_callback(lambda done: self._ended(scope, done))
        self._tasks[scope] = task

    def _ended(self, scope: tuple[Kind, str | None], task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        informer = self._informers.pop(scope, None)
        self._tasks.pop(scope, None)
        error = task.exception()
        if isinstance(error, KubeApiError):
            kind, namespace = scope
            self._refused.add(scope)
            across = namespace is None and informer is not None and informer.resource.namespaced
            if across:
                self._namespaced_only.add(kind)
            log.info(
                "cluster-wide watch refused; watching each allowed namespace instead"
                if across
                else "watch refused; objects are read directly at each comparison",
                extra={
                    "cluster": self.name,
                    "kind": kind[1],
                    "namespace": namespace or "(all)",
                    "error": str(error),
                },
            )
        elif error is not None:
            log.error(
                "a watch failed unexpectedly",
                exc_info=error,
                extra={"cluster": self.name, "kind": scope[0][1]},
            )

    async def _synced(self, scopes: Sequence[tuple[Kind, str | None]]) -> None:
        waits = [
            asyncio.create_task(self._informer_done(scope))
            for scope in scopes
            if scope in self._informers
        ]
        if not waits:
            return
        _, pending = await asyncio.wait(waits, timeout=SYNC_TIMEOUT_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*waits, return_exceptions=True)

    async def _informer_done(self, scope: tuple[Kind, str | None]) -> None:
        """Wait until the informer of a scope is synced or has ended (refused)."""
        informer, task = self._informers.get(scope), self._tasks.get(scope)
        if informer is None or task is None:
            return
        synced = asyncio.create_task(informer.synced.wait())
        try:
            await asyncio.wait([synced, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            synced.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await synced
