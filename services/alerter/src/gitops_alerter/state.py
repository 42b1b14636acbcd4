"""The alerter's Decide step: which alerts people hear about, when, and how often.

`Book` keeps every alert the alerter knows by fingerprint and decides, for each observation and
as time passes, what to publish to the alerts topic and which notifications to send to sinks.
It is pure logic: no I/O and no clock of its own (every method takes `now`, in seconds since the
epoch), so the unit tests drive time by hand.

The policy, per fingerprint:

- **Alerts topic**: every state change is published once, at once: a new firing alert, a change
  of severity, a resolution. Repeats of the same firing alert are not (the source topics keep the
  detail of every event); silences and group waits do not hold the topic back, it is the record.
- **Group wait**: the first firing alert of a group (route, app, environment) opens a window of
  the route's `group_wait_seconds`; alerts of the group that fire within it go out together when
  it closes, and an alert resolved within it is never sent at all. Once the group has been
  notified, new alerts of it go out at once.
- **De-duplication**: an alert that fires again while it is firing is not sent again.
- **Repeat interval**: while an alert keeps firing, people are reminded every
  `repeat_interval_seconds` after the last notification, as Alertmanager does (it also keeps the
  alert alive in Alertmanager, which expires alerts that are not re-sent).
- **Resolved**: a resolution is sent to the sinks of people who were told the alert fired (even
  under a silence: being told a problem is over is never noise), and only to them.
- **Silences**: a silence (app, environment, and a reason or a fingerprint or neither) holds back
  firing notifications and reminders until it ends; one still firing then is sent.

An alert whose new severity sends it down another route is announced there as new; the sinks of
its old route get no resolution for it (severities are fixed per rule, so this is rare).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from opentelemetry.context import Context

from gitops_alerter import routing, rules
from gitops_config.models import Route
from gitops_events import Alert, AlertStatus, Severity


class Held(StrEnum):
    """Why a notification was not sent (the `suppressed` outcome)."""

    DUPLICATE = "duplicate"
    SILENCED = "silenced"
    RESOLVED_WHILE_WAITING = "resolved-while-waiting"


@dataclass(frozen=True)
class Notification:
    """Alerts of one group to send to the sinks of their route, in one message per sink."""

    sinks: tuple[str, ...]
    alerts: tuple[Alert, ...]
    repeat_interval_seconds: float
    # A reminder repeats what the sinks were told (no state changed since); sinks that record
    # history rather than notify people (Grafana annotations) skip reminders.
    reminder: bool = False
    # The trace of the event that last changed these alerts: deliveries are its child spans.
    context: Context | None = None


@dataclass(frozen=True)
class Suppression:
    """A notification of one alert that its route's sinks did not get, and why."""

    sinks: tuple[str, ...]
    alert: Alert
    why: Held


@dataclass
class Decisions:
    """What the book decided at one moment: alerts to publish, notifications, suppressions."""

    publish: list[Alert] = field(default_factory=list)
    notify: list[Notification] = field(default_factory=list)
    suppressed: list[Suppression] = field(default_factory=list)

    def extend(self, other: Decisions) -> Decisions:
        """Add another set of decisions to these; returns self."""
        self.publish.extend(other.publish)
        self.notify.extend(other.notify)
        self.suppressed.extend(other.suppressed)
        return self


@dataclass(frozen=True)
class Silence:
    """Hold notifications of an app environment's alerts until a time.

    With a reason, only alerts of that reason; with a fingerprint, only that alert; with both,
    alerts that have both; with neither, every alert of the app environment.
    """

    app: str
    environment: str
    until: float
    reason: str | None = None
    fingerprint: str | None = None

    def covers(self, alert: Alert) -> bool:
        """Whether the silence applies to an alert."""
        return (
            alert.app == self.app
            and alert.environment == self.environment
            and (self.reason is None or alert.reason == self.reason)
            and (self.fingerprint is None or alert.fingerprint == self.fingerprint)
        )


_GroupKey = tuple[int, str, str]


@dataclass
class _Entry:
    """What the book knows of one fingerprint."""

    alert: Alert
    routed: routing.Routed | None
    observed_at: float
    context: Context | None = None
    # (status, severity) last published to the alerts topic; None before the first publish.
    published: tuple[AlertStatus, Severity] | None = None
    # Whether a firing notification went to the route's sinks (so a resolution is owed).
    told: bool = False
    notified_at: float | None = None
    # When the next notification is due; None when none is.
    due: float | None = None
    # A notification is held by a silence (so the suppression is counted once).
    held: bool = False
    # The sinks have not been told the current state (new, other severity, resolved).
    changed: bool = True

    @property
    def firing(self) -> bool:
        return self.alert.status is AlertStatus.FIRING

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(self.routed.route.sinks) if self.routed else ()

    def group(self) -> _GroupKey | None:
        if self.routed is None:
            return None
        return (self.routed.index, self.alert.app, self.alert.environment)

    def unpublished(self) -> bool:
        return self.published != (self.alert.status, self.alert.severity)


class Book:
    """Every known alert by fingerprint, the open group windows and the active silences."""

    def __init__(self, routes: Sequence[Route]) -> None:
        """Decide with the routes of `alerts.routes`, tried in order."""
        self._routes = tuple(routes)
        self._entries: dict[str, _Entry] = {}
        self._windows: dict[_GroupKey, float] = {}
        self._silences: list[Silence] = []

    # --- observations --------------------------------------------------------------------------

    def fire(self, alert: Alert, now: float, context: Context | None = None) -> Decisions:
        """Take a firing alert into account; returns what to publish and send now."""
        decided = Decisions()
        routed = routing.route_for(self._routes, alert)
        entry = self._entries.get(alert.fingerprint)
        if entry is None or not entry.firing:
            entry = _Entry(alert, routed, now, context)
            self._entries[alert.fingerprint] = entry
            self._schedule_first(entry, now)
        else:
            previous = entry.alert
            entry.alert = alert.model_copy(update={"starts_at": previous.starts_at})
            entry.observed_at, entry.context = now, context
            moved = (routed.index if routed else None) != (
                entry.routed.index if entry.routed else None
            )
            if moved:
                entry.routed = routed
                entry.told, entry.notified_at, entry.held = False, None, False
                entry.changed = True
                self._schedule_first(entry, now)
            elif alert.severity != previous.severity:
                entry.changed = True
                if entry.told:
                    entry.due = now
            elif entry.told:
                decided.suppressed.append(Suppression(entry.sinks, entry.alert, Held.DUPLICATE))
        if entry.unpublished():
            decided.publish.append(entry.alert)
        return decided.extend(self.flush(now))

    def resolve(
        self, resolution: rules.Resolution, now: float, context: Context | None = None
    ) -> Decisions:
        """Resolve the firing alerts of one origin in one app environment."""
        decided = Decisions()
        for entry in self._entries.values():
            alert = entry.alert
            if not (
                entry.firing
                and alert.app == resolution.app
                and alert.environment == resolution.environment
                and alert.labels.get(rules.ORIGIN_LABEL) == resolution.origin
            ):
                continue
            entry.alert = alert.model_copy(
                update={
                    "status": AlertStatus.RESOLVED,
                    "ends_at": resolution.at,
                    "revision": resolution.revision or alert.revision,
                    "description": resolution.description,
                }
            )
            entry.observed_at, entry.context = now, context
            entry.held, entry.changed = False, True
            if entry.told:
                entry.due = now
            else:
                entry.due = None
                if entry.routed is not None:
                    decided.suppressed.append(
                        Suppression(entry.sinks, entry.alert, Held.RESOLVED_WHILE_WAITING)
                    )
            decided.publish.append(entry.alert)
        return decided.extend(self.flush(now))

    def silence(self, silence: Silence, now: float) -> bool:
        """Add a silence; returns False (and ignores it) when it has already ended."""
        if silence.until <= now:
            return False
        self._silences.append(silence)
        return True

    def published(self, alert: Alert) -> None:
        """Record that an alert from `Decisions.publish` is on the alerts topic."""
        entry = self._entries.get(alert.fingerprint)
        if entry is not None and (entry.alert.status, entry.alert.severity) == (
            alert.status,
            alert.severity,
        ):
            entry.published = (alert.status, alert.severity)
            self._forget_finished()

    def restore(self, alert: Alert, published_at: float) -> None:
        """Take back an alert read from the alerts topic after a restart (in topic order).

        A firing alert counts as notified when it was published, so a restart neither repeats
        it at once nor forgets to resolve it; reminders go on from there.
        """
        if alert.status is AlertStatus.RESOLVED:
            self._entries.pop(alert.fingerprint, None)
            return
        routed = routing.route_for(self._routes, alert)
        entry = _Entry(
            alert, routed, published_at, published=(alert.status, alert.severity), changed=False
        )
        if routed is not None:
            entry.told, entry.notified_at = True, published_at
            entry.due = published_at + routed.route.repeat_interval_seconds
        self._entries[alert.fingerprint] = entry

    # --- time ----------------------------------------------------------------------------------

    def flush(self, now: float) -> Decisions:
        """The notifications due by `now`, grouped; reschedules reminders."""
        decided = Decisions()
        groups: dict[_GroupKey, tuple[routing.Routed, list[_Entry]]] = {}
        for entry in self._entries.values():
            routed = entry.routed
            if routed is not None and entry.due is not None and entry.due <= now:
                key = (routed.index, entry.alert.app, entry.alert.environment)
                groups.setdefault(key, (routed, []))[1].append(entry)
        for routed, entries in groups.values():
            changes: list[_Entry] = []
            reminders: list[_Entry] = []
            for entry in entries:
                reminder = not entry.changed
                if self._sendable(entry, routed, now, decided):
                    (reminders if reminder else changes).append(entry)
            for sent, reminder in ((changes, False), (reminders, True)):
                if sent:
                    decided.notify.append(_notification(routed, sent, reminder=reminder))
        self._windows = {key: end for key, end in self._windows.items() if end > now}
        self._silences = [silence for silence in self._silences if silence.until > now]
        self._forget_finished()
        return decided

    def next_due(self) -> float | None:
        """When `flush` next has something to do; None when nothing is scheduled."""
        dues = [entry.due for entry in self._entries.values() if entry.due is not None]
        return min(dues, default=None)

    # --- what is known -------------------------------------------------------------------------

    def firing(self) -> list[Alert]:
        """The alerts firing now."""
        return [entry.alert for entry in self._entries.values() if entry.firing]

    def silences(self, now: float) -> list[Silence]:
        """The silences in force now."""
        return [silence for silence in self._silences if silence.until > now]

    # --- internals -----------------------------------------------------------------------------

    def _schedule_first(self, entry: _Entry, now: float) -> None:
        """Set when a newly firing (or newly routed) alert is first due, per its group's wait."""
        group, routed = entry.group(), entry.routed
        if group is None or routed is None:
            entry.due = None
            return
        window = self._windows.get(group)
        if window is not None and window > now:
            entry.due = window
        elif any(other.told and other.firing for other in self._members(group)):
            entry.due = now
        else:
            entry.due = now + routed.route.group_wait_seconds
            self._windows[group] = entry.due

    def _sendable(
        self, entry: _Entry, routed: routing.Routed, now: float, decided: Decisions
    ) -> bool:
        """Whether a due entry goes out now; updates its schedule either way."""
        if not entry.firing:
            entry.due, entry.changed = None, False
            return True
        until = self._silenced_until(entry.alert, now)
        if until is not None:
            if not entry.held:
                decided.suppressed.append(Suppression(entry.sinks, entry.alert, Held.SILENCED))
                entry.held = True
            entry.due = until
            return False
        entry.told, entry.held, entry.changed, entry.notified_at = True, False, False, now
        entry.due = now + routed.route.repeat_interval_seconds
        return True

    def _silenced_until(self, alert: Alert, now: float) -> float | None:
        ends = [s.until for s in self._silences if s.until > now and s.covers(alert)]
        return max(ends, default=None)

    def _members(self, group: _GroupKey) -> Iterator[_Entry]:
        return (entry for entry in self._entries.values() if entry.group() == group)

    def _forget_finished(self) -> None:
        finished = [
            fingerprint
            for fingerprint, entry in self._entries.items()
            if not entry.firing and entry.due is None and not entry.unpublished()
        ]
        for fingerprint in finished:
            del self._entries[fingerprint]


def _notification(
    routed: routing.Routed, entries: Sequence[_Entry], *, reminder: bool
) -> Notification:
    """One notification for due entries of one group (so of one route)."""
    latest = max(entries, key=lambda entry: entry.observed_at)
    return Notification(
        sinks=tuple(routed.route.sinks),
        alerts=tuple(sorted((e.alert for e in entries), key=lambda alert: alert.starts_at)),
        repeat_interval_seconds=routed.route.repeat_interval_seconds,
        reminder=reminder,
        context=latest.context,
    )
