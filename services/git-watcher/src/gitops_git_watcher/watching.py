"""The Release step: every new head of a tracked branch becomes a revision and a desired state.

The watcher keeps one bare mirror per repository and, per app environment, the last head it
handled and the digest of the last desired state it published. A poll (or a webhook naming the
repository) fetches the mirror and compares: an unchanged head does nothing (so a redelivered
webhook publishes nothing), a new head is rendered at that exact commit and published as a
`Revision` followed by its `DesiredState`; a render identical to the one already published
publishes nothing; a render failure publishes only a `Revision` carrying the `render_error`;
a deleted branch publishes a `Revision(change="deleted")` and never a desired state. What was
published is rebuilt from the compacted desired topic at start-up, so a restart does not
publish everything again.

Each revision is one trace, rooted here: at the webhook (`webhook <provider>`) or at the poll
that found it (`poll <app>/<env>`), with a `render` child span and the bus's publish spans.
One repository is handled by one task at a time; state only changes once Kafka has the events,
so a failed publish is retried by the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from gitops_bus import Publisher, tail
from gitops_config import GitopsConfig
from gitops_config.errors import CredentialError
from gitops_config.models import App, CredentialRef, Environment
from gitops_events import DesiredState, Revision, subject_for
from gitops_git import (
    CommitInfo,
    GitError,
    Mirror,
    Remote,
    RemoteError,
    protocol,
    public_url,
    repository_key,
)
from gitops_git_watcher import rendering, webhooks
from gitops_git_watcher.manifests import RenderingError
from gitops_git_watcher.metrics import WatcherMetrics
from gitops_git_watcher.settings import WatcherSettings
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

Trigger = Literal["webhook", "poll"]

_TRACER = "gitops_git_watcher"
_POLL_CONCURRENCY = 4
_RESTORE_WAIT_SECONDS = 30.0


class FetchFailedError(RuntimeError):
    """A repository could not be fetched (or its credentials read); the message is safe."""


@dataclass(frozen=True)
class Target:
    """One app environment: the branch it follows and where its objects go."""

    app: App
    environment: str
    spec: Environment

    @property
    def subject(self) -> str:
        """`app/environment`, the key of its events."""
        return subject_for(self.app.name, self.environment)


@dataclass(frozen=True)
class _Seen:
    """What the watcher last did for one app environment."""

    revision: str | None
    digest: str | None = None
    # The desired state of `digest` is the latest on the topic for `destination`; false after a
    # render failure or a deletion, so that the next good render is published even if equal.
    published: bool = False
    destination: tuple[str, str] | None = None


class Repository:
    """One remote repository and the app environments that follow its branches."""

    def __init__(self, url: str, credentials: CredentialRef | None, targets: list[Target]) -> None:
        """Group `targets` reading the repository at `url` (with `credentials`, if any)."""
        self.url = url
        self.public_url = public_url(url)
        self.key = repository_key(url)
        self.credentials = credentials
        self.targets = targets
        self.lock = asyncio.Lock()

    def tracks(self, branch: str) -> bool:
        """Whether an app environment follows `branch`."""
        return any(target.spec.branch == branch for target in self.targets)


def repositories_of(config: GitopsConfig) -> list[Repository]:
    """The repositories of every app, each once (apps sharing a repository share its mirror)."""
    grouped: dict[str, Repository] = {}
    for app in config.apps:
        targets = [Target(app, name, spec) for name, spec in app.environments.items()]
        key = public_url(app.repo)
        existing = grouped.get(key)
        if existing is None:
            grouped[key] = Repository(app.repo, app.credentials, targets)
            continue
        existing.targets.extend(targets)
        if existing.credentials is None:
            existing.credentials = app.credentials
    return list(grouped.values())


class Watcher:
    """Follows the tracked branches of every configured app and publishes what changes."""

    def __init__(
        self,
        config: GitopsConfig,
        settings: WatcherSettings,
        publisher: Publisher,
        metrics: WatcherMetrics,
        *,
        bootstrap_servers: str,
        topic_prefix: str,
    ) -> None:
        """Prepare to watch the apps of `config`; nothing runs until `run()` or a webhook."""
        self.repositories = repositories_of(config)
        self._settings = settings
        self._limits = settings.render_limits()
        self._publisher = publisher
        self._metrics = metrics
        self._bootstrap_servers = bootstrap_servers
        self._topic_prefix = topic_prefix
        self._targets = {t.subject: t for r in self.repositories for t in r.targets}
        self._seen: dict[str, _Seen] = {}
        self._restored = asyncio.Event()
        self._poll_slots = asyncio.Semaphore(_POLL_CONCURRENCY)

    @property
    def restored(self) -> bool:
        """Whether what was published before has been read back (the watcher is ready)."""
        return self._restored.is_set()

    async def run(self) -> None:
        """Read back the published desired states, then poll every repository forever."""
        delay = 1.0
        while not self.restored:
            try:
                await self.restore()
            except Exception:
                log.warning(
                    "cannot read the desired topic yet; retrying",
                    exc_info=True,
                    extra={"retry_in": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        while True:
            await self.poll()
            await asyncio.sleep(self._settings.poll_interval_seconds)

    async def restore(self) -> None:
        """Learn the latest desired state of every app environment from the compacted topic."""
        restored = 0
        async for record in tail(
            self._bootstrap_servers,
            [self._topic_prefix + "desired"],
            idle_timeout=self._settings.restore_idle_seconds,
        ):
            desired = record.envelope.data if record.envelope is not None else None
            if not isinstance(desired, DesiredState) or desired.subject() not in self._targets:
                continue
            self._seen[desired.subject()] = _Seen(
                revision=desired.revision,
                digest=desired.digest,
                published=True,
                destination=(desired.cluster, desired.namespace),
            )
            restored += 1
        self._restored.set()
        log.info(
            "published desired states read back",
            extra={"records": restored, "environments": len(self._seen)},
        )

    async def poll(self) -> None:
        """Fetch every repository once and publish what changed."""
        await asyncio.gather(*(self._poll_one(r) for r in self.repositories))

    async def _poll_one(self, repository: Repository) -> None:
        async with self._poll_slots:
            try:
                await self.refresh(repository, "poll")
            except FetchFailedError:
                return  # already logged and counted by refresh; the next poll tries again
            except Exception:
                log.exception(
                    "polling a repository failed; the next poll tries again",
                    extra={"repo": repository.public_url},
                )

    async def handle_push(self, push: webhooks.Push) -> webhooks.Handled:
        """Fetch the repository a genuine webhook names and publish what changed."""
        try:
            await asyncio.wait_for(self._restored.wait(), timeout=_RESTORE_WAIT_SECONDS)
        except TimeoutError:
            raise webhooks.WebhookRejectedError(
                503, "unavailable", "git-watcher is starting; retry the delivery"
            ) from None
        keys = {repository_key(url) for url in push.repository_urls}
        named = [r for r in self.repositories if r.key in keys]
        if not named:
            return webhooks.Handled("ignored", detail="no app in gitops.yaml uses this repository")
        if push.branches is not None and not any(
            r.tracks(branch) for r in named for branch in push.branches
        ):
            return webhooks.Handled("ignored", detail="no tracked branch was pushed")
        revisions = 0
        for repository in named:
            try:
                revisions += await self.refresh(repository, "webhook")
            except FetchFailedError as exc:
                raise webhooks.WebhookRejectedError(502, "failed", str(exc)) from None
        return webhooks.Handled("processed", revisions=revisions)

    async def refresh(self, repository: Repository, trigger: Trigger) -> int:
        """Fetch one repository and release every app environment on it; count the revisions."""
        async with repository.lock:
            mirror = Mirror(
                self._remote(repository),
                self._settings.cache_dir,
                timeout=self._settings.git_timeout_seconds,
            )
            try:
                heads = await asyncio.to_thread(_open_and_fetch, mirror)
            except GitError as exc:
                raise self._fetch_failed(repository, str(exc)) from None
            try:
                published = 0
                for target in repository.targets:
                    published += await self._release(mirror, heads, target, trigger)
                return published
            finally:
                await asyncio.to_thread(mirror.close)

    def _fetch_failed(self, repository: Repository, message: str) -> FetchFailedError:
        """Count and log a failed fetch; return the error to raise."""
        self._metrics.fetch_failures.labels(repository.public_url).inc()
        log.warning(
            "cannot fetch repository", extra={"repo": repository.public_url, "error": message}
        )
        return FetchFailedError(message)

    def _remote(self, repository: Repository) -> Remote:
        """Where and how to fetch: credentials are read now, at use, and only held in memory."""
        try:
            return _remote(repository)
        except (CredentialError, RemoteError) as exc:
            raise self._fetch_failed(repository, f"{repository.public_url}: {exc}") from None

    async def _release(
        self, mirror: Mirror, heads: dict[str, str], target: Target, trigger: Trigger
    ) -> int:
        """Publish what changed on one app environment's branch; return 1 if a revision was."""
        head = heads.get(target.spec.branch)
        seen = self._seen.get(target.subject)
        previous = seen.revision if seen is not None else None
        if head is None and previous is None:
            if seen is None:
                log.warning(
                    "tracked branch not found in the repository",
                    extra={
                        "app": target.app.name,
                        "environment": target.environment,
                        "branch": target.spec.branch,
                        "repo": public_url(target.app.repo),
                    },
                )
                self._seen[target.subject] = _Seen(revision=None)
            return 0
        if head is not None and head == previous:
            return 0
        self._metrics.revisions_detected.labels(target.app.name, target.environment, trigger).inc()
        with self._root_span(target, trigger):
            if head is None:
                return await self._publish_deleted(target, trigger, seen)
            return await self._publish_head(mirror, target, trigger, head, seen)

    def _root_span(
        self, target: Target, trigger: Trigger
    ) -> contextlib.AbstractContextManager[object]:
        """A poll starts the revision's trace; a webhook's trace is already started."""
        if trigger != "poll":
            return contextlib.nullcontext()
        return tracing.tracer(_TRACER).start_as_current_span(
            f"poll {target.subject}",
            context=otel_context.Context(),
            attributes={"gitops.app": target.app.name, "gitops.environment": target.environment},
        )

    async def _publish_deleted(self, target: Target, trigger: Trigger, seen: _Seen | None) -> int:
        previous = seen.revision if seen is not None else None
        await self._publisher.publish(
            Revision(
                app=target.app.name,
                environment=target.environment,
                repo=public_url(target.app.repo),
                branch=target.spec.branch,
                revision=None,
                previous_revision=previous,
                change="deleted",
                trigger=trigger,
            )
        )
        self._seen[target.subject] = _Seen(
            revision=None, digest=seen.digest if seen is not None else None
        )
        log.warning(
            "tracked branch deleted; the last desired state stays as it was",
            extra={
                "app": target.app.name,
                "environment": target.environment,
                "branch": target.spec.branch,
                "previous_revision": previous,
            },
        )
        return 1

    async def _publish_head(
        self, mirror: Mirror, target: Target, trigger: Trigger, head: str, seen: _Seen | None
    ) -> int:
        previous = seen.revision if seen is not None else None
        followed, info = await asyncio.to_thread(_history, mirror, previous, head)
        change: Literal["pushed", "force-pushed"] = "pushed" if followed else "force-pushed"
        result = await self._render(mirror, target, head)
        revision = Revision(
            app=target.app.name,
            environment=target.environment,
            repo=public_url(target.app.repo),
            branch=target.spec.branch,
            revision=head,
            previous_revision=previous,
            change=change,
            trigger=trigger,
            author=info.author,
            message=info.summary,
            render_error=result.to_event() if isinstance(result, RenderingError) else None,
        )
        context = {
            "app": target.app.name,
            "environment": target.environment,
            "revision": head,
            "change": change,
            "trigger": trigger,
        }
        if isinstance(result, RenderingError):
            await self._publisher.publish(revision)
            self._seen[target.subject] = _Seen(
                revision=head, digest=seen.digest if seen is not None else None
            )
            log.warning(
                "revision cannot be rendered",
                extra={**context, "reason": result.reason, "error": result.message},
            )
            return 1
        destination = (target.spec.cluster, target.spec.namespace)
        if (
            seen is not None
            and seen.published
            and seen.digest == result.digest
            and seen.destination == destination
        ):
            self._seen[target.subject] = _Seen(head, result.digest, True, destination)
            log.info(
                "render unchanged; nothing to publish", extra={**context, "digest": result.digest}
            )
            return 0
        await self._publisher.publish(revision)
        await self._publisher.publish(
            DesiredState(
                app=target.app.name,
                environment=target.environment,
                revision=head,
                repo=public_url(target.app.repo),
                branch=target.spec.branch,
                cluster=target.spec.cluster,
                namespace=target.spec.namespace,
                digest=result.digest,
                objects=result.objects,
            )
        )
        self._seen[target.subject] = _Seen(head, result.digest, True, destination)
        log.info(
            "revision published",
            extra={**context, "digest": result.digest, "objects": len(result.objects)},
        )
        return 1

    async def _render(
        self, mirror: Mirror, target: Target, head: str
    ) -> rendering.Rendered | RenderingError:
        """Render at `head` in a `render` span; a failure is returned, not raised."""
        labels = (target.app.name, target.environment)
        with tracing.tracer(_TRACER).start_as_current_span(
            "render",
            attributes={
                "gitops.app": target.app.name,
                "gitops.environment": target.environment,
                "gitops.revision": head,
                "gitops.render": target.app.render,
            },
        ) as span:
            started = time.perf_counter()
            try:
                rendered = await asyncio.to_thread(self._render_at, mirror, target, head)
            except RenderingError as failure:
                self._metrics.render_failures.labels(*labels, failure.reason).inc()
                span.set_attribute("gitops.render_error", failure.reason)
                span.set_status(Status(StatusCode.ERROR, failure.reason))
                return failure
            finally:
                self._metrics.render_seconds.observe(time.perf_counter() - started)
            span.set_attribute("gitops.objects", len(rendered.objects))
            span.set_attribute("gitops.digest", rendered.digest)
            return rendered

    def _render_at(self, mirror: Mirror, target: Target, head: str) -> rendering.Rendered:
        return rendering.render(
            mirror.snapshot(head),
            app_path=target.app.path,
            kind=target.app.render,
            limits=self._limits,
            kubectl=self._settings.kubectl,
        )


def _remote(repository: Repository) -> Remote:
    """The remote of a repository with its credentials resolved.

    https: the secret is `user:password`, or a token alone (sent with the user name `git`);
    ssh: the credential must be a key file, which is handed to ssh as it is.
    """
    reference = repository.credentials
    if reference is None:
        return Remote(repository.url)
    transport = protocol(repository.url)
    if transport == "ssh":
        if reference.file is None:
            raise RemoteError("ssh credentials must be a private key file: {file: /path/to/key}")
        return Remote(repository.url, ssh_key_file=reference.file)
    if transport not in ("https", "http"):
        raise RemoteError(
            f"credentials are only used for https and ssh repositories, not {transport}; "
            "remove them from this app"
        )
    secret = reference.resolve().get_secret_value()
    user, colon, password = secret.partition(":")
    if colon:
        return Remote(repository.url, username=user, password=password)
    return Remote(repository.url, password=secret)


def _open_and_fetch(mirror: Mirror) -> dict[str, str]:
    mirror.open()
    try:
        return mirror.fetch()
    except BaseException:
        mirror.close()
        raise


def _history(mirror: Mirror, previous: str | None, head: str) -> tuple[bool, CommitInfo]:
    """Whether `head` follows `previous` (false after a force-push), and who made `head`."""
    followed = previous is None or mirror.is_ancestor(previous, head)
    return followed, mirror.commit(head)
