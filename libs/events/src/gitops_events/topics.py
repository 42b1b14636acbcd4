"""The topics of the system, declared once: names, partitions, compaction, what flows where."""

from __future__ import annotations

from dataclasses import dataclass

from gitops_events import schemas


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name without prefix, what it carries and how it is kept."""

    name: str
    event_types: tuple[str, ...]
    compacted: bool = False
    description: str = ""


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        "revisions",
        (schemas.Revision.EVENT_TYPE,),
        description="New commits and deleted branches on tracked branches.",
    ),
    TopicSpec(
        "desired",
        (schemas.DesiredState.EVENT_TYPE,),
        compacted=True,
        description="Latest rendered desired state per app/environment; rebuild from it.",
    ),
    TopicSpec(
        "images",
        (schemas.ImagePushed.EVENT_TYPE,),
        description="New image tags from registries and CI.",
    ),
    TopicSpec(
        "commands",
        (schemas.Command.EVENT_TYPE,),
        description="Sync, promote, suspend, resume and silence requests.",
    ),
    TopicSpec(
        "deploy",
        (schemas.DeployEvent.EVENT_TYPE,),
        description="What the deployer did: started, applied, healthy, failed, ...",
    ),
    TopicSpec(
        "drift",
        (schemas.DriftEvent.EVENT_TYPE,),
        description="Where the cluster differs from Git, and when it stops.",
    ),
    TopicSpec(
        "alerts",
        (schemas.Alert.EVENT_TYPE,),
        description="Alerts for operators, firing and resolved.",
    ),
    TopicSpec(
        "deadletter",
        (schemas.DeadLetter.EVENT_TYPE,),
        description="Records a consumer could not parse or handle, with the reason.",
    ),
)

_BY_TYPE = {event_type: spec for spec in TOPICS for event_type in spec.event_types}


def topic_for(event: schemas.Event, prefix: str) -> str:
    """The full topic name an event is published to."""
    spec = _BY_TYPE.get(event.EVENT_TYPE)
    if spec is None:
        raise ValueError(f"no topic carries events of type {event.EVENT_TYPE!r}")
    return prefix + spec.name
