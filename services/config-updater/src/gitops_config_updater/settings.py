"""config-updater's own settings: image webhooks, the Git work directory, the commit author.

They are read once, at build time, from a mapping of environment variables (`from_environ`),
and passed down as plain values; nothing deeper reads the environment. The webhook secret is
held as a `SecretStr` so it never shows in a repr, a log line or an error.

| variable | default | meaning |
|---|---|---|
| GITOPS_IMAGE_WEBHOOK_SECRET | unset | HMAC key (generic, GitHub); token (registry, Harbor) |
| GITOPS_IMAGE_WEBHOOK_ALLOW_UNSIGNED | false | accept unsigned webhooks if no secret is set |
| GITOPS_IMAGE_WEBHOOK_MAX_BYTES | 1048576 | larger webhook payloads are refused with 413 |
| GITOPS_GIT_WORK_DIR | ~/.cache/gitops/config-updater | where the clones with work trees live |
| GITOPS_GIT_TIMEOUT_SECONDS | 120 | a fetch, merge or push taking longer is killed |
| GITOPS_GIT_AUTHOR_NAME | gitops-config-updater | author and committer of every commit |
| GITOPS_GIT_AUTHOR_EMAIL | config-updater@gitops.invalid | their email address |
| GITOPS_COMMIT_TEMPLATE | see `DEFAULT_TEMPLATE` | the message of image update commits |
| GITOPS_PUSH_ATTEMPTS | 5 | pushes refused as not fast-forward are re-applied this often |
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict, Field, SecretStr, field_validator

from gitops_config.settings import ServiceSettings

#: Placeholders: {image}, {old}, {new}, {policy}, {app}, {environment}, {changes} (one per line).
DEFAULT_TEMPLATE = "Update {image} from {old} to {new}\n\nPolicy: {policy}\n\n{changes}\n"
_PLACEHOLDERS = {"image": "", "old": "", "new": "", "policy": "", "app": "", "environment": ""}


def _default_work_dir() -> Path:
    return Path.home() / ".cache" / "gitops" / "config-updater"


class UpdaterSettings(ServiceSettings):
    """Everything config-updater needs beyond the shared `Settings` and `gitops.yaml`."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    # None: image webhooks are refused (503) unless allow_unsigned_webhooks is set.
    webhook_secret: SecretStr | None = Field(
        default=None, validation_alias="GITOPS_IMAGE_WEBHOOK_SECRET"
    )
    allow_unsigned_webhooks: bool = Field(
        default=False, validation_alias="GITOPS_IMAGE_WEBHOOK_ALLOW_UNSIGNED"
    )
    max_webhook_bytes: int = Field(
        default=1024 * 1024, gt=0, validation_alias="GITOPS_IMAGE_WEBHOOK_MAX_BYTES"
    )
    work_dir: Path = Field(
        default_factory=_default_work_dir, validation_alias="GITOPS_GIT_WORK_DIR"
    )
    git_timeout_seconds: float = Field(
        default=120.0, gt=0, validation_alias="GITOPS_GIT_TIMEOUT_SECONDS"
    )
    author_name: str = Field(
        default="gitops-config-updater", min_length=1, validation_alias="GITOPS_GIT_AUTHOR_NAME"
    )
    author_email: str = Field(
        default="config-updater@gitops.invalid",
        min_length=3,
        validation_alias="GITOPS_GIT_AUTHOR_EMAIL",
    )
    commit_template: str = Field(
        default=DEFAULT_TEMPLATE, min_length=1, validation_alias="GITOPS_COMMIT_TEMPLATE"
    )
    push_attempts: int = Field(default=5, ge=1, le=50, validation_alias="GITOPS_PUSH_ATTEMPTS")

    @field_validator("commit_template")
    @classmethod
    def _template_formats(cls, template: str) -> str:
        try:
            template.format(**_PLACEHOLDERS, changes="")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                f"not a valid commit template ({exc}); use the placeholders "
                "{image}, {old}, {new}, {policy}, {app}, {environment}, {changes}"
            ) from None
        return template

    @field_validator("author_name", "author_email")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if any(c in value for c in "<>\n\r\0"):
            raise ValueError("must not contain '<', '>' or line breaks")
        return value
