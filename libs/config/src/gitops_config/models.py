"""The typed model of `gitops.yaml`: what every service agrees the configuration means.

The file is the contract between the people who write it and the five services that read it, so
the model is strict: unknown fields are errors (a typo must not silently become a default), every
cross-reference (environment to cluster, image to app, route to sink) is checked, and credentials
can only be given by reference so that no secret ever sits in Git or in an error message.
Models are frozen: a loaded configuration is a value that is passed around, never edited.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, Self
from urllib.parse import SplitResult, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gitops_config import errors

# Validation context key: the loader sets it to report cross-reference problems itself, each
# with its own field path and line, instead of as one combined error on the whole document.
DEFER_REFERENCE_CHECKS = "defer_reference_checks"

Loc = tuple[str | int, ...]


class _Model(BaseModel):
    # hide_input_in_errors: a pydantic error must never echo a value that may be a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# --- Scalar types ------------------------------------------------------------------------------

_NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _check_name(value: str) -> str:
    if len(value) > 63 or not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(_check_name)]
"""A DNS-label-like name: apps, environments, clusters, namespaces and sinks all use it."""

_KIND_RE = re.compile(r"[A-Z][A-Za-z0-9]*")


def _check_kind(value: str) -> str:
    if not _KIND_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a Kubernetes kind (such as ClusterRole)")
    return value


Kind = Annotated[str, AfterValidator(_check_kind)]

_ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_env_var(value: str) -> str:
    if not _ENV_VAR_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (letters, digits and '_')")
    return value


def _check_branch(value: str) -> str:
    # The subset of git-check-ref-format rules that catches real mistakes in a config file.
    invalid = (
        not value
        or value.startswith(("-", "/"))
        or value.endswith(("/", ".", ".lock"))
        or ".." in value
        or "//" in value
        or "@{" in value
        or any(char.isspace() or char in "~^:?*[\\" or ord(char) < 32 for char in value)
    )
    if invalid:
        raise ValueError(f"{value!r} is not a valid Git branch name")
    return value


Branch = Annotated[str, AfterValidator(_check_branch)]


def _check_repo_path(value: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError("must be relative to the repository root (remove the leading '/')")
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise ValueError("must stay inside the repository ('..' leads outside it)")
    return posixpath.normpath(value)


RepoPath = Annotated[str, AfterValidator(_check_repo_path)]
"""A directory inside the repository, normalised (`a/../b` is `b`, `` is `.`); never escaping it."""

_SCP_LIKE_RE = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:(?!//).+")
_REPO_SCHEMES = ("https", "http", "ssh", "git", "file")


def _reject_url_credentials(url: SplitResult, field: str) -> None:
    if url.password is not None:
        raise ValueError(
            f"{field} must not contain a password or token; "
            "give credentials by reference: {env: VAR_NAME} or {file: /path/to/secret}"
        )


def _check_repo(value: str) -> str:
    # The value is never echoed: a malformed URL may still carry a token.
    if _SCP_LIKE_RE.fullmatch(value):
        return value
    if value.startswith("/"):
        return value
    url = urlsplit(value)
    if url.scheme in _REPO_SCHEMES:
        if url.scheme == "file":
            if url.netloc not in ("", "localhost") or not url.path:
                raise ValueError("a file:// URL needs an absolute path: file:///path/to/repo")
            return value
        _reject_url_credentials(url, "the repo URL")
        if not url.hostname:
            raise ValueError(f"the {url.scheme}:// URL has no host")
        return value
    raise ValueError(
        "not a Git repository location: use https://host/path, ssh://host/path, "
        "git@host:path, file:///path or an absolute local path"
    )


RepoUrl = Annotated[str, AfterValidator(_check_repo)]
"""Where an app's Git repository lives: https (or http, git:// for local servers), ssh,
scp-like `git@host:path`, `file://` or an absolute local path; never with a password in it."""


def _check_http_url(value: str) -> str:
    url = urlsplit(value)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if url.username is not None or url.password is not None:
        raise ValueError(
            "must not contain credentials; give them by reference: "
            "{env: VAR_NAME} or {file: /path/to/secret}"
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_check_http_url)]

_JSON_POINTER_RE = re.compile(r"(/([^~/]|~[01])*)+")


def _check_json_pointer(value: str) -> str:
    if not _JSON_POINTER_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a JSON pointer (RFC 6901), such as /spec/replicas; "
            "write '~1' for '/' and '~0' for '~' inside a key"
        )
    return value


JsonPointer = Annotated[str, AfterValidator(_check_json_pointer)]

# Docker distribution reference grammar, without tag or digest.
_IMAGE_RE = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


def _check_image(value: str) -> str:
    last = value.rsplit("/", 1)[-1]
    if "@" in value or ":" in last:
        raise ValueError(
            f"{value!r} names a tag or digest; give the image repository only, "
            "such as registry.example.com/team/app"
        )
    if len(value) > 255 or not _IMAGE_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an image repository name, such as registry.example.com/team/app"
        )
    return value


ImageName = Annotated[str, AfterValidator(_check_image)]

_SEMVER_PARTIAL = (
    r"v?(?:0|[1-9][0-9]*|[xX*])(?:\.(?:0|[1-9][0-9]*|[xX*])){0,2}"
    r"(?:-[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)
_SEMVER_COMPARATOR_RE = re.compile(rf"(?:>=|<=|!=|~>|[<>=^~])?{_SEMVER_PARTIAL}")
_SEMVER_HYPHEN_RE = re.compile(rf"{_SEMVER_PARTIAL}\s+-\s+{_SEMVER_PARTIAL}")
_SEMVER_OPERATOR_SPACE_RE = re.compile(r"(>=|<=|!=|~>|[<>=^~])\s+")


def _check_semver_range(value: str) -> str:
    # Validated token by token (no backtracking-prone single regex): the syntax of
    # Masterminds/semver constraints, which Flux users already write.
    problem = f"{value!r} is not a semver range, such as '>=1.2.0 <2.0.0', '^1.2' or '1.x'"
    if not value.strip() or len(value) > 256:
        raise ValueError(problem)
    for alternative in value.split("||"):
        alternative = alternative.strip()
        if _SEMVER_HYPHEN_RE.fullmatch(alternative):
            continue
        tokens = re.split(r"[\s,]+", _SEMVER_OPERATOR_SPACE_RE.sub(r"\1", alternative))
        if not alternative or not all(_SEMVER_COMPARATOR_RE.fullmatch(t) for t in tokens):
            raise ValueError(problem)
    return value


SemverRange = Annotated[str, AfterValidator(_check_semver_range)]


# --- Credentials -------------------------------------------------------------------------------


class CredentialRef(_Model):
    """Where a secret lives: exactly one of an environment variable or a file, read at use time.

    The value is never stored in the configuration; `resolve()` reads it when a service needs it
    and returns a `SecretStr`, so it does not show in reprs, logs or error messages.
    """

    env: Annotated[str, AfterValidator(_check_env_var)] | None = None
    # A relative file is read relative to the working directory of the service that resolves it.
    file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _never_inline(cls, data: Any) -> Any:
        if isinstance(data, str | int | float) and not isinstance(data, bool):
            raise ValueError(
                "credentials are never inline: use {env: VAR_NAME} or {file: /path/to/secret}"
            )
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.env is None) == (self.file is None):
            raise ValueError(
                "give exactly one of env or file: use {env: VAR_NAME} or {file: /path/to/secret}"
            )
        return self

    def __str__(self) -> str:
        """Describe the reference (never the value), as it would be written in YAML."""
        return f"{{env: {self.env}}}" if self.env is not None else f"{{file: {self.file}}}"

    def resolve(self, environ: Mapping[str, str] | None = None) -> SecretStr:
        """Read the secret now; `environ` defaults to the process environment.

        Trailing line breaks are dropped from files (editors and `echo` add them). Raises
        `CredentialError` naming this reference when the secret is missing or empty.
        """
        if self.file is not None:
            value = self._read_file(self.file)
        else:
            value = self._read_env(os.environ if environ is None else environ)
        if not value:
            raise errors.CredentialError(str(self), "the secret is empty")
        return SecretStr(value)

    def _read_env(self, environ: Mapping[str, str]) -> str:
        value = None if self.env is None else environ.get(self.env)
        if value is None:
            raise errors.CredentialError(str(self), f"environment variable {self.env} is not set")
        return value

    def _read_file(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise errors.CredentialError(str(self), f"cannot read {path}: {reason}") from None
        except UnicodeDecodeError:
            raise errors.CredentialError(str(self), f"{path} is not UTF-8 text") from None


# --- Clusters ----------------------------------------------------------------------------------


class Cluster(_Model):
    """How to reach one Kubernetes cluster: a kubeconfig and/or context, or in-cluster config.

    A context without a kubeconfig uses the service's default kubeconfig (`KUBECONFIG`); a
    kubeconfig without a context uses that file's current context.
    """

    kubeconfig: Path | None = None
    context: str | None = None
    in_cluster: bool = False

    @model_validator(mode="after")
    def _exactly_one_way(self) -> Self:
        out_of_cluster = self.kubeconfig is not None or self.context is not None
        if self.in_cluster and out_of_cluster:
            raise ValueError("in_cluster: true cannot be combined with kubeconfig or context")
        if not self.in_cluster and not out_of_cluster:
            raise ValueError("set kubeconfig and/or context, or in_cluster: true")
        return self


# --- Apps --------------------------------------------------------------------------------------


class IgnoreRule(_Model):
    """Fields that drift detection must not report, for the objects the rule matches.

    A rule without `kind` or `name` matches every kind or name.
    """

    kind: Kind | None = None
    name: str | None = None
    json_pointers: list[JsonPointer] = Field(min_length=1)


class Environment(_Model):
    """One deployment target of an app: a branch of its repo applied to a cluster namespace."""

    branch: Branch
    cluster: Name
    namespace: Name
    auto_sync: bool = True
    self_heal: bool = False
    prune: bool = True
    health_timeout_seconds: float = Field(default=300.0, gt=0)
    # The app may never write outside these namespaces; defaults to `namespace` alone.
    allowed_namespaces: list[Name] = Field(default_factory=list)
    # Cluster-scoped kinds (such as ClusterRole) are refused unless listed here.
    allow_cluster_scoped: list[Kind] = Field(default_factory=list)
    rollback_on_failure: bool = False
    suspended: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_allowed_namespaces(cls, data: Any) -> Any:
        # Only a valid namespace is copied, so a bad one is reported once, where it was written.
        if isinstance(data, dict) and "allowed_namespaces" not in data:
            namespace = data.get("namespace")
            if isinstance(namespace, str) and _NAME_RE.fullmatch(namespace):
                return {**data, "allowed_namespaces": [namespace]}
        return data

    @model_validator(mode="after")
    def _namespace_is_allowed(self) -> Self:
        if self.namespace not in self.allowed_namespaces:
            raise ValueError(
                f"allowed_namespaces must include the environment's own namespace "
                f"{self.namespace!r}"
            )
        return self


class App(_Model):
    """One application: one Git repository, rendered one way, deployed to its environments."""

    name: Name
    repo: RepoUrl
    path: RepoPath = "."
    render: Literal["plain", "kustomize", "helm"] = "plain"
    credentials: CredentialRef | None = None
    ignore: list[IgnoreRule] = Field(default_factory=list)
    environments: dict[Name, Environment] = Field(min_length=1)


# --- Images ------------------------------------------------------------------------------------


class SemverPolicy(_Model):
    """Pick the highest tag that is a semantic version inside `range`."""

    kind: Literal["semver"]
    range: SemverRange
    prereleases: bool = False


# Flux-style extract templates: $name, ${name}, $1; `$$` is a literal dollar.
_TEMPLATE_REFERENCE_RE = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


class RegexPolicy(_Model):
    """Keep tags that match `pattern`, extract a value from each, and pick the highest value.

    `extract` is a Flux-style template over the pattern's groups (`$ts`, `${ts}`, `$1`). Without
    it, the pattern must have exactly one group (or exactly one named group), whose text is used.
    Patterns are searched (not anchored), as in Flux: anchor them with `^...$` when needed.
    """

    kind: Literal["regex"]
    pattern: str
    extract: str | None = None
    order: Literal["numerical", "alphabetical"]

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return pattern

    @model_validator(mode="after")
    def _extract_names_groups(self) -> Self:
        compiled = re.compile(self.pattern)
        if self.extract is None:
            if compiled.groups != 1 and len(compiled.groupindex) != 1:
                raise ValueError(
                    f"pattern has {compiled.groups} groups: give it exactly one named group "
                    "such as (?P<ts>[0-9]+), or say which to use with extract: '$name'"
                )
            return self
        references = [
            name or number
            for name, number in _TEMPLATE_REFERENCE_RE.findall(self.extract)
            if name or number
        ]
        if not references:
            raise ValueError("extract must refer to a group of the pattern, such as '$ts'")
        for reference in references:
            known = (
                int(reference) <= compiled.groups
                if reference.isdigit()
                else reference in compiled.groupindex
            )
            if not known:
                groups = ", ".join(compiled.groupindex) or "none"
                raise ValueError(
                    f"extract refers to group {reference!r}, which the pattern does not have "
                    f"(named groups: {groups})"
                )
        return self

    def extract_from(self, tag: str) -> str | None:
        """Return the value to compare for `tag`, or None when the tag does not match."""
        match = re.search(self.pattern, tag)
        if match is None:
            return None
        if self.extract is None:
            group: str | int = next(iter(match.re.groupindex), 1)
            return match.group(group) or ""

        def expand(reference: re.Match[str]) -> str:
            name = reference.group(1) or reference.group(2)
            if name is None:
                return "$"
            return match.group(int(name) if name.isdigit() else name) or ""

        return _TEMPLATE_REFERENCE_RE.sub(expand, self.extract)


class NumericalPolicy(_Model):
    """Pick the tag that is the highest number (`asc`) or the lowest (`desc`), as in Flux."""

    kind: Literal["numerical"]
    order: Literal["asc", "desc"] = "asc"


class AlphabeticalPolicy(_Model):
    """Pick the tag that sorts last (`asc`) or first (`desc`), as in Flux."""

    kind: Literal["alphabetical"]
    order: Literal["asc", "desc"] = "asc"


ImagePolicy = Annotated[
    SemverPolicy | RegexPolicy | NumericalPolicy | AlphabeticalPolicy,
    Field(discriminator="kind"),
]


class Image(_Model):
    """An image the config-updater follows, and the app environment whose branch it writes to."""

    name: ImageName
    policy: ImagePolicy
    app: Name
    environment: Name = "staging"
    # Write `tag@sha256:...` instead of the tag alone, so a moved tag cannot change what runs.
    pin_digest: bool = False


# --- Alerts ------------------------------------------------------------------------------------

Severity = Literal["info", "warning", "error", "critical"]


class RouteMatch(_Model):
    """Which alerts a route takes; a field left out matches everything."""

    app: Name | None = None
    environment: Name | None = None
    severity: Severity | None = None
    reason: str | None = None


class Route(_Model):
    """Send matching alerts to sinks, grouped for a while, and repeated at most so often."""

    match: RouteMatch = Field(default_factory=RouteMatch)
    sinks: list[Name] = Field(min_length=1)
    group_wait_seconds: float = Field(default=30.0, ge=0)
    repeat_interval_seconds: float = Field(default=14400.0, gt=0)


class WebhookSink(_Model):
    """POST alerts as JSON to a URL, signed with HMAC-SHA256 when a secret is given."""

    kind: Literal["webhook"]
    url: HttpUrl
    hmac_secret: CredentialRef | None = None


class SlackSink(_Model):
    """Post to a Slack-compatible incoming webhook; its URL is itself the secret."""

    kind: Literal["slack"]
    url: CredentialRef


class AlertmanagerSink(_Model):
    """Push alerts to a Prometheus Alertmanager (its base URL)."""

    kind: Literal["alertmanager"]
    url: HttpUrl


class GrafanaSink(_Model):
    """Write deploys and alerts as Grafana annotations."""

    kind: Literal["grafana"]
    url: HttpUrl
    token: CredentialRef


Sink = Annotated[
    WebhookSink | SlackSink | AlertmanagerSink | GrafanaSink,
    Field(discriminator="kind"),
]


class Alerts(_Model):
    """Where alerts go: routes, tried in order, to named sinks."""

    routes: list[Route] = Field(default_factory=list)
    sinks: dict[Name, Sink] = Field(default_factory=dict)


# --- The whole file ----------------------------------------------------------------------------


class GitopsConfig(_Model):
    """The whole of `gitops.yaml`."""

    version: Literal[1] = 1
    clusters: dict[Name, Cluster] = Field(default_factory=dict)
    apps: list[App] = Field(default_factory=list)
    images: list[Image] = Field(default_factory=list)
    alerts: Alerts = Field(default_factory=Alerts)

    @model_validator(mode="after")
    def _check_references(self, info: ValidationInfo) -> Self:
        if isinstance(info.context, dict) and info.context.get(DEFER_REFERENCE_CHECKS):
            return self
        problems = reference_problems(self)
        if problems:
            raise ValueError(
                "; ".join(f"{field_path(loc)}: {message}" for loc, message in problems)
            )
        return self

    def app(self, name: str) -> App:
        """Return the app called `name`; `KeyError` names the defined apps if there is none."""
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(f"unknown app {name!r}; defined apps: {_listing(a.name for a in self.apps)}")


def _listing(names: Iterable[str]) -> str:
    listed = sorted(set(names))
    return ", ".join(listed) if listed else "none"


def field_path(loc: Loc) -> str:
    """Render a field location as `apps[1].environments.staging.cluster`."""
    rendered = ""
    for segment in loc:
        if isinstance(segment, int):
            rendered += f"[{segment}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", segment):
            rendered += f".{segment}" if rendered else segment
        else:
            rendered += f"[{segment!r}]"
    return rendered


def reference_problems(config: GitopsConfig) -> list[tuple[Loc, str]]:
    """Find every cross-reference mistake: duplicates and names that point at nothing.

    Returns (field location, message) pairs so the loader can attach line numbers.
    """
    problems: list[tuple[Loc, str]] = []
    seen_apps: set[str] = set()
    apps_by_name: dict[str, App] = {}
    for index, app in enumerate(config.apps):
        if app.name in seen_apps:
            problems.append(
                (("apps", index, "name"), f"duplicate app {app.name!r}; app names must be unique")
            )
        seen_apps.add(app.name)
        apps_by_name.setdefault(app.name, app)
        problems.extend(_environment_problems(config, index, app))

    for index, image in enumerate(config.images):
        target = apps_by_name.get(image.app)
        if target is None:
            problems.append(
                (
                    ("images", index, "app"),
                    f"unknown app {image.app!r}; defined apps: {_listing(apps_by_name)}",
                )
            )
        elif image.environment not in target.environments:
            problems.append(
                (
                    ("images", index, "environment"),
                    f"app {image.app!r} has no environment {image.environment!r}; "
                    f"its environments: {_listing(target.environments)}",
                )
            )
    followed: set[tuple[str, str, str]] = set()
    for index, image in enumerate(config.images):
        key = (image.name, image.app, image.environment)
        if key in followed:
            problems.append(
                (
                    ("images", index, "name"),
                    f"image {image.name!r} is already followed for "
                    f"{image.app}/{image.environment}; one policy per image and environment",
                )
            )
        followed.add(key)

    all_environments = {name for app in config.apps for name in app.environments}
    for index, route in enumerate(config.alerts.routes):
        match = route.match
        loc: Loc = ("alerts", "routes", index, "match")
        if match.app is not None and match.app not in apps_by_name:
            problems.append(
                (
                    (*loc, "app"),
                    f"unknown app {match.app!r}; defined apps: {_listing(apps_by_name)}",
                )
            )
        if match.environment is not None:
            scope = (
                apps_by_name[match.app].environments
                if match.app in apps_by_name
                else all_environments
            )
            if match.environment not in scope:
                problems.append(
                    (
                        (*loc, "environment"),
                        f"unknown environment {match.environment!r}; "
                        f"defined environments: {_listing(scope)}",
                    )
                )
        for sink_index, sink in enumerate(route.sinks):
            if sink not in config.alerts.sinks:
                problems.append(
                    (
                        ("alerts", "routes", index, "sinks", sink_index),
                        f"unknown sink {sink!r}; defined sinks: {_listing(config.alerts.sinks)}",
                    )
                )
    return problems


def _environment_problems(config: GitopsConfig, index: int, app: App) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    branches: dict[str, str] = {}
    targets: dict[tuple[str, str], str] = {}
    for env_name, environment in app.environments.items():
        loc: Loc = ("apps", index, "environments", env_name)
        if environment.cluster not in config.clusters:
            problems.append(
                (
                    (*loc, "cluster"),
                    f"unknown cluster {environment.cluster!r}; "
                    f"defined clusters: {_listing(config.clusters)}",
                )
            )
        other = branches.setdefault(environment.branch, env_name)
        if other != env_name:
            problems.append(
                (
                    (*loc, "branch"),
                    f"branch {environment.branch!r} is already used by environment {other!r}; "
                    "each environment needs its own branch",
                )
            )
        target = (environment.cluster, environment.namespace)
        other = targets.setdefault(target, env_name)
        if other != env_name:
            problems.append(
                (
                    (*loc, "namespace"),
                    f"namespace {environment.namespace!r} on cluster {environment.cluster!r} is "
                    f"already the target of environment {other!r}; two environments of one app "
                    "would prune each other's objects",
                )
            )
    return problems
