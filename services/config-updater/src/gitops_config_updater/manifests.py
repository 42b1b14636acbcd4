"""Finding and rewriting image references in manifests without disturbing anything else.

People review every commit the updater makes, so a commit must change the image reference and
nothing more: not a comment, not a quote, not the indentation or the key order. The YAML is
parsed with ruamel.yaml's round-trip loader only to *locate* each reference (its line and
column in the file); the edit itself splices the new value into the original text at that
spot, keeping the quoting. Everything around it stays byte for byte.

References are found in the pod templates of Deployments, StatefulSets, DaemonSets,
ReplicaSets, Jobs and CronJobs (and bare Pods), containers and initContainers alike, and in the
`images:` entries of a Kustomization (`newName`/`newTag`/`digest`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

_POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
    "Pod": ("spec",),
}
_CONTAINER_LISTS = ("initContainers", "containers")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_PLAIN_END_RE = re.compile(r"\s+#|\s*[,\]}]|\s*$")


class ManifestError(ValueError):
    """A manifest that cannot be edited safely; the message names the file and the reason."""


@dataclass(frozen=True)
class ImageRef:
    """An image reference split into repository, tag and digest (`repo:tag@sha256:...`)."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split a reference as Kubernetes reads it."""
        rest, _, digest = text.strip().partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            return cls(rest[:colon], rest[colon + 1 :] or None, digest or None)
        return cls(rest, None, digest or None)

    def __str__(self) -> str:
        tag = f":{self.tag}" if self.tag else ""
        digest = f"@{self.digest}" if self.digest else ""
        return f"{self.repository}{tag}{digest}"


def canonical_repository(name: str) -> str:
    """One spelling per repository: Docker Hub's implicit registry and `library/` made explicit."""
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        name = f"docker.io/{name}"
    registry, _, path = name.partition("/")
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = "docker.io"
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return f"{registry.lower()}/{path}"


def is_digest(value: str) -> bool:
    """Whether `value` looks like a content digest (`sha256:<hex>`)."""
    return bool(_DIGEST_RE.fullmatch(value))


@dataclass(frozen=True)
class Change:
    """One reference the updater rewrote: where, and from what to what."""

    where: str
    old: ImageRef
    new: ImageRef


Decide = Callable[[ImageRef], ImageRef | None]
"""Given a reference to the image in Git, the reference to write instead (None: keep it)."""


@dataclass(frozen=True)
class _Splice:
    line: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Insert:
    after_line: int
    text: str


@dataclass(frozen=True)
class _Delete:
    line: int


_Edit = _Splice | _Insert | _Delete


def update_text(text: str, source: str, image: str, decide: Decide) -> tuple[str, list[Change]]:
    """Rewrite the references to `image` in one YAML file as `decide` says.

    Returns the new text (the same text when nothing changed) and what changed. Raises
    `ManifestError` when the file is not YAML or a reference cannot be edited in place.
    """
    try:
        documents = list(YAML(typ="rt").load_all(text))
    except YAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {str(exc).splitlines()[0]}") from None
    wanted = canonical_repository(image)
    lines = text.splitlines(keepends=True)
    edits: list[_Edit] = []
    changes: list[Change] = []
    for document in documents:
        if not isinstance(document, CommentedMap):
            continue
        for container in _containers(document):
            value = container.get("image")
            if not isinstance(value, str):
                continue
            old = ImageRef.parse(value)
            if canonical_repository(old.repository) != wanted:
                continue
            new = decide(old)
            if new is None or new == old:
                continue
            line, column = container.lc.value("image")
            edits.append(_splice(lines, source, line, column, str(new)))
            where = f"{source}: {document.get('kind')} {_name(document)} {container.get('name')}"
            changes.append(Change(where, old, new))
        if _is_kustomization(document, source):
            for entry in _kustomize_images(document):
                found = _kustomize_edits(lines, source, entry, wanted, decide)
                if found is not None:
                    edits += found[0]
                    changes.append(found[1])
    return _apply(lines, edits), changes


def _containers(document: CommentedMap) -> Iterator[CommentedMap]:
    path = _POD_TEMPLATE_PATHS.get(str(document.get("kind")))
    if path is None:
        return
    node: Any = document
    for key in path:
        if not isinstance(node, CommentedMap):
            return
        node = node.get(key)
    if not isinstance(node, CommentedMap):
        return
    for key in _CONTAINER_LISTS:
        containers = node.get(key)
        if isinstance(containers, CommentedSeq):
            yield from (c for c in containers if isinstance(c, CommentedMap))


def _name(document: CommentedMap) -> str:
    metadata = document.get("metadata")
    return str(metadata.get("name")) if isinstance(metadata, CommentedMap) else "?"


def _is_kustomization(document: CommentedMap, source: str) -> bool:
    return document.get("kind") == "Kustomization" or source.rsplit("/", 1)[-1] in (
        "kustomization.yaml",
        "kustomization.yml",
        "Kustomization",
    )


def _kustomize_images(document: CommentedMap) -> Iterator[CommentedMap]:
    images = document.get("images")
    if isinstance(images, CommentedSeq):
        yield from (e for e in images if isinstance(e, CommentedMap))


def _kustomize_edits(
    lines: list[str], source: str, entry: CommentedMap, wanted: str, decide: Decide
) -> tuple[list[_Edit], Change] | None:
    """The edits that point one Kustomize `images:` entry at a new tag (and digest)."""
    name = entry.get("newName") or entry.get("name")
    if not isinstance(name, str) or canonical_repository(name) != wanted:
        return None
    tag, digest = entry.get("newTag"), entry.get("digest")
    old = ImageRef(
        name,
        None if tag is None else str(tag),
        digest if isinstance(digest, str) else None,
    )
    new = decide(old)
    if new is None or new == old:
        return None
    if entry.fa.flow_style():
        raise ManifestError(
            f"{source}: the images entry for {name} is written in flow style ({{...}}); "
            "write it as a block mapping so it can be edited in place"
        )
    edits: list[_Edit] = []
    added = ""
    for key, value in (("newTag", new.tag), ("digest", new.digest)):
        if key in entry:
            line, column = entry.lc.value(key)
            if value is None:
                edits.append(_Delete(line))
            else:
                edits.append(_splice(lines, source, line, column, value))
        elif value is not None:
            # Quoted: a tag such as 1.10 or 20240101 must stay a string, not become a number.
            added += f'{key}: "{value}"\n'
    if added:
        if "name" not in entry:
            raise ManifestError(f"{source}: the images entry for {name} has no name key")
        indent = " " * entry.lc.key("name")[1]
        text = "".join(f"{indent}{line}" for line in added.splitlines(keepends=True))
        edits.append(_Insert(entry.lc.value("name")[0], text))
    return edits, Change(f"{source}: images[{name}]", old, new)


def _splice(lines: list[str], source: str, line: int, column: int, value: str) -> _Splice:
    """Replace the scalar starting at (line, column), keeping its quotes."""
    text = lines[line]
    quote = text[column] if column < len(text) else ""
    if quote in ("'", '"'):
        end = text.find(quote, column + 1)
        if end < 0:
            raise ManifestError(f"{source}:{line + 1}: a quoted image spans lines; cannot edit")
        return _Splice(line, column + 1, end, value)
    match = _PLAIN_END_RE.search(text, column)
    end = match.start() if match is not None else len(text.rstrip("\r\n"))
    if end <= column:
        raise ManifestError(f"{source}:{line + 1}: no image value to edit here")
    return _Splice(line, column, end, value)


def _apply(lines: list[str], edits: list[_Edit]) -> str:
    """Apply edits from the bottom up and right to left, so positions stay valid."""
    result = list(lines)

    def position(edit: _Edit) -> tuple[int, int]:
        if isinstance(edit, _Splice):
            return edit.line, edit.start
        if isinstance(edit, _Insert):
            return edit.after_line, 1_000_000
        return edit.line, -1

    for edit in sorted(edits, key=position, reverse=True):
        if isinstance(edit, _Splice):
            text = result[edit.line]
            result[edit.line] = text[: edit.start] + edit.text + text[edit.end :]
        elif isinstance(edit, _Insert):
            if not result[edit.after_line].endswith("\n"):
                result[edit.after_line] += "\n"
            result.insert(edit.after_line + 1, edit.text)
        else:
            del result[edit.line]
    return "".join(result)
