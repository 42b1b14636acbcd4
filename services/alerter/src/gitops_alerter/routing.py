"""Which route takes an alert, and what makes two alerts the same one.

Routes come from `alerts.routes` in gitops.yaml and are tried in order: the first route whose
match fits takes the alert, as in Alertmanager without `continue` (a rule list people read top
to bottom, like a firewall). To send one alert to several places, list several sinks on its
route; to have a catch-all, end the list with a route that matches everything. An alert no route
takes still goes to the alerts topic; it just reaches no sink.

The fingerprint is the alert's identity for de-duplication and silences. It is built only from
what names the cause (where the alert came from, app, environment, reason), never from the
message, a revision, a duration or a timestamp: a deploy that fails "after 301s" and then "after
302s" is the same alert, which is exactly what keeps a retry loop from spamming people.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from gitops_config.models import Route, RouteMatch
from gitops_events import Alert

FINGERPRINT_LENGTH = 16
"""Hex digits of the fingerprint: short enough to type into a silence, long enough not to clash."""


def fingerprint(origin: str, app: str, environment: str, reason: str) -> str:
    """The stable identity of an alert about one cause in one app environment."""
    parts = (origin, app, environment, reason)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:FINGERPRINT_LENGTH]


@dataclass(frozen=True)
class Routed:
    """The route that took an alert, and its place in the configured list."""

    index: int
    route: Route


def matches(match: RouteMatch, alert: Alert) -> bool:
    """Whether an alert fits a route's match; a field left out matches everything."""
    return (
        (match.app is None or match.app == alert.app)
        and (match.environment is None or match.environment == alert.environment)
        and (match.severity is None or match.severity == alert.severity.value)
        and (match.reason is None or match.reason == alert.reason)
    )


def route_for(routes: Sequence[Route], alert: Alert) -> Routed | None:
    """The first route whose match fits the alert, or None when no route takes it."""
    for index, route in enumerate(routes):
        if matches(route.match, alert):
            return Routed(index, route)
    return None
