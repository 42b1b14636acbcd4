"""A real HTTP receiver on loopback standing in for webhook, Slack, Alertmanager and Grafana.

It accepts POST on any path and records every request as it arrives (headers, exact body bytes,
arrival time), so tests can check signatures and payloads byte for byte. A path can be told to
answer errors (a number of times, or always) or to hang until the receiver stops, to show that
the alerter retries and that one stuck sink does not hold back another.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Received:
    """One request as it arrived, and what the receiver answered (None while it hangs)."""

    path: str
    headers: Mapping[str, str]
    body: bytes
    at: float
    status: int | None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass
class _Failure:
    status: int
    remaining: int | None


class SinkReceiver:
    """Records POSTs on any path; per path, can fail or hang on request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._failures: dict[str, _Failure] = {}
        self._hanging: set[str] = set()
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        """The URL of a path on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        """Listen on a free loopback port."""
        app = web.Application()
        app.add_routes([web.post("/{tail:.*}", self._receive)])
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Let hanging requests go, and stop listening."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def fail(self, path: str, status: int = 500, times: int | None = None) -> None:
        """Answer `status` on a path, the next `times` requests (None: until told otherwise)."""
        self._failures[path] = _Failure(status, times)

    def hang(self, path: str) -> None:
        """Never answer on a path (until the receiver stops)."""
        self._hanging.add(path)

    def requests(self, path: str) -> list[Received]:
        """Every request that arrived on a path, in order."""
        return [request for request in self.received if request.path == path]

    def delivered(self, path: str) -> list[Received]:
        """The requests of a path that were answered 2xx."""
        return [r for r in self.requests(path) if r.status is not None and r.status < 300]

    async def _receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        status = self._status(path)

        def record(answered: int | None) -> None:
            self.received.append(
                Received(path, dict(request.headers), body, time.monotonic(), answered)
            )

        if path in self._hanging:
            record(None)
            await self._release.wait()
            return web.Response(status=503)
        record(status)
        return web.json_response({}, status=status)

    def _status(self, path: str) -> int:
        failure = self._failures.get(path)
        if failure is None:
            return 200
        if failure.remaining is not None:
            if failure.remaining <= 0:
                return 200
            failure.remaining -= 1
        return failure.status
