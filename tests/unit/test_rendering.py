"""Rendering a commit into desired objects, and reading commits from real Git mirrors.

Most cases build the commit in memory (`Snapshot.from_files`); the Git cases make real
repositories with the git CLI in tmp_path and read them through `gitops_git.Mirror`, and the
Kustomize cases run the real kubectl from the project cache.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gitops_git import Mirror, Remote, RemoteError, Snapshot, protocol, public_url, repository_key
from gitops_git.remotes import environment
from gitops_git_watcher.manifests import RenderingError
from gitops_git_watcher.rendering import (
    Rendered,
    RendererUnavailableError,
    RenderLimits,
    render,
)

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".cache" / "bin" / "kubectl"
LIMITS = RenderLimits()

CONFIGMAP = b"""\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: hello
"""
SERVICE = b"""\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
    - port: 80
"""


def _plain(
    files: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    path: str = "app",
    limits: RenderLimits = LIMITS,
) -> Rendered:
    return render(
        Snapshot.from_files(files, symlinks=symlinks), app_path=path, kind="plain", limits=limits
    )


def _failure(
    files: dict[str, bytes],
    *,
    symlinks: dict[str, str] | None = None,
    path: str = "app",
    limits: RenderLimits = LIMITS,
) -> RenderingError:
    with pytest.raises(RenderingError) as caught:
        _plain(files, symlinks=symlinks, path=path, limits=limits)
    return caught.value


# --- Plain directories -------------------------------------------------------------------------


def test_plain_renders_every_manifest_with_its_file_in_path_order() -> None:
    rendered = _plain(
        {
            "app/b/service.yaml": SERVICE,
            "app/a.yml": CONFIGMAP + b"---\n---\n" + CONFIGMAP.replace(b"settings", b"other"),
            "app/list.json": b'{"apiVersion": "v1", "kind": "List", "items": ['
            b'{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]}',
            "app/README.md": b"not a manifest",
            "app/.github/workflow.yaml": b"on: push",
            "elsewhere/ignored.yaml": CONFIGMAP.replace(b"settings", b"elsewhere"),
        }
    )
    assert [
        (o.source, o.manifest["kind"], o.manifest["metadata"]["name"]) for o in rendered.objects
    ] == [
        ("app/a.yml", "ConfigMap", "settings"),
        ("app/a.yml", "ConfigMap", "other"),
        ("app/b/service.yaml", "Service", "web"),
        ("app/list.json", "Secret", "s"),
    ]
    assert rendered.objects[2].manifest["spec"] == {"ports": [{"port": 80}]}
    assert rendered.digest.startswith("sha256:")


def test_digest_changes_with_content_and_only_with_content() -> None:
    first = _plain({"app/cm.yaml": CONFIGMAP})
    again = _plain({"app/cm.yaml": CONFIGMAP, "app/notes.txt": b"unrelated"})
    changed = _plain({"app/cm.yaml": CONFIGMAP.replace(b"hello", b"bonjour")})
    assert first.digest == again.digest
    assert first.digest != changed.digest


def test_values_are_read_as_kubectl_reads_them() -> None:
    rendered = _plain({"app/cm.yaml": CONFIGMAP + b"  date: 2024-01-02\n  flag: yes\n  num: 010\n"})
    data = rendered.objects[0].manifest["data"]
    assert data["date"] == "2024-01-02"
    assert data["flag"] is True
    assert data["num"] == 8


def test_modest_aliases_and_merge_keys_are_allowed() -> None:
    text = b"""\
apiVersion: v1
kind: ConfigMap
metadata: &meta
  name: merged
  labels: {team: a}
data:
  <<: {a: "1"}
  b: "2"
"""
    rendered = _plain({"app/cm.yaml": text})
    assert rendered.objects[0].manifest["data"] == {"a": "1", "b": "2"}


def test_repository_root_is_a_valid_app_path() -> None:
    rendered = _plain({"cm.yaml": CONFIGMAP}, path=".")
    assert [o.source for o in rendered.objects] == ["cm.yaml"]


# --- Render failures ---------------------------------------------------------------------------


def test_malformed_yaml_names_the_file_and_line() -> None:
    failure = _failure({"app/ok.yaml": CONFIGMAP, "app/broken.yaml": b"kind: [Service\nx: 1\n"})
    assert failure.reason == "MalformedYaml"
    assert failure.source == "app/broken.yaml"
    assert "app/broken.yaml line" in failure.message


def test_alias_bomb_is_refused_before_it_expands() -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        refs = ",".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    failure = _failure({"app/bomb.yaml": "\n".join(lines).encode()})
    assert failure.reason == "YamlAliasBomb"
    assert failure.source == "app/bomb.yaml"
    assert "app/bomb.yaml" in failure.message


def test_duplicate_keys_are_refused_naming_the_key() -> None:
    failure = _failure({"app/dup.yaml": CONFIGMAP + b"metadata:\n  name: again\n"})
    assert failure.reason == "DuplicateKey"
    assert failure.source == "app/dup.yaml"
    assert "'metadata'" in failure.message
    assert "line 7" in failure.message


def test_keys_equal_once_converted_to_strings_are_duplicates() -> None:
    failure = _failure({"app/dup.yaml": CONFIGMAP + b'  1: "a"\n  "1": "b"\n'})
    assert failure.reason == "DuplicateKey"


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        (b"kind: ConfigMap\nmetadata:\n  name: x\n", "apiVersion"),
        (b"apiVersion: v1\nmetadata:\n  name: x\n", "kind"),
        (b"apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", "metadata.name"),
        (b"apiVersion: v1\nkind: ConfigMap\n", "metadata.name"),
    ],
)
def test_documents_that_are_not_kubernetes_objects_are_refused(text: bytes, missing: str) -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP, "app/odd.yaml": CONFIGMAP + b"---\n" + text})
    assert failure.reason == "NotKubernetesObject"
    assert failure.source == "app/odd.yaml"
    assert f"missing {missing}" in failure.message
    assert "document 2" in failure.message


def test_a_half_object_still_names_the_object() -> None:
    failure = _failure({"app/odd.yaml": b"kind: Deployment\nmetadata:\n  name: web\n"})
    assert failure.involved_object is not None
    assert (failure.involved_object.kind, failure.involved_object.name) == ("Deployment", "web")


def test_a_list_document_is_not_an_object() -> None:
    failure = _failure({"app/list.yaml": b"- a\n- b\n"})
    assert failure.reason == "NotKubernetesObject"
    assert "is a list" in failure.message


def test_a_kustomization_under_plain_rendering_says_what_to_do() -> None:
    failure = _failure(
        {
            "app/cm.yaml": CONFIGMAP,
            "app/kustomization.yaml": b"apiVersion: kustomize.config.k8s.io/v1beta1\n"
            b"kind: Kustomization\nmetadata:\n  name: k\n",
        }
    )
    assert failure.reason == "NotKubernetesObject"
    assert "render: kustomize" in failure.message


def test_custom_tags_are_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP + b"  x: !!python/object:os.system x\n"})
    assert failure.reason == "UnsupportedYamlTag"


def test_deep_nesting_is_refused() -> None:
    failure = _failure({"app/deep.yaml": b"[" * 200 + b"]" * 200})
    assert failure.reason == "MalformedYaml"
    assert "nested more than" in failure.message


def test_numbers_python_refuses_to_read_are_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP + b"  n: " + b"9" * 5000 + b"\n"})
    assert failure.reason == "MalformedYaml"


def test_text_that_is_not_utf8_is_refused() -> None:
    failure = _failure({"app/cm.yaml": b"kind: \xff\xfe\n"})
    assert failure.reason == "MalformedYaml"
    assert "not UTF-8" in failure.message


def test_strings_that_json_cannot_carry_are_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP + b'  bad: "\\ud800"\n'})
    assert failure.reason == "MalformedYaml"
    assert "Unicode" in failure.message


def test_a_file_over_the_size_limit_is_refused_before_it_is_read() -> None:
    big = CONFIGMAP + b"  padding: " + b"x" * 2000 + b"\n"
    failure = _failure(
        {"app/cm.yaml": CONFIGMAP, "app/big.yaml": big}, limits=RenderLimits(max_file_bytes=1000)
    )
    assert failure.reason == "FileTooLarge"
    assert failure.source == "app/big.yaml"
    assert "1000" in failure.message


def test_too_many_objects_are_refused() -> None:
    docs = b"---\n".join(CONFIGMAP.replace(b"settings", f"cm{i}".encode()) for i in range(6))
    failure = _failure({"app/many.yaml": docs}, limits=RenderLimits(max_objects=5))
    assert failure.reason == "TooManyObjects"
    assert failure.source == "app/many.yaml"


def test_the_same_object_twice_is_refused_naming_both_files() -> None:
    failure = _failure({"app/a.yaml": CONFIGMAP, "app/b.yaml": CONFIGMAP})
    assert failure.reason == "DuplicateObject"
    assert "app/a.yaml and app/b.yaml" in failure.message
    assert failure.involved_object is not None
    assert failure.involved_object.name == "settings"


def test_a_missing_app_path_is_reported() -> None:
    failure = _failure({"other/cm.yaml": CONFIGMAP})
    assert failure.reason == "AppPathMissing"
    assert "app" in failure.message


def test_an_app_path_without_objects_is_never_an_empty_desired_state() -> None:
    failure = _failure({"app/README.md": b"nothing here"})
    assert failure.reason == "NoObjects"


def test_a_desired_state_too_large_for_one_record_is_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP}, limits=RenderLimits(max_desired_bytes=50))
    assert failure.reason == "DesiredStateTooLarge"


def test_helm_is_not_rendered_here() -> None:
    with pytest.raises(RenderingError) as caught:
        render(
            Snapshot.from_files({"app/cm.yaml": CONFIGMAP}),
            app_path="app",
            kind="helm",
            limits=LIMITS,
        )
    assert caught.value.reason == "UnsupportedRenderKind"


# --- Symlinks ----------------------------------------------------------------------------------


def test_a_symlink_inside_the_app_path_is_followed_and_named_by_its_own_path() -> None:
    rendered = _plain(
        {"app/.templates/cm.yaml": CONFIGMAP}, symlinks={"app/link.yaml": ".templates/cm.yaml"}
    )
    assert [o.source for o in rendered.objects] == ["app/link.yaml"]
    assert rendered.objects[0].manifest["metadata"]["name"] == "settings"


def test_a_symlink_out_of_the_repository_is_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP}, symlinks={"app/passwd.yaml": "../../etc/passwd"})
    assert failure.reason == "SymlinkOutsideRepo"
    assert failure.source == "app/passwd.yaml"
    assert "../../etc/passwd" in failure.message


def test_an_absolute_symlink_is_refused() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP}, symlinks={"app/passwd.yaml": "/etc/passwd"})
    assert failure.reason == "SymlinkOutsideRepo"
    assert "/etc/passwd" in failure.message


def test_a_symlink_out_of_the_app_path_is_refused() -> None:
    failure = _failure(
        {"app/cm.yaml": CONFIGMAP, "secrets/token.yaml": CONFIGMAP},
        symlinks={"app/token.yaml": "../secrets/token.yaml"},
    )
    assert failure.reason == "SymlinkOutsideAppPath"
    assert failure.source == "app/token.yaml"


def test_symlinks_are_resolved_as_the_filesystem_would_not_by_their_text() -> None:
    # `app/x/y/up` points two levels up to `app`; `app/x/y/escape.yaml` then goes three levels
    # above that. Read as text it stays inside `app/x/y`; followed for real it leaves the repo.
    failure = _failure(
        {"app/cm.yaml": CONFIGMAP},
        symlinks={"app/x/y/up": "../..", "app/x/y/escape.yaml": "up/../../../etc/passwd"},
    )
    assert failure.reason == "SymlinkOutsideRepo"


def test_looping_symlinks_are_refused() -> None:
    failure = _failure(
        {"app/cm.yaml": CONFIGMAP}, symlinks={"app/a.yaml": "b.yaml", "app/b.yaml": "a.yaml"}
    )
    assert failure.reason == "SymlinkLoop"


def test_a_symlink_with_an_enormous_target_is_not_read() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP}, symlinks={"app/huge.yaml": "a/" * 5000})
    assert failure.reason == "UnsafePath"
    assert failure.source == "app/huge.yaml"


def test_a_broken_symlink_is_reported() -> None:
    failure = _failure({"app/cm.yaml": CONFIGMAP}, symlinks={"app/gone.yaml": "missing.yaml"})
    assert failure.reason == "BrokenSymlink"
    assert failure.source == "app/gone.yaml"


# --- Kustomize ---------------------------------------------------------------------------------


@pytest.fixture
def kubectl() -> str:
    assert KUBECTL.is_file(), f"{KUBECTL} is missing: run `make install` to build it"
    return str(KUBECTL)


BASE = {
    "base/kustomization.yaml": b"resources: [configmap.yaml]\n",
    "base/configmap.yaml": CONFIGMAP,
}


def _kustomize(
    files: dict[str, bytes],
    kubectl: str,
    *,
    symlinks: dict[str, str] | None = None,
    path: str = "overlays/staging",
) -> Rendered:
    return render(
        Snapshot.from_files(files, symlinks=symlinks),
        app_path=path,
        kind="kustomize",
        limits=LIMITS,
        kubectl=kubectl,
    )


def _kustomize_failure(
    files: dict[str, bytes], kubectl: str, *, symlinks: dict[str, str] | None = None
) -> RenderingError:
    with pytest.raises(RenderingError) as caught:
        _kustomize(files, kubectl, symlinks=symlinks)
    return caught.value


def test_kustomize_renders_an_overlay_and_names_each_objects_file(kubectl: str) -> None:
    rendered = _kustomize(
        {
            **BASE,
            "overlays/staging/kustomization.yaml": b"resources: [../../base, service.yaml]\n"
            b"namePrefix: staging-\n"
            b"configMapGenerator:\n"
            b"- name: generated\n  literals: [a=b]\n",
            "overlays/staging/service.yaml": SERVICE,
        },
        kubectl,
    )
    found = {(o.manifest["kind"], o.manifest["metadata"]["name"]): o for o in rendered.objects}
    assert set(found) >= {("ConfigMap", "staging-settings"), ("Service", "staging-web")}
    assert found["ConfigMap", "staging-settings"].source == "base/configmap.yaml"
    assert found["Service", "staging-web"].source == "overlays/staging/service.yaml"
    generated = next(o for o in rendered.objects if "generated" in o.manifest["metadata"]["name"])
    assert generated.source == "overlays/staging/kustomization.yaml"
    assert all("annotations" not in o.manifest["metadata"] for o in rendered.objects)


def test_kustomize_keeps_origin_annotations_it_was_asked_for(kubectl: str) -> None:
    rendered = _kustomize(
        {
            **BASE,
            "overlays/staging/kustomization.yaml": b"resources: [../../base]\n"
            b"buildMetadata: [originAnnotations]\n",
        },
        kubectl,
    )
    annotations = rendered.objects[0].manifest["metadata"]["annotations"]
    assert "config.kubernetes.io/origin" in annotations


def test_kustomize_follows_symlinks_inside_the_repository(kubectl: str) -> None:
    rendered = _kustomize(
        {**BASE, "overlays/staging/kustomization.yaml": b"resources: [cm.yaml]\n"},
        kubectl,
        symlinks={"overlays/staging/cm.yaml": "../../base/configmap.yaml"},
    )
    assert rendered.objects[0].manifest["metadata"]["name"] == "settings"


def test_kustomize_refuses_a_symlink_out_of_the_repository(kubectl: str) -> None:
    failure = _kustomize_failure(
        {**BASE, "overlays/staging/kustomization.yaml": b"resources: [../../base]\n"},
        kubectl,
        symlinks={"base/leak.yaml": "../../../../etc/passwd"},
    )
    assert failure.reason == "SymlinkOutsideRepo"
    assert failure.source == "base/leak.yaml"


def test_kustomize_refuses_remote_resources(kubectl: str) -> None:
    failure = _kustomize_failure(
        {
            "overlays/staging/kustomization.yaml": b"resources:\n- https://github.com/example/repo//deploy?ref=main\n",
        },
        kubectl,
    )
    assert failure.reason == "KustomizeRemoteResource"
    assert failure.source == "overlays/staging/kustomization.yaml"


def test_kustomize_refuses_resources_outside_the_repository(kubectl: str) -> None:
    failure = _kustomize_failure(
        {
            "overlays/staging/kustomization.yaml": b"resources: [../../../elsewhere]\n",
        },
        kubectl,
    )
    assert failure.reason == "KustomizeOutsideRepo"


def test_kustomize_refuses_paths_no_filesystem_can_hold(kubectl: str) -> None:
    failure = _kustomize_failure(
        {"overlays/staging/kustomization.yaml": b'resources: ["bad\\0name"]\n'}, kubectl
    )
    assert failure.reason == "UnsafePath"


def test_kustomize_errors_name_the_file_without_temporary_paths(kubectl: str) -> None:
    failure = _kustomize_failure(
        {
            **BASE,
            "overlays/staging/kustomization.yaml": b"resources: [../../base, missing.yaml]\n",
        },
        kubectl,
    )
    assert failure.reason == "KustomizeFailed"
    assert failure.source == "overlays/staging/kustomization.yaml"
    assert "missing.yaml" in failure.message
    assert "gitops-render-" not in failure.message


def test_kustomize_reports_malformed_yaml_in_a_kustomization(kubectl: str) -> None:
    failure = _kustomize_failure(
        {
            **BASE,
            "overlays/staging/kustomization.yaml": b"resources: [../../base\n",
        },
        kubectl,
    )
    assert failure.reason == "MalformedYaml"
    assert failure.source == "overlays/staging/kustomization.yaml"


def test_kustomize_without_a_kustomization_says_so(kubectl: str) -> None:
    failure = _kustomize_failure({"overlays/staging/cm.yaml": CONFIGMAP}, kubectl)
    assert failure.reason == "KustomizationMissing"


def test_a_missing_kubectl_is_not_blamed_on_the_commit(tmp_path: Path) -> None:
    with pytest.raises(RendererUnavailableError, match="GITOPS_KUBECTL"):
        _kustomize(
            {**BASE, "overlays/staging/kustomization.yaml": b"resources: [../../base]\n"},
            str(tmp_path / "no-kubectl"),
        )


# --- Remotes -----------------------------------------------------------------------------------


def test_remote_locations_are_classified_and_ext_is_refused() -> None:
    assert protocol("https://example.com/a.git") == "https"
    assert protocol("git@example.com:org/a.git") == "ssh"
    assert protocol("ssh://git@example.com/org/a") == "ssh"
    assert protocol("file:///srv/a.git") == "file"
    assert protocol("/srv/a.git") == "file"
    for hostile in ("ext::sh -c touch% /tmp/pwned", "fd::17", "-uhelp", "relative/path"):
        with pytest.raises(RemoteError):
            Remote(hostile)


def test_public_urls_drop_user_information() -> None:
    assert public_url("https://token@example.com/org/a.git") == "https://example.com/org/a.git"
    assert public_url("https://user@example.com:8443/a") == "https://example.com:8443/a"
    assert public_url("/srv/a.git") == "/srv/a.git"


def test_one_repository_has_one_key_however_it_is_written() -> None:
    keys = {
        repository_key(url)
        for url in (
            "https://github.com/Org/App.git",
            "https://github.com/org/app",
            "git@github.com:org/app.git",
            "ssh://git@github.com:22/org/app",
            "git://github.com/org/app.git",
        )
    }
    assert keys == {"github.com/org/app"}
    assert repository_key("file:///srv/repos/app.git") == repository_key("/srv/repos/app.git")


def test_git_runs_hardened_and_credentials_travel_only_in_the_environment() -> None:
    remote = Remote("https://git.example.com/org/app.git", username="bot", password="s3cret")
    assert "s3cret" not in repr(remote)
    assert "s3cret" not in str(remote)
    env = environment(remote)
    config = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(int(env["GIT_CONFIG_COUNT"]))
    }
    assert config["core.hooksPath"] == "/dev/null"
    assert config["protocol.allow"] == "never"
    assert config["protocol.https.allow"] == "always"
    assert env["GIT_ALLOW_PROTOCOL"] == "https"
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    helper = config["credential.https://git.example.com.helper"]
    assert "s3cret" not in helper
    assert env["GITOPS_GIT_PASSWORD"] == "s3cret"
    ssh = environment(Remote("git@example.com:org/app.git", ssh_key_file=Path("/keys/id")))
    assert ssh["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes -o IdentitiesOnly=yes -i /keys/id"


# --- Real Git ----------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    (work / "app" / ".templates").mkdir(parents=True)
    (work / "app" / "configmap.yaml").write_bytes(CONFIGMAP)
    (work / "app" / ".templates" / "service.yaml").write_bytes(SERVICE)
    (work / "app" / "service.yaml").symlink_to(".templates/service.yaml")
    _git("init", "-q", "-b", "staging", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    return work


def test_a_commit_is_read_from_the_mirror_without_a_work_tree(origin: Path, tmp_path: Path) -> None:
    first = _git("rev-parse", "HEAD", cwd=origin)
    # A submodule entry (a commit of another repository): listed, never followed.
    _git("update-index", "--add", "--cacheinfo", f"160000,{first},app/vendored.yaml", cwd=origin)
    _git("commit", "-q", "-m", "vendor a submodule", cwd=origin)
    second = _git("rev-parse", "HEAD", cwd=origin)
    with Mirror(Remote(f"file://{origin}"), tmp_path / "cache") as mirror:
        assert mirror.fetch() == {"staging": second}
        snapshot = mirror.snapshot(second)
        info = mirror.commit(second)
        assert mirror.is_ancestor(first, second)
        assert not mirror.is_ancestor(second, first)
        assert snapshot.entries["app/service.yaml"].kind == "symlink"
        assert snapshot.read("app/service.yaml") == b".templates/service.yaml"
        assert snapshot.entries["app/vendored.yaml"].kind == "submodule"
        rendered = render(snapshot, app_path="app", kind="plain", limits=LIMITS)
        at_first = render(mirror.snapshot(first), app_path="app", kind="plain", limits=LIMITS)
    assert [(o.source, o.manifest["kind"]) for o in rendered.objects] == [
        ("app/configmap.yaml", "ConfigMap"),
        ("app/service.yaml", "Service"),
    ]
    assert at_first.digest == rendered.digest
    assert info.summary == "vendor a submodule"
    assert info.author == "test <test@example.com>"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [mirror.path.name]
    assert not (mirror.path / "app").exists()


def test_force_push_and_deleted_branches_show_in_the_mirror(origin: Path, tmp_path: Path) -> None:
    first = _git("rev-parse", "HEAD", cwd=origin)
    _git("branch", "production", cwd=origin)
    with Mirror(Remote(str(origin)), tmp_path / "cache") as mirror:
        assert mirror.fetch() == {"staging": first, "production": first}
        _git("commit", "-q", "--amend", "-m", "rewritten", cwd=origin)
        rewritten = _git("rev-parse", "HEAD", cwd=origin)
        _git("branch", "-D", "production", cwd=origin)
        assert mirror.fetch() == {"staging": rewritten}
        assert not mirror.is_ancestor(first, rewritten)
        assert not mirror.is_ancestor("0" * 40, rewritten)


def test_hooks_of_the_mirror_never_run(origin: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with Mirror(Remote(str(origin)), cache) as mirror:
        mirror.fetch()
        marker = tmp_path / "hook-ran"
        hooks = mirror.path / "hooks"
        hooks.mkdir(exist_ok=True)
        for name in ("reference-transaction", "post-fetch", "pre-auto-gc"):
            hook = hooks / name
            hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
            hook.chmod(0o755)
        _git("commit", "-q", "--allow-empty", "-m", "more", cwd=origin)
        mirror.fetch()
    assert not marker.exists()


def test_commit_ids_from_events_cannot_become_options(origin: Path, tmp_path: Path) -> None:
    from gitops_git import GitError

    with Mirror(Remote(str(origin)), tmp_path / "cache") as mirror:
        mirror.fetch()
        with pytest.raises(GitError, match="not a full commit id"):
            mirror.snapshot("--output=/tmp/x")
