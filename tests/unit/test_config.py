"""Unit tests for gitops_config: the gitops.yaml model, its loader and the runtime settings."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from gitops_config import (
    ConfigError,
    GitopsConfig,
    Settings,
    load_config,
    loading,
    models,
    parse_config,
    settings,
)
from gitops_config.errors import CredentialError

REPO = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-value-that-must-not-leak"

FULL = """\
version: 1
clusters:
  dev:
    kubeconfig: /etc/kube/dev
    context: dev-admin
  prod:
    in_cluster: true
apps:
  - name: shop
    repo: https://git.example.com/team/shop.git
    path: deploy/overlays/../base
    render: kustomize
    credentials: {env: SHOP_TOKEN}
    ignore:
      - kind: Deployment
        name: web
        json_pointers: [/spec/replicas, /metadata/annotations/a~1b]
    environments:
      staging:
        branch: staging
        cluster: dev
        namespace: shop-staging
      production:
        branch: production
        cluster: prod
        namespace: shop
        auto_sync: false
        self_heal: true
        prune: false
        health_timeout_seconds: 90.5
        allowed_namespaces: [shop, shop-jobs]
        allow_cluster_scoped: [ClusterRole]
        rollback_on_failure: true
        suspended: true
  - name: billing
    repo: git@git.example.com:team/billing.git
    credentials: {file: /run/secrets/billing}
    environments:
      staging: {branch: main, cluster: dev, namespace: billing}
images:
  - name: registry.example.com/team/shop
    policy: {kind: semver, range: ">=1.2.0 <2.0.0 || ^3.0", prereleases: true}
    app: shop
    pin_digest: true
  - name: registry.example.com:5000/team/worker
    policy: {kind: regex, pattern: '^main-(?P<ts>[0-9]+)$', extract: $ts, order: numerical}
    app: shop
    environment: production
  - name: ghcr.io/team/billing
    policy: {kind: numerical, order: desc}
    app: billing
  - name: busybox
    policy: {kind: alphabetical}
    app: billing
alerts:
  routes:
    - match: {app: shop, environment: production, severity: critical, reason: HealthFailed}
      sinks: [pager, chat]
      group_wait_seconds: 0
      repeat_interval_seconds: 60
    - sinks: [grafana, hook]
  sinks:
    pager: {kind: alertmanager, url: "http://alertmanager:9093"}
    chat: {kind: slack, url: {env: SLACK_URL}}
    grafana: {kind: grafana, url: "https://grafana.example.com", token: {file: /run/grafana}}
    hook: {kind: webhook, url: "https://hooks.example.com/x", hmac_secret: {env: HOOK_KEY}}
"""

BASE = """\
clusters:
  dev: {context: dev}
apps:
  - name: shop
    repo: https://git.example.com/shop.git
    environments:
      staging: {branch: staging, cluster: dev, namespace: shop}
"""


def config_error(text: str) -> ConfigError:
    """Parse `text`, expecting exactly one ConfigError, and return it."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "gitops.yaml")
    return caught.value


def single_problem(text: str) -> str:
    """Parse `text`, expecting a ConfigError with exactly one problem; return its message."""
    error = config_error(text)
    assert len(error.problems) == 1, str(error)
    assert "\n" not in str(error)
    assert str(error).startswith("gitops.yaml")
    return str(error)


# --- Valid configurations ----------------------------------------------------------------------


def test_full_example_parses_with_every_field() -> None:
    config = parse_config(FULL, "gitops.yaml")

    assert config.version == 1
    assert config.clusters["dev"].kubeconfig == Path("/etc/kube/dev")
    assert config.clusters["prod"].in_cluster
    shop = config.app("shop")
    assert shop.path == "deploy/base"
    assert shop.render == "kustomize"
    assert shop.credentials == models.CredentialRef(env="SHOP_TOKEN")
    assert shop.ignore[0].json_pointers == ["/spec/replicas", "/metadata/annotations/a~1b"]
    staging = shop.environments["staging"]
    assert (staging.auto_sync, staging.self_heal, staging.prune) == (True, False, True)
    assert staging.health_timeout_seconds == 300
    assert staging.allowed_namespaces == ["shop-staging"]
    assert staging.allow_cluster_scoped == []
    assert not staging.rollback_on_failure
    assert not staging.suspended
    production = shop.environments["production"]
    assert production.allowed_namespaces == ["shop", "shop-jobs"]
    assert production.allow_cluster_scoped == ["ClusterRole"]
    assert production.health_timeout_seconds == 90.5
    assert (production.auto_sync, production.self_heal, production.prune) == (False, True, False)
    assert production.rollback_on_failure
    assert production.suspended
    billing = config.app("billing")
    assert billing.path == "."
    assert billing.render == "plain"
    assert billing.credentials == models.CredentialRef(file=Path("/run/secrets/billing"))

    semver, regex, numerical, alphabetical = (image.policy for image in config.images)
    assert isinstance(semver, models.SemverPolicy)
    assert semver.prereleases
    assert config.images[0].environment == "staging"
    assert config.images[0].pin_digest
    assert isinstance(regex, models.RegexPolicy)
    assert isinstance(numerical, models.NumericalPolicy)
    assert numerical.order == "desc"
    assert isinstance(alphabetical, models.AlphabeticalPolicy)
    assert alphabetical.order == "asc"

    first, second = config.alerts.routes
    assert first.match.severity == "critical"
    assert first.group_wait_seconds == 0
    assert second.match == models.RouteMatch()
    assert (second.group_wait_seconds, second.repeat_interval_seconds) == (30, 14400)
    assert isinstance(config.alerts.sinks["chat"], models.SlackSink)
    assert isinstance(config.alerts.sinks["hook"], models.WebhookSink)


def test_minimal_file_gets_defaults() -> None:
    config = parse_config("{}", "gitops.yaml")

    assert config == GitopsConfig()
    assert config.apps == []
    assert config.alerts.routes == []


def test_example_in_deploy_loads() -> None:
    config = load_config(REPO / "deploy" / "examples" / "gitops.yaml")

    assert [app.name for app in config.apps] == ["shop", "billing"]
    assert config.images
    assert config.alerts.sinks


def test_config_is_frozen() -> None:
    config = parse_config(BASE, "gitops.yaml")

    with pytest.raises(pydantic.ValidationError):
        config.apps[0].name = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    "repo",
    [
        "https://git.example.com/team/app.git",
        "http://127.0.0.1:8080/app.git",
        "ssh://git@git.example.com:2222/team/app.git",
        "git://127.0.0.1/app.git",
        "git@github.com:team/app.git",
        "file:///srv/git/app.git",
        "/srv/git/app",
    ],
)
def test_repo_locations_accepted(repo: str) -> None:
    config = parse_config(BASE.replace("https://git.example.com/shop.git", repo), "gitops.yaml")

    assert config.apps[0].repo == repo


@pytest.mark.parametrize(
    "semver_range", ["1.2.3", ">= 1.0, < 2.0", "~1.2", "1.x", "*", "1.0.0 - 2.0.0", "v1.2.3-rc.1"]
)
def test_semver_ranges_accepted(semver_range: str) -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n"
        f"    policy: {{kind: semver, range: '{semver_range}'}}\n"
    )

    assert parse_config(text, "gitops.yaml").images[0].policy.kind == "semver"


# --- One mistake, one clear message ------------------------------------------------------------


def test_unknown_field_is_named_with_a_suggestion() -> None:
    message = single_problem(BASE.replace("    repo:", "    reop: x\n    repo:"))

    assert message == (
        "gitops.yaml:5: apps[0]: unknown field 'reop' is not allowed here; did you mean 'repo'?"
    )


def test_unknown_field_without_close_match_lists_the_allowed_fields() -> None:
    message = single_problem(
        BASE.replace("clusters:\n  dev: {context: dev}", "zzz: 1\nclusters:\n  dev: {context: dev}")
    )

    assert "gitops.yaml:1: unknown field 'zzz' is not allowed here; allowed fields: " in message
    assert "alerts, apps, clusters, images, version" in message


def test_unknown_field_inside_a_policy_suggests_from_that_policy() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n"
        "    policy: {kind: regex, pattern: '(x)', order: numerical, extrakt: $1}\n"
    )

    message = single_problem(text)

    assert "images[0].policy: unknown field 'extrakt'" in message
    assert "did you mean 'extract'?" in message


def test_wrong_type_names_field_and_kind_of_value() -> None:
    message = single_problem(BASE.replace("namespace: shop}", "namespace: shop, prune: maybe}"))

    assert message.startswith("gitops.yaml:7: apps[0].environments.staging.prune: ")
    assert "valid boolean" in message
    assert "got a string" in message


def test_missing_repo() -> None:
    message = single_problem(BASE.replace("    repo: https://git.example.com/shop.git\n", ""))

    assert message == "gitops.yaml:4: apps[0]: missing required field 'repo'"


def test_duplicate_app() -> None:
    text = BASE + (
        "  - name: shop\n    repo: /srv/git/other\n"
        "    environments: {staging: {branch: s, cluster: dev, namespace: other}}\n"
    )

    message = single_problem(text)

    assert message == "gitops.yaml:8: apps[1].name: duplicate app 'shop'; app names must be unique"


def test_unknown_cluster_reference() -> None:
    message = single_problem(BASE.replace("cluster: dev,", "cluster: prod,"))

    assert message == (
        "gitops.yaml:7: apps[0].environments.staging.cluster: "
        "unknown cluster 'prod'; defined clusters: dev"
    )


def test_inline_credential_is_refused_without_echoing_it() -> None:
    message = single_problem(BASE.replace("    repo:", f"    credentials: {SECRET}\n    repo:"))

    assert "gitops.yaml:5: apps[0].credentials: credentials are never inline" in message
    assert "use {env: VAR_NAME} or {file: /path/to/secret}" in message
    assert SECRET not in message


def test_inline_sink_credential_is_refused() -> None:
    text = BASE + (
        f"alerts:\n  sinks:\n    chat: {{kind: slack, url: 'https://hooks.example.com/{SECRET}'}}\n"
    )

    message = single_problem(text)

    assert "alerts.sinks.chat.url: credentials are never inline" in message
    assert SECRET not in message


def test_password_in_repo_url_is_refused_without_echoing_it() -> None:
    text = BASE.replace("https://git.example.com", f"https://ci:{SECRET}@git.example.com")

    message = single_problem(text)

    assert "apps[0].repo: the repo URL must not contain a password" in message
    assert SECRET not in message


def test_duplicate_yaml_key() -> None:
    message = single_problem(BASE.replace("    repo:", "    name: shop\n    repo:"))

    assert message == "gitops.yaml:5: duplicate key 'name'; each key may appear only once"


def test_duplicate_environment_is_a_duplicate_key() -> None:
    text = BASE + "      staging: {branch: other, cluster: dev, namespace: other}\n"

    assert "duplicate key 'staging'" in single_problem(text)


def test_anchors_and_aliases_are_refused() -> None:
    text = "clusters:\n  dev: &d {context: dev}\n  staging: *d\n"

    message = single_problem(text)

    assert message.startswith("gitops.yaml:2: YAML anchors and aliases")


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        previous = f"*{chr(ord('a') + level - 1)}"
        lines.append(
            f"{chr(ord('a') + level)}: &{chr(ord('a') + level)} [{', '.join([previous] * 9)}]"
        )
    message = single_problem("\n".join(lines) + "\n")

    assert "anchors and aliases" in message


def test_custom_yaml_tag_is_refused() -> None:
    message = single_problem("version: !!python/object/apply:os.system ['true']\n")

    assert "YAML tag" in message
    assert "is not supported" in message


def test_oversize_text_is_refused() -> None:
    text = BASE + "#" * loading.MAX_CONFIG_BYTES

    message = single_problem(text)

    assert message == "gitops.yaml: the file is larger than 1024 KiB"


def test_oversize_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gitops.yaml"
    path.write_text(BASE + "#" * loading.MAX_CONFIG_BYTES)

    with pytest.raises(ConfigError, match=r"gitops.yaml: the file is larger than 1024 KiB$"):
        load_config(path)


def test_deep_nesting_is_refused() -> None:
    message = single_problem("a: " + "[" * 100 + "]" * 100 + "\n")

    assert "nested more than 32 levels deep" in message


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("../other", "must stay inside the repository"),
        ("deploy/../../other", "must stay inside the repository"),
        ("/etc", "must be relative to the repository root"),
    ],
)
def test_path_outside_the_repo(path: str, expected: str) -> None:
    message = single_problem(BASE.replace("    repo:", f"    path: {path}\n    repo:"))

    assert message.startswith(f"gitops.yaml:5: apps[0].path: {expected}")


def test_invalid_regex() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n"
        "    policy: {kind: regex, pattern: '([0-9]+', order: numerical}\n"
    )

    message = single_problem(text)

    assert message.startswith(
        "gitops.yaml:11: images[0].policy.pattern: not a valid regular expression"
    )


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("pattern: '[0-9]+'", "pattern has 0 groups"),
        ("pattern: '(a)-(b)'", "pattern has 2 groups"),
        ("pattern: '(?P<ts>a)', extract: $build", "refers to group 'build'"),
        ("pattern: '(?P<ts>a)', extract: fixed", "extract must refer to a group"),
    ],
)
def test_regex_groups_must_fit_extract(policy: str, expected: str) -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n"
        f"    policy: {{kind: regex, order: alphabetical, {policy}}}\n"
    )

    message = single_problem(text)

    assert message.startswith("gitops.yaml:11: images[0].policy: ")
    assert expected in message


def test_image_for_unknown_app() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shopp\n    policy: {kind: numerical}\n"
    )

    message = single_problem(text)

    assert message == "gitops.yaml:10: images[0].app: unknown app 'shopp'; defined apps: shop"


def test_image_for_unknown_environment_defaults_to_staging() -> None:
    text = BASE.replace("staging: {branch", "production: {branch") + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n    policy: {kind: numerical}\n"
    )

    message = single_problem(text)

    assert "images[0].environment: app 'shop' has no environment 'staging'" in message
    assert "its environments: production" in message


def test_image_name_with_tag_is_refused() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop:1.0\n"
        "    app: shop\n    policy: {kind: numerical}\n"
    )

    assert "images[0].name: 'reg.example.com/shop:1.0' names a tag or digest" in single_problem(
        text
    )


def test_unknown_policy_kind() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n    policy: {kind: newest}\n"
    )

    message = single_problem(text)

    assert message.startswith("gitops.yaml:11: images[0].policy: unknown kind 'newest'")
    assert "'semver', 'regex', 'numerical', 'alphabetical'" in message


def test_invalid_semver_range() -> None:
    text = BASE + (
        "images:\n  - name: reg.example.com/shop\n    app: shop\n"
        "    policy: {kind: semver, range: 'latest'}\n"
    )

    assert "images[0].policy.range: 'latest' is not a semver range" in single_problem(text)


def test_route_naming_unknown_sink() -> None:
    text = BASE + (
        "alerts:\n  routes:\n    - sinks: [pager, chat]\n"
        "  sinks:\n    pager: {kind: alertmanager, url: 'http://am:9093'}\n"
    )

    message = single_problem(text)

    assert message == (
        "gitops.yaml:10: alerts.routes[0].sinks[1]: unknown sink 'chat'; defined sinks: pager"
    )


def test_route_matching_unknown_app() -> None:
    text = BASE + (
        "alerts:\n  routes:\n    - {match: {app: nope}, sinks: [pager]}\n"
        "  sinks:\n    pager: {kind: alertmanager, url: 'http://am:9093'}\n"
    )

    assert "alerts.routes[0].match.app: unknown app 'nope'" in single_problem(text)


def test_cluster_needs_exactly_one_way_in() -> None:
    text = BASE.replace("{context: dev}", "{context: dev, in_cluster: true}")

    message = single_problem(text)

    assert message.startswith("gitops.yaml:2: clusters.dev: in_cluster: true cannot be combined")


def test_environments_of_one_app_need_their_own_branch() -> None:
    text = BASE + "      production: {branch: staging, cluster: dev, namespace: shop-prod}\n"

    message = single_problem(text)

    assert "apps[0].environments.production.branch: branch 'staging' is already used" in message


def test_own_namespace_must_be_allowed() -> None:
    text = BASE.replace("namespace: shop}", "namespace: shop, allowed_namespaces: [other]}")

    message = single_problem(text)

    assert "apps[0].environments.staging: allowed_namespaces must include" in message


def test_invalid_name_is_reported_once() -> None:
    message = single_problem(BASE.replace("namespace: shop}", "namespace: Shop_NS}"))

    assert "apps[0].environments.staging.namespace: 'Shop_NS' is not a valid name" in message


def test_several_problems_are_listed_in_one_error_one_per_line() -> None:
    text = BASE.replace("cluster: dev,", "cluster: prod,") + (
        "images:\n  - name: reg.example.com/shop\n    app: nope\n    policy: {kind: numerical}\n"
    )

    error = config_error(text)

    assert str(error).splitlines() == [
        "gitops.yaml: 2 problems:",
        "  gitops.yaml:7: apps[0].environments.staging.cluster: unknown cluster 'prod'; "
        "defined clusters: dev",
        "  gitops.yaml:10: images[0].app: unknown app 'nope'; defined apps: shop",
    ]
    assert [problem.line for problem in error.problems] == [7, 10]


def test_several_field_errors_are_listed_together() -> None:
    text = BASE.replace("    repo:", "    render: jsonnet\n    path: /abs\n    repo:")

    error = config_error(text)

    assert len(error.problems) == 2
    assert "apps[0].render: input should be 'plain', 'kustomize' or 'helm'; got 'jsonnet'" in str(
        error
    )
    assert "apps[0].path: must be relative" in str(error)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "gitops.yaml: the file is empty"),
        (
            "- a\n- b\n",
            "gitops.yaml: the file must be a YAML mapping (clusters:, apps:, ...), got a list",
        ),
        ("apps: [\n", "gitops.yaml:2: invalid YAML: "),
        ("a: 1\n---\nb: 2\n", "gitops.yaml:2: only one YAML document is allowed"),
        ("version: 2\n", "gitops.yaml:1: version: input should be 1; got 2"),
        ("apps: {shop: {}}\n", "gitops.yaml:1: apps: input should be a valid list; got a mapping"),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    assert single_problem(text).startswith(expected)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "gitops.yaml"

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value) == (
        f"{path}: file not found; set GITOPS_CONFIG to the path of gitops.yaml"
    )


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gitops.yaml"
    path.write_bytes(b"apps: \xff\n")

    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)


def test_load_config_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "gitops.yaml"
    path.write_text(BASE.replace("cluster: dev,", "cluster: prod,"))

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    assert str(caught.value).startswith(f"{path}:7: apps[0].environments.staging.cluster: ")


def test_direct_construction_also_checks_references() -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown cluster 'prod'"):
        GitopsConfig.model_validate(
            {
                "apps": [
                    {
                        "name": "shop",
                        "repo": "/srv/git/shop",
                        "environments": {
                            "staging": {"branch": "main", "cluster": "prod", "namespace": "shop"}
                        },
                    }
                ]
            }
        )


def test_app_lookup_names_the_defined_apps() -> None:
    config = parse_config(BASE, "gitops.yaml")

    with pytest.raises(KeyError, match="unknown app 'nope'; defined apps: shop"):
        config.app("nope")


# --- Image policies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "extract", "tag", "expected"),
    [
        (r"^main-(?P<ts>[0-9]+)$", None, "main-42", "42"),
        (r"^main-([0-9]+)$", None, "main-42", "42"),
        (r"^(?P<major>[0-9]+)\.(?P<minor>[0-9]+)$", "$major-${minor}", "1.2", "1-2"),
        (r"^v([0-9]+)$", "$1$$", "v7", "7$"),
        (r"^main-(?P<ts>[0-9]+)$", None, "feature-42", None),
    ],
)
def test_regex_policy_extracts_the_compared_value(
    pattern: str, extract: str | None, tag: str, expected: str | None
) -> None:
    policy = models.RegexPolicy(kind="regex", pattern=pattern, extract=extract, order="numerical")

    assert policy.extract_from(tag) == expected


# --- Credentials -------------------------------------------------------------------------------


def test_credential_from_env_resolves_without_leaking() -> None:
    reference = models.CredentialRef(env="SHOP_TOKEN")

    value = reference.resolve({"SHOP_TOKEN": SECRET})

    assert value.get_secret_value() == SECRET
    assert SECRET not in repr(value)
    assert SECRET not in str(value)
    assert SECRET not in repr(reference)
    assert str(reference) == "{env: SHOP_TOKEN}"


def test_credential_from_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITOPS_TEST_CREDENTIAL", SECRET)

    value = models.CredentialRef(env="GITOPS_TEST_CREDENTIAL").resolve()

    assert value.get_secret_value() == SECRET


def test_credential_from_file_drops_the_trailing_newline(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text(SECRET + "\n")

    value = models.CredentialRef(file=secret_file).resolve()

    assert value.get_secret_value() == SECRET


def test_missing_env_credential_names_the_reference() -> None:
    with pytest.raises(CredentialError) as caught:
        models.CredentialRef(env="SHOP_TOKEN").resolve({"OTHER": SECRET})

    assert str(caught.value) == (
        "credential {env: SHOP_TOKEN}: environment variable SHOP_TOKEN is not set"
    )
    assert isinstance(caught.value, ConfigError)


def test_missing_file_credential_names_the_reference(tmp_path: Path) -> None:
    path = tmp_path / "absent"

    with pytest.raises(CredentialError) as caught:
        models.CredentialRef(file=path).resolve()

    assert str(caught.value) == (
        f"credential {{file: {path}}}: cannot read {path}: No such file or directory"
    )


def test_empty_credential_is_an_error() -> None:
    with pytest.raises(CredentialError, match=r"credential \{env: EMPTY\}: the secret is empty"):
        models.CredentialRef(env="EMPTY").resolve({"EMPTY": ""})


@pytest.mark.parametrize("data", [{}, {"env": "A", "file": "/b"}], ids=["neither", "both"])
def test_credential_needs_exactly_one_source(data: dict[str, str]) -> None:
    with pytest.raises(pydantic.ValidationError, match="exactly one of env or file"):
        models.CredentialRef.model_validate(data)


def test_inline_secret_absent_from_pydantic_errors_too() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        models.SlackSink.model_validate({"kind": "slack", "url": SECRET})

    assert "use {env: VAR_NAME} or {file: /path/to/secret}" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)


# --- Settings ----------------------------------------------------------------------------------


def test_settings_defaults_ignore_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")

    defaults = Settings.from_env({})

    assert defaults.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert defaults.kafka.topic_prefix == "gitops."
    assert defaults.kafka.client_id is None
    assert (defaults.http.host, defaults.http.port) == ("127.0.0.1", 0)
    assert defaults.config_path == Path("gitops.yaml")
    assert defaults.kubeconfig is None
    assert defaults.telemetry.otlp_endpoint is None
    assert defaults.telemetry.sample_ratio == 1.0
    assert defaults.telemetry.log_level == "INFO"
    assert defaults.telemetry.log_format == "json"
    assert Settings() == defaults


def test_settings_from_every_variable() -> None:
    environ = {
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        "GITOPS_TOPIC_PREFIX": "test-1.",
        "GITOPS_KAFKA_CLIENT_ID": "deployer-0",
        "GITOPS_HTTP_HOST": "10.0.0.5",
        "GITOPS_HTTP_PORT": "8080",
        "GITOPS_CONFIG": "/etc/gitops/gitops.yaml",
        "KUBECONFIG": "/a/config:/b/config",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector:4318",
        "GITOPS_TRACE_SAMPLE_RATIO": "0.25",
        "GITOPS_LOG_LEVEL": "debug",
        "GITOPS_LOG_FORMAT": "Console",
        "UNRELATED": "ignored",
    }

    loaded = Settings.from_env(environ)

    assert loaded.kafka.bootstrap_servers == "k1:9092,k2:9093"
    assert loaded.kafka.topic_prefix == "test-1."
    assert loaded.kafka.client_id == "deployer-0"
    assert (loaded.http.host, loaded.http.port) == ("10.0.0.5", 8080)
    assert loaded.config_path == Path("/etc/gitops/gitops.yaml")
    assert loaded.kubeconfig == "/a/config:/b/config"
    assert loaded.telemetry.otlp_endpoint == "http://otel-collector:4318"
    assert loaded.telemetry.sample_ratio == 0.25
    assert loaded.telemetry.log_level == "DEBUG"
    assert loaded.telemetry.log_format == "console"
    assert set(environ) - {"UNRELATED"} == set(settings.ENVIRONMENT_VARIABLES)


def test_settings_read_the_process_environment_when_no_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GITOPS_HTTP_PORT", "9000")

    assert Settings.from_env().http.port == 9000


def test_empty_variable_counts_as_unset() -> None:
    loaded = Settings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "", "GITOPS_HTTP_PORT": ""})

    assert loaded.telemetry.otlp_endpoint is None
    assert loaded.http.port == 0


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("GITOPS_HTTP_PORT", "eighty", "valid integer"),
        ("GITOPS_HTTP_PORT", "70000", "less than or equal to 65535"),
        ("GITOPS_TRACE_SAMPLE_RATIO", "1.5", "less than or equal to 1"),
        ("GITOPS_LOG_LEVEL", "LOUD", "'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"),
        ("GITOPS_LOG_FORMAT", "xml", "'json' or 'console'"),
        ("KAFKA_BOOTSTRAP_SERVERS", "no-port", "must be host:port"),
        ("GITOPS_TOPIC_PREFIX", "bad prefix", "may only contain"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317", "http:// or https://"),
    ],
)
def test_invalid_setting_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})

    message = str(caught.value)
    assert message.startswith(f"environment: {variable}: ")
    assert expected in message
    assert len(caught.value.problems) == 1


def test_several_invalid_settings_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"GITOPS_HTTP_PORT": "x", "GITOPS_LOG_FORMAT": "xml"})

    assert [problem.path for problem in caught.value.problems] == [
        "GITOPS_HTTP_PORT",
        "GITOPS_LOG_FORMAT",
    ]


def test_environment_variables_constant_lists_every_setting() -> None:
    assert settings.ENVIRONMENT_VARIABLES == (
        "KAFKA_BOOTSTRAP_SERVERS",
        "GITOPS_TOPIC_PREFIX",
        "GITOPS_KAFKA_CLIENT_ID",
        "GITOPS_HTTP_HOST",
        "GITOPS_HTTP_PORT",
        "GITOPS_CONFIG",
        "KUBECONFIG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "GITOPS_TRACE_SAMPLE_RATIO",
        "GITOPS_LOG_LEVEL",
        "GITOPS_LOG_FORMAT",
    )


def test_settings_can_be_built_in_code_by_field_name() -> None:
    built = Settings(kafka=settings.KafkaSettings(bootstrap_servers="k:1", topic_prefix="t."))

    assert built.kafka.bootstrap_servers == "k:1"
    assert built.kafka.topic_prefix == "t."


def test_config_error_needs_a_problem() -> None:
    with pytest.raises(ValueError, match="at least one problem"):
        ConfigError("gitops.yaml", [])
