"""The alerter's own settings: playbook links and how hard sinks are tried.

Read once, at build time, from a mapping of environment variables (`from_environ`), and passed
down as plain values; nothing deeper reads the environment. Routes and sinks themselves are in
gitops.yaml (`alerts:`); these are about the process, not the policy.

| variable | default | meaning |
|---|---|---|
| GITOPS_PLAYBOOK_BASE_URL | unset | links are `<base>/playbooks/<reason>.md` (see below) |
| GITOPS_ALERT_SINK_TIMEOUT_SECONDS | 10 | a sink request taking longer fails (and is retried) |
| GITOPS_ALERT_SINK_ATTEMPTS | 5 | tries per notification and sink before it counts as failed |
| GITOPS_ALERT_RETRY_BACKOFF_SECONDS | 1 | wait before the second try; doubled before each next |
| GITOPS_ALERT_RETRY_BACKOFF_MAX_SECONDS | 60 | the longest wait between two tries |
| GITOPS_ALERT_QUEUE_SIZE | 1000 | notifications waiting per sink; more are dropped (failed) |

The playbook base is where the config repository's files can be read by people, such as
`https://git.example.com/team/{app}-config/blob/main`; `{app}` and `{environment}` are replaced.
Unset, alerts carry no playbook link. The alerter never reads Git (git-watcher does), so the link
is not checked: a reason without a playbook gives a link to a missing file.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, ConfigDict, Field

from gitops_config.settings import ServiceSettings


def _check_playbook_base(value: str) -> str:
    url = urlsplit(value)
    if url.username is not None or url.password is not None:
        raise ValueError("must not contain credentials: playbook links are shown to people")
    return value


class AlerterSettings(ServiceSettings):
    """Everything the alerter needs beyond the shared `Settings` and `gitops.yaml`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    # None: alerts carry no playbook link.
    playbook_base_url: Annotated[str, AfterValidator(_check_playbook_base)] | None = Field(
        default=None, validation_alias="GITOPS_PLAYBOOK_BASE_URL"
    )
    sink_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias="GITOPS_ALERT_SINK_TIMEOUT_SECONDS"
    )
    sink_attempts: int = Field(default=5, ge=1, validation_alias="GITOPS_ALERT_SINK_ATTEMPTS")
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, validation_alias="GITOPS_ALERT_RETRY_BACKOFF_SECONDS"
    )
    retry_backoff_max_seconds: float = Field(
        default=60.0, ge=0, validation_alias="GITOPS_ALERT_RETRY_BACKOFF_MAX_SECONDS"
    )
    queue_size: int = Field(default=1000, ge=1, validation_alias="GITOPS_ALERT_QUEUE_SIZE")

    def backoff(self, attempt: int) -> float:
        """The wait after failed try number `attempt` (1-based): doubling, capped."""
        delay: float = self.retry_backoff_seconds * 2 ** (attempt - 1)
        return min(delay, self.retry_backoff_max_seconds)
