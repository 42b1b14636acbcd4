"""Kubernetes objects from YAML found in Git, which is untrusted input.

Every file is checked event by event before anything is built from it: aliases may not expand
beyond a budget (no alias bombs), keys may not repeat, only the standard YAML tags are allowed
and nesting is bounded, so a hostile commit cannot exhaust memory or smuggle in objects that
other YAML readers would see differently. Values follow YAML 1.1, as `kubectl apply` reads
them (`yes` is true), except that timestamps stay text, as Kubernetes keeps them.

Every problem is a `RenderingError` that names the file, the line and, where known, the object.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml import events as yaml_events
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gitops_events import ObjectRef, RenderError

MAX_NESTING = 100
"""Deeper YAML is refused before it is built (the loader recurses once per level)."""

_STANDARD_TAGS = frozenset(
    {"!"}
    | {
        f"tag:yaml.org,2002:{name}"
        for name in ("str", "int", "float", "bool", "null", "map", "seq", "merge")
    }
)


class RenderingError(Exception):
    """Why a commit cannot be rendered; becomes the `render_error` of its Revision."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        source: str | None = None,
        involved_object: ObjectRef | None = None,
    ) -> None:
        """Record a CamelCase reason, a message for people, the file and object at fault."""
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.source = source
        self.involved_object = involved_object

    def to_event(self) -> RenderError:
        """The failure as it travels in a Revision event."""
        return RenderError(
            reason=self.reason,
            message=self.message,
            source=self.source,
            involved_object=self.involved_object,
        )


class _ManifestConstructor(SafeConstructor):
    """The safe constructor, keeping timestamps as the text that was written."""


def _timestamp_as_text(constructor: SafeConstructor, node: Any) -> Any:
    return constructor.construct_scalar(node)


_ManifestConstructor.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


@dataclass
class _Frame:
    """An open mapping or sequence during the event check."""

    mapping: bool
    anchor: str | None
    size: int = 1
    expecting_key: bool = True
    keys: set[str] = field(default_factory=set)


def load_documents(data: bytes, source: str, *, max_alias_nodes: int) -> list[tuple[str, Any]]:
    """The non-empty documents of a YAML (or JSON) file as plain JSON-compatible values.

    Each comes with a description of where it is (`file (document 2, line 14)`). Raises
    `RenderingError` naming `source` for text that is not UTF-8, malformed YAML, duplicate keys,
    unsupported tags, and aliases expanding to more than `max_alias_nodes` extra nodes.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RenderingError(
            "MalformedYaml",
            f"{source} is not UTF-8 text (invalid byte at offset {exc.start})",
            source=source,
        ) from None
    lines = _check_events(text, source, max_alias_nodes)
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = _ManifestConstructor
    yaml.version = (1, 1)
    try:
        documents = list(yaml.load_all(text))
    except MarkedYAMLError as exc:
        raise _malformed(source, exc) from None
    except (ValueError, OverflowError) as exc:
        # Scalars the event check cannot judge, such as an integer of 10,000 digits.
        raise RenderingError(
            "MalformedYaml", f"{source}: a value cannot be read: {exc}", source=source
        ) from None
    except YAMLError as exc:
        raise RenderingError(
            "MalformedYaml", f"{source}: invalid YAML: {exc}", source=source
        ) from None
    found: list[tuple[str, Any]] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        line = lines[index] if index < len(lines) else "?"
        where = f"{source} (document {index + 1}, line {line})"
        found.append((where, _plain(document, source, where)))
    return found


def load_objects(data: bytes, source: str, *, max_alias_nodes: int) -> list[dict[str, Any]]:
    """Every Kubernetes object in a YAML (or JSON) file, in order; `v1` Lists are unpacked.

    Raises `RenderingError` for everything `load_documents` refuses, and for documents that are
    not Kubernetes objects (no apiVersion, kind or metadata.name).
    """
    objects: list[dict[str, Any]] = []
    for where, document in load_documents(data, source, max_alias_nodes=max_alias_nodes):
        objects.extend(_kubernetes_objects(document, source, where))
    return objects


def _malformed(source: str, exc: MarkedYAMLError) -> RenderingError:
    mark = exc.problem_mark or exc.context_mark
    line = f" line {mark.line + 1}" if mark is not None else ""
    reason = exc.problem or exc.context or "invalid YAML"
    return RenderingError("MalformedYaml", f"{source}{line}: invalid YAML: {reason}", source=source)


def _check_events(text: str, source: str, max_alias_nodes: int) -> list[int]:
    """Check the YAML's shape before it is built; return each document's first line."""
    lines: list[int] = []
    try:
        for line, problem in _event_problems(text, max_alias_nodes, lines):
            reason, message = problem
            raise RenderingError(reason, f"{source} line {line}: {message}", source=source)
    except MarkedYAMLError as exc:
        raise _malformed(source, exc) from None
    except YAMLError as exc:
        raise RenderingError(
            "MalformedYaml", f"{source}: invalid YAML: {exc}", source=source
        ) from None
    return lines


def _event_problems(
    text: str, max_alias_nodes: int, lines: list[int]
) -> Iterator[tuple[int, tuple[str, str]]]:
    stack: list[_Frame] = []
    anchors: dict[str, int] = {}
    extra_nodes = 0
    for event in YAML(typ="safe", pure=True).parse(text):
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml_events.DocumentStartEvent):
            lines.append(line)
            continue
        if isinstance(event, yaml_events.MappingEndEvent | yaml_events.SequenceEndEvent):
            done = stack.pop()
            if done.anchor is not None:
                anchors[done.anchor] = done.size
            if stack:
                stack[-1].size += done.size
            continue
        if not isinstance(event, yaml_events.NodeEvent):
            continue

        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in _STANDARD_TAGS:
            yield line, ("UnsupportedYamlTag", f"YAML tag {str(tag)!r} is not supported")

        parent = stack[-1] if stack else None
        if parent is not None and parent.mapping:
            if parent.expecting_key and isinstance(event, yaml_events.ScalarEvent):
                key = str(event.value)
                if key in parent.keys:
                    yield line, ("DuplicateKey", f"duplicate key {key!r} in one mapping")
                parent.keys.add(key)
            parent.expecting_key = not parent.expecting_key

        if isinstance(event, yaml_events.AliasEvent):
            size = anchors.get(str(event.anchor))
            if size is None:
                yield line, ("MalformedYaml", f"alias *{event.anchor} has no anchor before it")
                return
            extra_nodes += size
            if extra_nodes > max_alias_nodes:
                yield (
                    line,
                    (
                        "YamlAliasBomb",
                        f"YAML aliases expand to more than {max_alias_nodes} extra nodes; "
                        "write the values out or use fewer nested aliases",
                    ),
                )
                return
            if parent is not None:
                parent.size += size
            continue

        anchor = None if event.anchor is None else str(event.anchor)
        if isinstance(event, yaml_events.MappingStartEvent | yaml_events.SequenceStartEvent):
            stack.append(
                _Frame(mapping=isinstance(event, yaml_events.MappingStartEvent), anchor=anchor)
            )
            if len(stack) > MAX_NESTING:
                yield line, ("MalformedYaml", f"nested more than {MAX_NESTING} levels deep")
                return
            continue
        if anchor is not None:
            anchors[anchor] = 1
        if parent is not None:
            parent.size += 1


def _plain(value: Any, source: str, where: str) -> Any:
    """JSON-compatible values, as Kubernetes would see them (keys are strings)."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            name = _key(key, source, where)
            if name in result:
                raise RenderingError(
                    "DuplicateKey", f"{where}: duplicate key {name!r} in one mapping", source=source
                )
            result[name] = _plain(item, source, where)
        return result
    if isinstance(value, list):
        return [_plain(item, source, where) for item in value]
    if isinstance(value, str):
        return _text(value, source, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise RenderingError(
            "MalformedYaml",
            f"{where}: .inf and .nan cannot be represented in a Kubernetes object",
            source=source,
        )
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise RenderingError(
        "MalformedYaml",
        f"{where}: unsupported YAML value of type {type(value).__name__}",
        source=source,
    )


def _text(value: str, source: str, where: str) -> str:
    # A double-quoted "\ud800" is a lone surrogate: valid YAML, but no JSON can carry it.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RenderingError(
            "MalformedYaml", f"{where}: a string holds an invalid Unicode escape", source=source
        ) from None
    return value


def _key(key: Any, source: str, where: str) -> str:
    if isinstance(key, str):
        return _text(key, source, where)
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    if isinstance(key, int | float):
        return str(key)
    raise RenderingError(
        "MalformedYaml",
        f"{where}: mapping keys must be plain values, not lists or mappings",
        source=source,
    )


def _kubernetes_objects(document: Any, source: str, where: str) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        shape = "a list" if isinstance(document, list) else f"a {type(document).__name__}"
        raise RenderingError(
            "NotKubernetesObject",
            f"{where} is {shape}, not a Kubernetes object "
            "(a mapping with apiVersion, kind and metadata.name)",
            source=source,
        )
    if document.get("apiVersion") == "v1" and document.get("kind") == "List":
        items = document.get("items")
        if not isinstance(items, list):
            raise RenderingError(
                "NotKubernetesObject", f"{where}: a v1 List needs a list of items", source=source
            )
        return [obj for item in items for obj in _kubernetes_objects(item, source, where)]
    api_version = document.get("apiVersion")
    kind = document.get("kind")
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    missing = [
        label
        for label, value in (("apiVersion", api_version), ("kind", kind), ("metadata.name", name))
        if not isinstance(value, str) or not value
    ]
    if missing:
        involved = None
        if isinstance(kind, str) and kind and isinstance(name, str) and name:
            involved = ObjectRef(
                api_version=api_version if isinstance(api_version, str) else "",
                kind=kind,
                name=name,
                namespace=_namespace(metadata),
            )
        raise RenderingError(
            "NotKubernetesObject",
            f"{where} is not a Kubernetes object: missing {', '.join(missing)}",
            source=source,
            involved_object=involved,
        )
    return [document]


def _namespace(metadata: Any) -> str | None:
    namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    return namespace if isinstance(namespace, str) and namespace else None


def object_ref(manifest: dict[str, Any]) -> ObjectRef:
    """The reference of a checked object (one `load_objects` returned)."""
    return ObjectRef(
        api_version=manifest["apiVersion"],
        kind=manifest["kind"],
        name=manifest["metadata"]["name"],
        namespace=_namespace(manifest.get("metadata")),
    )
