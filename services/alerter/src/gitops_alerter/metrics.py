"""The alerter's Prometheus series, next to the ones every service exposes.

Labels are bounded by the configuration (sink names) and by the code (outcomes), never by what
an event says: reasons and apps are in the alerts themselves, not in label values here.

| series | type | labels | meaning |
|---|---|---|---|
| `gitops_alerts_total` | counter | sink, outcome | alerts delivered, failed or suppressed |
| `gitops_alerts_firing` | gauge | | alerts firing now |
| `gitops_alert_delivery_seconds` | histogram | sink | one delivery, all tries and waits |
| `gitops_alert_silences` | gauge | | silences in force now |
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DELIVERED = "delivered"
FAILED = "failed"
SUPPRESSED = "suppressed"
OUTCOMES = (DELIVERED, FAILED, SUPPRESSED)

DELIVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class AlerterMetrics:
    """Decide and Act for people, measured: deliveries per sink, firing alerts, silences."""

    def __init__(self, registry: CollectorRegistry, sinks: Iterable[str]) -> None:
        """Register the series on the service's registry, every sink's outcomes at zero."""
        self.alerts = Counter(
            "gitops_alerts_total",
            "Alerts per sink by outcome: delivered, failed (after every try), or suppressed "
            "(a duplicate, a silence, or resolved before the group wait ended).",
            ["sink", "outcome"],
            registry=registry,
        )
        self.firing = Gauge("gitops_alerts_firing", "Alerts firing now.", registry=registry)
        self.delivery_seconds = Histogram(
            "gitops_alert_delivery_seconds",
            "Time to deliver one notification to one sink, retries included.",
            ["sink"],
            buckets=DELIVERY_BUCKETS,
            registry=registry,
        )
        self.silences = Gauge("gitops_alert_silences", "Silences in force now.", registry=registry)
        for sink in sinks:
            for outcome in OUTCOMES:
                self.alerts.labels(sink, outcome)
