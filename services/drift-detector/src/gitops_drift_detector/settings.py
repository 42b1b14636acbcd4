"""drift-detector's own settings: resync, debounce, settling after deploys, self-heal backoff.

Read once, at build time, from a mapping of environment variables (`from_environ`), and passed
down as plain values; nothing deeper reads the environment. Which environments self-heal, and
which fields are ignored, is policy and lives in gitops.yaml (`self_heal`, `ignore`); these are
about timing.

| variable | default | meaning |
|---|---|---|
| GITOPS_DRIFT_RESYNC_SECONDS | 300 | every environment is compared afresh this often |
| GITOPS_DRIFT_DEBOUNCE_SECONDS | 0.05 | changes arriving this close together are compared once |
| GITOPS_DRIFT_SETTLE_SECONDS | 60 | longest wait for the deployer to apply a new desired state |
| GITOPS_DRIFT_RETRY_SECONDS | 5 | a failed comparison (cluster unreachable) is retried after |
| GITOPS_DRIFT_RESTORE_IDLE_SECONDS | 2 | start-up: the topics are read until idle this long |
| GITOPS_SELF_HEAL_BACKOFF_SECONDS | 5 | least time between two syncs, doubled each time |
| GITOPS_SELF_HEAL_BACKOFF_MAX_SECONDS | 300 | the longest wait between two syncs |
| GITOPS_SELF_HEAL_ATTEMPTS | 3 | syncs of the same drift within the window before giving up |
| GITOPS_SELF_HEAL_WINDOW_SECONDS | 600 | the window they are counted in; also how long to give up |
| GITOPS_SELF_HEAL_TIMEOUT_SECONDS | 120 | a sync the deployer says nothing of is retried after |

While the deployer applies (from a new desired state until it reports `applied`, `failed` or
another end of the deploy, at most GITOPS_DRIFT_SETTLE_SECONDS), an environment is not compared:
the differences of a rollout in progress are not drift.
"""

from __future__ import annotations

from pydantic import ConfigDict, Field

from gitops_config.settings import ServiceSettings
from gitops_drift_detector import healing


class DetectorSettings(ServiceSettings):
    """Everything drift-detector needs beyond the shared `Settings` and `gitops.yaml`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    resync_seconds: float = Field(
        default=300.0, gt=0, validation_alias="GITOPS_DRIFT_RESYNC_SECONDS"
    )
    debounce_seconds: float = Field(
        default=0.05, ge=0, validation_alias="GITOPS_DRIFT_DEBOUNCE_SECONDS"
    )
    settle_seconds: float = Field(
        default=60.0, ge=0, validation_alias="GITOPS_DRIFT_SETTLE_SECONDS"
    )
    retry_seconds: float = Field(default=5.0, gt=0, validation_alias="GITOPS_DRIFT_RETRY_SECONDS")
    restore_idle_seconds: float = Field(
        default=2.0, gt=0, validation_alias="GITOPS_DRIFT_RESTORE_IDLE_SECONDS"
    )
    self_heal_backoff_seconds: float = Field(
        default=5.0, ge=0, validation_alias="GITOPS_SELF_HEAL_BACKOFF_SECONDS"
    )
    self_heal_backoff_max_seconds: float = Field(
        default=300.0, ge=0, validation_alias="GITOPS_SELF_HEAL_BACKOFF_MAX_SECONDS"
    )
    self_heal_attempts: int = Field(default=3, ge=1, validation_alias="GITOPS_SELF_HEAL_ATTEMPTS")
    self_heal_window_seconds: float = Field(
        default=600.0, gt=0, validation_alias="GITOPS_SELF_HEAL_WINDOW_SECONDS"
    )
    self_heal_timeout_seconds: float = Field(
        default=120.0, gt=0, validation_alias="GITOPS_SELF_HEAL_TIMEOUT_SECONDS"
    )

    def healing_policy(self) -> healing.Policy:
        """The self-heal timing every environment with `self_heal: true` follows."""
        return healing.Policy(
            backoff_seconds=self.self_heal_backoff_seconds,
            backoff_max_seconds=self.self_heal_backoff_max_seconds,
            attempts=self.self_heal_attempts,
            window_seconds=self.self_heal_window_seconds,
            timeout_seconds=self.self_heal_timeout_seconds,
        )
