"""Prometheus metrics shared by every service, named `gitops_*` and documented in docs/.

Each service adds its own series next to these; all of them live in one registry per
process so `/metrics` serves exactly what this process measured.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """The series every service exposes; services register more on `registry`."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.service = service
        self.build_info = Gauge(
            "gitops_build_info",
            "Always 1; labels say which service and version runs.",
            ["service", "version"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "gitops_ready",
            "1 when every readiness check of the service passes.",
            registry=self.registry,
        )
        self.events_consumed = Counter(
            "gitops_events_consumed_total",
            "Events handled, by topic, type and outcome.",
            ["topic", "type", "outcome"],
            registry=self.registry,
        )
        self.events_published = Counter(
            "gitops_events_published_total",
            "Events published, by topic and type.",
            ["topic", "type"],
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "gitops_dead_letters_total",
            "Records sent to the dead-letter topic, by reason.",
            ["topic", "reason"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "gitops_event_handle_seconds",
            "Time to handle one event, by type.",
            ["type"],
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "gitops_consumer_lag",
            "Records behind the end of each assigned partition.",
            ["topic", "partition"],
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every series and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
