"""Versioned event payloads (v1), one pydantic model per CloudEvents type.

Every model ignores unknown fields so that older readers keep working when a newer writer adds
one; new optional fields must default to None (or an empty value) with a comment saying why.
Payloads never carry secret values in plain text: desired state keeps SealedSecrets sealed,
drift reports mask Secret data, dead letters keep the raw value only as the producer sent it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


def _now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """Base of every payload: its CloudEvents type and the subject it is about."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    EVENT_TYPE: ClassVar[str] = ""

    def subject(self) -> str:
        """The object this event is about; also the Kafka partition key."""
        raise NotImplementedError


def subject_for(app: str, environment: str) -> str:
    """The subject (and partition key) of everything about one app environment."""
    return f"{app}/{environment}"


class _AboutEnvironment(Event):
    """An event about one app environment: keyed by app/environment so it stays in order."""

    app: str
    environment: str

    def subject(self) -> str:
        """The app/environment this event is about."""
        return subject_for(self.app, self.environment)


class Severity(StrEnum):
    """How urgent an event or alert is."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class ObjectRef(BaseModel):
    """The Kubernetes object an event is about."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"


class RenderError(BaseModel):
    """Why a revision could not be rendered: which file, which object, what is wrong."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    reason: str = Field(
        description="Short CamelCase cause, e.g. MalformedYaml, SymlinkOutsideRepo."
    )
    message: str
    source: str | None = Field(default=None, description="File in the repo at fault.")
    involved_object: ObjectRef | None = None


class Revision(_AboutEnvironment):
    """A new commit (or a deleted branch) on a tracked branch: the Release step."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.revision.v1"

    repo: str = Field(description="Repository URL with any credentials removed.")
    branch: str
    revision: str | None = Field(description="Commit SHA; None when the branch was deleted.")
    previous_revision: str | None = None
    change: Literal["pushed", "force-pushed", "deleted"] = "pushed"
    trigger: Literal["webhook", "poll", "manual"] = "poll"
    author: str | None = None
    message: str | None = None
    detected_at: datetime = Field(default_factory=_now)
    # Set when the commit could not be rendered; no desired state is published for it, and the
    # deployer reports it as a failed deploy so the previous state stays and people are told.
    render_error: RenderError | None = None


class DesiredObject(BaseModel):
    """One rendered manifest and the file it came from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    source: str = Field(description="Path of the file inside the repository.")
    manifest: dict[str, Any]


class DesiredState(_AboutEnvironment):
    """The rendered desired state of one app environment at one revision (compacted topic)."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.desired.v1"

    revision: str
    repo: str
    branch: str
    cluster: str
    namespace: str
    digest: str = Field(description="sha256 of the rendered objects; equal digests, equal state.")
    objects: list[DesiredObject]
    rendered_at: datetime = Field(default_factory=_now)


class ImagePushed(Event):
    """A new image tag reported by a registry or CI."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.image.v1"

    image: str
    tag: str
    digest: str | None = None
    source: str = Field(default="generic", description="Which kind of webhook reported it.")
    received_at: datetime = Field(default_factory=_now)

    def subject(self) -> str:
        """Images are keyed by repository so one image's tags stay in order."""
        return self.image


class SyncCommand(BaseModel):
    """Apply the latest desired state now."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    action: Literal["sync"] = "sync"


class PromoteCommand(BaseModel):
    """Merge one environment's branch into another's."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    action: Literal["promote"] = "promote"
    from_environment: str
    skip: list[str] = Field(default_factory=list)


class SuspendCommand(BaseModel):
    """Stop applying changes to an app environment until resumed."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    action: Literal["suspend"] = "suspend"


class ResumeCommand(BaseModel):
    """Resume applying changes to a suspended app environment."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    action: Literal["resume"] = "resume"


class SilenceCommand(BaseModel):
    """Hold notifications matching a fingerprint or reason for a while."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    action: Literal["silence"] = "silence"
    reason: str | None = None
    fingerprint: str | None = None
    duration_seconds: float = Field(gt=0)


class Command(_AboutEnvironment):
    """A request from a person or a policy (sync, promote, suspend, resume, silence)."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.command.v1"

    command: Annotated[
        SyncCommand | PromoteCommand | SuspendCommand | ResumeCommand | SilenceCommand,
        Field(discriminator="action"),
    ]
    requested_by: str = "unknown"
    requested_at: datetime = Field(default_factory=_now)


class DeployPhase(StrEnum):
    """Where a deploy of one revision stands."""

    STARTED = "started"
    APPLIED = "applied"
    PRUNED = "pruned"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"


class DeployEvent(_AboutEnvironment):
    """What the deployer did with a revision."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.deploy.v1"

    revision: str | None
    phase: DeployPhase
    severity: Severity = Severity.INFO
    reason: str = Field(description="A short CamelCase cause, stable for grouping alerts.")
    message: str
    involved_object: ObjectRef | None = None
    source: str | None = Field(default=None, description="File in the repo that was at fault.")
    applied: int = 0
    pruned: int = 0
    unchanged: int = 0
    duration_seconds: float | None = None


class FieldDiff(BaseModel):
    """One field that differs between Git and the cluster (Secret values masked)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    path: str = Field(description="JSON pointer of the field.")
    desired: Any = None
    live: Any = None


class ObjectDrift(BaseModel):
    """How one object differs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    object: ObjectRef
    drift: Literal["modified", "missing", "extra"]
    fields: list[FieldDiff] = Field(default_factory=list)


class DriftStatus(StrEnum):
    """The life of one drift."""

    DETECTED = "detected"
    CHANGED = "changed"
    RESOLVED = "resolved"


class DriftEvent(_AboutEnvironment):
    """The cluster differs from Git (or no longer does)."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.drift.v1"

    revision: str | None
    status: DriftStatus
    fingerprint: str = Field(description="Stable id of this set of differences.")
    objects: list[ObjectDrift] = Field(default_factory=list)
    observed_at: datetime = Field(default_factory=_now)
    # Why this event was published when it is not news about the differences themselves, e.g.
    # "SelfHealGaveUp": self-heal kept reverting the same drift and something kept bringing it
    # back, so it stopped. None for plain detected/changed/resolved events (and older writers).
    reason: str | None = Field(
        default=None, description="Short CamelCase cause, e.g. SelfHealGaveUp; usually None."
    )


class AlertStatus(StrEnum):
    """Whether an alert is firing."""

    FIRING = "firing"
    RESOLVED = "resolved"


class Alert(_AboutEnvironment):
    """A notification for people, published to the alerts topic and the configured sinks."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.alert.v1"

    fingerprint: str
    status: AlertStatus
    severity: Severity
    reason: str
    summary: str
    description: str | None = None
    revision: str | None = None
    playbook: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime = Field(default_factory=_now)
    ends_at: datetime | None = None


class DeadLetter(Event):
    """A record a consumer could not parse or handle, kept with the reason."""

    EVENT_TYPE: ClassVar[str] = "io.gitops.deadletter.v1"

    topic: str
    partition: int
    offset: int
    consumer_group: str
    reason: Literal["broken-envelope", "unknown-event-type", "invalid-payload", "handler-failed"]
    error: str
    key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    value: str = Field(description="The record value as text (invalid UTF-8 replaced), truncated.")

    def subject(self) -> str:
        """Dead letters keep the original record's place as their subject."""
        return f"{self.topic}/{self.partition}/{self.offset}"
