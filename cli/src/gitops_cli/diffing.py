"""`gitops diff [APP ENV]`: kubediff for this system, what Git says against what runs.

The desired state comes from the `desired` topic (what git-watcher last rendered, the same input
the deployer applies), the live state from the clusters in gitops.yaml, and the comparison from
`gitops_kube.comparing`, the drift detector's own: server-side apply dry-runs, so server defaults
are never reported, Secret values are masked, and the app's ignore rules hold. It asks the
cluster directly rather than reading the drift topic, so it answers even when no drift-detector
runs, and it writes nothing (dry-runs only).

Output is one block per app environment, one line per difference, as kubediff printed it:

    *** Deployment demo-staging/web: /spec/replicas: desired 2 != live 5

`--json` prints one document with the same objects a DriftEvent carries. Exit status: 0 when
nothing differs, 2 when something does, 1 when the comparison could not be made (with a message
naming what failed, never a traceback).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gitops_bus import tail
from gitops_cli import environment
from gitops_config import ConfigError, GitopsConfig, Settings, load_config
from gitops_config.models import App, Environment
from gitops_events import DesiredState, subject_for

if TYPE_CHECKING:
    # The Kubernetes client takes seconds to import; the command imports it when it runs, so
    # that `gitops --help` and the other commands stay fast.
    from gitops_kube.comparing import Difference
    from gitops_kube.sessions import Sessions

NO_DRIFT, ERROR, DRIFT = 0, 1, 2

MAX_VALUE_CHARS = 200
"""Longer values (whole mappings, say) are cut in the text output; --json has them in full."""


class DiffError(Exception):
    """Why the comparison could not be made, in words for the person who asked."""


@dataclass(frozen=True)
class Selected:
    """One app environment to compare."""

    app: App
    name: str
    environment: Environment

    @property
    def subject(self) -> str:
        """``app/environment``."""
        return subject_for(self.app.name, self.name)


@dataclass
class Report:
    """The comparison of one app environment."""

    selected: Selected
    state: DesiredState
    differences: list[Difference] = field(default_factory=list)


def diff(
    app_name: Annotated[
        str | None, typer.Argument(metavar="APP", help="Only this app (default: all).")
    ] = None,
    env: Annotated[
        str | None, typer.Argument(metavar="ENV", help="Only this environment of APP.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document on stdout.")] = False,
) -> None:
    """Compare Git's desired state with the live clusters: exit 0 no drift, 2 drift, 1 error."""
    try:
        settings = environment.load_settings()
        config = load_config(Path(settings.config_path))
        selected = _select(config, app_name, env)
        reports, skipped = asyncio.run(_compare_all(settings, config, selected, explicit=bool(env)))
    except (ConfigError, DiffError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ERROR) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for subject in skipped:
        typer.echo(f"note: {subject}: no desired state rendered yet; not compared", err=True)
    drifted = any(report.differences for report in reports)
    if as_json:
        sys.stdout.write(json.dumps(_document(reports, skipped), indent=2) + "\n")
    else:
        for report in reports:
            _print(report)
    raise typer.Exit(DRIFT if drifted else NO_DRIFT)


def _select(config: GitopsConfig, app_name: str | None, env: str | None) -> list[Selected]:
    if app_name is None:
        return [
            Selected(app, name, settings)
            for app in config.apps
            for name, settings in app.environments.items()
        ]
    try:
        app = config.app(app_name)
    except KeyError as exc:
        raise DiffError(str(exc.args[0])) from None
    if env is None:
        return [Selected(app, name, settings) for name, settings in app.environments.items()]
    if env not in app.environments:
        known = ", ".join(sorted(app.environments))
        raise DiffError(f"app {app_name!r} has no environment {env!r}; its environments: {known}")
    return [Selected(app, env, app.environments[env])]


async def _desired_states(settings: Settings) -> dict[str, DesiredState]:
    """The latest desired state of every app environment on the desired topic."""
    topic = settings.kafka.topic_prefix + "desired"
    latest: dict[str, DesiredState] = {}
    try:
        async for record in tail(settings.kafka.bootstrap_servers, [topic]):
            data = record.envelope.data if record.envelope is not None else None
            if isinstance(data, DesiredState):
                current = latest.get(data.subject())
                if current is None or data.rendered_at >= current.rendered_at:
                    latest[data.subject()] = data
    except Exception as exc:
        raise DiffError(
            f"cannot read the desired states from Kafka at {settings.kafka.bootstrap_servers} "
            f"(topic {topic}): {type(exc).__name__}: {exc}; check KAFKA_BOOTSTRAP_SERVERS "
            "(or run `make up`)"
        ) from None
    return latest


async def _compare_all(
    settings: Settings, config: GitopsConfig, selected: list[Selected], *, explicit: bool
) -> tuple[list[Report], list[str]]:
    from gitops_kube.sessions import Sessions

    states = await _desired_states(settings)
    reports: list[Report] = []
    skipped: list[str] = []
    async with Sessions() as sessions:
        for item in selected:
            state = states.get(item.subject)
            if state is None:
                if explicit:
                    raise DiffError(
                        f"no desired state for {item.subject} on topic "
                        f"{settings.kafka.topic_prefix}desired yet; git-watcher renders it from "
                        "Git: check that it runs and can read the repository"
                    )
                skipped.append(item.subject)
                continue
            reports.append(await _compare(sessions, settings, config, item, state))
    return reports, skipped


async def _compare(
    sessions: Sessions,
    settings: Settings,
    config: GitopsConfig,
    item: Selected,
    state: DesiredState,
) -> Report:
    from gitops_kube import comparing
    from gitops_kube.clients import KubeApiError
    from gitops_kube.comparing import IgnoreRule, Target
    from gitops_kube.sessions import ConnectError, target_for

    cluster_name = item.environment.cluster
    cluster = config.clusters[cluster_name]
    where = f"{item.subject} on cluster {cluster_name!r}"
    try:
        session = await sessions.get(
            cluster_name,
            target_for(
                kubeconfig=cluster.kubeconfig,
                context=cluster.context,
                in_cluster=cluster.in_cluster,
                default_kubeconfig=settings.kubeconfig,
            ),
        )
        api = session.api
        targets = await comparing.targets(
            session.discovery,
            [(o.source, o.manifest) for o in state.objects],
            app=item.app.name,
            environment=item.name,
            namespace=item.environment.namespace,
            revision=state.revision,
        )
        resources = {
            (t.resource.group, t.resource.kind): t.resource
            for t in targets
            if t.resource is not None
            and (t.resource.namespaced or t.kind in item.environment.allow_cluster_scoped)
        }
        owned = await comparing.list_owned(
            api,
            resources.values(),
            app=item.app.name,
            environment=item.name,
            namespaces=item.environment.allowed_namespaces,
        )

        async def live_of(target: Target) -> dict[str, Any] | None:
            return await comparing.read_live(api, target)

        async def dry_run_of(target: Target, _: dict[str, Any]) -> dict[str, Any]:
            return await comparing.dry_run(api, target)

        differences = await comparing.compare(
            targets,
            live_of=live_of,
            dry_run_of=dry_run_of,
            owned=owned,
            app=item.app.name,
            environment=item.name,
            rules=[
                IgnoreRule(tuple(rule.json_pointers), rule.kind, rule.name)
                for rule in item.app.ignore
            ],
        )
    except ConnectError as exc:
        raise DiffError(str(exc)) from None
    except KubeApiError as exc:
        raise DiffError(f"comparing {where} failed: {exc}") from None
    return Report(item, state, differences)


def _value(value: Any) -> str:
    if value is None:
        return "(absent)"
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."


def _lines(report: Report) -> list[str]:
    subject = report.selected.subject
    lines: list[str] = []
    for difference in report.differences:
        name = f"*** {difference.id}"
        if difference.drift == "missing":
            lines.append(f"{name}: missing (in Git, not on the cluster)")
        elif difference.drift == "extra":
            lines.append(f"{name}: extra (labelled as {subject}'s, not in Git)")
        else:
            lines += [
                f"{name}: {change.path}: desired {_value(change.desired)} "
                f"!= live {_value(change.live)}"
                for change in difference.fields
            ]
    return lines


def _print(report: Report) -> None:
    count = len(report.differences)
    verdict = f"{count} objects differ" if count else "no drift"
    typer.echo(
        f"{report.selected.subject} (revision {report.state.revision[:12]}, cluster "
        f"{report.selected.environment.cluster}): {verdict}"
    )
    for line in _lines(report):
        typer.echo(line)


def _document(reports: list[Report], skipped: list[str]) -> dict[str, Any]:
    from gitops_drift_detector import reporting  # imports the Kubernetes client: see above

    return {
        "drift": any(report.differences for report in reports),
        "environments": [
            {
                "app": report.selected.app.name,
                "environment": report.selected.name,
                "revision": report.state.revision,
                "cluster": report.selected.environment.cluster,
                "objects": [
                    o.model_dump(mode="json") for o in reporting.object_drifts(report.differences)
                ],
            }
            for report in reports
        ],
        "skipped": skipped,
    }
