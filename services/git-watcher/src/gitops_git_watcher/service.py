"""git-watcher's wiring: the Release step, from Git commits to revisions and desired state.

git-watcher is the only service that reads Git. It polls every configured repository, serves
the Git webhooks that make it look sooner, renders each new head of a tracked branch and
publishes a `Revision` and the `DesiredState` (see `watching`). Its own settings come from
environment variables read once, here (see `settings`).
"""

from __future__ import annotations

import logging
import os
import shutil

from gitops_config import GitopsConfig
from gitops_git_watcher import watching, webhooks
from gitops_git_watcher.metrics import WatcherMetrics
from gitops_git_watcher.settings import WatcherSettings
from gitops_runtime.runtimes import Runtime

log = logging.getLogger(__name__)

SERVICE = "git-watcher"


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register git-watcher's loops and routes on a runtime, with settings from the environment."""
    build_with(runtime, config, WatcherSettings.from_environ(os.environ))


def build_with(runtime: Runtime, config: GitopsConfig, settings: WatcherSettings) -> None:
    """Register git-watcher's poller, webhook routes and readiness checks on a runtime."""
    metrics = WatcherMetrics(runtime.metrics.registry)
    watcher = watching.Watcher(
        config,
        settings,
        runtime.publisher,
        metrics,
        bootstrap_servers=runtime.settings.kafka.bootstrap_servers,
        topic_prefix=runtime.settings.kafka.topic_prefix,
    )
    receiver = webhooks.WebhookReceiver(
        secret=settings.webhook_secret,
        allow_unsigned=settings.allow_unsigned_webhooks,
        max_bytes=settings.max_webhook_bytes,
        on_push=watcher.handle_push,
        metrics=metrics,
    )
    runtime.loop(watcher.run)
    runtime.routes(receiver.routes())
    runtime.check("desired-state-restored", lambda: watcher.restored)
    if not receiver.enabled:
        log.warning(
            "webhooks are disabled: set GITOPS_WEBHOOK_SECRET (or GITOPS_WEBHOOK_ALLOW_UNSIGNED)"
        )
    if any(app.render == "kustomize" for app in config.apps):
        kubectl_found = shutil.which(settings.kubectl) is not None
        if not kubectl_found:
            log.error(
                "kubectl not found; kustomize apps cannot be rendered",
                extra={"kubectl": settings.kubectl},
            )
        runtime.check("kubectl", lambda: kubectl_found)
