"""Comparing desired with live: field paths, noise, Secrets, ignore rules, extras, fingerprints.

The dry-run itself is the API server's (tested in tests/integration/test_drift.py); these are the
decisions around it, on the JSON objects the server returns.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from gitops_kube import comparing, ownership
from gitops_kube.comparing import Difference, FieldChange, IgnoreRule, ObjectId, Target
from gitops_kube.discovery import ResourceType

DEPLOYMENT = ResourceType("apps", "v1", "Deployment", "deployments", namespaced=True)
CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True)
SECRET = ResourceType("", "v1", "Secret", "secrets", namespaced=True)


def live_deployment(replicas: int = 2, image: str = "web:1") -> dict[str, Any]:
    """A Deployment as the server returns it: defaults, metadata and status included."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "0b9c",
            "resourceVersion": "812",
            "generation": 3,
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"gitops.io/app": "shop", "gitops.io/environment": "staging"},
            "annotations": {
                "gitops.io/revision": "abc",
                "deployment.kubernetes.io/revision": "2",
            },
            "managedFields": [
                {
                    "manager": "gitops-deployer",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsV1": {"f:spec": {"f:template": {}}},
                }
            ],
        },
        "spec": {
            "replicas": replicas,
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"},
                        {"name": "proxy", "image": "envoy:1"},
                    ]
                }
            },
        },
        "status": {"replicas": replicas, "availableReplicas": replicas},
    }


def target(kind: str = "Deployment", name: str = "web", **extra: Any) -> Target:
    api_version = "apps/v1" if kind == "Deployment" else "v1"
    manifest = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "shop"},
    }
    return Target("deploy/web.yaml", api_version, kind, manifest, **extra)


# --- field differences ---------------------------------------------------------------------------


def test_identical_objects_have_no_changes() -> None:
    assert comparing.field_changes(live_deployment(), live_deployment()) == []


def test_server_owned_noise_is_never_a_change() -> None:
    dry_run, live = live_deployment(), live_deployment()
    dry_run["metadata"]["generation"] = 4
    dry_run["metadata"]["resourceVersion"] = "813"
    dry_run["metadata"]["managedFields"] = [{"manager": "gitops-deployer", "time": "later"}]
    dry_run["metadata"]["annotations"]["gitops.io/revision"] = "def"
    dry_run["status"] = {"replicas": 9}
    assert comparing.field_changes(dry_run, live) == []


def test_changes_are_json_pointers_with_both_values() -> None:
    changes = comparing.field_changes(live_deployment(2), live_deployment(5, image="web:2"))
    assert changes == [
        FieldChange("/spec/replicas", 2, 5),
        FieldChange("/spec/template/spec/containers/0/image", "web:1", "web:2"),
    ]


def test_keys_with_slashes_and_tildes_are_escaped() -> None:
    changes = comparing.field_changes(
        {"metadata": {"labels": {"example.com/tier": "web", "a~b": "1"}}},
        {"metadata": {"labels": {"example.com/tier": "db", "a~b": "2"}}},
    )
    assert [c.path for c in changes] == [
        "/metadata/labels/a~0b",
        "/metadata/labels/example.com~1tier",
    ]


def test_named_list_items_are_matched_by_name_not_position() -> None:
    desired = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}
    live = {"env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]}
    assert comparing.field_changes(desired, live) == []
    live_missing_a = {"env": [{"name": "B", "value": "2"}]}
    assert comparing.field_changes(desired, live_missing_a) == [
        FieldChange("/env/0", {"name": "A", "value": "1"}, None)
    ]
    live_with_c = {"env": [*desired["env"], {"name": "C", "value": "3"}]}
    assert comparing.field_changes(desired, live_with_c) == [
        FieldChange("/env/2", None, {"name": "C", "value": "3"})
    ]


def test_unnamed_lists_compare_by_position() -> None:
    assert comparing.field_changes({"args": ["a", "b"]}, {"args": ["a", "c", "d"]}) == [
        FieldChange("/args/1", "b", "c"),
        FieldChange("/args/2", None, "d"),
    ]


def test_a_value_missing_on_one_side_is_none_there() -> None:
    assert comparing.field_changes({"data": {"a": "1"}}, {"data": {}}) == [
        FieldChange("/data/a", "1", None)
    ]


@pytest.mark.parametrize(
    ("pointer", "path", "covered"),
    [
        ("/spec/replicas", "/spec/replicas", True),
        ("/spec", "/spec/replicas", True),
        ("/spec/", "/spec/replicas", True),
        ("/spec/replica", "/spec/replicas", False),
        ("/spec/replicas", "/spec", False),
    ],
)
def test_covers(pointer: str, path: str, covered: bool) -> None:
    assert comparing.covers(pointer, path) is covered


# --- classification ------------------------------------------------------------------------------


def test_modified_names_the_object_and_its_fields() -> None:
    difference = comparing.modified(target(), live_deployment(2), live_deployment(5))
    assert difference == Difference(
        "apps/v1",
        ObjectId("apps", "Deployment", "shop", "web"),
        "modified",
        (FieldChange("/spec/replicas", 2, 5),),
    )
    assert comparing.modified(target(), live_deployment(), live_deployment()) is None


def test_ignore_rules_drop_the_pointed_fields_of_matching_objects_only() -> None:
    dry_run, live = live_deployment(2), live_deployment(5, image="web:2")
    replicas = IgnoreRule(("/spec/replicas",), kind="Deployment")
    difference = comparing.modified(target(), dry_run, live, [replicas])
    assert difference is not None
    assert difference.paths == ("/spec/template/spec/containers/0/image",)

    whole_spec = IgnoreRule(("/spec",), name="web")
    assert comparing.modified(target(), dry_run, live, [whole_spec]) is None

    other_kind = IgnoreRule(("/spec/replicas",), kind="StatefulSet")
    other_name = IgnoreRule(("/spec/replicas",), name="api")
    difference = comparing.modified(target(), dry_run, live, [other_kind, other_name])
    assert difference is not None
    assert "/spec/replicas" in difference.paths


def test_secret_values_are_hashed_on_arrival_and_reported_masked() -> None:
    def secret(password: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": "creds",
                "labels": {"tier": "db"},
                "annotations": {comparing.LAST_APPLIED: f'{{"data":{{"password":"{password}"}}}}'},
            },
            "data": {"password": password},
        }

    desired = comparing.hashed(secret("aHVudGVyMg=="), secret=True)
    live = comparing.hashed(secret("c3dvcmRmaXNo"), secret=True)
    for obj in (desired, live):
        assert "aHVudGVyMg==" not in repr(obj)
        assert "c3dvcmRmaXNo" not in repr(obj)
    assert comparing.hashed(secret("same"), secret=True) == comparing.hashed(
        secret("same"), secret=True
    )
    live["metadata"]["labels"]["tier"] = "cache"

    difference = comparing.modified(target("Secret", "creds"), desired, live)
    assert difference is not None
    assert set(difference.fields) == {
        FieldChange("/data/password", comparing.MASK, comparing.MASK),
        FieldChange(
            "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
            comparing.MASK,
            comparing.MASK,
        ),
        FieldChange("/metadata/labels/tier", "db", "cache"),
    }


def test_a_key_missing_from_a_secret_shows_as_absent_not_masked() -> None:
    desired = comparing.hashed({"kind": "Secret", "data": {"a": "eA=="}}, secret=True)
    live = comparing.hashed({"kind": "Secret", "data": {}}, secret=True)
    difference = comparing.modified(target("Secret", "creds"), desired, live)
    assert difference is not None
    assert difference.fields == (FieldChange("/data/a", comparing.MASK, None),)


def test_other_kinds_are_not_hashed() -> None:
    config_map = {"kind": "ConfigMap", "data": {"level": "1"}}
    assert comparing.hashed(config_map, secret=False) == config_map


def owned_object(name: str, *, app: str = "shop", **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "labels": {"gitops.io/app": app, "gitops.io/environment": "staging"},
            **metadata,
        }
    }


def test_extra_objects_are_owned_undesired_and_not_made_by_a_controller() -> None:
    owned = [
        (CONFIG_MAP, owned_object("settings")),
        (CONFIG_MAP, owned_object("stray")),
        (CONFIG_MAP, owned_object("theirs", app="other")),
        (CONFIG_MAP, owned_object("leaving", deletionTimestamp="2026-01-01T00:00:00Z")),
        (
            CONFIG_MAP,
            owned_object(
                "made-by-controller",
                ownerReferences=[{"kind": "Deployment", "name": "web", "controller": True}],
            ),
        ),
    ]
    desired = [ObjectId("", "ConfigMap", "shop", "settings")]
    assert comparing.extras(owned, desired, "shop", "staging") == [
        Difference("v1", ObjectId("", "ConfigMap", "shop", "stray"), "extra")
    ]


# --- the whole comparison ------------------------------------------------------------------------


def test_compare_classifies_missing_modified_extra_and_sealed() -> None:
    lives = {
        "web": live_deployment(5),
        "sealed": {"kind": "Secret", "metadata": {"name": "sealed"}},
    }
    dry_runs = {"web": live_deployment(2)}
    asked: list[str] = []

    async def live_of(t: Target) -> dict[str, Any] | None:
        return copy.deepcopy(lives.get(t.id.name))

    async def dry_run_of(t: Target, live: dict[str, Any]) -> dict[str, Any]:
        asked.append(t.id.name)
        return copy.deepcopy(dry_runs[t.id.name])

    wanted = [
        target("Deployment", "web", resource=DEPLOYMENT),
        target("ConfigMap", "settings", resource=CONFIG_MAP),
        target("Secret", "sealed", resource=SECRET, sealed=True),
        target("Secret", "gone-sealed", resource=SECRET, sealed=True),
    ]
    differences = asyncio.run(
        comparing.compare(
            wanted,
            live_of=live_of,
            dry_run_of=dry_run_of,
            owned=[(CONFIG_MAP, owned_object("stray"))],
            app="shop",
            environment="staging",
        )
    )
    assert [(d.id.kind, d.id.name, d.drift, d.paths) for d in differences] == [
        ("ConfigMap", "settings", "missing", ()),
        ("ConfigMap", "stray", "extra", ()),
        ("Deployment", "web", "modified", ("/spec/replicas",)),
        ("Secret", "gone-sealed", "missing", ()),
    ]
    assert asked == ["web"], "a missing or sealed object was dry-run"


def test_sealed_secrets_are_recognised() -> None:
    assert comparing.is_sealed_secret(
        {"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret"}
    )
    assert not comparing.is_sealed_secret({"apiVersion": "example.com/v1", "kind": "SealedSecret"})
    assert not comparing.is_sealed_secret({"apiVersion": "v1", "kind": "Secret"})


def test_the_dry_run_key_ignores_status_and_managed_field_times_only() -> None:
    live = live_deployment()
    key = comparing.dry_run_key(target(), live)
    rolled = copy.deepcopy(live)
    rolled["status"] = {"replicas": 1}
    rolled["metadata"]["resourceVersion"] = "999"
    rolled["metadata"]["managedFields"][0]["time"] = "2027-01-01T00:00:00Z"
    rolled["metadata"]["managedFields"].append(
        {"manager": "kube-controller-manager", "subresource": "status", "time": "x"}
    )
    rolled["metadata"]["managedFields"][0]["fieldsV1"]["f:status"] = {"f:replicas": {}}
    assert comparing.dry_run_key(target(), rolled) == key
    scaled = live_deployment(replicas=3)
    assert comparing.dry_run_key(target(), scaled) != key
    taken_over = copy.deepcopy(live)
    taken_over["metadata"]["managedFields"][0]["fieldsV1"] = {"f:spec": {"f:replicas": {}}}
    assert comparing.dry_run_key(target(), taken_over) != key, "ownership of spec is ignored"
    other_manifest = target()
    other_manifest.manifest["metadata"]["labels"] = {"tier": "web"}
    assert comparing.dry_run_key(other_manifest, live) != key


# --- fingerprints --------------------------------------------------------------------------------


def modified_web(*paths: str, values: tuple[Any, Any] = (1, 2)) -> Difference:
    return Difference(
        "apps/v1",
        ObjectId("apps", "Deployment", "shop", "web"),
        "modified",
        tuple(FieldChange(p, *values) for p in paths),
    )


def test_fingerprints_depend_on_objects_kinds_and_paths_not_values_or_order() -> None:
    missing = Difference("v1", ObjectId("", "ConfigMap", "shop", "settings"), "missing")
    base = comparing.fingerprint([modified_web("/a", "/b"), missing])
    assert base == comparing.fingerprint([missing, modified_web("/b", "/a", values=(3, 4))])
    assert base != comparing.fingerprint([modified_web("/a"), missing])
    assert base != comparing.fingerprint([modified_web("/a", "/b")])
    assert comparing.fingerprint([]) == ""
    assert len(base) == 16


# --- the deployer's form of a manifest -----------------------------------------------------------


def test_applied_form_matches_what_the_deployer_writes() -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "settings", "uid": "x", "resourceVersion": "1", "labels": {"a": "b"}},
        "data": {"level": "1"},
        "status": {"phase": "whatever"},
    }
    applied = ownership.applied_form(
        manifest,
        namespaced=True,
        namespace="shop",
        app="shop",
        environment="staging",
        revision="r1",
    )
    assert applied == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "settings",
            "namespace": "shop",
            "labels": {
                "a": "b",
                "gitops.io/app": "shop",
                "gitops.io/environment": "staging",
                "app.kubernetes.io/managed-by": "gitops-deployer",
            },
            "annotations": {"gitops.io/revision": "r1"},
        },
        "data": {"level": "1"},
    }
    assert "uid" in manifest["metadata"], "the input was changed"
    cluster_scoped = ownership.settled(
        {"kind": "ClusterRole", "metadata": {"name": "r", "namespace": "shop"}},
        namespaced=False,
        namespace="shop",
    )
    assert "namespace" not in cluster_scoped["metadata"]
    assert ownership.owner_of(applied) == ("shop", "staging")
    assert ownership.owner_of({"metadata": {"labels": {"gitops.io/app": "shop"}}}) is None
