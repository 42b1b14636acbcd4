"""Unit tests of the deployer's pure decisions, and of the pure parts of gitops_kube it relies on.

Planning (confinement, defaults, ownership, order, prune choice), health assessment of live
objects, the masking of values in API server messages, and the per-environment worker's
coalescing: all without a cluster or a broker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gitops_config.models import Environment
from gitops_deployer import planning, rollouts
from gitops_deployer.planning import RejectedError
from gitops_deployer.workers import Worker
from gitops_events import DesiredObject, DesiredState
from gitops_kube import _requests, health
from gitops_kube.discovery import ResourceType, types_from_crd
from tests.support.waiting import eventually

CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True)
SECRET = ResourceType("", "v1", "Secret", "secrets", namespaced=True)
DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments", namespaced=True)
SERVICE_ACCOUNT = ResourceType("", "v1", "ServiceAccount", "serviceaccounts", namespaced=True)
NAMESPACE = ResourceType("", "v1", "Namespace", "namespaces", namespaced=False)
CLUSTER_ROLE = ResourceType(
    "rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False
)
CRD = ResourceType(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
)
SERVED = {
    (r.api_version, r.kind): r
    for r in (CONFIG_MAP, SECRET, DEPLOYMENT, SERVICE_ACCOUNT, NAMESPACE, CLUSTER_ROLE, CRD)
}


def _environment(**overrides: Any) -> Environment:
    fields: dict[str, Any] = {"branch": "main", "cluster": "local", "namespace": "shop"}
    fields.update(overrides)
    return Environment.model_validate(fields)


def _object(
    kind: str, name: str, api_version: str = "v1", source: str = "deploy/app.yaml", **extra: Any
) -> DesiredObject:
    manifest: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
    for key, value in extra.items():
        if key == "namespace":
            manifest["metadata"]["namespace"] = value
        else:
            manifest[key] = value
    return DesiredObject(source=source, manifest=manifest)


def _state(
    *objects: DesiredObject, revision: str = "abc123", rendered_at: datetime | None = None
) -> DesiredState:
    return DesiredState(
        app="shop",
        environment="staging",
        revision=revision,
        repo="file:///repo",
        branch="main",
        cluster="local",
        namespace="shop",
        digest=f"sha256:{revision}",
        objects=list(objects),
        rendered_at=rendered_at or datetime.now(UTC),
    )


def _crd(
    group: str = "example.com", kind: str = "Widget", scope: str = "Namespaced"
) -> DesiredObject:
    return _object(
        "CustomResourceDefinition",
        f"widgets.{group}",
        "apiextensions.k8s.io/v1",
        spec={
            "group": group,
            "scope": scope,
            "names": {"kind": kind, "plural": "widgets", "singular": "widget"},
            "versions": [
                {"name": "v1", "served": True, "storage": True},
                {"name": "v0", "served": False, "storage": False},
            ],
        },
    )


# --- planning ------------------------------------------------------------------------------------


def test_namespaced_objects_default_to_the_environment_namespace_and_are_owned() -> None:
    plan = planning.plan(
        _state(_object("ConfigMap", "settings", data={"a": "1"})), _environment(), SERVED
    )

    (obj,) = plan.objects
    metadata = obj.manifest["metadata"]
    assert obj.namespace == "shop"
    assert metadata["namespace"] == "shop"
    assert metadata["labels"] == {
        "gitops.io/app": "shop",
        "gitops.io/environment": "staging",
        "app.kubernetes.io/managed-by": "gitops-deployer",
    }
    assert metadata["annotations"] == {"gitops.io/revision": "abc123"}
    assert obj.manifest["data"] == {"a": "1"}


def test_planning_keeps_the_users_labels_and_never_edits_the_desired_state() -> None:
    desired = _object("ConfigMap", "settings")
    desired.manifest["metadata"]["labels"] = {"tier": "web"}
    plan = planning.plan(_state(desired), _environment(), SERVED)

    assert plan.objects[0].manifest["metadata"]["labels"]["tier"] == "web"
    assert desired.manifest["metadata"] == {"name": "settings", "labels": {"tier": "web"}}


def test_server_owned_fields_are_dropped() -> None:
    exported = _object("ConfigMap", "settings", status={"phase": "x"})
    exported.manifest["metadata"].update(resourceVersion="42", uid="u-1", managedFields=[])
    (obj,) = planning.plan(_state(exported), _environment(), SERVED).objects

    assert "status" not in obj.manifest
    assert set(obj.manifest["metadata"]) == {"name", "namespace", "labels", "annotations"}


def test_object_outside_the_allowed_namespaces_rejects_the_revision() -> None:
    state = _state(
        _object("ConfigMap", "ok"),
        _object("ConfigMap", "sneaky", namespace="kube-system", source="evil.yaml"),
    )
    with pytest.raises(RejectedError) as caught:
        planning.plan(state, _environment(), SERVED)

    assert caught.value.reason == "NamespaceNotAllowed"
    assert caught.value.source == "evil.yaml"
    assert caught.value.involved_object is not None
    assert caught.value.involved_object.namespace == "kube-system"
    assert "sneaky" in caught.value.message


def test_an_allowed_second_namespace_is_accepted() -> None:
    state = _state(_object("ConfigMap", "jobs-config", namespace="shop-jobs"))
    plan = planning.plan(state, _environment(allowed_namespaces=["shop", "shop-jobs"]), SERVED)
    assert plan.target_namespaces() == {"shop-jobs"}


def test_cluster_scoped_kind_needs_to_be_allowed() -> None:
    state = _state(
        _object("ClusterRole", "reader", "rbac.authorization.k8s.io/v1", source="rbac.yaml")
    )
    with pytest.raises(RejectedError) as caught:
        planning.plan(state, _environment(), SERVED)
    assert caught.value.reason == "ClusterScopedNotAllowed"
    assert caught.value.source == "rbac.yaml"

    plan = planning.plan(state, _environment(allow_cluster_scoped=["ClusterRole"]), SERVED)
    (obj,) = plan.objects
    assert obj.namespace is None
    assert "namespace" not in obj.manifest["metadata"]


def test_a_namespace_object_must_be_an_allowed_namespace() -> None:
    environment = _environment(allow_cluster_scoped=["Namespace"])
    planning.plan(_state(_object("Namespace", "shop")), environment, SERVED)
    with pytest.raises(RejectedError) as caught:
        planning.plan(_state(_object("Namespace", "elsewhere")), environment, SERVED)
    assert caught.value.reason == "NamespaceNotAllowed"


def test_unknown_kind_is_rejected_naming_file_and_object() -> None:
    state = _state(_object("Widget", "w", "example.com/v1", source="widgets/w.yaml"))
    with pytest.raises(RejectedError) as caught:
        planning.plan(state, _environment(), SERVED)
    assert caught.value.reason == "UnknownKind"
    assert caught.value.source == "widgets/w.yaml"
    assert caught.value.involved_object is not None
    assert caught.value.involved_object.kind == "Widget"


def test_a_kind_defined_by_a_crd_of_the_same_state_is_planned_after_it() -> None:
    state = _state(_object("Widget", "w", "example.com/v1"), _crd())
    plan = planning.plan(
        state, _environment(allow_cluster_scoped=["CustomResourceDefinition"]), SERVED
    )

    assert [o.resource.kind for o in plan.definitions] == ["CustomResourceDefinition"]
    (widget,) = plan.others
    assert widget.crd_pending
    assert widget.resource == ResourceType("example.com", "v1", "Widget", "widgets", True)
    assert plan.dry_run_later({"shop"}) == {widget.key}


def test_types_from_crd_skips_versions_that_are_not_served() -> None:
    assert [t.version for t in types_from_crd(_crd(scope="Cluster").manifest)] == ["v1"]
    assert not next(iter(types_from_crd(_crd(scope="Cluster").manifest))).namespaced
    assert list(types_from_crd({"kind": "ConfigMap"})) == []


def test_malformed_manifests_are_rejected() -> None:
    broken = DesiredObject(source="bad.yaml", manifest={"kind": "ConfigMap", "metadata": {}})
    with pytest.raises(RejectedError) as caught:
        planning.requested_types(_state(broken))
    assert caught.value.reason == "InvalidManifest"
    assert "apiVersion" in caught.value.message
    assert "metadata.name" in caught.value.message


def test_duplicates_are_rejected_naming_both_files() -> None:
    state = _state(
        _object("ConfigMap", "same", source="a.yaml"),
        _object("ConfigMap", "same", namespace="shop", source="b.yaml"),
    )
    with pytest.raises(RejectedError) as caught:
        planning.plan(state, _environment(), SERVED)
    assert caught.value.reason == "DuplicateObject"
    assert "a.yaml" in caught.value.message
    assert "b.yaml" in caught.value.message


def test_namespaces_and_crds_come_first_then_kinds_in_install_order() -> None:
    state = _state(
        _object("Deployment", "web", "apps/v1"),
        _object("ConfigMap", "settings"),
        _object("Namespace", "shop"),
        _object("ServiceAccount", "web"),
        _crd(),
        _object("Secret", "creds"),
    )
    environment = _environment(allow_cluster_scoped=["Namespace", "CustomResourceDefinition"])
    plan = planning.plan(state, environment, SERVED)

    assert [o.resource.kind for o in plan.definitions] == ["Namespace", "CustomResourceDefinition"]
    assert [o.resource.kind for o in plan.others] == [
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "Deployment",
    ]


def test_missing_namespace_is_rejected_unless_the_state_creates_it() -> None:
    plan = planning.plan(_state(_object("ConfigMap", "settings")), _environment(), SERVED)
    with pytest.raises(RejectedError) as caught:
        plan.check_namespaces(set())
    assert caught.value.reason == "NamespaceNotFound"

    environment = _environment(allow_cluster_scoped=["Namespace"])
    creating = planning.plan(
        _state(_object("ConfigMap", "settings"), _object("Namespace", "shop")), environment, SERVED
    )
    creating.check_namespaces(set())
    assert creating.dry_run_later(set()) == {creating.others[0].key}
    assert creating.dry_run_later({"shop"}) == set()


def test_the_environment_namespace_is_added_only_when_missing() -> None:
    plan = planning.plan(_state(_object("ConfigMap", "settings")), _environment(), SERVED)
    assert planning.with_environment_namespace(plan, _environment(), {"shop"}) is plan

    completed = planning.with_environment_namespace(plan, _environment(), set())
    (namespace,) = completed.definitions
    assert (namespace.resource.kind, namespace.name) == ("Namespace", "shop")
    assert "gitops.io/app" not in namespace.manifest["metadata"]["labels"]
    completed.check_namespaces(set())
    assert completed.dry_run_later(set()) == {plan.others[0].key}


def test_owner_labels_must_be_valid_label_values() -> None:
    assert planning.owner_labels("shop", "staging") == {
        "gitops.io/app": "shop",
        "gitops.io/environment": "staging",
    }
    with pytest.raises(ValueError, match="label value"):
        planning.owner_labels("shop", "no spaces")
    with pytest.raises(ValueError, match="label value"):
        planning.owner_labels("x" * 64, "staging")


def _live(
    resource: ResourceType,
    name: str,
    namespace: str | None = "shop",
    labels: dict[str, str] | None = None,
    **metadata: Any,
) -> tuple[ResourceType, dict[str, Any]]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": labels
        if labels is not None
        else {"gitops.io/app": "shop", "gitops.io/environment": "staging"},
        **metadata,
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return resource, {"metadata": meta}


def test_prune_chooses_only_owned_objects_that_git_no_longer_has() -> None:
    environment = _environment(allow_cluster_scoped=["ClusterRole"])
    owner = planning.owner_labels("shop", "staging")
    desired = {("", "ConfigMap", "shop", "kept")}
    live = [
        _live(CONFIG_MAP, "kept"),
        _live(CONFIG_MAP, "gone"),
        _live(
            CONFIG_MAP,
            "someone-elses",
            labels={"gitops.io/app": "other", "gitops.io/environment": "staging"},
        ),
        _live(CONFIG_MAP, "unlabelled", labels={}),
        _live(CONFIG_MAP, "elsewhere", namespace="kube-system"),
        _live(CONFIG_MAP, "deleting", deletionTimestamp="2024-01-01T00:00:00Z"),
        _live(NAMESPACE, "shop", namespace=None),
        _live(CLUSTER_ROLE, "old-role", namespace=None),
    ]
    chosen = planning.prunable(live, desired, environment, owner)
    assert [(r.kind, o["metadata"]["name"]) for r, o in chosen] == [
        ("ConfigMap", "gone"),
        ("ClusterRole", "old-role"),
    ]

    confined = planning.prunable(live, desired, _environment(), owner)
    assert [o["metadata"]["name"] for _, o in confined] == ["gone"]


def test_inventory_name_cannot_collide_between_environments() -> None:
    assert planning.inventory_name("a-b", "c") != planning.inventory_name("a", "b-c")


# --- unchanged detection -------------------------------------------------------------------------


def test_an_object_is_unchanged_when_the_dry_run_equals_the_live_object() -> None:
    live = {
        "metadata": {
            "name": "x",
            "resourceVersion": "7",
            "managedFields": [
                {"manager": "gitops-deployer", "time": "2024-01-01T00:00:00Z", "fieldsV1": {}}
            ],
        },
        "data": {"a": "1"},
    }
    same = json.loads(json.dumps(live))
    same["metadata"]["managedFields"][0]["time"] = "2024-06-01T00:00:00Z"
    changed = json.loads(json.dumps(live))
    changed["data"]["a"] = "2"

    assert rollouts.unchanged(live, same)
    assert not rollouts.unchanged(live, changed)
    assert not rollouts.unchanged(None, same)


# --- health --------------------------------------------------------------------------------------


def _deployment(generation: int = 2, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "generation": generation},
        "spec": {"replicas": 3},
        "status": status,
    }


@pytest.mark.parametrize(
    ("status", "state", "reason"),
    [
        ({"observedGeneration": 1}, "progressing", "GenerationNotObserved"),
        (
            {"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3},
            "progressing",
            "RolloutInProgress",
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 4, "availableReplicas": 3},
            "progressing",
            "RolloutInProgress",
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 2},
            "progressing",
            "ReplicasUnavailable",
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 3, "replicas": 3, "availableReplicas": 3},
            "healthy",
            "Healthy",
        ),
        (
            {
                "observedGeneration": 2,
                "conditions": [
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
                ],
            },
            "failed",
            "ProgressDeadlineExceeded",
        ),
    ],
)
def test_deployment_health(status: dict[str, Any], state: str, reason: str) -> None:
    assessed = health.assess(_deployment(**status))
    assert (assessed.state.value, assessed.reason) == (state, reason)


def test_stateful_set_and_daemon_set_health() -> None:
    sts: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "readyReplicas": 2,
            "currentRevision": "a",
            "updateRevision": "b",
        },
    }
    assert health.assess(sts).state is health.HealthState.PROGRESSING
    sts["status"]["currentRevision"] = "b"
    assert health.assess(sts).state is health.HealthState.HEALTHY

    ds: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"generation": 1},
        "status": {
            "observedGeneration": 1,
            "desiredNumberScheduled": 2,
            "updatedNumberScheduled": 2,
            "numberAvailable": 1,
        },
    }
    assert health.assess(ds).reason == "PodsUnavailable"
    ds["status"]["numberAvailable"] = 2
    assert health.assess(ds).state is health.HealthState.HEALTHY


def test_job_pvc_service_crd_and_custom_resource_health() -> None:
    job: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {}, "status": {}}
    assert health.assess(job).state is health.HealthState.PROGRESSING
    job["status"] = {
        "conditions": [
            {
                "type": "Failed",
                "status": "True",
                "reason": "BackoffLimitExceeded",
                "message": "too many",
            }
        ]
    }
    assert (health.assess(job).state, health.assess(job).reason) == (
        health.HealthState.FAILED,
        "BackoffLimitExceeded",
    )
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert health.assess(job).state is health.HealthState.HEALTHY

    pvc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "status": {"phase": "Pending"},
    }
    assert health.assess(pvc).state is health.HealthState.PROGRESSING
    pvc["status"]["phase"] = "Bound"
    assert health.assess(pvc).state is health.HealthState.HEALTHY

    lb: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "spec": {"type": "LoadBalancer"},
        "status": {},
    }
    assert health.assess(lb).reason == "LoadBalancerPending"
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}}
    assert health.assess(lb).state is health.HealthState.HEALTHY
    assert health.assess({"apiVersion": "v1", "kind": "Service", "spec": {}}).state is (
        health.HealthState.HEALTHY
    )

    crd: dict[str, Any] = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "status": {"conditions": [{"type": "Established", "status": "False"}]},
    }
    assert health.assess(crd).state is health.HealthState.PROGRESSING
    crd["status"]["conditions"][0]["status"] = "True"
    assert health.assess(crd).state is health.HealthState.HEALTHY

    widget: dict[str, Any] = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"generation": 3},
        "status": {"conditions": [{"type": "Ready", "status": "True", "observedGeneration": 2}]},
    }
    assert health.assess(widget).reason == "GenerationNotObserved"
    widget["status"]["conditions"][0]["observedGeneration"] = 3
    assert health.assess(widget).state is health.HealthState.HEALTHY
    widget["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Waiting"},
        {"type": "Stalled", "status": "True", "reason": "Broken"},
    ]
    assert (health.assess(widget).state, health.assess(widget).reason) == (
        health.HealthState.FAILED,
        "Broken",
    )
    assert health.assess({"apiVersion": "v1", "kind": "ConfigMap"}) == health.HEALTHY


# --- messages from the API server ----------------------------------------------------------------


def test_echoed_values_are_masked_in_server_messages() -> None:
    body = json.dumps(
        {
            "kind": "Status",
            "reason": "Invalid",
            "code": 422,
            "message": 'Secret "s" is invalid: data[bad key!]: Invalid value: "hunter2": a valid '
            "config key must consist of alphanumeric characters",
            "details": {
                "causes": [
                    {
                        "reason": "FieldValueInvalid",
                        "field": "data[bad key!]",
                        "message": 'Invalid value: "hunter2": ...',
                    }
                ]
            },
        }
    )
    plain = _requests.describe_status(422, body, sensitive=False)
    assert "hunter2" not in plain.message
    assert "Invalid value: <masked>" in plain.message
    secret = _requests.describe_status(422, body, sensitive=True)
    assert secret.message == "Invalid at data[bad key!]"

    typed = json.dumps(
        {
            "kind": "Status",
            "code": 500,
            "message": "failed to create typed patch object (ns/s; /v1, Kind=Secret): .data.k: "
            'expected string, got &value.valueUnstructured{Value:{"a":"hunter2"}}',
        }
    )
    masked = _requests.describe_status(500, typed, sensitive=False)
    assert "hunter2" not in masked.message
    assert masked.message.endswith(".data.k: expected string, got <masked>")
    assert _requests.describe_status(500, typed, sensitive=True).message == (
        "InternalError at .data.k"
    )


# --- workers -------------------------------------------------------------------------------------


class _Recorder:
    """A deploy callback that records revisions and can be held until released."""

    def __init__(self) -> None:
        self.revisions: list[str] = []
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

    async def __call__(self, worker: Worker, state: DesiredState) -> None:
        self.revisions.append(state.revision)
        self.entered.set()
        await self.release.wait()


async def _until(condition: Callable[[], bool]) -> None:
    await eventually(condition, timeout=5, interval=0.01, what="the worker")


async def test_worker_coalesces_to_the_latest_and_never_goes_back() -> None:
    recorder = _Recorder()
    recorder.release.clear()
    worker = Worker("shop/staging", recorder, auto_sync=True, suspended=False)
    worker.start()
    try:
        now = datetime.now(UTC)
        worker.record(_state(revision="r1", rendered_at=now), apply=True)
        await _until(recorder.entered.is_set)
        worker.record(_state(revision="r2", rendered_at=now + timedelta(seconds=1)), apply=True)
        assert worker.superseded.is_set()
        worker.record(_state(revision="r3", rendered_at=now + timedelta(seconds=2)), apply=True)
        assert not worker.record(_state(revision="old", rendered_at=now), apply=True)
        recorder.release.set()
        await _until(lambda: worker.idle and recorder.revisions[-1] == "r3")
    finally:
        await worker.stop()
    assert recorder.revisions == ["r1", "r3"]
    assert worker.latest is not None
    assert worker.latest.revision == "r3"


async def test_worker_holds_while_suspended_and_without_auto_sync() -> None:
    recorder = _Recorder()
    worker = Worker("shop/staging", recorder, auto_sync=True, suspended=True)
    manual = Worker("shop/production", recorder, auto_sync=False, suspended=False)
    worker.start()
    manual.start()
    try:
        worker.record(_state(revision="r1"), apply=True)
        manual.record(_state(revision="m1"), apply=True)
        assert worker.pending
        assert not manual.pending
        for _ in range(10):  # let the workers' tasks run, were they to deploy
            await asyncio.sleep(0)
        assert recorder.revisions == []

        worker.resume()
        await _until(lambda: recorder.revisions == ["r1"])
        assert manual.sync()
        await _until(lambda: recorder.revisions == ["r1", "m1"])
    finally:
        await worker.stop()
        await manual.stop()


def test_sync_without_a_desired_state_is_refused() -> None:
    worker = Worker("shop/staging", _Recorder(), auto_sync=True, suspended=False)
    assert not worker.sync()
