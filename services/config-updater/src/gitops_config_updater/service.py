"""config-updater's wiring: image events and promotion requests to commits in config repos.

config-updater is the only service that writes to Git. It serves the image webhooks of
registries and CI (see `receiving`), which publish `ImagePushed` events to the images topic,
and consumes that topic (image automation, see `updating`) and the commands topic (promotion,
see `promoting`). Its own settings come from environment variables read once, here.
"""

from __future__ import annotations

import logging
import os

from gitops_config import GitopsConfig
from gitops_config_updater import promoting, receiving, updating
from gitops_config_updater.branches import Branches
from gitops_config_updater.metrics import UpdaterMetrics
from gitops_config_updater.settings import UpdaterSettings
from gitops_events import Command, Envelope, ImagePushed
from gitops_runtime.runtimes import Runtime

log = logging.getLogger(__name__)

SERVICE = "config-updater"


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register config-updater's consumers and routes, with settings from the environment."""
    build_with(runtime, config, UpdaterSettings.from_environ(os.environ))


def build_with(runtime: Runtime, config: GitopsConfig, settings: UpdaterSettings) -> None:
    """Register the image webhooks and the images and commands consumers on a runtime."""
    metrics = UpdaterMetrics(runtime.metrics.registry)
    branches = Branches(settings, metrics)
    updater = updating.ImageUpdater(config, settings, branches, metrics)
    promoter = promoting.Promoter(config, branches, metrics)
    webhooks = receiving.ImageWebhooks(
        secret=settings.webhook_secret,
        allow_unsigned=settings.allow_unsigned_webhooks,
        max_bytes=settings.max_webhook_bytes,
        followed=[image.name for image in config.images],
        publish=runtime.publisher.publish,
        metrics=metrics,
    )

    async def handle(envelope: Envelope) -> None:
        if isinstance(envelope.data, ImagePushed):
            await updater.handle(envelope.data)
        elif isinstance(envelope.data, Command):
            await promoter.handle(envelope.data)

    runtime.consume(["images", "commands"], handle)
    runtime.routes(webhooks.routes())
    runtime.check("config-loaded", lambda: config is not None)
    if not webhooks.enabled:
        log.warning(
            "image webhooks are disabled: set GITOPS_IMAGE_WEBHOOK_SECRET "
            "(or GITOPS_IMAGE_WEBHOOK_ALLOW_UNSIGNED)"
        )
