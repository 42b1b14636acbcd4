"""From a desired state to an ordered, confined, owned set of objects, before any write.

Everything here is a pure decision over the rendered manifests, the environment's configuration
and the kinds the cluster serves, so it is tested without a cluster and runs before any write:

- confinement: an object outside the environment's allowed namespaces, or of a cluster-scoped
  kind not in ``allow_cluster_scoped``, rejects the whole revision;
- defaults: a namespaced object without a namespace goes to the environment's namespace;
- ownership: every object gets the labels ``gitops.io/app`` and ``gitops.io/environment`` (the
  app and environment names, which the configuration already restricts to valid label values)
  and the annotation ``gitops.io/revision``; prune only ever deletes objects carrying both labels;
- order: Namespaces and CRDs first (the objects the others need), then the rest in the order Helm
  installs kinds, so that, for example, a ServiceAccount exists before the Deployment using it;
- the environment's own namespace (named in gitops.yaml, so always allowed) is created when it
  does not exist, as Argo CD's ``CreateNamespace=true`` does; it is never pruned.

Defaults and ownership marks come from ``gitops_kube.ownership``, which the drift detector uses
too, so that what it compares with the cluster is exactly what the deployer would apply.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from typing import Any

from gitops_config.models import Environment
from gitops_events import DesiredObject, DesiredState, ObjectRef
from gitops_kube import inventory, ownership
from gitops_kube.discovery import ResourceType, types_from_crd

# The manifest shaping and ownership marks are shared with the drift detector (gitops_kube's
# ownership module); the deployer's modules keep naming them through planning.
FIELD_MANAGER = ownership.FIELD_MANAGER
APP_LABEL = ownership.APP_LABEL
ENVIRONMENT_LABEL = ownership.ENVIRONMENT_LABEL
MANAGED_BY_LABEL = ownership.MANAGED_BY_LABEL
MANAGED_BY = ownership.MANAGED_BY
owner_labels = ownership.owner_labels
inventory_name = ownership.inventory_name
inventory_labels = ownership.inventory_labels

NAMESPACE = ("", "Namespace")
NAMESPACE_TYPE = ResourceType("", "v1", "Namespace", "namespaces", namespaced=False)
CRD = ("apiextensions.k8s.io", "CustomResourceDefinition")
DEFINITIONS = frozenset({NAMESPACE, CRD})
"""Kinds applied in the first batch, before the objects that live in or are defined by them."""

NEVER_PRUNED = DEFINITIONS
"""Deleting a Namespace or a CRD deletes everything in it or of it, owned or not: never pruned."""

# Helm's install order for the kinds it knows; any other kind comes after them.
KIND_ORDER = (
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SealedSecret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
)
_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}

TypeKey = tuple[str, str]
"""(apiVersion, kind) as a manifest writes it."""

ObjectKey = tuple[str, str, str, str]
"""(group, kind, namespace or "", name): one object whichever version it is written in."""


class DeployError(Exception):
    """Why a desired state could not be applied in full: reason, message, file and object."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        source: str | None = None,
        involved_object: ObjectRef | None = None,
    ) -> None:
        """Say why (CamelCase reason and message) and, when known, which file and object."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.source = source
        self.involved_object = involved_object


class RejectedError(DeployError):
    """The desired state cannot be applied, and nothing of it has been written."""


@dataclass(frozen=True)
class PlannedObject:
    """One object ready to apply: its file, its resource and its final manifest."""

    source: str
    resource: ResourceType
    manifest: dict[str, Any]
    # Served by a CRD of the same desired state that the cluster does not serve yet.
    crd_pending: bool = False

    @property
    def name(self) -> str:
        """metadata.name."""
        return str(self.manifest["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        """metadata.namespace for a namespaced object, None for a cluster-scoped one."""
        return str(self.manifest["metadata"]["namespace"]) if self.resource.namespaced else None

    @property
    def key(self) -> ObjectKey:
        """The object's identity across API versions."""
        return (self.resource.group, self.resource.kind, self.namespace or "", self.name)

    @property
    def ref(self) -> ObjectRef:
        """The object as events name it."""
        return ObjectRef(
            api_version=self.resource.api_version,
            kind=self.resource.kind,
            name=self.name,
            namespace=self.namespace,
        )

    @property
    def entry(self) -> inventory.Entry:
        """The object as the inventory records it."""
        return inventory.Entry(
            self.resource.api_version, self.resource.kind, self.namespace or "", self.name
        )

    @property
    def is_definition(self) -> bool:
        """Whether it belongs to the first batch (a Namespace or a CRD)."""
        return (self.resource.group, self.resource.kind) in DEFINITIONS

    def describe(self) -> str:
        """``Kind namespace/name (from file)`` for messages."""
        return f"{self.ref} (from {self.source})"


@dataclass(frozen=True)
class Plan:
    """The objects of one desired state in apply order, split into the two batches."""

    definitions: tuple[PlannedObject, ...]
    others: tuple[PlannedObject, ...]

    @property
    def objects(self) -> tuple[PlannedObject, ...]:
        """Every object, in apply order."""
        return self.definitions + self.others

    def keys(self) -> set[ObjectKey]:
        """The identities of every object."""
        return {o.key for o in self.objects}

    def created_namespaces(self) -> set[str]:
        """Namespaces that this desired state itself creates."""
        return {
            o.name for o in self.definitions if (o.resource.group, o.resource.kind) == NAMESPACE
        }

    def target_namespaces(self) -> set[str]:
        """Every namespace a namespaced object goes to."""
        return {o.namespace for o in self.objects if o.namespace is not None}

    def check_namespaces(self, existing: Set[str]) -> None:
        """Reject the plan if an object goes to a namespace that neither exists nor is created."""
        created = self.created_namespaces()
        for obj in self.objects:
            if obj.namespace is not None and obj.namespace not in existing | created:
                raise RejectedError(
                    "NamespaceNotFound",
                    f"{obj.describe()}: namespace {obj.namespace!r} does not exist and the desired "
                    "state does not create it; create it, or add a Namespace object (and allow "
                    "the Namespace kind in allow_cluster_scoped)",
                    source=obj.source,
                    involved_object=obj.ref,
                )

    def dry_run_later(self, existing: Set[str]) -> set[ObjectKey]:
        """Objects the server cannot check before the first batch exists on it.

        Those of a kind defined by a CRD of this desired state, and those in a namespace it
        creates; they are dry-run as soon as the first batch has been applied.
        """
        return {
            o.key
            for o in self.others
            if o.crd_pending or (o.namespace is not None and o.namespace not in existing)
        }


def with_environment_namespace(plan: Plan, environment: Environment, existing: Set[str]) -> Plan:
    """The plan, plus the environment's namespace when it neither exists nor is in the plan."""
    if environment.namespace in existing | plan.created_namespaces():
        return plan
    namespace = PlannedObject(
        source="gitops.yaml (the environment's namespace)",
        resource=NAMESPACE_TYPE,
        manifest={
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": environment.namespace, "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        },
    )
    return Plan(definitions=(namespace, *plan.definitions), others=plan.others)


def object_key(resource: ResourceType, obj: Mapping[str, Any]) -> ObjectKey:
    """The identity of a live object (as listed) of a resource."""
    metadata = obj.get("metadata") or {}
    namespace = str(metadata.get("namespace") or "") if resource.namespaced else ""
    return (resource.group, resource.kind, namespace, str(metadata.get("name") or ""))


def _ref_of(manifest: Mapping[str, Any]) -> ObjectRef | None:
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return None
    namespace = metadata.get("namespace")
    return ObjectRef(
        api_version=str(manifest.get("apiVersion", "")),
        kind=str(manifest.get("kind", "")),
        name=metadata["name"],
        namespace=namespace if isinstance(namespace, str) else None,
    )


def _check_shape(obj: DesiredObject) -> None:
    manifest = obj.manifest
    metadata = manifest.get("metadata")
    problems = []
    if not isinstance(manifest.get("apiVersion"), str) or not manifest.get("apiVersion"):
        problems.append("apiVersion")
    if not isinstance(manifest.get("kind"), str) or not manifest.get("kind"):
        problems.append("kind")
    if (
        not isinstance(metadata, Mapping)
        or not isinstance(metadata.get("name"), str)
        or not (metadata.get("name"))
    ):
        problems.append("metadata.name")
    if problems:
        raise RejectedError(
            "InvalidManifest",
            f"a manifest in {obj.source} has no {', '.join(problems)}; every object needs "
            "apiVersion, kind and metadata.name",
            source=obj.source,
            involved_object=_ref_of(manifest),
        )


def requested_types(state: DesiredState) -> set[TypeKey]:
    """The (apiVersion, kind) pairs the desired state uses; rejects malformed manifests."""
    for obj in state.objects:
        _check_shape(obj)
    return {(str(o.manifest["apiVersion"]), str(o.manifest["kind"])) for o in state.objects}


def types_defined_in(state: DesiredState) -> dict[TypeKey, ResourceType]:
    """The resource types that CRDs in the desired state itself define."""
    return {
        (t.api_version, t.kind): t for obj in state.objects for t in types_from_crd(obj.manifest)
    }


def plan(
    state: DesiredState,
    environment: Environment,
    served: Mapping[TypeKey, ResourceType],
) -> Plan:
    """Check, complete and order a desired state for one environment.

    ``served`` maps the (apiVersion, kind) pairs the cluster serves (from discovery) to their
    resources. Raises RejectedError, naming the file and object, for a malformed manifest, an
    unknown kind, a duplicate object, or an object outside the environment's confinement.
    """
    defined_here = types_defined_in(state)
    labels = owner_labels(state.app, state.environment)
    planned: list[PlannedObject] = []
    seen: dict[ObjectKey, str] = {}
    for obj in state.objects:
        _check_shape(obj)
        type_key = (str(obj.manifest["apiVersion"]), str(obj.manifest["kind"]))
        resource = served.get(type_key)
        crd_pending = resource is None and type_key in defined_here
        resource = resource or defined_here.get(type_key)
        if resource is None:
            raise RejectedError(
                "UnknownKind",
                f"{type_key[1]} {obj.manifest['metadata']['name']} (from {obj.source}): the "
                f"cluster serves no kind {type_key[1]!r} in {type_key[0]!r}; check apiVersion "
                "and kind, or add the CRD that defines it",
                source=obj.source,
                involved_object=_ref_of(obj.manifest),
            )
        manifest = ownership.owned(_confined(obj, resource, environment), labels, state.revision)
        item = PlannedObject(obj.source, resource, manifest, crd_pending)
        if item.key in seen:
            raise RejectedError(
                "DuplicateObject",
                f"{item.ref} is defined twice, in {seen[item.key]} and in {obj.source}; "
                "keep one of them",
                source=obj.source,
                involved_object=item.ref,
            )
        seen[item.key] = obj.source
        planned.append(item)
    ordered = sorted(planned, key=_apply_order)
    return Plan(
        definitions=tuple(o for o in ordered if o.is_definition),
        others=tuple(o for o in ordered if not o.is_definition),
    )


def _apply_order(obj: PlannedObject) -> tuple[int, str, str, str]:
    return (
        _RANK.get(obj.resource.kind, len(_RANK)),
        obj.resource.kind,
        obj.namespace or "",
        obj.name,
    )


def _confined(
    obj: DesiredObject, resource: ResourceType, environment: Environment
) -> dict[str, Any]:
    """A copy of the manifest with its namespace settled, or RejectedError if it is not allowed."""
    manifest = ownership.settled(
        obj.manifest, namespaced=resource.namespaced, namespace=environment.namespace
    )
    metadata: dict[str, Any] = manifest["metadata"]
    name = str(metadata["name"])
    allowed = environment.allowed_namespaces
    if resource.namespaced:
        namespace = metadata["namespace"]
        if namespace not in allowed:
            ref = ObjectRef(
                api_version=resource.api_version,
                kind=resource.kind,
                name=name,
                namespace=str(namespace),
            )
            raise RejectedError(
                "NamespaceNotAllowed",
                f"{ref} (from {obj.source}) is outside the allowed namespaces "
                f"({', '.join(allowed)}); move it, or add its namespace to allowed_namespaces",
                source=obj.source,
                involved_object=ref,
            )
    else:
        ref = ObjectRef(api_version=resource.api_version, kind=resource.kind, name=name)
        if resource.kind not in environment.allow_cluster_scoped:
            raise RejectedError(
                "ClusterScopedNotAllowed",
                f"{ref} (from {obj.source}) is cluster-scoped and {resource.kind} is not in "
                "allow_cluster_scoped for this environment; remove it, or allow the kind",
                source=obj.source,
                involved_object=ref,
            )
        if (resource.group, resource.kind) == NAMESPACE and name not in allowed:
            raise RejectedError(
                "NamespaceNotAllowed",
                f"{ref} (from {obj.source}) creates a namespace outside the allowed namespaces "
                f"({', '.join(allowed)})",
                source=obj.source,
                involved_object=ref,
            )
    return manifest


def prunable(
    live: Iterable[tuple[ResourceType, Mapping[str, Any]]],
    desired: Set[ObjectKey],
    environment: Environment,
    owner: Mapping[str, str],
) -> list[tuple[ResourceType, Mapping[str, Any]]]:
    """The listed objects to delete: owned, gone from Git, and inside the confinement.

    ``owner`` are the ownership labels; an object without all of them is never chosen, whatever
    the listing returned. Namespaces and CRDs are never pruned (see NEVER_PRUNED); objects
    already being deleted are left alone.
    """
    found = []
    for resource, obj in live:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if any(labels.get(key) != value for key, value in owner.items()):
            continue
        if (resource.group, resource.kind) in NEVER_PRUNED or metadata.get("deletionTimestamp"):
            continue
        if object_key(resource, obj) in desired:
            continue
        if resource.namespaced:
            if metadata.get("namespace") not in environment.allowed_namespaces:
                continue
        elif resource.kind not in environment.allow_cluster_scoped:
            continue
        found.append((resource, obj))
    return found
