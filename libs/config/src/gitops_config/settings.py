"""Runtime settings of a service process, read once from the environment and passed in.

This is the only module that reads environment variables (besides `CredentialRef.resolve`, which
reads a secret at the moment it is used). A service calls `Settings.from_env()` at start-up and
hands the groups down as plain values, so nothing deep inside a handler depends on the
environment and tests can pass an explicit mapping. An empty variable counts as unset, as in the
OpenTelemetry specification, so `VAR=` in a compose file falls back to the default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import pydantic
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from gitops_config import errors, models

# validate_by_name: code (and tests) can also build a group with field names, not only the
# environment variable names that are the aliases.
_GROUP_CONFIG = ConfigDict(
    frozen=True,
    extra="forbid",
    validate_by_name=True,
    validate_by_alias=True,
    hide_input_in_errors=True,
)

_HOST_PORT_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


def _check_bootstrap_servers(value: str) -> str:
    servers = [server.strip() for server in value.split(",")]
    if not all(_HOST_PORT_RE.fullmatch(server) for server in servers):
        raise ValueError("must be host:port, or several separated by commas")
    return ",".join(servers)


def _check_topic_prefix(value: str) -> str:
    if len(value) > 200 or not re.fullmatch(r"[A-Za-z0-9._-]*", value):
        raise ValueError("may only contain letters, digits, '.', '_' and '-' (Kafka topic rules)")
    return value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class KafkaSettings(BaseModel):
    """How the service reaches Kafka, and how its topics are named."""

    model_config = _GROUP_CONFIG

    bootstrap_servers: Annotated[str, AfterValidator(_check_bootstrap_servers)] = Field(
        default="127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    topic_prefix: Annotated[str, AfterValidator(_check_topic_prefix)] = Field(
        default="gitops.", validation_alias="GITOPS_TOPIC_PREFIX"
    )
    # None: each service identifies itself by its own name.
    client_id: str | None = Field(default=None, validation_alias="GITOPS_KAFKA_CLIENT_ID")


class HttpSettings(BaseModel):
    """Where the service listens for HTTP (webhooks, metrics, health, the console)."""

    model_config = _GROUP_CONFIG

    host: str = Field(default="127.0.0.1", min_length=1, validation_alias="GITOPS_HTTP_HOST")
    # 0: each service uses its own well-known port.
    port: int = Field(default=0, ge=0, le=65535, validation_alias="GITOPS_HTTP_PORT")


class TelemetrySettings(BaseModel):
    """Traces and logs: where spans go, how many are kept, and how logs look."""

    model_config = _GROUP_CONFIG

    # None: spans are not exported (they still propagate, so traces stay whole downstream).
    otlp_endpoint: models.HttpUrl | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, validation_alias="GITOPS_TRACE_SAMPLE_RATIO"
    )
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)
    ] = Field(default="INFO", validation_alias="GITOPS_LOG_LEVEL")
    log_format: Annotated[Literal["json", "console"], BeforeValidator(_lower)] = Field(
        default="json", validation_alias="GITOPS_LOG_FORMAT"
    )


class Settings(BaseSettings):
    """Everything a service process needs to know about where it runs, in small groups.

    Build it with `Settings.from_env()`; constructing it directly reads nothing from the
    environment (only keyword arguments are used), which keeps tests hermetic.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        validate_by_name=True,
        validate_by_alias=True,
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    config_path: Path = Field(default=Path("gitops.yaml"), validation_alias="GITOPS_CONFIG")
    # As kubectl reads it: one path, or several joined by the OS path separator. None: the
    # Kubernetes client's default (~/.kube/config, or in-cluster configuration).
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Use keyword arguments only: `from_env` is the one place the environment is read."""
        return (init_settings,)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from `environ` (default: the process environment), once.

        Raises `ConfigError` naming each variable whose value is invalid.
        """
        environment = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field_name, variable in _variables():
            value = environment.get(variable)
            if not value:
                continue
            if field_name is None:
                values[variable] = value
            else:
                values.setdefault(field_name, {})[variable] = value
        try:
            return cls(**values)
        except pydantic.ValidationError as error:
            raise errors.ConfigError(
                "environment",
                [
                    errors.Problem(
                        path=str(detail["loc"][-1]),
                        message=detail["msg"].removeprefix("Value error, "),
                    )
                    for detail in error.errors()
                ],
            ) from None


def _variables() -> list[tuple[str | None, str]]:
    """(group field or None for a top-level setting, environment variable) for every setting."""
    found: list[tuple[str | None, str]] = []
    for name, field in Settings.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseModel):
            found.extend(
                (name, str(member.validation_alias)) for member in group.model_fields.values()
            )
        else:
            found.append((None, str(field.validation_alias)))
    return found


ENVIRONMENT_VARIABLES: tuple[str, ...] = tuple(variable for _, variable in _variables())
"""Every environment variable `Settings.from_env` reads, in declaration order."""


class ServiceSettings(BaseModel):
    """Base of one service's own settings: each field names its variable (validation_alias).

    Services read them once, at build time, with `from_environ`, and pass them down as plain
    values, so nothing deeper reads the environment.
    """

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """Read the settings from `environ` (empty values count as unset).

        Raises `ConfigError` naming each variable whose value is invalid, never the value.
        """
        values: dict[str, Any] = {}
        for field in cls.model_fields.values():
            variable = str(field.validation_alias)
            if environ.get(variable):
                values[variable] = environ[variable]
        try:
            return cls.model_validate(values)
        except pydantic.ValidationError as error:
            raise errors.ConfigError(
                "environment",
                [
                    errors.Problem(
                        path=str(detail["loc"][-1]),
                        message=detail["msg"].removeprefix("Value error, "),
                    )
                    for detail in error.errors()
                ],
            ) from None
