"""Changing one environment's branch: fresh checkout, change, commit, push, and retry.

Every change (an image update, a promotion) is a function of the branch as it is on the
remote right now. So a change is applied to a fresh checkout of the remote head, committed and
pushed without force; when the remote refuses the push because someone pushed in between, the
branch is fetched again and the change re-applied on the new head, a few times. Nothing is
pushed unless the change made a commit.

Git is blocking, so the work runs in a thread, one change per repository at a time (all
environments of a repository share one clone). The `commit` and `push` spans are children of
the span of whoever asked (the thread inherits the caller's context).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from gitops_config.errors import CredentialError
from gitops_config.models import App
from gitops_config_updater.metrics import UpdaterMetrics
from gitops_config_updater.settings import UpdaterSettings
from gitops_git import GitError, Remote, RemoteError, protocol
from gitops_git.writing import Identity, PushRejectedError, Workspace
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

Change = Callable[[Workspace], None]
"""Edit the work tree and commit (or merge); making no commit means there is nothing to do."""


class Branches:
    """Applies changes to environment branches, one at a time per repository."""

    def __init__(self, settings: UpdaterSettings, metrics: UpdaterMetrics) -> None:
        """Keep clones under the settings' work directory and commit as their author."""
        self._settings = settings
        self._metrics = metrics
        self._author = Identity(settings.author_name, settings.author_email)
        self._locks: dict[str, asyncio.Lock] = {}

    async def change(self, app: App, environment: str, change: Change) -> str | None:
        """Apply `change` to the branch of `app`'s `environment` and push it.

        Returns the pushed commit, or None when the change made no commit. Raises
        `gitops_git.GitError` (a `PushRejectedError` when every attempt lost the race), also
        when the app's credentials cannot be read (the message names the reference only).
        """
        try:
            remote = remote_of(app)
        except (RemoteError, CredentialError) as exc:
            raise GitError(f"cannot reach the repository of app {app.name}: {exc}") from None
        lock = self._locks.setdefault(app.repo, asyncio.Lock())
        async with lock:
            return await asyncio.to_thread(self._change, app, environment, remote, change)

    def _change(self, app: App, environment: str, remote: Remote, change: Change) -> str | None:
        branch = app.environments[environment].branch
        tracer = tracing.tracer("gitops_config_updater")
        with Workspace(
            remote,
            self._settings.work_dir,
            self._author,
            timeout=self._settings.git_timeout_seconds,
        ) as workspace:
            attempts = self._settings.push_attempts
            for attempt in range(1, attempts + 1):
                with tracer.start_as_current_span(
                    "commit", attributes={"gitops.app": app.name, "gitops.environment": environment}
                ) as span:
                    base = workspace.reset(branch)
                    change(workspace)
                    head = workspace.head()
                    span.set_attribute("gitops.revision", head)
                if head == base:
                    return None
                with tracer.start_as_current_span(
                    "push", attributes={"gitops.branch": branch, "gitops.attempt": attempt}
                ):
                    try:
                        workspace.push(branch)
                    except PushRejectedError:
                        if attempt == attempts:
                            raise
                        self._metrics.push_retries.labels(app.name, environment).inc()
                        log.info(
                            "the branch moved on while we committed; re-applying on its new head",
                            extra={"app": app.name, "environment": environment, "attempt": attempt},
                        )
                        continue
                self._metrics.commits_pushed.labels(app.name, environment).inc()
                return head
        return None


def remote_of(app: App) -> Remote:
    """The remote of an app's repository with its credentials resolved now (held in memory).

    https: the secret is `user:password`, or a token alone (sent with the user name `git`);
    ssh: the credential must be a key file, which is handed to ssh as it is.
    """
    reference = app.credentials
    if reference is None:
        return Remote(app.repo)
    transport = protocol(app.repo)
    if transport == "ssh":
        if reference.file is None:
            raise RemoteError("ssh credentials must be a private key file: {file: /path/to/key}")
        return Remote(app.repo, ssh_key_file=Path(reference.file))
    if transport not in ("https", "http"):
        raise RemoteError(
            f"credentials are only used for https and ssh repositories, not {transport}; "
            f"remove them from app {app.name}"
        )
    secret = reference.resolve().get_secret_value()
    user, colon, password = secret.partition(":")
    if colon:
        return Remote(app.repo, username=user, password=password)
    return Remote(app.repo, password=secret)
