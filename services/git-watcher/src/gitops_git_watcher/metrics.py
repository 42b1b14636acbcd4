"""git-watcher's Prometheus series, next to the ones every service exposes.

Labels are bounded by the configuration (apps, environments, repositories, the five webhook
providers) or by the code (reasons, outcomes, triggers), never by what a request says.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

RENDER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class WatcherMetrics:
    """The Release step, measured: revisions seen, renders, failures, webhooks, fetches."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register the series on the service's registry."""
        self.revisions_detected = Counter(
            "gitops_revisions_detected_total",
            "New heads (commits, force-pushes, deletions) seen on tracked branches.",
            ["app", "environment", "trigger"],
            registry=registry,
        )
        self.render_seconds = Histogram(
            "gitops_render_duration_seconds",
            "Time to render one app environment at one commit.",
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        self.render_failures = Counter(
            "gitops_render_failures_total",
            "Commits that could not be rendered, by reason.",
            ["app", "environment", "reason"],
            registry=registry,
        )
        self.webhooks = Counter(
            "gitops_webhooks_total",
            "Webhook deliveries, by provider and outcome.",
            ["provider", "outcome"],
            registry=registry,
        )
        self.fetch_failures = Counter(
            "gitops_git_fetch_failures_total",
            "Fetches of a repository that failed (unreachable, refused credentials, timeout).",
            ["repo"],
            registry=registry,
        )
