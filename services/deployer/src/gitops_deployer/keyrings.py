"""The deployer's sealing keys, kept in its own cluster: loaded at start, then renewed.

The key pairs themselves (made, stored as Secrets, renewed, all kept) are
:mod:`gitops_sealing.keys`; this module is the service's side of them. It connects to the
cluster that keeps them, creates the deployer's namespace there if it is missing (the keys need
a home before the first one is made), and loads or makes the keys, retrying while the cluster
cannot be reached. Until they are loaded, readiness (``sealing-keys``) says so and the
certificate route answers 503.

Deploys do not all wait for the keys: as with cluster sessions, a cluster that cannot be reached
fails only the work that needs it. A deploy whose desired state holds SealedSecrets waits for
the keys, for a bounded time, and then fails naming the cause (see :mod:`unsealing`).
"""

from __future__ import annotations

import asyncio
import logging

from gitops_deployer import planning
from gitops_kube import applying
from gitops_kube.clients import ApiClient, KubeApiError
from gitops_kube.sessions import ConnectError, Sessions, Target
from gitops_sealing import keys
from gitops_sealing.keys import KeyRing, KeySettings

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
"""The first wait after loading the keys failed; it doubles up to the retry interval."""


class Keyring:
    """The deployer's key ring: what unsealing opens with and what the certificate route serves."""

    def __init__(
        self,
        target: Target,
        cluster: str,
        settings: KeySettings,
        *,
        retry_seconds: float = 60.0,
        check_every: float = 3600.0,
    ) -> None:
        """Keep the keys in ``settings.namespace`` of the cluster ``target`` reaches.

        ``cluster`` names that cluster in messages. A failure to load or renew the keys is
        retried after at most ``retry_seconds``; the keys are reloaded at least every
        ``check_every`` seconds (picking up pairs added from outside).
        """
        self._target = target
        self._cluster = cluster
        self._settings = settings
        self._retry_seconds = retry_seconds
        self._check_every = check_every
        self._keys: keys.SealingKeys | None = None
        self._loaded = asyncio.Event()
        self._problem = "they have not been loaded yet"

    @property
    def ring(self) -> KeyRing:
        """The key pairs as last loaded or renewed (an empty ring before they are loaded)."""
        return self._keys.ring if self._keys is not None else KeyRing()

    @property
    def loaded(self) -> bool:
        """Whether the keys have been loaded (readiness)."""
        return self._loaded.is_set()

    def where(self) -> str:
        """Where the keys are kept, for messages."""
        return f"namespace {self._settings.namespace} of cluster {self._cluster}"

    @property
    def problem(self) -> str:
        """Why the keys are not loaded (the last failure), for messages."""
        return self._problem

    async def loaded_ring(self) -> KeyRing:
        """The ring, once the keys are loaded (bound the wait with ``asyncio.timeout``)."""
        await self._loaded.wait()
        return self.ring

    async def run(self) -> None:
        """Load the keys (retrying until they are), then renew them for the life of the service."""
        async with Sessions() as pool:
            manager = await self._start(pool)
            self._keys = manager
            self._loaded.set()
            await manager.run(check_every=self._check_every, retry_after=self._retry_seconds)

    async def _start(self, pool: Sessions) -> keys.SealingKeys:
        delay = min(FIRST_RETRY_SECONDS, self._retry_seconds)
        while True:
            try:
                session = await pool.get(self._cluster, self._target)
                await self._ensure_namespace(session.api)
                manager = keys.SealingKeys(session.api, self._settings)
                await manager.start()
                return manager
            except (ConnectError, KubeApiError, keys.KeyStoreError) as exc:
                self._problem = str(exc)
                log.warning(
                    "sealing keys not loaded, retrying",
                    extra={"error": self._problem, "where": self.where(), "retry_in": delay},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_seconds)

    async def _ensure_namespace(self, api: ApiClient) -> None:
        """Create the keys' namespace when it is missing, so that the first key has a home."""
        namespace = self._settings.namespace
        try:
            if await applying.get(api, planning.NAMESPACE_TYPE, namespace) is not None:
                return
        except KubeApiError as exc:
            # An identity confined to its own namespace may not read Namespace objects; if the
            # namespace is really missing, storing the first key says so.
            if exc.status == 403:
                return
            raise
        await applying.apply(
            api,
            planning.NAMESPACE_TYPE,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {planning.MANAGED_BY_LABEL: planning.MANAGED_BY},
                },
            },
            field_manager=planning.FIELD_MANAGER,
        )
        log.info("created the namespace of the sealing keys", extra={"where": self.where()})
