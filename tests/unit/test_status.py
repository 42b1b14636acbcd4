"""`gitops status` folds events into one row per app environment."""

from __future__ import annotations

from gitops_cli.status import fold
from gitops_events import (
    Alert,
    AlertStatus,
    DeployEvent,
    DeployPhase,
    DesiredState,
    DriftEvent,
    DriftStatus,
    Envelope,
    Event,
    Severity,
)


def _wrap(*events: Event) -> list[Envelope]:
    return [Envelope.wrap(e, "gitops/test") for e in events]


def _desired(revision: str) -> DesiredState:
    return DesiredState(
        app="shop",
        environment="prod",
        revision=revision,
        repo="r",
        branch="b",
        cluster="c",
        namespace="n",
        digest="d",
        objects=[],
    )


def _deploy(revision: str, phase: DeployPhase) -> DeployEvent:
    return DeployEvent(
        app="shop", environment="prod", revision=revision, phase=phase, reason="R", message="m"
    )


def _alert(status: AlertStatus) -> Alert:
    return Alert(
        app="shop",
        environment="prod",
        fingerprint="f1",
        status=status,
        severity=Severity.CRITICAL,
        reason="DeployFailed",
        summary="s",
    )


def test_synced_and_healthy_when_the_desired_revision_became_healthy() -> None:
    row = fold(_wrap(_desired("a1"), _deploy("a1", DeployPhase.HEALTHY)))[("shop", "prod")]
    assert (row.sync, row.health) == ("Synced", "Healthy")


def test_out_of_sync_when_a_newer_revision_is_desired() -> None:
    row = fold(
        _wrap(
            _desired("a1"),
            _deploy("a1", DeployPhase.HEALTHY),
            _desired("b2"),
            _deploy("b2", DeployPhase.FAILED),
        )
    )[("shop", "prod")]
    assert (row.sync, row.health, row.deployed_revision) == ("OutOfSync", "Failed", "a1")


def test_alerts_open_until_resolved_and_drift_counts_objects() -> None:
    drift = DriftEvent(
        app="shop",
        environment="prod",
        revision="a1",
        status=DriftStatus.DETECTED,
        fingerprint="x",
        objects=[],
    )
    row = fold(_wrap(_alert(AlertStatus.FIRING), drift))[("shop", "prod")]
    assert list(row.firing) == ["f1"]
    assert row.drift is DriftStatus.DETECTED
    row = fold(_wrap(_alert(AlertStatus.FIRING), _alert(AlertStatus.RESOLVED)))[("shop", "prod")]
    assert row.firing == {}
    assert (row.sync, row.health) == ("Unknown", "Unknown")
