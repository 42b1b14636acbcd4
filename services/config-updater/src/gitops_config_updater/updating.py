"""Image automation: a pushed tag becomes a commit on the environment's branch, or nothing.

For each configured image that a pushed tag belongs to, the updater checks the tag against the
image's policy first (a tag the policy rejects never touches Git), then, on a fresh checkout of
the environment's branch, rewrites every reference to that image under the app's path whose
tag the new one beats under the policy (see `policies`): never a downgrade, and no commit when
everything is already current. The commit message comes from the configured template; the
push is retried on a moved branch (see `branches`).

Outcomes, counted in `gitops_image_updates_total{image,outcome}`: `updated` (a commit was
pushed), `current` (already there), `older` (Git has a newer tag), `rejected` (the tag does not
fit the policy), `not-found` (no reference to the image under the app's path), `failed`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from gitops_config import GitopsConfig
from gitops_config.models import Image
from gitops_config_updater import manifests, policies
from gitops_config_updater.branches import Branches
from gitops_config_updater.manifests import Change, ImageRef
from gitops_config_updater.metrics import UpdaterMetrics
from gitops_config_updater.settings import UpdaterSettings
from gitops_events import ImagePushed
from gitops_git import GitError
from gitops_git.writing import Workspace
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

_MAX_FILE_BYTES = 1024 * 1024
_SUFFIXES = (".yaml", ".yml")


@dataclass
class _Attempt:
    """What one pass over the work tree found (reset on every push attempt)."""

    verdicts: list[policies.Verdict] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)


def manifest_files(root: Path, app_path: str) -> list[Path]:
    """The YAML files under `app_path` of a work tree, sorted; symlinks and big files skipped."""
    base = (root / app_path).resolve()
    if not base.is_relative_to(root.resolve()) or not base.is_dir():
        return []
    found: list[Path] = []
    for path in sorted(base.rglob("*")):
        relative = path.relative_to(base).parts
        if ".git" in relative or path.suffix not in _SUFFIXES or path.is_symlink():
            continue
        if path.is_file() and path.stat().st_size <= _MAX_FILE_BYTES:
            found.append(path)
    return found


def new_reference(image: Image, event: ImagePushed, old: ImageRef) -> ImageRef | None:
    """The reference to write instead of `old` for `event` under `image`'s policy, if any.

    An equal tag is rewritten only to pin a digest that changed (the tag was moved).
    """
    verdict = policies.compare(image.policy, event.tag, old.tag)
    digest = event.digest if image.pin_digest else None
    if verdict is policies.Verdict.UPGRADE:
        return ImageRef(old.repository, event.tag, digest)
    if verdict is policies.Verdict.CURRENT and digest is not None and old.digest != digest:
        return ImageRef(old.repository, event.tag, digest)
    return None


class ImageUpdater:
    """Handles `ImagePushed` events: one `image update` span per configured image."""

    def __init__(
        self,
        config: GitopsConfig,
        settings: UpdaterSettings,
        branches: Branches,
        metrics: UpdaterMetrics,
    ) -> None:
        """Follow the images of `config`; commit through `branches`."""
        self._config = config
        self._settings = settings
        self._branches = branches
        self._metrics = metrics

    async def handle(self, event: ImagePushed) -> None:
        """Update every environment that follows the pushed image.

        Raises `GitError` when Git could not be read or written (so the event is retried).
        """
        wanted = manifests.canonical_repository(event.image)
        for image in self._config.images:
            if manifests.canonical_repository(image.name) != wanted:
                continue
            with tracing.tracer("gitops_config_updater").start_as_current_span(
                "image update",
                attributes={
                    "gitops.image": image.name,
                    "gitops.tag": event.tag,
                    "gitops.app": image.app,
                    "gitops.environment": image.environment,
                },
            ) as span:
                outcome = await self._update(image, event)
                span.set_attribute("gitops.outcome", outcome)

    async def _update(self, image: Image, event: ImagePushed) -> str:
        context = {
            "image": image.name,
            "tag": event.tag,
            "app": image.app,
            "environment": image.environment,
        }
        if policies.sort_key(image.policy, event.tag) is None:
            log.info("tag does not fit the image policy; ignored", extra=context)
            return self._count(image, "rejected")
        app = self._config.app(image.app)
        attempt = _Attempt()

        def change(workspace: Workspace) -> None:
            attempt.verdicts.clear()
            attempt.changes.clear()
            self._edit(workspace, app.path, image, event, attempt)
            if attempt.changes:
                workspace.commit_all(self._message(image, event, attempt.changes))

        try:
            pushed = await self._branches.change(app, image.environment, change)
        except GitError as exc:
            self._count(image, "failed")
            log.error("image update failed", extra={**context, "error": str(exc)})
            raise
        if pushed is not None:
            log.info("image updated", extra={**context, "revision": pushed})
            return self._count(image, "updated")
        if policies.Verdict.OLDER in attempt.verdicts:
            log.info("Git has a newer tag than the one pushed; nothing to do", extra=context)
            return self._count(image, "older")
        if not attempt.verdicts:
            log.warning("no reference to the image under the app's path", extra=context)
            return self._count(image, "not-found")
        return self._count(image, "current")

    def _edit(
        self,
        workspace: Workspace,
        app_path: str,
        image: Image,
        event: ImagePushed,
        attempt: _Attempt,
    ) -> None:
        def decide(old: ImageRef) -> ImageRef | None:
            attempt.verdicts.append(policies.compare(image.policy, event.tag, old.tag))
            return new_reference(image, event, old)

        root = workspace.root
        for path in manifest_files(root, app_path):
            source = path.relative_to(root).as_posix()
            try:
                text = path.read_text(encoding="utf-8")
                updated, changes = manifests.update_text(text, source, image.name, decide)
            except (UnicodeDecodeError, manifests.ManifestError) as exc:
                log.warning(
                    "manifest skipped", extra={"file": source, "error": str(exc).splitlines()[0]}
                )
                continue
            if changes:
                path.write_text(updated, encoding="utf-8")
                attempt.changes += changes

    def _message(self, image: Image, event: ImagePushed, changes: list[Change]) -> str:
        old = ", ".join(dict.fromkeys(str(c.old.tag or c.old) for c in changes))
        new = (
            event.tag if not image.pin_digest or not event.digest else f"{event.tag}@{event.digest}"
        )
        lines = "\n".join(f"- {c.where}: {c.old} -> {c.new}" for c in changes)
        return self._settings.commit_template.format(
            image=image.name,
            old=old,
            new=new,
            policy=policies.describe(image.policy),
            app=image.app,
            environment=image.environment,
            changes=lines,
        )

    def _count(self, image: Image, outcome: str) -> str:
        self._metrics.image_updates.labels(image.name, outcome).inc()
        return outcome
