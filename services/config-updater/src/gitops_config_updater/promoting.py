"""Promotion: merge one environment's branch into another's, as a real Git merge.

`gitops promote APP --from staging --to production` publishes a `PromoteCommand` about the
target environment; here the source branch is merged into the target branch with a merge
commit, so the history says what was promoted and when. Commits named with `--skip` are
recorded the way `git merge -s ours` does: for each one (oldest first) the commits before it
are merged normally, then the skipped commit itself with the `ours` strategy, which marks it as
merged while keeping the target's files, so neither this promotion nor any later one brings
its changes. Then the rest of the source branch is merged.

A conflict pushes nothing: the merge is aborted, the reason is logged with the conflicting
files, and `gitops_promotions_total{outcome="conflict"}` counts it, so people resolve it by
hand (no event is published: a failed promotion is not a deploy). Outcomes: `promoted`,
`current` (nothing new to promote), `conflict`, `rejected` (the request names an unknown
environment or a commit that is not on the source branch), `failed` (Git could not be read or
written; the command is retried and then dead-lettered).
"""

from __future__ import annotations

import logging

from gitops_config import GitopsConfig
from gitops_config.models import App
from gitops_config_updater.branches import Branches
from gitops_config_updater.metrics import UpdaterMetrics
from gitops_events import Command, PromoteCommand
from gitops_git import GitError
from gitops_git.writing import MergeConflictError, Workspace

log = logging.getLogger(__name__)


class PromotionRejectedError(ValueError):
    """A promotion request that can never succeed as asked; the message says why."""


def promote(workspace: Workspace, source_branch: str, skip: list[str], title: str) -> None:
    """Merge `origin/<source_branch>` into the checked-out branch, recording `skip` as merged.

    Raises `PromotionRejectedError` for a skipped commit that is not on the source branch,
    `MergeConflictError` on conflicts (nothing committed).
    """
    source = f"origin/{source_branch}"
    skipped: list[str] = []
    for revision in skip:
        try:
            skipped.append(workspace.resolve(revision, source_branch))
        except GitError as exc:
            raise PromotionRejectedError(str(exc)) from None
    # Oldest first: a commit with more of the others among its ancestors comes later.
    skipped.sort(key=lambda sha: sum(workspace.is_ancestor(o, sha) for o in skipped))
    for sha in skipped:
        if workspace.is_ancestor(sha, "HEAD"):
            continue  # already promoted or already skipped: nothing to record
        parent = workspace.first_parent(sha)
        if parent is not None and not workspace.is_ancestor(parent, "HEAD"):
            workspace.merge(parent, f"{title} (up to {parent[:12]})")
        workspace.merge(sha, f"Skip {sha[:12]} in promotion (recorded with -s ours)", ours=True)
    if not workspace.is_ancestor(source, "HEAD"):
        workspace.merge(source, title)


class Promoter:
    """Handles promote commands: merge, push, count; conflicts push nothing."""

    def __init__(self, config: GitopsConfig, branches: Branches, metrics: UpdaterMetrics) -> None:
        """Promote the apps of `config` through `branches`."""
        self._config = config
        self._branches = branches
        self._metrics = metrics

    async def handle(self, command: Command) -> None:
        """Carry out one `PromoteCommand`; other commands are not ours.

        Raises `GitError` when Git could not be read or written (so the command is retried).
        """
        if not isinstance(command.command, PromoteCommand):
            return
        request = command.command
        context = {
            "app": command.app,
            "environment": command.environment,
            "from_environment": request.from_environment,
            "skip": request.skip,
            "requested_by": command.requested_by,
        }
        try:
            app = self._checked(command.app, command.environment, request.from_environment)
        except PromotionRejectedError as exc:
            self._count(command.app, "rejected")
            log.error("promotion rejected", extra={**context, "error": str(exc)})
            return
        source_branch = app.environments[request.from_environment].branch
        title = (
            f"Promote {app.name} from {request.from_environment} to {command.environment}"
            f"\n\nRequested by {command.requested_by}."
            + (f" Skipped: {', '.join(request.skip)}." if request.skip else "")
        )
        try:
            pushed = await self._branches.change(
                app,
                command.environment,
                lambda workspace: promote(workspace, source_branch, request.skip, title),
            )
        except PromotionRejectedError as exc:
            self._count(app.name, "rejected")
            log.error("promotion rejected", extra={**context, "error": str(exc)})
            return
        except MergeConflictError as exc:
            self._count(app.name, "conflict")
            log.error(
                "promotion conflicts; nothing pushed: merge by hand",
                extra={**context, "conflicts": list(exc.paths), "error": str(exc)},
            )
            return
        except GitError as exc:
            self._count(app.name, "failed")
            log.error("promotion failed", extra={**context, "error": str(exc)})
            raise
        if pushed is None:
            self._count(app.name, "current")
            log.info("nothing new to promote", extra=context)
            return
        self._count(app.name, "promoted")
        log.info("promoted", extra={**context, "revision": pushed})

    def _checked(self, app_name: str, target: str, source: str) -> App:
        try:
            app = self._config.app(app_name)
        except KeyError as exc:
            raise PromotionRejectedError(str(exc.args[0])) from None
        for name in (target, source):
            if name not in app.environments:
                known = ", ".join(sorted(app.environments))
                raise PromotionRejectedError(
                    f"app {app_name!r} has no environment {name!r}; environments: {known}"
                )
        if app.environments[target].branch == app.environments[source].branch:
            raise PromotionRejectedError(
                f"{source} and {target} of app {app_name!r} share one branch; nothing to merge"
            )
        return app

    def _count(self, app: str, outcome: str) -> None:
        self._metrics.promotions.labels(app, outcome).inc()
