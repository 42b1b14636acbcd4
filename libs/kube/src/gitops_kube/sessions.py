"""Long-lived connections to several clusters, opened on first use and closed together.

A service that writes to many clusters keeps one API client (one HTTP connection pool) and one
discovery cache per cluster for its whole life, instead of connecting per request. Connecting
lazily means a cluster that is unreachable or misconfigured fails only the work aimed at it,
with a message naming it, and never the start of the service.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from gitops_kube import clients
from gitops_kube.discovery import Discovery


class ConnectError(Exception):
    """The client for a cluster could not be set up (kubeconfig missing or invalid, ...)."""


@dataclass(frozen=True)
class Session:
    """One cluster: its name, an open API client and its discovery cache."""

    name: str
    api: clients.ApiClient
    discovery: Discovery


@dataclass(frozen=True)
class Target:
    """How to reach a cluster: a kubeconfig (None: in-cluster) and an optional context."""

    kubeconfig: Path | None
    context: str | None = None


def target_for(
    *,
    kubeconfig: Path | None,
    context: str | None,
    in_cluster: bool,
    default_kubeconfig: str | None,
) -> Target:
    """How to reach a cluster as gitops.yaml describes it.

    A cluster that names a context but no kubeconfig uses ``default_kubeconfig`` (the process's
    ``KUBECONFIG``), and without that ``~/.kube/config``, as kubectl does.
    """
    if in_cluster:
        return Target(None)
    return Target(
        kubeconfig or Path(default_kubeconfig or Path.home() / ".kube" / "config"), context
    )


class Sessions:
    """Sessions by cluster name; use as ``async with Sessions() as sessions``."""

    def __init__(self) -> None:
        """Start with no connection open."""
        self._stack = contextlib.AsyncExitStack()
        self._open: dict[str, Session] = {}
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Sessions:
        """Enter the pool; connections open on first use."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close every client that was opened."""
        await self.close()

    async def get(self, name: str, target: Target) -> Session:
        """The session of a cluster, connecting on first use.

        Raises ConnectError naming the cluster when its client cannot be set up. A target is
        taken on first use only: the configuration is read once per process.
        """
        async with self._lock:
            session = self._open.get(name)
            if session is None:
                try:
                    api = await self._stack.enter_async_context(
                        clients.connect(target.kubeconfig, target.context)
                    )
                except Exception as exc:
                    where = (
                        "in-cluster configuration"
                        if target.kubeconfig is None
                        else (
                            f"kubeconfig {target.kubeconfig}"
                            + (f", context {target.context!r}" if target.context else "")
                        )
                    )
                    raise ConnectError(
                        f"cannot connect to cluster {name!r} with {where}: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                session = Session(name, api, Discovery(api))
                self._open[name] = session
            return session

    async def close(self) -> None:
        """Close every open client."""
        self._open.clear()
        await self._stack.aclose()
