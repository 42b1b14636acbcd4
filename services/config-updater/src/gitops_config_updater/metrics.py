"""config-updater's Prometheus series, next to the ones every service exposes.

Labels are bounded by the configuration (images, apps, environments) or by the code
(outcomes, webhook kinds), never by what a request says: an image nobody follows is counted
as `unknown`, not under its own name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class UpdaterMetrics:
    """The Act step on Git, measured: image updates, commits pushed, promotions, webhooks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the series on the service's registry."""
        self.image_updates = Counter(
            "gitops_image_updates_total",
            "Image events handled, by configured image and outcome "
            "(updated, current, older, rejected, failed).",
            ["image", "outcome"],
            registry=registry,
        )
        self.commits_pushed = Counter(
            "gitops_commits_pushed_total",
            "Commits (updates and promotions) pushed to an environment's branch.",
            ["app", "environment"],
            registry=registry,
        )
        self.promotions = Counter(
            "gitops_promotions_total",
            "Promotion requests, by app and outcome (promoted, current, conflict, failed).",
            ["app", "outcome"],
            registry=registry,
        )
        self.push_retries = Counter(
            "gitops_push_retries_total",
            "Pushes refused as not fast-forward and re-applied on the new head.",
            ["app", "environment"],
            registry=registry,
        )
        self.image_webhooks = Counter(
            "gitops_image_webhooks_total",
            "Image webhook deliveries, by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
