"""Server-side apply, its dry-run, and the reads and deletes that prune and health need.

Every write goes through server-side apply (``Content-Type: application/apply-patch+yaml``)
under a named field manager, so the API server itself merges, validates (``fieldValidation=
Strict``: an unknown field is an error, not a warning) and records who owns which field. A
dry-run (``dryRun=All``) runs the same admission and validation without persisting, which is how
a whole desired state is checked before any of it is written. Objects are plain ``dict``s in the
API's JSON form, for any kind, through the ResourceType that discovery found.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gitops_kube import _requests
from gitops_kube.clients import ApiClient
from gitops_kube.discovery import ResourceType

SENSITIVE_KINDS = frozenset({"Secret"})
"""Kinds whose error messages keep only the reason and field paths (values could be secrets)."""


def _sensitive(resource: ResourceType) -> bool:
    return resource.group == "" and resource.kind in SENSITIVE_KINDS


async def apply(
    api: ApiClient,
    resource: ResourceType,
    manifest: Mapping[str, Any],
    *,
    field_manager: str,
    force: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Server-side apply one object (its namespace from its metadata); return the result.

    ``force`` takes over fields that another manager set (as Flux does), instead of failing with
    a conflict. With ``dry_run`` the server validates and admits the object but stores nothing.
    Raises RequestError (message safe to publish) or UnreachableError.
    """
    metadata = manifest.get("metadata") or {}
    namespace = metadata.get("namespace") if resource.namespaced else None
    query = {"fieldManager": field_manager, "fieldValidation": "Strict"}
    if force:
        query["force"] = "true"
    if dry_run:
        query["dryRun"] = "All"
    return await _requests.request(
        api,
        "PATCH",
        resource.object_path(str(metadata.get("name", "")), namespace),
        query=query,
        body=manifest,
        content_type=_requests.APPLY_PATCH,
        sensitive=_sensitive(resource),
    )


async def get(
    api: ApiClient, resource: ResourceType, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    """Read one object, status included; None when it does not exist."""
    try:
        return await _requests.request(
            api, "GET", resource.object_path(name, namespace), sensitive=_sensitive(resource)
        )
    except _requests.RequestError as exc:
        if exc.status == 404:
            return None
        raise


async def list_labelled(
    api: ApiClient,
    resource: ResourceType,
    labels: Mapping[str, str],
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """The objects of one resource carrying all these labels, in a namespace or cluster-wide.

    Items come back as the server lists them (``apiVersion`` and ``kind`` may be absent).
    """
    selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
    items: list[dict[str, Any]] = []
    page: str | None = None
    while True:
        query = {"labelSelector": selector, "limit": "500"}
        if page:
            query["continue"] = page
        listing = await _requests.request(
            api,
            "GET",
            resource.collection_path(namespace),
            query=query,
            sensitive=_sensitive(resource),
        )
        items.extend(listing.get("items") or [])
        page = (listing.get("metadata") or {}).get("continue")
        if not page:
            return items


async def delete(
    api: ApiClient,
    resource: ResourceType,
    name: str,
    namespace: str | None = None,
    *,
    uid: str | None = None,
) -> bool:
    """Delete one object (dependents in the background); False when it was already gone.

    With ``uid`` the server deletes only that very object, never one re-created under the same
    name in the meantime (a 409 then also returns False).
    """
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
    }
    if uid:
        body["preconditions"] = {"uid": uid}
    try:
        await _requests.request(
            api,
            "DELETE",
            resource.object_path(name, namespace),
            body=body,
            sensitive=_sensitive(resource),
        )
    except _requests.RequestError as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True
