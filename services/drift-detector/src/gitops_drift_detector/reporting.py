"""Differences as the event contract carries them, and as one line for people.

The drift detector publishes them in DriftEvents, and `gitops diff --json` prints the very same
objects, so a script reading either sees one shape.
"""

from __future__ import annotations

from collections.abc import Sequence

from gitops_events import FieldDiff, ObjectDrift, ObjectRef
from gitops_kube.comparing import Difference


def object_drifts(differences: Sequence[Difference]) -> list[ObjectDrift]:
    """The differences as the ObjectDrift entries of a DriftEvent (Secret values masked)."""
    return [
        ObjectDrift(
            object=ObjectRef(
                api_version=d.api_version,
                kind=d.id.kind,
                name=d.id.name,
                namespace=d.id.namespace or None,
            ),
            drift=d.drift,
            fields=[FieldDiff(path=f.path, desired=f.desired, live=f.live) for f in d.fields],
        )
        for d in differences
    ]


def summary(differences: Sequence[Difference], *, shown: int = 5) -> str:
    """A short sentence naming the first few objects that differ and how."""
    if not differences:
        return "the cluster matches Git"
    named = ", ".join(f"{d.id} {d.drift}" for d in differences[:shown])
    more = f" and {len(differences) - shown} more" if len(differences) > shown else ""
    return named + more
