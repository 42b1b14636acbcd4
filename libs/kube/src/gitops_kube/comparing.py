"""Desired against live: which objects and fields differ, asked of the API server itself.

Comparing a manifest from Git with a live object field by field is what makes drift tools noisy
(Argo CD's "OutOfSync with an empty diff"): the server fills in defaults (``strategy``,
``terminationGracePeriodSeconds``, a Service's ``clusterIP``), normalises values (``cpu: 0.5``
becomes ``500m``), and adds metadata, status and the fields other controllers own. Tolerance
tables (kubediff's) chase that forever. So the question is put to the server instead: a
server-side apply **dry-run** of the object exactly as the deployer would apply it (same
manifest, same field manager ``gitops-deployer``, ``force``) returns what the object would become
after the next sync, defaulted, normalised and merged with everyone else's fields by the server's
own rules. Comparing that result with the live object leaves exactly what a sync would change:

    drift = dry_run(desired) - live        (server-owned noise excluded, see NOISE)

That definition has useful consequences. Fields nobody in Git sets (an annotation added with
``kubectl annotate``, a key another controller owns) are not drift, because a sync would not touch
them either; and every drift reported is one that self-heal (a sync) can actually undo.

The cost is one dry-run request per desired object that exists on the cluster, per evaluation.
Callers that evaluate often (the drift detector, on every watch event) cache dry-run results by
the live object's content (see ``dry_run_key``), so an unchanged object is not asked again and the
cost follows the rate of changes, not the number of objects. Missing objects need no request.

Three kinds of difference are classified: ``modified`` (field paths as JSON pointers, with desired
and live values), ``missing`` (in Git, not on the cluster) and ``extra`` (carrying the app
environment's ownership labels, not in Git; objects a controller made, with a controller owner
reference, are not counted). Per-app ignore rules drop fields by JSON pointer. Secret values never
leave this module: Secret ``data`` is replaced by its sha256 as soon as an object is read (so
caches hold hashes only), compared as hashes, and reported as ``<masked>``. A SealedSecret in Git
becomes a Secret on the cluster (the deployer opens it; nothing else holds the keys), so for it
only a missing Secret is drift: its values cannot be known here, by design.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gitops_kube import applying, ownership
from gitops_kube.clients import ApiClient
from gitops_kube.discovery import Discovery, ResourceType, split_api_version

DriftKind = Literal["modified", "missing", "extra"]

MASK = "<masked>"
"""What a Secret value is reported as, on both sides of a difference."""

NOISE = (
    "/metadata/managedFields",
    "/metadata/resourceVersion",
    "/metadata/generation",
    "/metadata/creationTimestamp",
    "/metadata/uid",
    "/metadata/selfLink",
    "/status",
    # Which revision last wrote the object is bookkeeping, not configuration: a commit that
    # changes no manifest is not drift, and a failed deploy reports its real differences only.
    "/metadata/annotations/" + ownership.REVISION_ANNOTATION.replace("/", "~1"),
)
"""JSON pointers the server or the deployer's bookkeeping own; never reported, never compared."""

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_SECRET_SAFE = ("/type", "/immutable", "/metadata/labels/")
"""Paths of a Secret whose values may be shown; everything else is masked."""


@dataclass(frozen=True, order=True)
class ObjectId:
    """One object whichever API version names it: group, kind, namespace ("" if none), name."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: its JSON pointer, the desired value and the live value."""

    path: str
    desired: Any
    live: Any


@dataclass(frozen=True)
class Difference:
    """How one object differs from Git."""

    api_version: str
    id: ObjectId
    drift: DriftKind
    fields: tuple[FieldChange, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """The JSON pointers of the differing fields, sorted."""
        return tuple(sorted(change.path for change in self.fields))


@dataclass(frozen=True)
class IgnoreRule:
    """Fields never reported for the objects a rule matches (no kind or name: all of them)."""

    pointers: tuple[str, ...]
    kind: str | None = None
    name: str | None = None

    def matches(self, kind: str, name: str) -> bool:
        """Whether the rule applies to an object of this kind and name."""
        return self.kind in (None, kind) and self.name in (None, name)


@dataclass(frozen=True)
class Target:
    """One desired object in the form the deployer applies, and the resource serving its kind."""

    source: str
    api_version: str
    kind: str
    manifest: dict[str, Any]
    # None: the cluster serves no such kind (yet); the object can only be missing.
    resource: ResourceType | None = None
    # A Secret the deployer opens from a SealedSecret: its values are unknown here by design,
    # so only its existence is compared.
    sealed: bool = False

    @property
    def id(self) -> ObjectId:
        """The object's identity across API versions."""
        metadata = self.manifest["metadata"]
        return ObjectId(
            split_api_version(self.api_version)[0],
            self.kind,
            str(metadata.get("namespace") or ""),
            str(metadata["name"]),
        )


# --- JSON pointers -------------------------------------------------------------------------------


def escape(key: str) -> str:
    """One JSON pointer segment (RFC 6901): ``~`` becomes ``~0`` and ``/`` becomes ``~1``."""
    return key.replace("~", "~0").replace("/", "~1")


def covers(pointer: str, path: str) -> bool:
    """Whether ``path`` is the field ``pointer`` names or lies inside it."""
    return path == pointer or path.startswith(pointer.rstrip("/") + "/")


def _noise(path: str) -> bool:
    return any(covers(pointer, path) for pointer in NOISE)


# --- field differences ---------------------------------------------------------------------------


def field_changes(desired: Any, live: Any, path: str = "") -> list[FieldChange]:
    """Every leaf where two objects differ, as JSON pointers, leaving out NOISE.

    Mappings are compared key by key; lists of mappings that all carry a unique ``name`` (the
    containers, env, volumes, ports of a pod) are matched by name, other lists by position. A
    value missing on one side is ``None`` there.
    """
    if path and _noise(path):
        return []
    if isinstance(desired, Mapping) and isinstance(live, Mapping):
        changes: list[FieldChange] = []
        for key in sorted(set(desired) | set(live), key=str):
            changes += field_changes(desired.get(key), live.get(key), f"{path}/{escape(str(key))}")
        return changes
    if isinstance(desired, list) and isinstance(live, list):
        return _list_changes(desired, live, path)
    if desired != live:
        return [FieldChange(path or "/", desired, live)]
    return []


def _names(items: list[Any]) -> list[str] | None:
    names = [
        item["name"]
        for item in items
        if isinstance(item, Mapping) and isinstance(item.get("name"), str)
    ]
    return names if len(names) == len(items) and len(set(names)) == len(names) else None


def _list_changes(desired: list[Any], live: list[Any], path: str) -> list[FieldChange]:
    desired_names, live_names = _names(desired), _names(live)
    changes: list[FieldChange] = []
    if desired_names is not None and live_names is not None and desired and live:
        live_index = {name: index for index, name in enumerate(live_names)}
        for index, (name, item) in enumerate(zip(desired_names, desired, strict=True)):
            other = live_index.get(name)
            changes += field_changes(
                item, live[other] if other is not None else None, f"{path}/{index}"
            )
        desired_set = set(desired_names)
        for index, (name, item) in enumerate(zip(live_names, live, strict=True)):
            if name not in desired_set:
                changes.append(FieldChange(f"{path}/{index}", None, item))
        return changes
    for index in range(max(len(desired), len(live))):
        left = desired[index] if index < len(desired) else None
        right = live[index] if index < len(live) else None
        if left is None or right is None:
            if left != right:
                changes.append(FieldChange(f"{path}/{index}", left, right))
        else:
            changes += field_changes(left, right, f"{path}/{index}")
    return changes


# --- Secrets -------------------------------------------------------------------------------------


def is_secret(api_version: str, kind: str) -> bool:
    """Whether objects of this type hold secret values (core ``v1`` Secrets)."""
    return kind == "Secret" and split_api_version(api_version)[0] == ""


def _digest(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def hashed(obj: Mapping[str, Any], *, secret: bool) -> dict[str, Any]:
    """An object as it may be kept in memory: a Secret's values replaced by their sha256.

    With ``secret`` (the object is a Secret; list items do not say their kind), ``data`` and
    ``stringData`` values and the ``last-applied-configuration`` annotation (which ``kubectl
    apply`` fills with the whole Secret) are hashed; any other object is returned as is. Equal
    values keep equal hashes, so hashed objects compare as the originals would.
    """
    if not secret:
        return dict(obj)
    result = dict(obj)
    for key in ("data", "stringData"):
        values = obj.get(key)
        if isinstance(values, Mapping):
            result[key] = {name: _digest(value) for name, value in values.items()}
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        annotations = metadata.get("annotations")
        if isinstance(annotations, Mapping) and LAST_APPLIED in annotations:
            result["metadata"] = {
                **metadata,
                "annotations": {**annotations, LAST_APPLIED: _digest(annotations[LAST_APPLIED])},
            }
    return result


def _masked(change: FieldChange) -> FieldChange:
    if change.path in _SECRET_SAFE or change.path.startswith(_SECRET_SAFE[-1]):
        return change
    return FieldChange(
        change.path,
        None if change.desired is None else MASK,
        None if change.live is None else MASK,
    )


# --- classification ------------------------------------------------------------------------------


def without_ignored(
    changes: Iterable[FieldChange], kind: str, name: str, rules: Sequence[IgnoreRule]
) -> list[FieldChange]:
    """The changes that no rule matching this object points at (or inside)."""
    pointers = [p for rule in rules if rule.matches(kind, name) for p in rule.pointers]
    return [c for c in changes if not any(covers(p, c.path) for p in pointers)]


def modified(
    target: Target,
    dry_run: Mapping[str, Any],
    live: Mapping[str, Any],
    rules: Sequence[IgnoreRule] = (),
) -> Difference | None:
    """The difference between what a sync would make of an object and the object; None if none.

    Both objects must come from the server (``dry_run`` the answer to a dry-run of
    ``target.manifest``) and have gone through ``hashed``.
    """
    changes = without_ignored(field_changes(dry_run, live), target.kind, target.id.name, rules)
    if not changes:
        return None
    if is_secret(target.api_version, target.kind):
        changes = [_masked(change) for change in changes]
    return Difference(target.api_version, target.id, "modified", tuple(changes))


def missing(target: Target) -> Difference:
    """A desired object that is not on the cluster."""
    return Difference(target.api_version, target.id, "missing")


def _controlled(obj: Mapping[str, Any]) -> bool:
    references = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, Mapping) and r.get("controller") for r in references)


def extras(
    owned: Iterable[tuple[ResourceType, Mapping[str, Any]]],
    desired: Iterable[ObjectId],
    app: str,
    environment: str,
) -> list[Difference]:
    """Live objects that carry this app environment's ownership labels but are not in Git.

    Objects being deleted, and objects a controller made (a controller owner reference, as a
    ReplicaSet of a Deployment has), are not extra.
    """
    wanted = set(desired)
    found: dict[ObjectId, Difference] = {}
    for resource, obj in owned:
        metadata = obj.get("metadata") or {}
        if ownership.owner_of(obj) != (app, environment) or metadata.get("deletionTimestamp"):
            continue
        if _controlled(obj):
            continue
        namespace = str(metadata.get("namespace") or "") if resource.namespaced else ""
        object_id = ObjectId(resource.group, resource.kind, namespace, str(metadata.get("name")))
        if object_id not in wanted:
            found[object_id] = Difference(resource.api_version, object_id, "extra")
    return list(found.values())


def ordered(differences: Iterable[Difference]) -> list[Difference]:
    """Differences sorted by kind, namespace and name (then drift kind), for stable output."""
    return sorted(
        differences,
        key=lambda d: (d.id.kind, d.id.namespace, d.id.name, d.id.group, d.drift),
    )


def fingerprint(differences: Iterable[Difference]) -> str:
    """A stable id of a set of differences: objects, drift kinds and field paths, no values.

    The same drift seen again (after a restart, or with other values on the same fields) has the
    same fingerprint; any other object or field makes another.
    """
    items = sorted(
        [d.id.group, d.id.kind, d.id.namespace, d.id.name, d.drift, list(d.paths)]
        for d in differences
    )
    if not items:
        return ""
    return hashlib.sha256(json.dumps(items, separators=(",", ":")).encode()).hexdigest()[:16]


# --- asking the cluster --------------------------------------------------------------------------


def _well_formed(manifest: Mapping[str, Any]) -> bool:
    metadata = manifest.get("metadata")
    return (
        isinstance(manifest.get("apiVersion"), str)
        and bool(manifest.get("apiVersion"))
        and isinstance(manifest.get("kind"), str)
        and bool(manifest.get("kind"))
        and isinstance(metadata, Mapping)
        and isinstance(metadata.get("name"), str)
        and bool(metadata.get("name"))
    )


async def targets(
    discovery: Discovery,
    objects: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    app: str,
    environment: str,
    namespace: str,
    revision: str,
) -> list[Target]:
    """The desired objects (source file, manifest) as the deployer would apply them.

    Malformed manifests (no apiVersion, kind or name) are left out: the deployer refuses the whole
    revision for them, and says so. Raises KubeApiError when discovery fails.
    """
    found: list[Target] = []
    for source, manifest in objects:
        if not _well_formed(manifest):
            continue
        sealed = is_sealed_secret(manifest)
        if sealed:
            manifest = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    key: manifest["metadata"][key]
                    for key in ("name", "namespace")
                    if key in manifest["metadata"]
                },
            }
        api_version, kind = str(manifest["apiVersion"]), str(manifest["kind"])
        resource = await discovery.find(api_version, kind)
        namespaced = (
            resource.namespaced
            if resource is not None
            else bool((manifest.get("metadata") or {}).get("namespace"))
        )
        applied = ownership.applied_form(
            manifest,
            namespaced=namespaced,
            namespace=namespace,
            app=app,
            environment=environment,
            revision=revision,
        )
        found.append(Target(source, api_version, kind, applied, resource, sealed))
    return found


def is_sealed_secret(manifest: Mapping[str, Any]) -> bool:
    """Whether a manifest is a Bitnami SealedSecret, which the deployer applies as a Secret."""
    group = split_api_version(str(manifest.get("apiVersion") or ""))[0]
    return manifest.get("kind") == "SealedSecret" and group == "bitnami.com"


LiveLookup = Callable[[Target], Awaitable[dict[str, Any] | None]]
"""The live object of a target (hashed), or None when it does not exist."""

DryRun = Callable[[Target, dict[str, Any]], Awaitable[dict[str, Any]]]
"""What a sync would make of a target whose live object is given (both hashed)."""

CONCURRENCY = 16
"""Objects of one environment compared at once (each a read and a dry-run at most)."""


async def read_live(api: ApiClient, target: Target) -> dict[str, Any] | None:
    """Read a target's live object from the server, hashed; None when it does not exist."""
    if target.resource is None:
        return None
    found = await applying.get(api, target.resource, target.id.name, target.id.namespace or None)
    if found is None:
        return None
    return hashed(found, secret=is_secret(target.api_version, target.kind))


async def dry_run(api: ApiClient, target: Target) -> dict[str, Any]:
    """Server-side apply dry-run of a target as the deployer (field manager, force), hashed.

    Raises RequestError (message safe to show) or UnreachableError.
    """
    if target.resource is None:
        raise ValueError(f"{target.id}: the cluster serves no such kind")
    result = await applying.apply(
        api,
        target.resource,
        target.manifest,
        field_manager=ownership.FIELD_MANAGER,
        force=True,
        dry_run=True,
    )
    return hashed(result, secret=is_secret(target.api_version, target.kind))


def _without_status_ownership(entry: Mapping[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in entry.items() if k != "time"}
    fields = kept.get("fieldsV1")
    if isinstance(fields, Mapping):
        kept["fieldsV1"] = {k: v for k, v in fields.items() if k != "f:status"}
    return kept


def dry_run_key(target: Target, live: Mapping[str, Any]) -> str:
    """What a dry-run result depends on: the manifest and the live object's non-status content.

    Status updates (a rollout's replica counts) do not change what a sync would do, and the
    times in managed fields tick with every write; both are left out (with who owns which
    status field), so a cached dry-run result stays valid until the object or the desired
    manifest really changes.
    """
    metadata = dict(live.get("metadata") or {})
    metadata.pop("resourceVersion", None)
    metadata["managedFields"] = [
        _without_status_ownership(entry)
        for entry in metadata.get("managedFields") or []
        if isinstance(entry, Mapping) and entry.get("subresource") != "status"
    ]
    content = {k: v for k, v in live.items() if k != "status"}
    content["metadata"] = metadata
    blob = json.dumps([target.manifest, content], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


async def compare(
    wanted: Sequence[Target],
    *,
    live_of: LiveLookup,
    dry_run_of: DryRun,
    owned: Iterable[tuple[ResourceType, Mapping[str, Any]]],
    app: str,
    environment: str,
    rules: Sequence[IgnoreRule] = (),
) -> list[Difference]:
    """Compare one app environment's desired objects with the cluster; the differences, ordered.

    ``live_of`` and ``dry_run_of`` reach the cluster (directly, or through a watch cache and a
    result cache); ``owned`` are the live objects carrying ownership labels, for ``extra``.
    A request failing with KubeApiError propagates: a comparison is whole or not made.
    """
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(target: Target) -> Difference | None:
        async with gate:
            live = await live_of(target)
            if live is None:
                return missing(target)
            if target.sealed:
                return None
            return modified(target, await dry_run_of(target, live), live, rules)

    found = await asyncio.gather(*(one(target) for target in wanted))
    differences = [d for d in found if d is not None]
    differences += extras(owned, [t.id for t in wanted], app, environment)
    return ordered(differences)


async def list_owned(
    api: ApiClient,
    resources: Iterable[ResourceType],
    *,
    app: str,
    environment: str,
    namespaces: Sequence[str],
) -> list[tuple[ResourceType, dict[str, Any]]]:
    """The live objects of these resources that carry the app environment's ownership labels.

    Namespaced resources are listed in each of ``namespaces`` (the environment's allowed
    namespaces, so a namespace-confined identity suffices), cluster-scoped ones cluster-wide.
    """
    labels = ownership.owner_labels(app, environment)
    found: list[tuple[ResourceType, dict[str, Any]]] = []
    for resource in resources:
        scopes: Sequence[str | None] = namespaces if resource.namespaced else [None]
        for namespace in scopes:
            items = await applying.list_labelled(api, resource, labels, namespace)
            secret = is_secret(resource.api_version, resource.kind)
            typed = (
                {"apiVersion": resource.api_version, "kind": resource.kind, **item}
                for item in items
            )
            found += [(resource, hashed(item, secret=secret)) for item in typed]
    return found
