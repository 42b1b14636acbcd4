"""The alerter against the real broker and real HTTP receivers: events in, notifications out.

The service runs in-process on the real `Runtime` (HTTP on a free port, the real Kafka broker
with this test's topic prefix, spans to an in-memory exporter); deploy, drift and command events
are published to Kafka as the other services publish them, and the sinks are a real aiohttp
server on loopback (`tests.support.sinks`) that checks nothing itself and records everything,
so the tests see exactly the bytes a webhook receiver, Slack, Alertmanager and Grafana would.
Intervals are tiny so that group waits, repeats and backoff happen within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from gitops_alerter import service
from gitops_alerter.settings import AlerterSettings
from gitops_bus import Publisher, tail
from gitops_config import GitopsConfig, load_config
from gitops_events import (
    Alert,
    AlertStatus,
    Command,
    DeployEvent,
    DeployPhase,
    DriftEvent,
    DriftStatus,
    Envelope,
    FieldDiff,
    ObjectDrift,
    ObjectRef,
    SilenceCommand,
)
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing
from tests.support.kafka import KafkaTarget
from tests.support.sinks import Received, SinkReceiver
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

HMAC_SECRET = "hmac-secret-for-tests"
GRAFANA_TOKEN = "grafana-token-for-tests"
SLACK_TOKEN = "slack-path-token-for-tests"
SLACK_PATH = f"/slack/services/T000/B000/{SLACK_TOKEN}"
PLAYBOOKS = "https://git.example.com/team/{app}-config/blob/main"

CONFIG = Template("""\
version: 1
clusters:
  local: {in_cluster: true}
apps:
  - name: shop
    repo: file:///srv/git/shop.git
    environments:
      production: {branch: production, cluster: local, namespace: shop}
      staging: {branch: staging, cluster: local, namespace: shop-staging}
alerts:
  routes:
$routes
  sinks:
    hook: {kind: webhook, url: "$base/hook", hmac_secret: {file: "$secrets/hmac"}}
    chat: {kind: slack, url: {file: "$secrets/slack-url"}}
    am: {kind: alertmanager, url: "$base/am"}
    dash: {kind: grafana, url: "$base/grafana", token: {file: "$secrets/grafana-token"}}
    stuck: {kind: webhook, url: "$base/stuck"}
    flaky: {kind: webhook, url: "$base/flaky"}
    broken: {kind: webhook, url: "$base/broken"}
""")


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
async def receiver() -> AsyncIterator[SinkReceiver]:
    sinks = SinkReceiver()
    await sinks.start()
    yield sinks
    await sinks.stop()


def _config(tmp_path: Path, receiver: SinkReceiver, routes: str) -> GitopsConfig:
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "hmac").write_text(HMAC_SECRET + "\n")
    (secrets / "grafana-token").write_text(GRAFANA_TOKEN)
    (secrets / "slack-url").write_text(receiver.url(SLACK_PATH))
    path = tmp_path / "gitops.yaml"
    path.write_text(
        CONFIG.substitute(routes=routes, base=receiver.url(""), secrets=secrets.as_posix())
    )
    return load_config(path)


def _settings(**overrides: Any) -> AlerterSettings:
    values: dict[str, Any] = {
        "playbook_base_url": PLAYBOOKS,
        "sink_timeout_seconds": 5,
        "sink_attempts": 3,
        "retry_backoff_seconds": 0.3,
        **overrides,
    }
    return AlerterSettings.model_validate(values)


@dataclass
class Running:
    """A running alerter, a publisher to drive it, and its spans."""

    kafka: KafkaTarget
    runtime: Runtime
    publisher: Publisher
    spans: InMemorySpanExporter

    async def deploy(
        self,
        phase: DeployPhase,
        reason: str,
        *,
        env: str = "production",
        message: str = "revision abc: Deployment shop/web is not ready",
    ) -> Envelope:
        event = DeployEvent(
            app="shop",
            environment=env,
            revision="abc123",
            phase=phase,
            reason=reason,
            message=message,
        )
        return await self.publisher.publish(event)

    async def silence(self, reason: str, seconds: float = 600) -> None:
        await self.publisher.publish(
            Command(
                app="shop",
                environment="production",
                command=SilenceCommand(reason=reason, duration_seconds=seconds),
                requested_by="test",
            )
        )

    def metric(self, name: str, **labels: str) -> float:
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    async def alerts(self) -> list[tuple[Envelope, Alert]]:
        found = []
        async for record in tail(self.kafka.bootstrap_servers, [self.kafka.prefix + "alerts"]):
            if record.envelope is not None and isinstance(record.envelope.data, Alert):
                found.append((record.envelope, record.envelope.data))
        return found

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if span.name == name]


@contextlib.asynccontextmanager
async def running_alerter(
    kafka: KafkaTarget, config: GitopsConfig, settings: AlerterSettings, *, logs: str = "console"
) -> AsyncIterator[Running]:
    spans = InMemorySpanExporter()
    # The publisher takes its tracer when the runtime is built, before `run()` sets tracing
    # up; set it up first so that its spans reach this test's exporter too.
    tracing.setup_tracing(service.SERVICE, exporter=spans)
    runtime = Runtime(
        service.SERVICE,
        kafka.settings(GITOPS_HTTP_PORT=str(free_port()), GITOPS_LOG_FORMAT=logs),
        span_exporter=spans,
    )
    service.build_with(runtime, config, settings)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    task = asyncio.create_task(runtime.run())
    publisher = Publisher(kafka.bootstrap_servers, kafka.prefix, "gitops/test")
    try:
        await eventually(
            lambda: task.done() or all(runtime.readiness().values()),
            timeout=60,
            what="the alerter to be ready",
        )
        assert not task.done(), "the alerter stopped while starting"
        await publisher.start()
        yield Running(kafka, runtime, publisher, spans)
    finally:
        if publisher.started:
            await publisher.stop()
        runtime.request_stop()
        await asyncio.wait_for(task, timeout=30)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        root.handlers[:] = handlers
        root.setLevel(level)


def _route(sinks: str, *, group_wait: float = 0, repeat: float = 300, match: str = "{}") -> str:
    return (
        f"    - match: {match}\n"
        f"      sinks: [{sinks}]\n"
        f"      group_wait_seconds: {group_wait}\n"
        f"      repeat_interval_seconds: {repeat}\n"
    )


def _reasons(received: Received) -> list[str]:
    return [alert["reason"] for alert in received.json()["alerts"]]


def _with(receiver: SinkReceiver, path: str, reason: str) -> Callable[[], list[Received]]:
    """A probe: the 2xx-answered webhook requests of a path that carry an alert of a reason."""

    def probe() -> list[Received]:
        return [r for r in receiver.delivered(path) if reason in _reasons(r)]

    return probe


def _trace_id(envelope: Envelope) -> str:
    assert envelope.traceparent is not None
    return envelope.traceparent.split("-")[1]


# --- tests -------------------------------------------------------------------------------------


async def test_a_failed_deploy_reaches_every_kind_of_sink(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook, chat, am, dash", group_wait=0.2))
    async with running_alerter(kafka, config, _settings()) as alerter:
        deploy = await alerter.deploy(
            DeployPhase.FAILED, "ImagePullBackOff", message="image not pulled after 12.5s"
        )
        paths = ("/hook", SLACK_PATH, "/am/api/v2/alerts", "/grafana/api/annotations")
        await eventually(
            lambda: all(receiver.delivered(path) for path in paths),
            timeout=30,
            what="a delivery to every sink",
        )
        hook, slack, alertmanager, grafana = (receiver.requests(path) for path in paths)
        assert [len(hook), len(slack), len(alertmanager), len(grafana)] == [1, 1, 1, 1]

        expected = hmac.new(HMAC_SECRET.encode(), hook[0].body, hashlib.sha256).hexdigest()
        assert hook[0].headers["X-Gitops-Signature"] == f"sha256={expected}"
        body = hook[0].json()
        assert body["status"] == "firing"
        (sent,) = body["alerts"]
        assert sent["reason"] == "ImagePullBackOff"
        assert sent["severity"] == "critical"
        assert sent["description"] == "image not pulled after 12.5s"
        assert sent["playbook"] == (
            "https://git.example.com/team/shop-config/blob/main/playbooks/ImagePullBackOff.md"
        )

        message = slack[0].json()
        assert message["text"] == "[FIRING] shop/production: deploy failed (ImagePullBackOff)"
        assert "image not pulled after 12.5s" in message["blocks"][0]["text"]["text"]

        (posted,) = alertmanager[0].json()
        assert posted["labels"]["alertname"] == "ImagePullBackOff"
        assert posted["labels"]["app"] == "shop"
        assert posted["labels"]["severity"] == "critical"
        assert posted["annotations"]["summary"] == sent["summary"]
        assert posted["annotations"]["runbook_url"] == sent["playbook"]
        assert posted["startsAt"] < posted["endsAt"]

        assert grafana[0].headers["Authorization"] == f"Bearer {GRAFANA_TOKEN}"
        annotation = grafana[0].json()
        assert {"gitops", "app:shop", "reason:ImagePullBackOff", "status:firing"} <= set(
            annotation["tags"]
        )

        ((envelope, alert),) = await alerter.alerts()
        assert alert.status is AlertStatus.FIRING
        assert alert.fingerprint == sent["fingerprint"]
        assert _trace_id(envelope) == _trace_id(deploy)

        (handled,) = alerter.named("handle io.gitops.deploy.v1")
        delivery = alerter.named("alert delivery hook")
        assert len(delivery) == 1
        assert handled.context is not None
        assert delivery[0].parent is not None
        assert delivery[0].parent.span_id == handled.context.span_id
        for sink in ("hook", "chat", "am", "dash"):
            delivered = alerter.metric("gitops_alerts_total", sink=sink, outcome="delivered")
            assert delivered == 1, sink
            assert alerter.metric("gitops_alert_delivery_seconds_count", sink=sink) == 1
        assert alerter.metric("gitops_alerts_firing") == 1

        recorded = repr([(s.attributes, s.events) for s in alerter.spans.get_finished_spans()])
        on_topic = repr(await alerter.alerts())
        for secret in (HMAC_SECRET, GRAFANA_TOKEN, SLACK_TOKEN):
            assert secret not in recorded
            assert secret not in on_topic


async def test_a_repeated_failure_is_sent_again_only_after_the_repeat_interval(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook", repeat=3))
    async with running_alerter(kafka, config, _settings()) as alerter:
        await alerter.deploy(DeployPhase.FAILED, "CrashLoop", message="crashed after 3s")
        (first,) = await eventually(
            _with(receiver, "/hook", "CrashLoop"), timeout=30, what="the first notification"
        )
        await alerter.deploy(DeployPhase.FAILED, "CrashLoop", message="crashed after 4s")
        # Same app environment, so same partition: handled after the repeat above.
        await alerter.deploy(DeployPhase.FAILED, "Marker")
        await eventually(_with(receiver, "/hook", "Marker"), timeout=30, what="the marker")
        assert len(_with(receiver, "/hook", "CrashLoop")()) == 1
        assert alerter.metric("gitops_alerts_total", sink="hook", outcome="suppressed") == 1

        reminders = await eventually(
            lambda: _with(receiver, "/hook", "CrashLoop")()[1:],
            timeout=30,
            what="a reminder after the repeat interval",
        )
        assert reminders[0].at - first.at >= 2.9
        body = reminders[0].json()
        assert body["reminder"] is True
        assert body["alerts"][0]["description"] == "crashed after 4s"
        published = [alert.reason for _, alert in await alerter.alerts()]
        assert sorted(published) == ["CrashLoop", "Marker"]


async def test_a_healthy_deploy_sends_the_resolution(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook, am"))
    async with running_alerter(kafka, config, _settings()) as alerter:
        await alerter.deploy(DeployPhase.DEGRADED, "HealthCheckTimeout")
        await eventually(lambda: receiver.delivered("/am/api/v2/alerts"), timeout=30, what="AM")
        await alerter.deploy(DeployPhase.HEALTHY, "Healthy", message="revision abc123 is healthy")

        hooks = await eventually(
            lambda: receiver.delivered("/hook")[1:], timeout=30, what="the resolution"
        )
        body = hooks[0].json()
        assert body["status"] == "resolved"
        (resolved,) = body["alerts"]
        assert resolved["status"] == "resolved"
        assert resolved["severity"] == "warning"
        assert resolved["description"] == "revision abc123 is healthy"
        assert resolved["ends_at"] is not None
        ams = await eventually(
            lambda: receiver.delivered("/am/api/v2/alerts")[1:], timeout=30, what="AM resolved"
        )
        (posted,) = ams[0].json()
        assert posted["endsAt"] == resolved["ends_at"].replace("Z", "+00:00")
        states = [alert.status for _, alert in await alerter.alerts()]
        assert states == [AlertStatus.FIRING, AlertStatus.RESOLVED]
        assert alerter.metric("gitops_alerts_firing") == 0


async def test_a_silence_holds_back_notifications(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook"))
    async with running_alerter(kafka, config, _settings()) as alerter:
        await alerter.silence("CrashLoop")
        await eventually(
            lambda: alerter.metric("gitops_alert_silences") == 1, timeout=30, what="the silence"
        )
        await alerter.deploy(DeployPhase.FAILED, "CrashLoop")
        await alerter.deploy(DeployPhase.FAILED, "Marker")
        await eventually(_with(receiver, "/hook", "Marker"), timeout=30, what="the marker")
        assert _with(receiver, "/hook", "CrashLoop")() == []
        assert alerter.metric("gitops_alerts_total", sink="hook", outcome="suppressed") == 1
        published = [alert.reason for _, alert in await alerter.alerts()]
        assert sorted(published) == ["CrashLoop", "Marker"]


async def test_a_hanging_sink_does_not_delay_another(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    receiver.hang("/stuck")
    config = _config(tmp_path, receiver, _route("stuck, hook"))
    async with running_alerter(kafka, config, _settings(sink_timeout_seconds=120)) as alerter:
        await alerter.deploy(DeployPhase.FAILED, "First")
        await eventually(_with(receiver, "/hook", "First"), timeout=10, what="the first")
        await alerter.deploy(DeployPhase.FAILED, "Second")
        await eventually(_with(receiver, "/hook", "Second"), timeout=10, what="the second")
        # The stuck sink got the first notification and has not answered it; the second waits
        # in its queue. Neither held back the other sink or the consumer.
        (stuck,) = receiver.requests("/stuck")
        assert stuck.status is None
        assert _reasons(stuck) == ["First"]
        assert alerter.metric("gitops_alerts_total", sink="hook", outcome="delivered") == 2


async def test_a_failing_sink_is_retried_with_backoff_and_counted(
    kafka: KafkaTarget,
    receiver: SinkReceiver,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    receiver.fail("/flaky", 503, times=2)
    receiver.fail("/broken", 500)
    receiver.fail(SLACK_PATH, 502)
    config = _config(tmp_path, receiver, _route("flaky, broken, chat"))
    async with running_alerter(kafka, config, _settings(), logs="json") as alerter:
        await alerter.deploy(DeployPhase.FAILED, "CrashLoop")
        await eventually(lambda: receiver.delivered("/flaky"), timeout=30, what="flaky, finally")
        first, second, third = receiver.requests("/flaky")
        assert [first.status, second.status, third.status] == [503, 503, 200]
        assert second.at - first.at >= 0.3
        assert third.at - second.at >= 0.6

        def given_up() -> bool:
            return all(
                alerter.metric("gitops_alerts_total", sink=sink, outcome="failed") == 1
                for sink in ("broken", "chat")
            )

        await eventually(given_up, timeout=30, what="broken sinks to be given up")
        assert len(receiver.requests("/broken")) == 3
        assert alerter.metric("gitops_alerts_total", sink="flaky", outcome="delivered") == 1
        assert alerter.metric("gitops_alerts_total", sink="flaky", outcome="failed") == 0
        (broken,) = alerter.named("alert delivery broken")
        assert broken.status.status_code is StatusCode.ERROR
        assert broken.status.description == "the sink answered HTTP 500"
        assert [event.name for event in broken.events] == ["retry", "retry"]
        (chat,) = alerter.named("alert delivery chat")
        recorded = repr((chat.attributes, chat.events, chat.status.description))

    logged = capfd.readouterr().err
    assert "alert delivery failed" in logged
    assert "HTTP 502" in logged
    assert SLACK_TOKEN not in logged
    assert SLACK_TOKEN not in recorded


async def test_drift_fires_with_field_paths_and_resolves(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook", match="{reason: DriftDetected}"))
    web = ObjectRef(api_version="apps/v1", kind="Deployment", name="web", namespace="shop")
    drift = DriftEvent(
        app="shop",
        environment="production",
        revision="abc123",
        status=DriftStatus.DETECTED,
        fingerprint="d1",
        objects=[
            ObjectDrift(
                object=web,
                drift="modified",
                fields=[
                    FieldDiff(path="/spec/replicas", desired=2, live=5),
                    FieldDiff(path="/spec/template/spec/containers/0/image"),
                ],
            )
        ],
    )
    async with running_alerter(kafka, config, _settings()) as alerter:
        await alerter.deploy(DeployPhase.FAILED, "NotRouted")
        await alerter.publisher.publish(drift)
        (fired,) = await eventually(
            _with(receiver, "/hook", "DriftDetected"), timeout=30, what="the drift alert"
        )
        (alert,) = fired.json()["alerts"]
        assert alert["severity"] == "warning"
        assert alert["description"] == (
            "Deployment shop/web modified: /spec/replicas, /spec/template/spec/containers/0/image"
        )
        await alerter.publisher.publish(drift.model_copy(update={"status": DriftStatus.RESOLVED}))
        await eventually(
            lambda: _with(receiver, "/hook", "DriftDetected")()[1:], timeout=30, what="resolved"
        )
        assert receiver.delivered("/hook")[-1].json()["status"] == "resolved"
        published = [(a.reason, a.status.value) for _, a in await alerter.alerts()]
        assert ("NotRouted", "firing") in published
        assert len(receiver.received) == 2


async def test_a_restarted_alerter_resolves_what_fired_before(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    config = _config(tmp_path, receiver, _route("hook"))
    async with running_alerter(kafka, config, _settings()) as alerter:
        await alerter.deploy(DeployPhase.FAILED, "CrashLoop")
        await eventually(_with(receiver, "/hook", "CrashLoop"), timeout=30, what="firing")
    async with running_alerter(kafka, config, _settings()) as restarted:
        assert restarted.metric("gitops_alerts_firing") == 1
        await restarted.deploy(DeployPhase.FAILED, "CrashLoop")
        await restarted.deploy(DeployPhase.HEALTHY, "Healthy")
        hooks = await eventually(
            lambda: receiver.delivered("/hook")[1:], timeout=30, what="the resolution"
        )
        assert [hook.json()["status"] for hook in hooks] == ["resolved"]
        states = [alert.status for _, alert in await restarted.alerts()]
        assert states == [AlertStatus.FIRING, AlertStatus.RESOLVED]
