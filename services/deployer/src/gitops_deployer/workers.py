"""One worker per app environment: one deploy at a time, the latest desired state wins.

The bus hands a partition's records to the handler one at a time and waits for it, and several
app environments share a partition; a handler that waited for a rollout (minutes, with health
checks) would hold up every other environment on it. So the handler only records the desired
state here and returns, and each app environment's worker applies in its own task, so different
environments deploy in parallel. Requests coalesce: while a deploy runs, newer desired states
replace each other in a single pending slot, and only the newest is applied next; a state older
than the one already recorded (by its rendering time) is ignored, so an older revision is never
applied after a newer one. A newer request also tells a running deploy it is superseded, so it
stops waiting for health instead of holding the newer revision back.

Trade-off: the consumer commits a desired state's offset once it is recorded, not once it is
applied. If the process dies in between, the state is not applied on restart (the deployer
rebuilds its memory of desired states from the compacted topic, but does not re-apply them on its
own); the next commit or a `gitops sync` applies it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import context as otel_context

from gitops_events import DesiredState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """A desired state to apply and the trace context of the event that asked for it."""

    state: DesiredState
    context: otel_context.Context


Deploy = Callable[["Worker", DesiredState], Awaitable[None]]


class Worker:
    """Serialises the deploys of one app environment."""

    def __init__(self, subject: str, deploy: Deploy, *, auto_sync: bool, suspended: bool) -> None:
        """Deploy with ``deploy``; start suspended or not, with auto-sync or not."""
        self.subject = subject
        self.auto_sync = auto_sync
        self.suspended = suspended
        self.latest: DesiredState | None = None
        self.last_healthy: DesiredState | None = None
        self.superseded = asyncio.Event()
        self._deploy = deploy
        self._pending: Request | None = None
        self._wake = asyncio.Event()
        self._busy = False
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether a desired state waits to be applied."""
        return self._pending is not None

    @property
    def idle(self) -> bool:
        """Whether nothing is being applied and nothing could be applied now."""
        return not self._busy and (self._pending is None or self.suspended)

    def start(self) -> None:
        """Start the worker's task (in the running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"deploy:{self.subject}")

    async def stop(self) -> None:
        """Cancel the worker, including a deploy in progress."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def record(
        self, state: DesiredState, *, apply: bool, context: otel_context.Context | None = None
    ) -> bool:
        """Remember a desired state; with ``apply`` (and auto-sync), queue it for applying.

        Returns False, and changes nothing, for a state rendered before the one already recorded.
        """
        if self.latest is not None and state.rendered_at < self.latest.rendered_at:
            log.info(
                "ignored a desired state older than the one recorded",
                extra={
                    "subject": self.subject,
                    "revision": state.revision,
                    "recorded_revision": self.latest.revision,
                },
            )
            return False
        self.latest = state
        if apply and self.auto_sync:
            self._queue(Request(state, context or otel_context.get_current()))
        return True

    def sync(self, context: otel_context.Context | None = None) -> bool:
        """Queue the latest desired state even without auto-sync; False when there is none."""
        if self.latest is None:
            return False
        self._queue(Request(self.latest, context or otel_context.get_current()))
        return True

    def suspend(self) -> None:
        """Stop applying (a deploy in progress finishes); new states are still recorded."""
        self.suspended = True

    def resume(self) -> None:
        """Apply again, starting with whatever is pending."""
        self.suspended = False
        self._wake.set()

    def _queue(self, request: Request) -> None:
        self._pending = request
        if self._busy:
            self.superseded.set()
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.suspended or self._pending is None:
                continue
            request, self._pending = self._pending, None
            self.superseded.clear()
            self._busy = True
            token = otel_context.attach(request.context)
            try:
                await self._deploy(self, request.state)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The deploy reports its own failures; this is a bug, logged and survived so that
                # one broken deploy does not stop the environment for good.
                log.exception(
                    "deploy crashed",
                    extra={"subject": self.subject, "revision": request.state.revision},
                )
            finally:
                otel_context.detach(token)
                self._busy = False
            if self._pending is not None:
                self._wake.set()
