"""The drift detector's decisions: drift life-cycle, holding off during deploys, self-heal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gitops_config.models import App, Environment
from gitops_drift_detector import healing
from gitops_drift_detector.environments import EnvironmentState, next_status
from gitops_drift_detector.settings import DetectorSettings
from gitops_events import DeployEvent, DeployPhase, DesiredState, DriftStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


# --- the life of a drift -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("previous", "previous_fingerprint", "fingerprint", "expected"),
    [
        (None, "", "", None),
        (None, "", "aa", DriftStatus.DETECTED),
        (DriftStatus.RESOLVED, "aa", "aa", DriftStatus.DETECTED),
        (DriftStatus.RESOLVED, "aa", "", None),
        (DriftStatus.DETECTED, "aa", "aa", None),
        (DriftStatus.DETECTED, "aa", "bb", DriftStatus.CHANGED),
        (DriftStatus.CHANGED, "bb", "bb", None),
        (DriftStatus.CHANGED, "bb", "", DriftStatus.RESOLVED),
        (DriftStatus.DETECTED, "aa", "", DriftStatus.RESOLVED),
    ],
)
def test_only_news_is_published(
    previous: DriftStatus | None,
    previous_fingerprint: str,
    fingerprint: str,
    expected: DriftStatus | None,
) -> None:
    assert next_status(previous, previous_fingerprint, fingerprint) == expected


# --- an environment and its deployer -------------------------------------------------------------


def state(**settings: object) -> EnvironmentState:
    environment = Environment.model_validate(
        {"branch": "main", "cluster": "local", "namespace": "shop", **settings}
    )
    app = App(name="shop", repo="file:///srv/git/shop.git", environments={"staging": environment})
    return EnvironmentState(app, "staging", environment, healing.Policy())


def desired(revision: str, rendered_at: datetime = T0, digest: str | None = None) -> DesiredState:
    return DesiredState(
        app="shop",
        environment="staging",
        revision=revision,
        repo="file:///srv/git/shop.git",
        branch="main",
        cluster="local",
        namespace="shop",
        digest=digest or f"sha256:{revision}",
        objects=[],
        rendered_at=rendered_at,
    )


def deploy(revision: str | None, phase: DeployPhase) -> DeployEvent:
    return DeployEvent(
        app="shop", environment="staging", revision=revision, phase=phase, reason="X", message=""
    )


def test_a_new_desired_state_is_held_until_the_deployer_ends_its_deploy() -> None:
    env = state()
    assert env.record_desired(desired("r1"), now=100.0)
    assert env.hold_until(101.0, 60) == 160.0, "compared before the deployer applied"
    assert not env.record_deploy(deploy("r1", DeployPhase.STARTED), T0, now=102.0)
    assert env.hold_until(103.0, 60) is not None
    assert env.record_deploy(deploy("r1", DeployPhase.APPLIED), T0 + timedelta(seconds=1))
    assert env.hold_until(104.0, 60) is None
    assert env.hold_until(161.0, 60) is None


def test_the_hold_ends_after_the_settle_time_without_a_deployer() -> None:
    env = state()
    env.record_desired(desired("r1"), now=100.0)
    assert env.hold_until(159.0, 60) == 160.0
    assert env.hold_until(160.0, 60) is None


def test_without_auto_sync_or_while_suspended_nothing_is_awaited() -> None:
    manual = state(auto_sync=False)
    manual.record_desired(desired("r1"), now=100.0)
    assert manual.hold_until(101.0, 60) is None
    paused = state()
    paused.record_suspension(True, T0)
    paused.record_desired(desired("r1"), now=100.0)
    assert paused.hold_until(101.0, 60) is None


def test_a_deploy_that_ended_before_its_desired_state_arrived_is_not_awaited() -> None:
    env = state()
    env.record_deploy(deploy("r1", DeployPhase.HEALTHY), T0)
    env.record_desired(desired("r1"), now=100.0)
    assert env.hold_until(101.0, 60) is None


def test_older_events_are_ignored() -> None:
    env = state()
    assert env.record_desired(desired("r2", T0 + timedelta(seconds=5)))
    assert not env.record_desired(desired("r1", T0)), "an older desired state replaced a newer one"
    assert not env.record_desired(desired("r2", T0 + timedelta(seconds=5))), "a repeat counted"
    assert env.desired is not None
    assert env.desired.revision == "r2"
    assert env.record_deploy(deploy("r2", DeployPhase.APPLIED), T0 + timedelta(seconds=9))
    assert not env.record_deploy(deploy("r1", DeployPhase.STARTED), T0 + timedelta(seconds=1))
    assert env.hold_until(0.0, 60) is None
    env.record_suspension(True, T0 + timedelta(seconds=3))
    env.record_suspension(False, T0 + timedelta(seconds=2))
    assert env.suspended


# --- self-heal -----------------------------------------------------------------------------------


POLICY = healing.Policy(
    backoff_seconds=5, backoff_max_seconds=20, attempts=3, window_seconds=600, timeout_seconds=120
)


def test_one_sync_at_a_time_until_the_deploy_ends() -> None:
    heal = healing.SelfHeal(POLICY)
    assert heal.decide(0, "fp").action is healing.Action.HEAL
    assert heal.decide(1, "fp") == healing.Decision(healing.Action.WAIT, 120)
    heal.deploy_finished()
    assert heal.decide(2, "fp") == healing.Decision(healing.Action.WAIT, 5)
    assert heal.decide(5, "fp").action is healing.Action.HEAL


def test_a_sync_the_deployer_never_answers_is_retried_after_the_timeout() -> None:
    heal = healing.SelfHeal(POLICY)
    heal.decide(0, "fp")
    assert heal.decide(119, "fp").action is healing.Action.WAIT
    assert heal.decide(120, "fp").action is healing.Action.HEAL


def test_backoff_doubles_up_to_its_maximum() -> None:
    assert [POLICY.delay(n) for n in range(6)] == [0, 5, 10, 20, 20, 20]
    heal = healing.SelfHeal(POLICY)
    now = 0.0
    for fingerprint, wait in (("a", 5), ("b", 10), ("c", 20)):
        assert heal.decide(now, fingerprint).action is healing.Action.HEAL
        heal.deploy_finished()
        assert heal.decide(now + 1, "z") == healing.Decision(healing.Action.WAIT, now + wait)
        now += wait


def test_the_same_drift_coming_back_too_often_gives_up_for_a_window() -> None:
    heal = healing.SelfHeal(POLICY)
    now = 0.0
    for _ in range(3):
        assert heal.decide(now, "fp").action is healing.Action.HEAL
        heal.deploy_finished()
        assert heal.resolved()
        now += 30
    assert heal.decide(now, "fp").action is healing.Action.GIVE_UP
    assert heal.given_up
    assert heal.decide(now + 1, "fp").action is healing.Action.GIVEN_UP
    assert heal.decide(now + 1, "other").action is healing.Action.GIVEN_UP
    assert heal.decide(now + 600, "fp").action is healing.Action.HEAL, "never tried again"


def test_heals_older_than_the_window_are_forgotten() -> None:
    heal = healing.SelfHeal(POLICY)
    for now in (0.0, 300.0, 650.0):
        assert heal.decide(now, "fp").action is healing.Action.HEAL
        heal.deploy_finished()
    assert heal.decide(950.0, "fp").action is healing.Action.HEAL


def test_a_new_desired_state_starts_self_heal_afresh() -> None:
    env = state(self_heal=True)
    env.heal = healing.SelfHeal(healing.Policy(attempts=1))
    env.record_desired(desired("r1"))
    assert env.heal.decide(0, "fp").action is healing.Action.HEAL
    env.heal.deploy_finished()
    assert env.heal.decide(100, "fp").action is healing.Action.GIVE_UP
    env.record_desired(desired("r2", T0 + timedelta(seconds=1)))
    assert not env.heal.given_up
    assert env.heal.decide(101, "fp").action is healing.Action.HEAL


def test_resolved_counts_only_drift_that_a_sync_was_sent_for() -> None:
    heal = healing.SelfHeal(POLICY)
    assert not heal.resolved()
    heal.decide(0, "fp")
    assert heal.resolved()
    assert not heal.resolved()


def test_settings_come_from_the_environment_with_clear_errors() -> None:
    settings = DetectorSettings.from_environ(
        {"GITOPS_DRIFT_RESYNC_SECONDS": "60", "GITOPS_SELF_HEAL_ATTEMPTS": "5", "OTHER": "x"}
    )
    assert settings.resync_seconds == 60
    assert settings.healing_policy().attempts == 5
    assert DetectorSettings.from_environ({}).resync_seconds == 300
    with pytest.raises(Exception, match="GITOPS_SELF_HEAL_ATTEMPTS"):
        DetectorSettings.from_environ({"GITOPS_SELF_HEAL_ATTEMPTS": "0"})
