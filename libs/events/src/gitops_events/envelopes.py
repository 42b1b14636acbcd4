"""The envelope: CloudEvents attributes around one payload, in Kafka binary content mode.

In binary mode the attributes travel as `ce_*` headers and the value is the payload alone,
so Kafka UI shows readable JSON and a consumer can route on the type before parsing. The W3C
`traceparent` (and `tracestate`) header rides along so one release is one trace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gitops_events import schemas

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/json"

_MODELS: dict[str, type[schemas.Event]] = {
    model.EVENT_TYPE: model
    for model in (
        schemas.Revision,
        schemas.DesiredState,
        schemas.ImagePushed,
        schemas.Command,
        schemas.DeployEvent,
        schemas.DriftEvent,
        schemas.Alert,
        schemas.DeadLetter,
    )
}

_REQUIRED = ("ce_specversion", "ce_id", "ce_source", "ce_type")


class DecodeError(ValueError):
    """A record that is not a valid event; reason says which way it is broken."""

    def __init__(
        self,
        reason: Literal["broken-envelope", "unknown-event-type", "invalid-payload"],
        message: str,
    ) -> None:
        super().__init__(message)
        self.reason: Literal["broken-envelope", "unknown-event-type", "invalid-payload"] = reason


class Envelope(BaseModel):
    """CloudEvents attributes and the typed payload."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str
    subject: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    specversion: str = SPEC_VERSION
    datacontenttype: str = CONTENT_TYPE
    traceparent: str | None = None
    tracestate: str | None = None
    data: schemas.Event

    @classmethod
    def wrap(cls, event: schemas.Event, source: str) -> Envelope:
        """Put an event in a new envelope from source (e.g. `gitops/deployer`)."""
        return cls(source=source, type=event.EVENT_TYPE, subject=event.subject(), data=event)


def registered_types() -> list[str]:
    """Every CloudEvents type this version of the contract knows."""
    return sorted(_MODELS)


def model_for_type(event_type: str) -> type[schemas.Event]:
    """The payload model of a CloudEvents type."""
    try:
        return _MODELS[event_type]
    except KeyError:
        raise DecodeError("unknown-event-type", f"unknown event type {event_type!r}") from None


def event_type_of(headers: Iterable[tuple[str, bytes]]) -> str | None:
    """The `ce_type` header of a record, if it has one."""
    for name, value in headers:
        if name == "ce_type":
            return value.decode("utf-8", errors="replace")
    return None


def encode(envelope: Envelope) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """Key, value and headers of the Kafka record for an envelope."""
    headers = [
        ("ce_specversion", envelope.specversion),
        ("ce_id", envelope.id),
        ("ce_source", envelope.source),
        ("ce_type", envelope.type),
        ("ce_subject", envelope.subject),
        ("ce_time", envelope.time.isoformat()),
        ("content-type", envelope.datacontenttype),
    ]
    if envelope.traceparent:
        headers.append(("traceparent", envelope.traceparent))
    if envelope.tracestate:
        headers.append(("tracestate", envelope.tracestate))
    value = envelope.data.model_dump_json().encode()
    return envelope.subject.encode(), value, [(k, v.encode()) for k, v in headers]


def decode(headers: Sequence[tuple[str, bytes]], value: bytes | None) -> Envelope:
    """Parse a Kafka record into an envelope, or raise DecodeError saying why not."""
    attrs: dict[str, str] = {}
    for name, raw in headers:
        try:
            attrs[name] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("broken-envelope", f"header {name!r} is not UTF-8") from None
    missing = [name for name in _REQUIRED if not attrs.get(name)]
    if missing:
        raise DecodeError("broken-envelope", f"missing CloudEvents headers: {', '.join(missing)}")
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise DecodeError(
            "broken-envelope", f"unsupported CloudEvents specversion {attrs['ce_specversion']!r}"
        )
    content_type = attrs.get("content-type", CONTENT_TYPE)
    if not content_type.startswith(CONTENT_TYPE):
        raise DecodeError("broken-envelope", f"unsupported content-type {content_type!r}")
    model = model_for_type(attrs["ce_type"])
    if value is None:
        raise DecodeError("invalid-payload", "record has no value")
    try:
        data = model.model_validate_json(value)
    except ValidationError as exc:
        raise DecodeError("invalid-payload", _describe(exc, attrs["ce_type"])) from None
    try:
        return Envelope(
            id=attrs["ce_id"],
            source=attrs["ce_source"],
            type=attrs["ce_type"],
            subject=attrs.get("ce_subject") or data.subject(),
            time=attrs.get("ce_time") or datetime.now(UTC),
            specversion=attrs["ce_specversion"],
            datacontenttype=content_type,
            traceparent=attrs.get("traceparent"),
            tracestate=attrs.get("tracestate"),
            data=data,
        )
    except ValidationError as exc:
        raise DecodeError("broken-envelope", _describe(exc, "envelope")) from None


def _describe(exc: ValidationError, what: str) -> str:
    """One line per problem, naming the field; input values are left out (they may be secret)."""
    problems = [
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    ]
    return f"{what}: " + "; ".join(problems)


def dumps_attributes(envelope: Envelope) -> str:
    """The envelope's attributes as one JSON line, for logs and `gitops events`."""
    return json.dumps(
        {
            "id": envelope.id,
            "type": envelope.type,
            "source": envelope.source,
            "subject": envelope.subject,
            "time": envelope.time.isoformat(),
            "traceparent": envelope.traceparent,
        }
    )
