"""How the system marks what it owns on a cluster, and the final form of a manifest it applies.

The deployer writes objects and the drift detector asks the API server what the deployer's next
write would change; both must build exactly the same manifest from a desired object, or every
label and annotation the deployer adds would show up as drift. So the rules live here, once:

- namespace defaulting: a namespaced object without a namespace goes to the environment's
  namespace; a cluster-scoped object never carries one;
- server-owned metadata (``resourceVersion``, ``uid``, ``managedFields``, ...) and ``status`` are
  dropped, since a manifest exported from a live cluster may still carry them;
- ownership: the labels ``gitops.io/app`` and ``gitops.io/environment`` (plus
  ``app.kubernetes.io/managed-by``) and the annotation ``gitops.io/revision``;
- every write goes through the field manager ``gitops-deployer``.

Confinement (which namespaces and cluster-scoped kinds an environment may write) is the
deployer's policy and stays with it; this module only shapes manifests.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

FIELD_MANAGER = "gitops-deployer"
"""The server-side apply field manager of every write the deployer makes."""

APP_LABEL = "gitops.io/app"
ENVIRONMENT_LABEL = "gitops.io/environment"
REVISION_ANNOTATION = "gitops.io/revision"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "gitops-deployer"

SERVER_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
"""Metadata the API server owns; a stale resourceVersion would turn every apply into a conflict."""

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")


def owner_labels(app: str, environment: str) -> dict[str, str]:
    """The labels that mark an object as owned by one app environment (prune selects on them)."""
    for value in (app, environment):
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 63:
            raise ValueError(f"{value!r} is not a valid label value")
    return {APP_LABEL: app, ENVIRONMENT_LABEL: environment}


def owner_of(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (app, environment) whose ownership labels a live object carries, if it has both."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    app, environment = labels.get(APP_LABEL), labels.get(ENVIRONMENT_LABEL)
    if isinstance(app, str) and isinstance(environment, str):
        return app, environment
    return None


def settled(manifest: Mapping[str, Any], *, namespaced: bool, namespace: str) -> dict[str, Any]:
    """A copy without status and server metadata, its namespace defaulted or removed.

    ``namespace`` is the environment's namespace, used when a namespaced object names none.
    """
    result = copy.deepcopy(dict(manifest))
    result.pop("status", None)
    metadata: dict[str, Any] = dict(result.get("metadata") or {})
    for field in SERVER_METADATA:
        metadata.pop(field, None)
    if namespaced:
        metadata["namespace"] = metadata.get("namespace") or namespace
    else:
        metadata.pop("namespace", None)
    result["metadata"] = metadata
    return result


def owned(manifest: dict[str, Any], labels: Mapping[str, str], revision: str) -> dict[str, Any]:
    """The manifest (changed in place) with the ownership labels and the revision annotation."""
    metadata = manifest["metadata"]
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels, MANAGED_BY_LABEL: MANAGED_BY}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), REVISION_ANNOTATION: revision}
    return manifest


def applied_form(
    manifest: Mapping[str, Any],
    *,
    namespaced: bool,
    namespace: str,
    app: str,
    environment: str,
    revision: str,
) -> dict[str, Any]:
    """Exactly what the deployer applies for one desired manifest of an app environment."""
    return owned(
        settled(manifest, namespaced=namespaced, namespace=namespace),
        owner_labels(app, environment),
        revision,
    )


def inventory_name(app: str, environment: str) -> str:
    """The name of the inventory ConfigMap of one app environment.

    App and environment names cannot contain dots, so the name is unambiguous.
    """
    return f"gitops-inventory.{app}.{environment}"


def inventory_labels(app: str, environment: str) -> dict[str, str]:
    """Labels of the inventory ConfigMap: findable, but not the ownership labels prune uses."""
    return {
        MANAGED_BY_LABEL: MANAGED_BY,
        "gitops.io/inventory-of-app": app,
        "gitops.io/inventory-of-environment": environment,
    }
