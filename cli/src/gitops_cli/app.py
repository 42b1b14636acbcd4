"""The typer application behind `gitops`: one function per command, errors as clear messages."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from gitops_bus import Publisher, ensure_topics, tail
from gitops_cli import diffing, environment, promoting, sealing, status
from gitops_config import ConfigError, GitopsConfig, Settings, load_config
from gitops_events import TOPICS, Command, ResumeCommand, SuspendCommand, SyncCommand
from gitops_runtime.runtimes import Build, serve

app = typer.Typer(
    name="gitops",
    help="Event-driven GitOps: Git is the source of truth, Kafka carries the events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _builders() -> dict[str, Build]:
    """The five services by name (imported here so `gitops --help` stays fast)."""
    from gitops_alerter import service as alerter
    from gitops_config_updater import service as config_updater
    from gitops_deployer import service as deployer
    from gitops_drift_detector import service as drift_detector
    from gitops_git_watcher import service as git_watcher

    return {
        m.SERVICE: m.build for m in (git_watcher, config_updater, deployer, drift_detector, alerter)
    }


SERVICES = ("git-watcher", "config-updater", "deployer", "drift-detector", "alerter")


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person (never a traceback) and give the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        return environment.load_settings()
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _config(settings: Settings) -> GitopsConfig:
    try:
        return load_config(Path(settings.config_path))
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("run")
def run_service(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
) -> None:
    """Run one service in the foreground (what a container runs) until SIGTERM or Ctrl-C."""
    builders = _builders()
    if service not in builders:
        raise _fail(f"unknown service {service!r}; choose one of: {', '.join(SERVICES)}", 2)
    settings = _settings()
    config = _config(settings)
    try:
        _run(serve(service, settings, config, builders[service]))
    except ConfigError as exc:  # a service's own settings, validated while it is built
        raise _fail(str(exc)) from None


async def _publish_command(settings: Settings, command: Command) -> str:
    await ensure_topics(settings.kafka.bootstrap_servers, settings.kafka.topic_prefix)
    publisher = Publisher(
        settings.kafka.bootstrap_servers, settings.kafka.topic_prefix, "gitops/cli"
    )
    await publisher.start()
    try:
        envelope = await publisher.publish(command)
    finally:
        await publisher.stop()
    return envelope.id


def _command(app_name: str, env: str, make: Callable[[], Any]) -> None:
    settings = _settings()
    config = _config(settings)
    known = {a.name: a for a in config.apps}
    if app_name not in known:
        raise _fail(
            f"unknown app {app_name!r} in {settings.config_path}; "
            f"apps: {', '.join(sorted(known)) or '(none)'}",
            2,
        )
    if env not in known[app_name].environments:
        envs = ", ".join(sorted(known[app_name].environments))
        raise _fail(f"app {app_name!r} has no environment {env!r}; environments: {envs}", 2)
    from gitops_telemetry import tracing

    tracing.setup_tracing(
        "gitops-cli",
        otlp_endpoint=settings.telemetry.otlp_endpoint,
        sample_ratio=settings.telemetry.sample_ratio,
    )
    command = Command(app=app_name, environment=env, command=make(), requested_by="cli")
    with tracing.tracer("gitops_cli").start_as_current_span(f"cli {command.command.action}"):
        event_id = _run(_publish_command(settings, command))
    tracing.shutdown_tracing()
    typer.echo(f"{command.command.action} requested for {app_name}/{env} (event {event_id})")


@app.command()
def sync(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(metavar="ENV")],
) -> None:
    """Ask the deployer to apply the latest desired state of APP in ENV now."""
    _command(app_name, env, SyncCommand)


@app.command()
def suspend(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(metavar="ENV")],
) -> None:
    """Stop applying changes to APP in ENV until resumed."""
    _command(app_name, env, SuspendCommand)


@app.command()
def resume(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    env: Annotated[str, typer.Argument(metavar="ENV")],
) -> None:
    """Resume applying changes to APP in ENV."""
    _command(app_name, env, ResumeCommand)


app.command("seal")(sealing.seal)
app.command("diff")(diffing.diff)
app.command("promote")(promoting.promote)


@app.command()
def events(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new events.")
    ] = False,
    topic: Annotated[
        list[str] | None,
        typer.Option(
            "--topic", "-t", help="Topic name without prefix; repeat for several. Default: all."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Print the events on the topics, oldest first, with their trace ids."""
    settings = _settings()
    names = topic or [spec.name for spec in TOPICS]
    unknown = sorted(set(names) - {spec.name for spec in TOPICS})
    if unknown:
        raise _fail(
            f"unknown topic(s) {', '.join(unknown)}; topics: "
            f"{', '.join(spec.name for spec in TOPICS)}",
            2,
        )
    _run(_print_events(settings, [settings.kafka.topic_prefix + n for n in names], follow, as_json))


async def _print_events(settings: Settings, topics: list[str], follow: bool, as_json: bool) -> None:
    out = Console(highlight=False)
    async for record in tail(settings.kafka.bootstrap_servers, topics, follow=follow):
        env = record.envelope
        trace_id = None
        if env is not None and env.traceparent:
            parts = env.traceparent.split("-")
            trace_id = parts[1] if len(parts) > 2 else None
        if as_json:
            row = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key,
                "trace_id": trace_id,
            }
            if env is not None:
                row |= {
                    "id": env.id,
                    "type": env.type,
                    "source": env.source,
                    "subject": env.subject,
                    "time": env.time.isoformat(),
                    "data": env.data.model_dump(mode="json"),
                }
            else:
                row["error"] = str(record.error)
            sys.stdout.write(json.dumps(row) + "\n")
            sys.stdout.flush()
        elif env is not None:
            summary = _summary(env.data.model_dump(mode="json"))
            out.print(
                f"{env.time:%H:%M:%S} [bold]{env.type.removeprefix('io.gitops.')}[/bold] "
                f"{env.subject} {summary} [dim]trace={trace_id or '-'}[/dim]"
            )
        else:
            out.print(f"[red]undecodable[/red] {record.topic}@{record.offset}: {record.error}")


def _summary(data: dict[str, Any]) -> str:
    keys = ("phase", "status", "reason", "revision", "command", "tag", "message", "summary")
    parts = []
    for key in keys:
        value = data.get(key)
        if value in (None, "", [], {}):
            continue
        if isinstance(value, dict):
            value = value.get("action", value)
        text = str(value)
        parts.append(f"{key}={text[:12] if key == 'revision' else text[:80]}")
    return " ".join(parts)


@app.command("status")
def show_status(
    app_name: Annotated[str | None, typer.Argument(metavar="[APP]", help="Only this app.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
) -> None:
    """Show revision, sync status, health, drift and open alerts per app environment."""
    settings = _settings()
    topics = [
        settings.kafka.topic_prefix + name for name in ("desired", "deploy", "drift", "alerts")
    ]
    states = _run(_fold(settings, topics))
    rows = sorted(
        (s for s in states.values() if app_name in (None, s.app)),
        key=lambda s: (s.app, s.environment),
    )
    if app_name is not None and not rows:
        raise _fail(f"no events about app {app_name!r} yet", 1)
    if as_json:
        for row in rows:
            sys.stdout.write(
                json.dumps(
                    {
                        "app": row.app,
                        "environment": row.environment,
                        "desired_revision": row.desired_revision,
                        "deployed_revision": row.deployed_revision,
                        "sync": row.sync,
                        "health": row.health,
                        "last_reason": row.last_reason,
                        "drift": row.drift.value if row.drift else None,
                        "drifted_objects": row.drifted_objects,
                        "open_alerts": sorted(a.reason for a in row.firing.values()),
                    }
                )
                + "\n"
            )
        return
    table = Table("APP", "ENV", "REVISION", "SYNC", "HEALTH", "DRIFT", "ALERTS")
    for row in rows:
        drift = f"{row.drift.value} ({row.drifted_objects})" if row.drift else "-"
        alerts = ", ".join(sorted(a.reason for a in row.firing.values())) or "-"
        table.add_row(
            row.app,
            row.environment,
            (row.desired_revision or "-")[:12],
            row.sync,
            row.health,
            drift,
            alerts,
        )
    Console().print(table)


async def _fold(
    settings: Settings, topics: list[str]
) -> dict[tuple[str, str], status.EnvironmentStatus]:
    envelopes = [
        record.envelope
        async for record in tail(settings.kafka.bootstrap_servers, topics)
        if record.envelope is not None
    ]
    envelopes.sort(key=lambda e: e.time)
    return status.fold(envelopes)


def main() -> None:
    """Entry point of the `gitops` script."""
    app()
