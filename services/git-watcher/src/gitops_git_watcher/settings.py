"""git-watcher's own settings: polling, webhooks, the Git cache, kubectl and render limits.

They are read once, at build time, from a mapping of environment variables (`from_environ`),
and passed down as plain values; nothing deeper reads the environment. The webhook secret is
held as a `SecretStr` so it never shows in a repr, a log line or an error.

| variable | default | meaning |
|---|---|---|
| GITOPS_POLL_INTERVAL_SECONDS | 60 | seconds between two polls of every repository |
| GITOPS_WEBHOOK_SECRET | unset | shared secret of every webhook (HMAC key, or GitLab token) |
| GITOPS_WEBHOOK_ALLOW_UNSIGNED | false | accept unsigned webhooks when no secret is set |
| GITOPS_WEBHOOK_MAX_BYTES | 1048576 | larger webhook payloads are refused with 413 |
| GITOPS_GIT_CACHE_DIR | ~/.cache/gitops/git-watcher | where the bare mirrors live |
| GITOPS_GIT_TIMEOUT_SECONDS | 120 | a fetch taking longer is killed |
| GITOPS_KUBECTL | kubectl | the kubectl binary that runs `kubectl kustomize` |
| GITOPS_RENDER_MAX_FILE_BYTES | 1048576 | larger files in a repository are refused |
| GITOPS_RENDER_MAX_TOTAL_BYTES | 67108864 | the most one render may read or produce |
| GITOPS_RENDER_MAX_OBJECTS | 1000 | the most objects one app environment may render to |
| GITOPS_RENDER_TIMEOUT_SECONDS | 60 | a kustomize build taking longer fails |
| GITOPS_RESTORE_IDLE_SECONDS | 2 | start-up: the desired topic is read until idle this long |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, SecretStr

from gitops_config.settings import ServiceSettings
from gitops_git_watcher.rendering import RenderLimits


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "gitops" / "git-watcher"


class WatcherSettings(ServiceSettings):
    """Everything git-watcher needs beyond the shared `Settings` and `gitops.yaml`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    poll_interval_seconds: float = Field(
        default=60.0, gt=0, validation_alias="GITOPS_POLL_INTERVAL_SECONDS"
    )
    # None: webhooks are refused (503) unless allow_unsigned_webhooks is set.
    webhook_secret: SecretStr | None = Field(default=None, validation_alias="GITOPS_WEBHOOK_SECRET")
    allow_unsigned_webhooks: bool = Field(
        default=False, validation_alias="GITOPS_WEBHOOK_ALLOW_UNSIGNED"
    )
    max_webhook_bytes: int = Field(
        default=1024 * 1024, gt=0, validation_alias="GITOPS_WEBHOOK_MAX_BYTES"
    )
    cache_dir: Path = Field(
        default_factory=_default_cache_dir, validation_alias="GITOPS_GIT_CACHE_DIR"
    )
    git_timeout_seconds: float = Field(
        default=120.0, gt=0, validation_alias="GITOPS_GIT_TIMEOUT_SECONDS"
    )
    kubectl: str = Field(default="kubectl", min_length=1, validation_alias="GITOPS_KUBECTL")
    max_file_bytes: int = Field(
        default=1024 * 1024, gt=0, validation_alias="GITOPS_RENDER_MAX_FILE_BYTES"
    )
    max_total_bytes: int = Field(
        default=64 * 1024 * 1024, gt=0, validation_alias="GITOPS_RENDER_MAX_TOTAL_BYTES"
    )
    max_objects: int = Field(default=1000, gt=0, validation_alias="GITOPS_RENDER_MAX_OBJECTS")
    render_timeout_seconds: float = Field(
        default=60.0, gt=0, validation_alias="GITOPS_RENDER_TIMEOUT_SECONDS"
    )
    restore_idle_seconds: float = Field(
        default=2.0, gt=0, validation_alias="GITOPS_RESTORE_IDLE_SECONDS"
    )

    def render_limits(self) -> RenderLimits:
        """The limits every render runs under."""
        return RenderLimits(
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_total_bytes,
            max_objects=self.max_objects,
            timeout_seconds=self.render_timeout_seconds,
        )
