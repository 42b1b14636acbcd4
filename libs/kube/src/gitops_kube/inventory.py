"""The record of what an app environment applied, kept on the cluster in a ConfigMap.

Pruning must find objects that Git no longer has, and Git can no longer say what they were.
Listing every kind the cluster serves would be slow and would need read access to all of them,
so the kinds (and objects) applied are recorded, as Flux's kustomize controller does: prune then
lists, by ownership label, only the kinds in this inventory. It lives on the cluster, next to
what it describes, so it survives restarts of the deployer and is readable by ``kubectl``:

    ConfigMap <name> in <namespace>
      data.revision  the revision last applied in full
      data.digest    its desired-state digest
      data.objects   JSON list of {"apiVersion", "kind", "namespace", "name"}, sorted

The ConfigMap carries no ownership labels of the app, so it is never pruned as one of its
objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gitops_kube import applying
from gitops_kube.clients import ApiClient
from gitops_kube.discovery import ResourceType

CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True)


@dataclass(frozen=True, order=True)
class Entry:
    """One applied object, by apiVersion, kind, namespace (empty if cluster-scoped) and name."""

    api_version: str
    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class Inventory:
    """What was applied: the revision and the objects."""

    revision: str | None = None
    digest: str | None = None
    entries: frozenset[Entry] = field(default_factory=frozenset)

    def kinds(self) -> set[tuple[str, str]]:
        """The (apiVersion, kind) pairs of the recorded objects."""
        return {(e.api_version, e.kind) for e in self.entries}

    def merged(self, entries: Iterable[Entry]) -> Inventory:
        """A copy with more entries (revision and digest unchanged)."""
        return Inventory(self.revision, self.digest, self.entries | frozenset(entries))


async def read(api: ApiClient, namespace: str, name: str) -> Inventory:
    """Read the inventory; an empty one when it does not exist yet.

    Raises ValueError when the ConfigMap exists but is not an inventory (edited by hand).
    """
    found = await applying.get(api, CONFIG_MAP, name, namespace)
    if found is None:
        return Inventory()
    data: Mapping[str, str] = found.get("data") or {}
    try:
        raw = json.loads(data.get("objects", "[]"))
        entries = frozenset(
            Entry(
                str(o["apiVersion"]), str(o["kind"]), str(o.get("namespace") or ""), str(o["name"])
            )
            for o in raw
        )
    except (ValueError, TypeError, KeyError) as exc:
        raise ValueError(
            f"ConfigMap {namespace}/{name} is not a valid inventory ({type(exc).__name__}); "
            "delete it and sync again to rebuild it"
        ) from None
    return Inventory(data.get("revision") or None, data.get("digest") or None, entries)


async def write(
    api: ApiClient,
    namespace: str,
    name: str,
    inventory: Inventory,
    *,
    field_manager: str,
    labels: Mapping[str, str],
) -> None:
    """Record the inventory with server-side apply. Raises KubeApiError when refused."""
    objects = [
        {"apiVersion": e.api_version, "kind": e.kind, "namespace": e.namespace, "name": e.name}
        for e in sorted(inventory.entries)
    ]
    data = {"objects": json.dumps(objects, separators=(",", ":"))}
    if inventory.revision is not None:
        data["revision"] = inventory.revision
    if inventory.digest is not None:
        data["digest"] = inventory.digest
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "data": data,
    }
    await applying.apply(api, CONFIG_MAP, manifest, field_manager=field_manager)
