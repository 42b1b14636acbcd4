"""SealedSecrets of a desired state opened into Secrets, just before the deployer plans them.

Sealed values travel sealed all the way from Git through Kafka (the desired state holds the
SealedSecret manifests as committed); only here, inside the deploy that applies them, are they
opened, and the Secrets they become exist only in that deploy's memory on their way to the
API server. There is no SealedSecret CRD on the clusters: the SealedSecret is never applied,
the Secret takes its place in the desired state and from then on is planned like any other
object (confinement, ownership labels, dry-run, apply, prune, inventory).

Each SealedSecret is opened as Bitnami's controller opens it: its scope comes from its own
annotations, and its name and namespace (the environment's namespace when it names none) are
bound into every value, so a strict value moved to another name or namespace does not open.
Every kept key is tried, so values sealed before a key renewal still open. If any SealedSecret
of a revision cannot be opened (wrong scope, altered, sealed with a key that is not ours), the
whole revision is rejected with reason ``UnsealFailed`` before anything is written, naming the
file and the object. Messages name objects, keys and causes; never a value, sealed or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from gitops_config.models import Environment
from gitops_deployer.keyrings import Keyring
from gitops_deployer.planning import RejectedError
from gitops_events import DesiredObject, DesiredState, ObjectRef
from gitops_sealing import sealed
from gitops_sealing.keys import KeyRing

UNSEAL_FAILED = "UnsealFailed"
KEYS_UNAVAILABLE = "SealingKeysUnavailable"

KEYS_WAIT_SECONDS = 60.0
"""How long a deploy with SealedSecrets waits for the keys to be loaded before it fails."""

Unseal = Callable[[DesiredState, Environment], Awaitable[DesiredState]]
"""Opens the SealedSecrets of a desired state for an environment (see :class:`Unsealer`)."""


def count_sealed(state: DesiredState) -> int:
    """How many SealedSecrets the desired state holds."""
    return sum(1 for obj in state.objects if sealed.is_sealed_secret(obj.manifest))


def _sealed_ref(manifest: Mapping[str, Any], namespace: str) -> ObjectRef:
    metadata = manifest.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    return ObjectRef(
        api_version=sealed.API_VERSION,
        kind=sealed.KIND,
        name=str(metadata.get("name") or "(unnamed)"),
        namespace=str(metadata.get("namespace") or namespace),
    )


def open_sealed(state: DesiredState, environment: Environment, ring: KeyRing) -> DesiredState:
    """The desired state with every SealedSecret replaced by the Secret it seals.

    Every key of ``ring`` is tried, newest first. Each Secret keeps the file of its SealedSecret
    and its place in the list. Raises RejectedError (``UnsealFailed``) naming the file and
    object of the first SealedSecret that does not open, and the others that do not either.
    CPU-bound (RSA): call it off the event loop.
    """
    private_keys = ring.private_keys
    objects: list[DesiredObject] = []
    failures: list[tuple[DesiredObject, sealed.UnsealError]] = []
    for obj in state.objects:
        if not sealed.is_sealed_secret(obj.manifest):
            objects.append(obj)
            continue
        try:
            secret = sealed.unseal(obj.manifest, private_keys, namespace=environment.namespace)
        except sealed.UnsealError as exc:
            failures.append((obj, exc))
            continue
        objects.append(DesiredObject(source=obj.source, manifest=secret))
    if failures:
        raise _rejection(failures, environment)
    return state.model_copy(update={"objects": objects})


def _rejection(
    failures: Sequence[tuple[DesiredObject, sealed.UnsealError]], environment: Environment
) -> RejectedError:
    obj, first = failures[0]
    message = (
        f"{first} (from {obj.source}); seal the values again with the deployer's current "
        "certificate (gitops seal --cert http://DEPLOYER/v1/cert.pem), for this name and "
        "namespace"
    )
    if len(failures) > 1:
        others = ", ".join(
            f"{other.object_ref} (from {where.source})" for where, other in failures[1:]
        )
        message += f"; these do not open either: {others}"
    return RejectedError(
        UNSEAL_FAILED,
        message,
        source=obj.source,
        involved_object=_sealed_ref(obj.manifest, environment.namespace),
    )


class Unsealer:
    """Opens SealedSecrets with the deployer's key ring, waiting for the keys when needed."""

    def __init__(self, keyring: Keyring, *, wait_seconds: float = KEYS_WAIT_SECONDS) -> None:
        """Open with the keys of ``keyring``; wait for them at most ``wait_seconds``."""
        self._keyring = keyring
        self._wait_seconds = wait_seconds

    async def __call__(self, state: DesiredState, environment: Environment) -> DesiredState:
        """The desired state with its SealedSecrets opened (unchanged when it holds none).

        Raises RejectedError: ``UnsealFailed`` when one does not open, ``SealingKeysUnavailable``
        when the keys were not loaded in time.
        """
        if not count_sealed(state):
            return state
        try:
            async with asyncio.timeout(self._wait_seconds):
                ring = await self._keyring.loaded_ring()
        except TimeoutError:
            raise RejectedError(
                KEYS_UNAVAILABLE,
                f"the sealing keys in {self._keyring.where()} are not loaded after "
                f"{self._wait_seconds:g}s, so SealedSecrets cannot be opened: "
                f"{self._keyring.problem}",
            ) from None
        return await asyncio.to_thread(open_sealed, state, environment, ring)
