"""Self-heal: when to ask the deployer for a sync, when to wait, and when to stop trying.

Healing is a sync command, so the deployer stays the only writer; this module only decides when
to send one. Three rules keep it from making things worse:

- one at a time: after a sync is requested, no other is sent until the deployer reports the end
  of that deploy (or ``timeout_seconds`` pass without word from it);
- backoff: syncs of one environment are at least ``backoff_seconds`` apart, doubling with each
  sync in the window, up to ``backoff_max_seconds`` (Argo CD retries after 5 s, too);
- giving up: when the same drift (same fingerprint) has been healed ``attempts`` times within
  ``window_seconds`` and is back again, something else keeps changing it (an autoscaler, an
  operator, a person with a script). Fighting it would flap the object forever, so healing stops
  for one window and the drift is reported with the reason ``SelfHealGaveUp`` for people to
  settle: change Git, add an ignore rule, or stop the other writer. A new desired state starts
  afresh.

The policy is a plain object with the clock passed in, so it is tested without waiting.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum

GAVE_UP_REASON = "SelfHealGaveUp"
"""The DriftEvent reason when self-heal stops fighting another writer."""


class Action(StrEnum):
    """What to do about a drift now."""

    HEAL = "heal"
    WAIT = "wait"
    GIVE_UP = "give-up"
    GIVEN_UP = "given-up"


@dataclass(frozen=True)
class Decision:
    """An action, and for WAIT the moment to ask again (same clock as ``now``)."""

    action: Action
    until: float | None = None


@dataclass(frozen=True)
class Policy:
    """Self-heal timing: backoff, attempts per window, and how long a sync may take."""

    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 300.0
    attempts: int = 3
    window_seconds: float = 600.0
    timeout_seconds: float = 120.0

    def delay(self, recent: int) -> float:
        """The wait after the ``recent``-th sync in the window (1 for the first)."""
        if recent < 1:
            return 0.0
        return float(min(self.backoff_seconds * 2 ** (recent - 1), self.backoff_max_seconds))


class SelfHeal:
    """The self-heal memory of one app environment."""

    def __init__(self, policy: Policy) -> None:
        """Follow ``policy``."""
        self.policy = policy
        self._heals: dict[str, deque[float]] = {}
        self._last: float | None = None
        self._in_flight_until: float | None = None
        self._gave_up_until: float | None = None
        self._awaiting_resolution = False

    @property
    def given_up(self) -> bool:
        """Whether healing is stopped (until the window passes or the desired state changes)."""
        return self._gave_up_until is not None

    def decide(self, now: float, fingerprint: str) -> Decision:
        """What to do about a drift with this fingerprint now; HEAL records a sync as sent."""
        self._forget_before(now - self.policy.window_seconds)
        if self._gave_up_until is not None:
            if now < self._gave_up_until:
                return Decision(Action.GIVEN_UP)
            self.reset()
        healed = self._heals.get(fingerprint, deque())
        if len(healed) >= self.policy.attempts:
            self._gave_up_until = now + self.policy.window_seconds
            self._in_flight_until = None
            return Decision(Action.GIVE_UP)
        if self._in_flight_until is not None and now < self._in_flight_until:
            return Decision(Action.WAIT, self._in_flight_until)
        if self._last is not None:
            allowed = self._last + self.policy.delay(self._recent())
            if now < allowed:
                return Decision(Action.WAIT, allowed)
        self._heals.setdefault(fingerprint, deque()).append(now)
        self._last = now
        self._in_flight_until = now + self.policy.timeout_seconds
        self._awaiting_resolution = True
        return Decision(Action.HEAL)

    def deploy_finished(self) -> None:
        """The deployer reported the end of a deploy: a requested sync is no longer in flight."""
        self._in_flight_until = None

    def resolved(self) -> bool:
        """The drift is gone; True when a sync this policy requested is what resolved it."""
        healed, self._awaiting_resolution = self._awaiting_resolution, False
        return healed

    def reset(self) -> None:
        """Start afresh (a new desired state, or the end of a given-up window)."""
        self._heals.clear()
        self._last = None
        self._in_flight_until = None
        self._gave_up_until = None
        self._awaiting_resolution = False

    def _recent(self) -> int:
        return sum(len(times) for times in self._heals.values())

    def _forget_before(self, cutoff: float) -> None:
        for fingerprint in list(self._heals):
            times = self._heals[fingerprint]
            while times and times[0] < cutoff:
                times.popleft()
            if not times:
                del self._heals[fingerprint]
