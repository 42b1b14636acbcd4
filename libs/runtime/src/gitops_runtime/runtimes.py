"""The service runtime: one object a service registers its consumers, loops and routes on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry.sdk.trace.export import SpanExporter

from gitops_bus import Consumer, Handler, Publisher, ensure_topics
from gitops_config import GitopsConfig, Settings
from gitops_telemetry import logs, tracing
from gitops_telemetry.metrics import Metrics

log = logging.getLogger(__name__)

VERSION = "0.1.0"

#: HTTP port of each service when GITOPS_HTTP_PORT is 0 (the default).
DEFAULT_PORTS = {
    "git-watcher": 8081,
    "config-updater": 8082,
    "deployer": 8083,
    "drift-detector": 8084,
    "alerter": 8085,
}


@dataclass(frozen=True)
class Check:
    """A readiness check: a name for /readyz and a function that says if it passes."""

    name: str
    probe: Callable[[], bool]


class Runtime:
    """Runs one service: its consumers, background loops and HTTP routes."""

    def __init__(
        self,
        service: str,
        settings: Settings,
        *,
        span_exporter: SpanExporter | None = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = Metrics(service)
        self.metrics.build_info.labels(service, VERSION).set(1)
        self._span_exporter = span_exporter
        self.publisher = Publisher(
            settings.kafka.bootstrap_servers,
            settings.kafka.topic_prefix,
            f"gitops/{service}",
            metrics=self.metrics,
        )
        self._consumers: list[Consumer] = []
        self._loops: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._checks: list[Check] = [
            Check("kafka-producer", lambda: self.publisher.started),
        ]
        self._routes: list[web.RouteDef] = []
        self._stop = asyncio.Event()
        self.http_port: int | None = None

    def consume(self, topics: Sequence[str], handler: Handler, *, group: str | None = None) -> None:
        """Handle every event of these topics (names without prefix) in a consumer group."""
        consumer = Consumer(
            self.settings.kafka.bootstrap_servers,
            self.settings.kafka.topic_prefix,
            group or f"gitops-{self.service}",
            topics,
            handler,
            self.publisher,
            metrics=self.metrics,
        )
        self._consumers.append(consumer)
        self._checks.append(Check(f"kafka-consumer:{consumer.group}", lambda: consumer.started))

    def loop(self, body: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a background coroutine (a poller, a watch) for the life of the service."""
        self._loops.append(body)

    def check(self, name: str, probe: Callable[[], bool]) -> None:
        """Add a readiness check."""
        self._checks.append(Check(name, probe))

    def routes(self, routes: Sequence[web.RouteDef]) -> None:
        """Serve more HTTP routes (webhooks, APIs) next to the health endpoints."""
        self._routes.extend(routes)

    def request_stop(self) -> None:
        """Ask the service to finish what it is doing and exit."""
        self._stop.set()

    def readiness(self) -> dict[str, bool]:
        """Each readiness check and whether it passes now."""
        return {c.name: bool(c.probe()) for c in self._checks}

    async def run(self) -> None:
        """Start everything, serve until SIGTERM or SIGINT, then shut down in order."""
        tele = self.settings.telemetry
        logs.setup_logging(self.service, level=tele.log_level, fmt=tele.log_format)
        tracing.setup_tracing(
            self.service,
            otlp_endpoint=tele.otlp_endpoint,
            sample_ratio=tele.sample_ratio,
            exporter=self._span_exporter,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stop.set)
        runner = await self._serve_http()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._connect()
            tasks = [
                asyncio.create_task(c.run(), name=f"consume:{c.group}") for c in self._consumers
            ]
            tasks += [
                asyncio.create_task(body(), name=f"loop:{i}") for i, body in enumerate(self._loops)
            ]
            log.info(
                "service started", extra={"port": self.http_port, "consumers": len(self._consumers)}
            )
            await self._wait_for_stop_or_failure(tasks)
        finally:
            log.info("service stopping")
            for consumer in self._consumers:
                await consumer.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.publisher.started:
                await self.publisher.stop()
            await runner.cleanup()
            tracing.shutdown_tracing()
            log.info("service stopped")

    async def _connect(self) -> None:
        """Create topics and connect, retrying with backoff while Kafka is not reachable."""
        delay = 0.5
        while not self._stop.is_set():
            try:
                await ensure_topics(
                    self.settings.kafka.bootstrap_servers, self.settings.kafka.topic_prefix
                )
                await self.publisher.start()
                for consumer in self._consumers:
                    await consumer.start()
                return
            except Exception as exc:
                log.warning(
                    "kafka not reachable, retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in": delay},
                )
                await asyncio.wait([asyncio.create_task(self._stop.wait())], timeout=delay)
                delay = min(delay * 2, 10.0)

    async def _wait_for_stop_or_failure(self, tasks: list[asyncio.Task[None]]) -> None:
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        for task in done:
            if task is not stop and not task.cancelled() and task.exception() is not None:
                log.error(
                    "a service task failed; stopping",
                    exc_info=task.exception(),
                    extra={"task": task.get_name()},
                )
                raise SystemExit(1)

    async def _serve_http(self) -> web.AppRunner:
        app = web.Application(client_max_size=1024 * 1024)
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
                *self._routes,
            ]
        )
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = self.settings.http.port or DEFAULT_PORTS.get(self.service, 0)
        site = web.TCPSite(runner, self.settings.http.host, port)
        await site.start()
        bound = runner.addresses
        self.http_port = int(bound[0][1]) if bound else port
        return runner

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "service": self.service})

    async def _readyz(self, _: web.Request) -> web.Response:
        checks = self.readiness()
        ready = all(checks.values())
        self.metrics.ready.set(1 if ready else 0)
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        body, content_type = self.metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": content_type})


Build = Callable[[Runtime, GitopsConfig], None]


async def serve(
    service: str,
    settings: Settings,
    config: GitopsConfig,
    build: Build,
    *,
    span_exporter: SpanExporter | None = None,
) -> None:
    """Build a service's runtime with its domain logic and run it until stopped."""
    runtime = Runtime(service, settings, span_exporter=span_exporter)
    build(runtime, config)
    await runtime.run()
