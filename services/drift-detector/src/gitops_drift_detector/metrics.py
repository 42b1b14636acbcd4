"""drift-detector's Prometheus series, registered on the service's registry.

`gitops_drift_objects` is what dashboards and alert rules read ("how many objects differ from
Git, per kind"); `gitops_drift_detection_seconds` is the promise of the design ("know within a
second"), measured from the watch event that brought a change to the drift event that reports
it; `gitops_self_heal_total` says how often the cluster was put back, and when healing gave up.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DriftMetrics:
    """The drift detector's own series."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Register every series on ``registry``."""
        by_environment = ["app", "environment"]
        self.drift_objects = Gauge(
            "gitops_drift_objects",
            "Objects that differ from Git (modified, missing or extra), by kind.",
            [*by_environment, "kind"],
            registry=registry,
        )
        self.detection_seconds = Histogram(
            "gitops_drift_detection_seconds",
            "From the watch event that brought a change to the drift event that reports it.",
            registry=registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
        )
        self.self_heal = Counter(
            "gitops_self_heal_total",
            "Self-heal outcomes: requested (a sync was sent), resolved (the drift went away "
            "after it), gave-up (the same drift kept coming back).",
            [*by_environment, "outcome"],
            registry=registry,
        )
        self.evaluations = Counter(
            "gitops_drift_evaluations_total",
            "Comparisons of an environment with its cluster, by trigger and outcome.",
            [*by_environment, "trigger", "outcome"],
            registry=registry,
        )
        self.dry_runs = Counter(
            "gitops_drift_dry_runs_total",
            "Server-side apply dry-runs sent to compare (cached results are not counted).",
            ["cluster"],
            registry=registry,
        )
