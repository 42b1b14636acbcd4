"""`gitops promote`: ask the config-updater to merge one environment's branch into another's.

Promotion is a Git merge done by the config-updater (the only service that writes to Git);
the CLI only checks the request against `gitops.yaml` and publishes a `PromoteCommand` about
the target environment, the way `gitops sync` publishes a sync request. How it went shows in
the config-updater's log and in `gitops_promotions_total`, and a promoted commit arrives like
any other: as a new revision of the target branch.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer

from gitops_events import PromoteCommand

_COMMIT_RE = re.compile(r"[0-9a-f]{7,64}")


def promote(
    app_name: Annotated[str, typer.Argument(metavar="APP")],
    source: Annotated[str, typer.Option("--from", help="The environment to promote from.")],
    target: Annotated[str, typer.Option("--to", help="The environment to promote to.")],
    skip: Annotated[
        list[str] | None,
        typer.Option(
            "--skip",
            metavar="SHA",
            help="A commit of the source branch never to promote (recorded as merged with "
            "`-s ours`); repeatable.",
        ),
    ] = None,
) -> None:
    """Merge APP's --from branch into its --to branch, leaving out --skip commits."""
    from gitops_cli import app as cli

    skipped = [sha.lower() for sha in skip or []]
    for sha in skipped:
        if not _COMMIT_RE.fullmatch(sha):
            raise cli._fail(f"{sha!r} is not a commit id (7 to 64 hex digits)", 2)
    if source == target:
        raise cli._fail("--from and --to name the same environment; nothing to promote", 2)
    settings = cli._settings()
    config = cli._config(settings)
    known = {a.name: a for a in config.apps}
    if app_name in known and source not in known[app_name].environments:
        envs = ", ".join(sorted(known[app_name].environments))
        raise cli._fail(f"app {app_name!r} has no environment {source!r}; environments: {envs}", 2)
    cli._command(app_name, target, lambda: PromoteCommand(from_environment=source, skip=skipped))
