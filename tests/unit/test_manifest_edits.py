"""Manifest edits: only the image reference changes; comments, quotes and layout stay."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gitops_config_updater.manifests import (
    ImageRef,
    ManifestError,
    canonical_repository,
    update_text,
)

IMAGE = "registry.example.com/team/app"

WORKLOADS = """\
# The web tier. Keep replicas at 2 (see runbook).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2   # two zones
  template:
    spec:
      initContainers:
        - name: migrate
          image: "registry.example.com/team/app:1.2.0"   # same image, runs migrations
      containers:
        - name: web
          image: registry.example.com/team/app:1.2.0 # pinned by the updater
          args: [--port, "8080"]
        - name: sidecar
          image: 'registry.example.com/team/proxy:3.1'
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - {name: report, image: 'registry.example.com/team/app:1.1.0'}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  template:
    spec:
      containers:
      - name: db
        image: registry.example.com/team/app:1.2.0@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-workload
data:
  image: registry.example.com/team/app:1.0.0
"""

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - deployment.yaml  # the base
images:
  # the app, updated by the config-updater
  - name: app
    newName: registry.example.com/team/app
    newTag: "1.2.0"
  - name: registry.example.com/team/app-worker
    newTag: 1.0.0
  - name: registry.example.com/team/app
"""


def to(tag: str, digest: str | None = None) -> Callable[[ImageRef], ImageRef | None]:
    def decide(old: ImageRef) -> ImageRef | None:
        return ImageRef(old.repository, tag, digest)

    return decide


def test_every_workload_kind_is_updated_and_nothing_else_changes() -> None:
    text, changes = update_text(WORKLOADS, "apps/web.yaml", IMAGE, to("1.3.0"))
    expected = (
        WORKLOADS.replace(
            '"registry.example.com/team/app:1.2.0"', '"registry.example.com/team/app:1.3.0"'
        )
        .replace(
            "image: registry.example.com/team/app:1.2.0 #",
            "image: registry.example.com/team/app:1.3.0 #",
        )
        .replace("'registry.example.com/team/app:1.1.0'", "'registry.example.com/team/app:1.3.0'")
        .replace(
            "app:1.2.0@sha256:" + "a" * 32,
            "app:1.3.0",
        )
    )
    assert text == expected
    assert [c.where for c in changes] == [
        "apps/web.yaml: Deployment web migrate",
        "apps/web.yaml: Deployment web web",
        "apps/web.yaml: CronJob report report",
        "apps/web.yaml: StatefulSet db db",
    ]
    assert "registry.example.com/team/app:1.0.0" in text  # a ConfigMap value is not an image
    assert "'registry.example.com/team/proxy:3.1'" in text


def test_digest_is_pinned_when_given() -> None:
    digest = "sha256:" + "b" * 64
    text, changes = update_text(WORKLOADS, "web.yaml", IMAGE, to("1.3.0", digest))
    assert f"registry.example.com/team/app:1.3.0@{digest}" in text
    assert changes[-1].old.digest == "sha256:" + "a" * 32


def test_keeping_a_reference_changes_nothing() -> None:
    text, changes = update_text(WORKLOADS, "web.yaml", IMAGE, lambda old: None)
    assert (text, changes) == (WORKLOADS, [])


def test_other_images_are_left_alone() -> None:
    text, changes = update_text(WORKLOADS, "web.yaml", "registry.example.com/other", to("9"))
    assert (text, changes) == (WORKLOADS, [])


def test_kustomize_images_entries_are_edited_in_place_or_completed() -> None:
    text, changes = update_text(KUSTOMIZATION, "kustomization.yaml", IMAGE, to("1.3.0"))
    assert text == KUSTOMIZATION.replace('newTag: "1.2.0"', 'newTag: "1.3.0"').replace(
        "  - name: registry.example.com/team/app\n",
        '  - name: registry.example.com/team/app\n    newTag: "1.3.0"\n',
    )
    assert [str(c.old) for c in changes] == [
        "registry.example.com/team/app:1.2.0",
        "registry.example.com/team/app",
    ]


def test_kustomize_digest_is_added_and_dropped() -> None:
    digest = "sha256:" + "c" * 64
    pinned, _ = update_text(KUSTOMIZATION, "kustomization.yaml", IMAGE, to("1.3.0", digest))
    assert f'newTag: "1.3.0"\n    digest: "{digest}"\n' in pinned
    unpinned, _ = update_text(pinned, "kustomization.yaml", IMAGE, to("1.4.0"))
    assert "digest" not in unpinned
    assert unpinned.count('newTag: "1.4.0"') == 2


def test_kustomize_flow_style_entries_are_refused_clearly() -> None:
    text = "kind: Kustomization\nimages: [{name: registry.example.com/team/app, newTag: '1'}]\n"
    with pytest.raises(ManifestError, match="flow style"):
        update_text(text, "kustomization.yaml", IMAGE, to("2"))


def test_invalid_yaml_names_the_file() -> None:
    with pytest.raises(ManifestError, match=r"broken.yaml is not valid YAML"):
        update_text("a: [1,\n", "broken.yaml", IMAGE, to("2"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nginx", ImageRef("nginx")),
        ("nginx:1.27", ImageRef("nginx", "1.27")),
        ("localhost:5000/app:1", ImageRef("localhost:5000/app", "1")),
        ("localhost:5000/app", ImageRef("localhost:5000/app")),
        ("app:1@sha256:abc", ImageRef("app", "1", "sha256:abc")),
        ("app@sha256:abc", ImageRef("app", None, "sha256:abc")),
    ],
)
def test_references_parse(text: str, expected: ImageRef) -> None:
    assert ImageRef.parse(text) == expected
    assert str(expected) == text


def test_docker_hub_names_are_one_repository() -> None:
    names = {"nginx", "docker.io/nginx", "docker.io/library/nginx", "index.docker.io/library/nginx"}
    assert {canonical_repository(n) for n in names} == {"docker.io/library/nginx"}
    assert canonical_repository("team/app") == "docker.io/team/app"
    assert canonical_repository("ghcr.io/Org/app") == "ghcr.io/Org/app"
