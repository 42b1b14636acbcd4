"""From one commit to the desired objects of one app: plain YAML directories and Kustomize.

The commit is read from Git's object database (`gitops_git.Snapshot`), never checked out, and
everything in it is treated as hostile: symlinks are resolved here, inside the tree, and may
not lead outside the repository (nor, for plain directories, outside the app path); files and
renders have size limits; YAML is checked before it is built (`manifests`). Kustomize runs as
`kubectl kustomize` on a copy of only the directories it may read, with symlinks already
replaced by what they point at, no network (remote bases are refused), no plugins and no Helm.

A render either returns every object with the file it came from and a digest of the whole
set, or raises `RenderingError` naming the file (and object) at fault; never a partial set.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from gitops_events import DesiredObject
from gitops_git import EntryKind, Snapshot
from gitops_git_watcher import manifests
from gitops_git_watcher.manifests import RenderingError

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_MAX_SYMLINK_HOPS = 40
_MAX_SYMLINK_TARGET = 4096  # PATH_MAX: a longer target is no path, only a way to use memory
_MAX_DIRECTORY_LINK_DEPTH = 8
_ORIGIN_ANNOTATION = "config.kubernetes.io/origin"
_REMOTE_PREFIXES = ("git@", "github.com/", "gitlab.com/", "bitbucket.org/")
_MAX_MESSAGE = 2000


@dataclass(frozen=True)
class RenderLimits:
    """What one render may read and produce; anything larger is refused with a clear reason."""

    max_file_bytes: int = 1024 * 1024
    max_total_bytes: int = 64 * 1024 * 1024
    max_objects: int = 1000
    max_alias_nodes: int = 100_000
    # Kafka's default record limit is 1 MiB; a desired state must fit in one record.
    max_desired_bytes: int = 900 * 1024
    timeout_seconds: float = 60.0


@dataclass(frozen=True)
class Rendered:
    """The objects of one app at one commit, and the digest that identifies the set."""

    objects: list[DesiredObject]
    digest: str


class RendererUnavailableError(RuntimeError):
    """The renderer itself (kubectl) cannot run: an operator problem, not the commit's."""


def render(
    snapshot: Snapshot,
    *,
    app_path: str,
    kind: str,
    limits: RenderLimits,
    kubectl: str = "kubectl",
) -> Rendered:
    """Render the app at `app_path` of `snapshot` the way `kind` says (plain or kustomize).

    Raises `RenderingError` when the commit cannot be rendered, `RendererUnavailableError` when
    kubectl cannot be run.
    """
    root = _normalise(app_path)
    if kind == "plain":
        objects = _render_plain(snapshot, root, limits)
    elif kind == "kustomize":
        objects = _render_kustomize(snapshot, root, limits, kubectl)
    else:
        raise RenderingError(
            "UnsupportedRenderKind",
            f"render: {kind} is not supported by git-watcher; use plain or kustomize",
        )
    if not objects:
        raise RenderingError(
            "NoObjects",
            f"{root or 'the repository root'} renders no objects; an empty desired state would "
            "prune everything, so it is refused (remove the environment from gitops.yaml instead)",
            source=root or None,
        )
    if len(objects) > limits.max_objects:
        raise _too_many(root, limits, objects[limits.max_objects].source)
    _check_unique(objects)
    canonical = canonical_json(objects)
    if len(canonical) > limits.max_desired_bytes:
        raise RenderingError(
            "DesiredStateTooLarge",
            f"the rendered objects take {len(canonical)} bytes, more than the limit of "
            f"{limits.max_desired_bytes} for one desired-state event",
            source=root or None,
        )
    return Rendered(objects=objects, digest="sha256:" + hashlib.sha256(canonical).hexdigest())


def canonical_json(objects: Iterable[DesiredObject]) -> bytes:
    """The objects as canonical JSON (sorted keys, no spaces): what the digest is taken of."""
    return json.dumps(
        [{"source": obj.source, "manifest": obj.manifest} for obj in objects],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


# --- Paths and symlinks ------------------------------------------------------------------------


def _normalise(app_path: str) -> str:
    """The app path as the tree names it: no leading './', '' for the repository root."""
    path = posixpath.normpath(app_path.strip("/") or ".")
    return "" if path == "." else path


def _inside(path: str, root: str) -> bool:
    return not root or path == root or path.startswith(root + "/")


def _check_path(path: str) -> None:
    """Refuse tree paths that could not come from a sane commit (Git's fsck rejects them too)."""
    parts = path.split("/")
    if "\0" in path or any(part in ("", ".", "..") for part in parts):
        raise RenderingError("UnsafePath", f"{path!r} is not a safe path inside a repository")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise RenderingError(
            "UnsafePath", f"{path.encode('utf-8', 'surrogateescape')!r} is not a UTF-8 path"
        ) from None


def _resolve(snapshot: Snapshot, path: str) -> str:
    """Follow symlinks in every component of `path`, inside the tree; return the real path.

    Raises `RenderingError` naming the symlink when one leads outside the repository, or when
    links loop. The returned path may not exist (a broken symlink); '' is the repository root.
    """
    pending = path.split("/")
    resolved: list[str] = []
    hops = 0
    link, target = path, ""
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise RenderingError(
                    "SymlinkOutsideRepo",
                    f"{link} is a symlink to {target!r}, which leads outside the repository",
                    source=link,
                )
            resolved.pop()
            continue
        candidate = "/".join([*resolved, part])
        entry = snapshot.entries.get(candidate)
        if entry is None or entry.kind is not EntryKind.SYMLINK:
            resolved.append(part)
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS:
            raise RenderingError(
                "SymlinkLoop",
                f"{path}: symlinks loop (more than {_MAX_SYMLINK_HOPS} hops)",
                source=path,
            )
        if entry.size > _MAX_SYMLINK_TARGET:
            raise RenderingError(
                "UnsafePath",
                f"{candidate} is a symlink whose target is {entry.size} bytes long",
                source=candidate,
            )
        link, target = candidate, snapshot.read(candidate).decode("utf-8", "replace")
        if target.startswith("/"):
            raise RenderingError(
                "SymlinkOutsideRepo",
                f"{link} is a symlink to the absolute path {target!r}, outside the repository",
                source=link,
            )
        pending = target.split("/") + pending
    return "/".join(resolved)


def _resolve_file(snapshot: Snapshot, path: str, root: str, limits: RenderLimits) -> bytes:
    """The content of the file at `path` (following symlinks, which must stay inside `root`)."""
    real = path
    entry = snapshot.entries[path]
    if entry.kind is EntryKind.SYMLINK:
        real = _resolve(snapshot, path)
        target = snapshot.read(path).decode("utf-8", "replace")
        if not _inside(real, root):
            raise RenderingError(
                "SymlinkOutsideAppPath",
                f"{path} is a symlink to {target!r}, outside the app path {root}",
                source=path,
            )
        resolved = snapshot.entries.get(real)
        if resolved is None:
            raise RenderingError(
                "BrokenSymlink",
                f"{path} is a symlink to {target!r}, which does not exist",
                source=path,
            )
        if resolved.kind is not EntryKind.FILE:
            raise RenderingError(
                "SymlinkToDirectory",
                f"{path} is a symlink to {target!r}, which is a {resolved.kind}, not a file",
                source=path,
            )
        entry = resolved
    if entry.size > limits.max_file_bytes:
        raise RenderingError(
            "FileTooLarge",
            f"{path} is {entry.size} bytes, more than the limit of {limits.max_file_bytes}",
            source=path,
        )
    return snapshot.read(real)


# --- Plain directories -------------------------------------------------------------------------


def _check_directory(snapshot: Snapshot, root: str) -> None:
    if not root:
        return
    _check_path(root)
    entry = snapshot.entries.get(root)
    if entry is None:
        raise RenderingError(
            "AppPathMissing",
            f"the app path {root} does not exist at commit {snapshot.commit}",
            source=root,
        )
    if entry.kind is not EntryKind.DIRECTORY:
        raise RenderingError(
            "AppPathMissing",
            f"the app path {root} is a {entry.kind}, not a directory, at commit {snapshot.commit}",
            source=root,
        )


def _is_hidden(path: str, root: str) -> bool:
    relative = path[len(root) + 1 :] if root else path
    return any(part.startswith(".") for part in relative.split("/"))


def _render_plain(snapshot: Snapshot, root: str, limits: RenderLimits) -> list[DesiredObject]:
    _check_directory(snapshot, root)
    paths = sorted(
        path
        for path, entry in snapshot.entries.items()
        if entry.kind in (EntryKind.FILE, EntryKind.SYMLINK)
        and _inside(path, root)
        and path != root
        and path.endswith(MANIFEST_SUFFIXES)
        and not _is_hidden(path, root)
    )
    objects: list[DesiredObject] = []
    total = 0
    for path in paths:
        _check_path(path)
        data = _resolve_file(snapshot, path, root, limits)
        total += len(data)
        if total > limits.max_total_bytes:
            raise RenderingError(
                "RenderTooLarge",
                f"the files of {root or 'the repository'} exceed {limits.max_total_bytes} bytes",
                source=path,
            )
        for manifest in manifests.load_objects(data, path, max_alias_nodes=limits.max_alias_nodes):
            _refuse_kustomization(manifest, path)
            objects.append(DesiredObject(source=path, manifest=manifest))
            if len(objects) > limits.max_objects:
                raise _too_many(root, limits, path)
    return objects


def _too_many(root: str, limits: RenderLimits, source: str) -> RenderingError:
    return RenderingError(
        "TooManyObjects",
        f"{root or 'the repository root'} renders more than the limit of {limits.max_objects} "
        f"objects; object {limits.max_objects + 1} is in {source}",
        source=source,
    )


def _refuse_kustomization(manifest: dict[str, Any], path: str) -> None:
    if str(manifest.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
        raise RenderingError(
            "NotKubernetesObject",
            f"{path} is a Kustomization, which plain rendering does not apply; set "
            "render: kustomize for this app in gitops.yaml",
            source=path,
        )


def _check_unique(objects: list[DesiredObject]) -> None:
    seen: dict[tuple[str, str, str | None, str], str] = {}
    for obj in objects:
        ref = manifests.object_ref(obj.manifest)
        key = (ref.api_version.rpartition("/")[0], ref.kind, ref.namespace, ref.name)
        first = seen.get(key)
        if first is not None:
            where = f"twice in {first}" if first == obj.source else f"in {first} and {obj.source}"
            raise RenderingError(
                "DuplicateObject",
                f"{ref} is defined {where}; keep one",
                source=obj.source,
                involved_object=ref,
            )
        seen[key] = obj.source


# --- Kustomize ---------------------------------------------------------------------------------


def _render_kustomize(
    snapshot: Snapshot, root: str, limits: RenderLimits, kubectl: str
) -> list[DesiredObject]:
    _check_directory(snapshot, root)
    top = _kustomization_in(snapshot, root)
    if top is None:
        raise RenderingError(
            "KustomizationMissing",
            f"{root or 'the repository root'} has no {' or '.join(KUSTOMIZATION_FILES)}; add "
            "one, or set render: plain for this app in gitops.yaml",
            source=root or None,
        )
    roots, top_document = _kustomize_roots(snapshot, root, top, limits)
    build_metadata = top_document.get("buildMetadata")
    build_metadata = list(build_metadata) if isinstance(build_metadata, list) else []
    # Origin annotations say which file each object came from; added only for the render and
    # taken off again unless the kustomization asked for them itself.
    ours = "originAnnotations" not in build_metadata
    with tempfile.TemporaryDirectory(prefix="gitops-render-") as scratch:
        base = Path(scratch)
        copier = _Copier(snapshot, base, limits)
        for directory in roots:
            copier.copy(directory)
        if ours:
            document = {**top_document, "buildMetadata": [*build_metadata, "originAnnotations"]}
            (base / top).write_text(json.dumps(document))
        output = _run_kustomize(kubectl, base, root, top, limits, copier.skipped)
    objects: list[DesiredObject] = []
    for manifest in manifests.load_objects(output, top, max_alias_nodes=limits.max_alias_nodes):
        objects.append(
            DesiredObject(source=_origin(manifest, root, top, strip=ours), manifest=manifest)
        )
    return objects


def _kustomization_in(snapshot: Snapshot, directory: str) -> str | None:
    for name in KUSTOMIZATION_FILES:
        path = f"{directory}/{name}" if directory else name
        entry = snapshot.entries.get(path)
        if entry is not None and entry.kind in (EntryKind.FILE, EntryKind.SYMLINK):
            return path
    return None


def _read_kustomization(snapshot: Snapshot, path: str, limits: RenderLimits) -> dict[str, Any]:
    data = _resolve_file(snapshot, path, "", limits)
    documents = manifests.load_documents(data, path, max_alias_nodes=limits.max_alias_nodes)
    if len(documents) != 1 or not isinstance(documents[0][1], dict):
        raise RenderingError(
            "MalformedKustomization", f"{path} must hold exactly one YAML mapping", source=path
        )
    document: dict[str, Any] = documents[0][1]
    return document


def _kustomize_roots(
    snapshot: Snapshot, root: str, top: str, limits: RenderLimits
) -> tuple[list[str], dict[str, Any]]:
    """The directories kustomize may read for this app (ancestors first), and its kustomization.

    Follows `resources`, `bases` and `components` from kustomization to kustomization; refuses
    remote ones and any that lead outside the repository.
    """
    top_document: dict[str, Any] = {}
    roots: set[str] = set()
    queue = [root]
    while queue:
        directory = queue.pop()
        if directory in roots:
            continue
        if directory:
            _check_path(directory)
        real = _resolve(snapshot, directory) if directory else ""
        if real and (entry := snapshot.entries.get(real)) is not None:
            if entry.kind is not EntryKind.DIRECTORY:
                continue
        elif real:
            continue
        roots.add(directory)
        kustomization = _kustomization_in(snapshot, real)
        if kustomization is None:
            continue
        document = _read_kustomization(snapshot, kustomization, limits)
        if directory == root:
            top_document = document
        source = top if directory == root else kustomization
        for field in ("resources", "bases", "components"):
            entries = document.get(field) or []
            if not isinstance(entries, list):
                raise RenderingError(
                    "MalformedKustomization", f"{source}: {field} must be a list", source=source
                )
            for item in entries:
                if isinstance(item, str):
                    queue.append(_reference(directory, item, source))
    ordered = sorted(roots, key=lambda path: (path.count("/") if path else -1, path))
    return ordered, top_document


def _reference(directory: str, item: str, source: str) -> str:
    if "://" in item or item.startswith(_REMOTE_PREFIXES) or "?ref=" in item:
        raise RenderingError(
            "KustomizeRemoteResource",
            f"{source} refers to the remote resource {item!r}; git-watcher renders only what is "
            "in the repository (vendor it, or point at a directory of this repository)",
            source=source,
        )
    joined = posixpath.normpath(posixpath.join(directory, item))
    if item.startswith("/") or joined == ".." or joined.startswith("../"):
        raise RenderingError(
            "KustomizeOutsideRepo",
            f"{source} refers to {item!r}, which is outside the repository",
            source=source,
        )
    return "" if joined == "." else joined


class _Copier:
    """Writes directories of a snapshot to disk with every symlink replaced by its target."""

    def __init__(self, snapshot: Snapshot, base: Path, limits: RenderLimits) -> None:
        self._snapshot = snapshot
        self._base = base
        self._limits = limits
        self._total = 0
        self._done: list[str] = []
        self.skipped: list[str] = []
        self._children: dict[str, list[str]] = {}
        for path in snapshot.entries:
            self._children.setdefault(path.rpartition("/")[0], []).append(path)

    def copy(self, directory: str) -> None:
        """Copy `directory` (as kustomize will name it) unless an ancestor was copied already."""
        if any(
            not done or directory == done or directory.startswith(done + "/") for done in self._done
        ):
            return
        self._done.append(directory)
        real = _resolve(self._snapshot, directory) if directory else ""
        self._copy_tree(real, directory, depth=0)

    def _copy_tree(self, real: str, at: str, depth: int) -> None:
        (self._base / at).mkdir(parents=True, exist_ok=True)
        for child in sorted(self._children.get(real, [])):
            _check_path(child)
            name = child.rpartition("/")[2]
            child_at = f"{at}/{name}" if at else name
            entry = self._snapshot.entries[child]
            if entry.kind is EntryKind.FILE:
                self._write(child, child_at)
            elif entry.kind is EntryKind.DIRECTORY:
                self._copy_tree(child, child_at, depth)
            elif entry.kind is EntryKind.SYMLINK:
                self._copy_link(child, child_at, depth)

    def _copy_link(self, link: str, at: str, depth: int) -> None:
        target = _resolve(self._snapshot, link)
        entry = self._snapshot.entries.get(target)
        if entry is None or not target:
            return  # broken: kustomize reports the missing file if it needs it
        if entry.kind is EntryKind.FILE:
            self._write(target, at)
        elif entry.kind is EntryKind.DIRECTORY:
            if depth >= _MAX_DIRECTORY_LINK_DEPTH:
                raise RenderingError(
                    "SymlinkLoop",
                    f"{link}: directory symlinks nest more than {_MAX_DIRECTORY_LINK_DEPTH} deep",
                    source=link,
                )
            self._copy_tree(target, at, depth + 1)

    def _write(self, real: str, at: str) -> None:
        entry = self._snapshot.entries[real]
        if entry.size > self._limits.max_file_bytes:
            self.skipped.append(at)
            return
        self._total += entry.size
        if self._total > self._limits.max_total_bytes:
            raise RenderingError(
                "RenderTooLarge",
                f"the files kustomize may read exceed {self._limits.max_total_bytes} bytes",
                source=at,
            )
        (self._base / at).write_bytes(self._snapshot.read(real))


def _kustomize_environment(base: Path) -> dict[str, str]:
    """No network and no Git for kustomize: remote bases fail fast instead of being fetched."""
    unreachable = "http://127.0.0.1:9"
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(base),
        "KUBECONFIG": "/dev/null",
        "HTTP_PROXY": unreachable,
        "HTTPS_PROXY": unreachable,
        "http_proxy": unreachable,
        "https_proxy": unreachable,
        "NO_PROXY": "",
        "no_proxy": "",
        "GIT_ALLOW_PROTOCOL": "none",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
    }


def _run_kustomize(
    kubectl: str, base: Path, root: str, top: str, limits: RenderLimits, skipped: list[str]
) -> bytes:
    executable = shutil.which(kubectl)
    if executable is None:
        raise RendererUnavailableError(
            f"kubectl not found at {kubectl!r}; set GITOPS_KUBECTL to the kubectl binary"
        )
    directory = base / root if root else base
    try:
        completed = subprocess.run(
            [executable, "kustomize", str(directory)],
            cwd=base,
            env=_kustomize_environment(base),
            capture_output=True,
            timeout=limits.timeout_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RenderingError(
            "RenderTimeout",
            f"kustomize build of {root or 'the repository root'} took longer than "
            f"{limits.timeout_seconds:g} s",
            source=top,
        ) from None
    except OSError as exc:
        raise RendererUnavailableError(f"cannot run {executable}: {exc.strerror or exc}") from None
    if completed.returncode != 0:
        message = completed.stderr.decode("utf-8", "replace")
        message = message.replace(f"{base}/", "").replace(str(base), ".").strip()
        message = message.removeprefix("error: ")[:_MAX_MESSAGE]
        for path in skipped:
            if path in message:
                raise RenderingError(
                    "FileTooLarge",
                    f"{path} is larger than the limit of {limits.max_file_bytes} bytes "
                    f"(kustomize: {message})",
                    source=path,
                )
        raise RenderingError(
            "KustomizeFailed",
            f"kustomize build of {root or 'the repository root'} failed: {message}",
            source=top,
        )
    if len(completed.stdout) > limits.max_total_bytes:
        raise RenderingError(
            "RenderTooLarge",
            f"kustomize output is larger than {limits.max_total_bytes} bytes",
            source=top,
        )
    return completed.stdout


def _origin(manifest: dict[str, Any], root: str, top: str, *, strip: bool) -> str:
    """The repository file an object came from, from kustomize's origin annotation."""
    metadata = manifest.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(metadata, dict) or not isinstance(annotations, dict):
        return top
    text = annotations.get(_ORIGIN_ANNOTATION)
    if strip:
        annotations.pop(_ORIGIN_ANNOTATION, None)
        if not annotations:
            del metadata["annotations"]
    if not isinstance(text, str):
        return top
    try:
        origin = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return top
    if not isinstance(origin, dict) or "repo" in origin:
        return top
    relative = origin.get("path") or origin.get("configuredIn")
    if not isinstance(relative, str) or relative.startswith("/"):
        return top
    source = posixpath.normpath(posixpath.join(root, relative))
    if source == ".." or source.startswith("../"):
        return top
    return source
