"""Read `gitops.yaml` into a `GitopsConfig`; every user mistake becomes one clear `ConfigError`.

The file comes from Git, so it is untrusted input: the YAML is checked event by event before
anything is built from it (no anchors or aliases, so no alias bombs; no custom tags; no
duplicate keys; bounded size and nesting). Validation errors from pydantic are rewritten to name
the file, the line and the field path in the user's terms, with a suggestion for misspelt fields.
"""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pydantic
from pydantic_core import ErrorDetails
from ruamel.yaml import YAML
from ruamel.yaml import events as yaml_events
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from gitops_config import errors, models

MAX_CONFIG_BYTES = 1024 * 1024
"""Larger files are refused before parsing: a real configuration is a few kilobytes."""

MAX_NESTING = 32
"""Deeper YAML is refused before it is built: the model itself nests six levels."""

_STANDARD_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "map", "seq")
)


def load_config(path: Path) -> models.GitopsConfig:
    """Read and validate the configuration file at `path`.

    Raises `ConfigError` (naming `path`) if the file is missing, unreadable, too large, not
    YAML, or not a valid configuration.
    """
    source = str(path)
    try:
        with path.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _error(
            source, "file not found; set GITOPS_CONFIG to the path of gitops.yaml"
        ) from None
    except OSError as error:
        raise _error(source, f"cannot read the file: {error.strerror or error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _error(source, f"not UTF-8 text (invalid byte at offset {error.start})") from None
    return parse_config(text, source)


def parse_config(text: str, source: str) -> models.GitopsConfig:
    """Validate configuration `text`; `source` names it in error messages (usually the path)."""
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    document = _read_yaml(text, source)
    try:
        config = models.GitopsConfig.model_validate(
            _plain(document), context={models.DEFER_REFERENCE_CHECKS: True}
        )
    except pydantic.ValidationError as error:
        raise errors.ConfigError(
            source, _sorted([_validation_problem(detail, document) for detail in error.errors()])
        ) from None
    reference_problems = [
        _located(loc, message, document) for loc, message in models.reference_problems(config)
    ]
    if reference_problems:
        raise errors.ConfigError(source, _sorted(reference_problems))
    return config


def _error(source: str, message: str, line: int | None = None) -> errors.ConfigError:
    return errors.ConfigError(source, [errors.Problem(path="", message=message, line=line)])


def _too_large(source: str) -> errors.ConfigError:
    return _error(source, f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB")


def _sorted(problems: Sequence[errors.Problem]) -> list[errors.Problem]:
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: (problem.line is None, problem.line or 0))


# --- YAML --------------------------------------------------------------------------------------


def _read_yaml(text: str, source: str) -> CommentedMap:
    """Check the YAML's shape event by event, then build it; the result keeps line numbers."""
    try:
        problems = list(_event_problems(text))
        if problems:
            raise errors.ConfigError(source, problems)
        # Round-trip mode, rather than the C-accelerated safe loader, keeps line numbers for
        # error messages; the event check above has already refused tags, anchors and aliases.
        document = YAML(typ="rt").load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        reason = error.problem or error.context or "invalid YAML"
        raise _error(source, f"invalid YAML: {reason}", line) from None
    except YAMLError as error:
        raise _error(source, f"invalid YAML: {error}") from None
    if document is None:
        raise _error(source, "the file is empty; it must be a mapping with clusters and apps")
    if not isinstance(document, CommentedMap):
        raise _error(
            source,
            f"the file must be a YAML mapping (clusters:, apps:, ...), got {_describe(document)}",
        )
    return document


class _MappingFrame:
    """Where the event check is inside a mapping: whether the next node is a key, keys seen."""

    def __init__(self) -> None:
        self.expecting_key = True
        self.keys: set[str] = set()


def _event_problems(text: str) -> Iterator[errors.Problem]:
    stack: list[_MappingFrame | None] = []  # None for a sequence
    documents = 0
    anchors_reported = False
    for event in YAML(typ="rt").parse(text):
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml_events.DocumentStartEvent):
            documents += 1
            if documents > 1:
                yield errors.Problem("", "only one YAML document is allowed; remove '---'", line)
                return
            continue
        if isinstance(event, yaml_events.MappingEndEvent | yaml_events.SequenceEndEvent):
            stack.pop()
            continue
        if not isinstance(event, yaml_events.NodeEvent):
            continue

        if (event.anchor is not None or isinstance(event, yaml_events.AliasEvent)) and (
            not anchors_reported
        ):
            anchors_reported = True
            yield errors.Problem(
                "",
                "YAML anchors and aliases (&name, *name, <<) are not supported in gitops.yaml; "
                "write the values out in full",
                line,
            )
        tag = getattr(event, "tag", None)
        if tag is not None and str(tag) not in _STANDARD_TAGS:
            yield errors.Problem("", f"YAML tag {str(tag)!r} is not supported", line)

        frame = stack[-1] if stack else None
        if frame is not None:
            if frame.expecting_key:
                yield from _key_problems(event, frame, line)
            frame.expecting_key = not frame.expecting_key

        if isinstance(event, yaml_events.MappingStartEvent):
            stack.append(_MappingFrame())
        elif isinstance(event, yaml_events.SequenceStartEvent):
            stack.append(None)
        if len(stack) > MAX_NESTING:
            yield errors.Problem("", f"nested more than {MAX_NESTING} levels deep", line)
            return


def _key_problems(
    event: yaml_events.NodeEvent, frame: _MappingFrame, line: int | None
) -> Iterator[errors.Problem]:
    if not isinstance(event, yaml_events.ScalarEvent):
        yield errors.Problem("", "mapping keys must be plain names, not lists or mappings", line)
        return
    key = str(event.value)
    if key in frame.keys:
        yield errors.Problem("", f"duplicate key {key!r}; each key may appear only once", line)
    frame.keys.add(key)


def _plain(node: Any) -> Any:
    """Convert ruamel's round-trip types to plain Python types before validation."""
    if isinstance(node, CommentedMap):
        return {_plain(key): _plain(value) for key, value in node.items()}
    if isinstance(node, CommentedSeq):
        return [_plain(item) for item in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _describe(value: Any) -> str:
    """Name the YAML type of a value, never the value itself (it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, datetime.date):
        return "a date (quote it to use it as text)"
    return type(value).__name__


# --- Validation errors -------------------------------------------------------------------------


def _validation_problem(detail: ErrorDetails, document: CommentedMap) -> errors.Problem:
    loc = tuple(detail["loc"])
    kind = detail["type"]
    context = detail.get("ctx", {})
    if kind == "missing":
        return _located(loc[:-1], f"missing required field {loc[-1]!r}", document)
    if kind == "extra_forbidden":
        field = str(loc[-1])
        return errors.Problem(
            path=models.field_path(_document_loc(loc[:-1], document)[0]),
            message=f"unknown field {field!r} is not allowed here; {_suggest(field, loc[:-1])}",
            line=_document_loc(loc, document)[1],
        )
    if kind == "union_tag_invalid":
        expected = context.get("expected_tags", "")
        discriminator = str(context.get("discriminator", "kind")).strip("'")
        message = f"unknown {discriminator} {context.get('tag')!r}; expected one of: {expected}"
        return _located(loc, message, document)
    if kind == "union_tag_not_found":
        discriminator = str(context.get("discriminator", "kind")).strip("'")
        tags = ", ".join(_union_tags(_annotation_at(loc)))
        return _located(loc, f"missing required field {discriminator!r} (one of: {tags})", document)
    message = detail["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind not in ("value_error", "assertion_error"):
        message = message[:1].lower() + message[1:]
    if kind.endswith("_type") or "_parsing" in kind:
        message += f"; got {_describe(detail.get('input'))}"
    elif kind == "literal_error" and isinstance(detail.get("input"), str | int | float):
        message += f"; got {detail.get('input')!r}"
    return _located(loc, message, document)


def _located(loc: models.Loc, message: str, document: CommentedMap) -> errors.Problem:
    path, line = _document_loc(loc, document)
    return errors.Problem(path=models.field_path(path), message=message, line=line)


def _document_loc(loc: models.Loc, document: CommentedMap) -> tuple[models.Loc, int | None]:
    """Follow `loc` through the YAML: keep only the user's segments, and find the line.

    Pydantic locations also hold union tags (`regex` in `images[0].policy.regex.pattern`) and
    `[key]` markers; those are not in the document and are dropped. Any other last segment that
    is not in the document is kept: it names a missing field.
    """
    node: Any = document
    kept: list[str | int] = []
    line: int | None = None
    for position, segment in enumerate(loc):
        if isinstance(node, CommentedMap) and segment in node:
            line = node.lc.key(segment)[0] + 1
            node = node[segment]
        elif isinstance(node, CommentedSeq) and isinstance(segment, int) and segment < len(node):
            line = node.lc.item(segment)[0] + 1
            node = node[segment]
        elif (
            segment == "[key]"
            or position < len(loc) - 1
            or segment in _union_tags(_annotation_at(loc[:position]))
        ):
            continue
        else:
            node = None
        kept.append(segment)
    return tuple(kept), line


def _suggest(field: str, parent: models.Loc) -> str:
    allowed = sorted(_model_fields(_annotation_at(parent)))
    close = difflib.get_close_matches(field, allowed, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"allowed fields: {', '.join(allowed) or 'none'}"


def _annotation_at(loc: models.Loc) -> Any:
    """Follow a pydantic location through the model's type annotations."""
    current: Any = models.GitopsConfig
    for segment in loc:
        current = _unwrap(current)
        origin = typing.get_origin(current)
        if isinstance(current, type) and issubclass(current, pydantic.BaseModel):
            field = current.model_fields.get(str(segment))
            current = None if field is None else field.annotation
        elif origin in (list, tuple):
            current = typing.get_args(current)[0]
        elif origin is dict:
            current = typing.get_args(current)[0 if segment == "[key]" else 1]
        elif origin in (typing.Union, types.UnionType):
            current = next(
                (member for member in typing.get_args(current) if segment in _union_tags(member)),
                None,
            )
        else:
            return None
    return _unwrap(current)


def _unwrap(annotation: Any) -> Any:
    """Strip `Annotated[...]` and `| None`, which never appear in error locations."""
    while True:
        if typing.get_origin(annotation) is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _model_fields(annotation: Any) -> list[str]:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return list(annotation.model_fields)
    return []


def _union_tags(annotation: Any) -> list[str]:
    """List the `kind` values that a (discriminated union) annotation accepts."""
    annotation = _unwrap(annotation)
    members = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    tags: list[str] = []
    for member in members:
        if isinstance(member, type) and issubclass(member, pydantic.BaseModel):
            field = member.model_fields.get("kind")
            if field is not None:
                tags.extend(str(tag) for tag in typing.get_args(field.annotation))
    return tags
