"""Unit tests of the alerter's pure decisions: rules, routes, the book's policy, sink formats.

Time is given by hand (`now` in seconds), so group waits, repeat intervals and silences are
tested without sleeping; deliveries run against a fake transport and a sleep that only records
how long it was asked to wait.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gitops_alerter import rules, sinks, state
from gitops_alerter.deliveries import Deliveries
from gitops_alerter.metrics import AlerterMetrics
from gitops_alerter.routing import fingerprint, route_for
from gitops_alerter.settings import AlerterSettings
from gitops_config import ConfigError
from gitops_config import models as config
from gitops_events import (
    Alert,
    AlertStatus,
    DeployEvent,
    DeployPhase,
    DriftEvent,
    DriftStatus,
    FieldDiff,
    ObjectDrift,
    ObjectRef,
    Severity,
)

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


# --- builders ----------------------------------------------------------------------------------


def deploy(
    phase: DeployPhase,
    reason: str = "ImagePullBackOff",
    *,
    app: str = "shop",
    env: str = "production",
    message: str = "revision abc: Deployment shop/web failed",
    revision: str = "abc",
) -> DeployEvent:
    return DeployEvent(
        app=app,
        environment=env,
        revision=revision,
        phase=phase,
        reason=reason,
        message=message,
    )


def firing(
    reason: str = "ImagePullBackOff",
    *,
    phase: DeployPhase = DeployPhase.FAILED,
    app: str = "shop",
    env: str = "production",
    message: str = "revision abc: failed",
    at: datetime = T0,
) -> Alert:
    observed = rules.from_deploy(deploy(phase, reason, app=app, env=env, message=message), at)
    assert isinstance(observed, Alert)
    return observed


def healthy(app: str = "shop", env: str = "production") -> rules.Resolution:
    observed = rules.from_deploy(
        deploy(DeployPhase.HEALTHY, "Healthy", app=app, env=env, message="ok", revision="def"),
        T0 + timedelta(minutes=5),
    )
    assert isinstance(observed, rules.Resolution)
    return observed


def route(
    sinks: Sequence[str] = ("chat",),
    *,
    group_wait: float = 0,
    repeat: float = 60,
    **match: str,
) -> config.Route:
    return config.Route(
        match=config.RouteMatch.model_validate(match),
        sinks=list(sinks),
        group_wait_seconds=group_wait,
        repeat_interval_seconds=repeat,
    )


def fire(book: state.Book, alert: Alert, now: float) -> state.Decisions:
    """Fire as the service does: what the book asks to publish is published."""
    decided = book.fire(alert, now)
    for published in decided.publish:
        book.published(published)
    return decided


def reasons(notification: state.Notification) -> list[str]:
    return [alert.reason for alert in notification.alerts]


# --- rules and fingerprints --------------------------------------------------------------------


def test_fingerprint_ignores_messages_durations_and_revisions() -> None:
    first = rules.from_deploy(
        deploy(DeployPhase.DEGRADED, "HealthCheckTimeout", message="not healthy after 301s"), T0
    )
    again = rules.from_deploy(
        deploy(
            DeployPhase.DEGRADED,
            "HealthCheckTimeout",
            message="not healthy after 302.5s",
            revision="def",
        ),
        T0 + timedelta(hours=1),
    )
    assert isinstance(first, Alert)
    assert isinstance(again, Alert)
    assert first.fingerprint == again.fingerprint
    assert first.description != again.description
    assert firing("Other").fingerprint != first.fingerprint
    assert firing(env="staging").fingerprint != firing().fingerprint
    assert fingerprint("drift", "shop", "production", "X") != fingerprint(
        "deploy", "shop", "production", "X"
    )


@pytest.mark.parametrize(
    ("phase", "severity"),
    [(DeployPhase.FAILED, Severity.CRITICAL), (DeployPhase.DEGRADED, Severity.WARNING)],
)
def test_failing_deploys_fire_with_the_rule_severity(
    phase: DeployPhase, severity: Severity
) -> None:
    event = deploy(phase, "CrashLoop").model_copy(
        update={
            "involved_object": ObjectRef(
                api_version="apps/v1", kind="Deployment", name="web", namespace="shop"
            ),
            "source": "deploy/web.yaml",
        }
    )
    alert = rules.from_deploy(event, T0, "https://git.example.com/{app}-config/blob/main/")
    assert isinstance(alert, Alert)
    assert alert.status is AlertStatus.FIRING
    assert alert.severity is severity
    assert alert.reason == "CrashLoop"
    assert alert.starts_at == T0
    assert alert.revision == "abc"
    assert alert.labels == {"origin": "deploy"}
    assert alert.description is not None
    assert "object: Deployment shop/web" in alert.description
    assert "file: deploy/web.yaml" in alert.description
    assert alert.playbook == "https://git.example.com/shop-config/blob/main/playbooks/CrashLoop.md"


@pytest.mark.parametrize("phase", [DeployPhase.STARTED, DeployPhase.APPLIED, DeployPhase.PRUNED])
def test_deploy_progress_raises_nothing(phase: DeployPhase) -> None:
    assert rules.from_deploy(deploy(phase, "Progress"), T0) is None


@pytest.mark.parametrize("phase", [DeployPhase.HEALTHY, DeployPhase.ROLLED_BACK])
def test_healthy_or_rolled_back_deploys_resolve(phase: DeployPhase) -> None:
    resolution = rules.from_deploy(deploy(phase, "Fine", message="rolled back to xyz"), T0)
    assert resolution == rules.Resolution(
        app="shop",
        environment="production",
        origin="deploy",
        at=T0,
        revision="abc",
        description="rolled back to xyz",
    )


def test_drift_fires_with_field_paths_and_resolves() -> None:
    web = ObjectRef(api_version="apps/v1", kind="Deployment", name="web", namespace="shop")
    config_map = ObjectRef(api_version="v1", kind="ConfigMap", name="settings", namespace="shop")
    many = [FieldDiff(path=f"/data/key{i}", desired="a", live="b") for i in range(12)]
    event = DriftEvent(
        app="shop",
        environment="production",
        revision="abc",
        status=DriftStatus.DETECTED,
        fingerprint="drift-1",
        objects=[
            ObjectDrift(
                object=web,
                drift="modified",
                fields=[FieldDiff(path="/spec/replicas", desired=2, live=5)],
            ),
            ObjectDrift(object=config_map, drift="modified", fields=many),
            ObjectDrift(object=web.model_copy(update={"name": "old"}), drift="extra"),
        ],
    )
    alert = rules.from_drift(event, T0)
    assert isinstance(alert, Alert)
    assert (alert.reason, alert.severity, alert.status) == (
        "DriftDetected",
        Severity.WARNING,
        AlertStatus.FIRING,
    )
    assert alert.description is not None
    lines = alert.description.splitlines()
    assert lines[0] == "Deployment shop/web modified: /spec/replicas"
    assert lines[1].startswith("ConfigMap shop/settings modified: /data/key0, /data/key1")
    assert lines[1].endswith("/data/key9 and 2 more")
    assert lines[2] == "Deployment shop/old extra"
    changed = rules.from_drift(event.model_copy(update={"status": DriftStatus.CHANGED}), T0)
    assert isinstance(changed, Alert)
    assert changed.fingerprint == alert.fingerprint
    resolved = rules.from_drift(event.model_copy(update={"status": DriftStatus.RESOLVED}), T0)
    assert isinstance(resolved, rules.Resolution)
    assert resolved.origin == "drift"


def test_playbook_links() -> None:
    assert rules.playbook_link(None, "shop", "production", "X") is None
    assert (
        rules.playbook_link("https://docs.example.com/ops/", "shop", "production", "Crash/Loop")
        == "https://docs.example.com/ops/playbooks/Crash%2FLoop.md"
    )
    assert (
        rules.playbook_link("https://git.example.com/{app}/blob/{environment}", "a b", "prod", "X")
        == "https://git.example.com/a%20b/blob/prod/playbooks/X.md"
    )


# --- routes ------------------------------------------------------------------------------------


def test_the_first_matching_route_takes_an_alert() -> None:
    routes = [
        route(["pager"], app="shop", environment="production", severity="critical"),
        route(["chat"], reason="DriftDetected"),
        route(["dashboards"]),
    ]
    critical = route_for(routes, firing())
    warning = route_for(routes, firing(phase=DeployPhase.DEGRADED))
    other_env = route_for(routes, firing(env="staging"))
    assert critical is not None
    assert critical.index == 0
    assert warning is not None
    assert warning.index == 2
    assert other_env is not None
    assert other_env.index == 2
    assert route_for(routes[:2], firing(env="staging")) is None


def test_an_unrouted_alert_is_published_and_notifies_nobody() -> None:
    book = state.Book([route(app="billing")])
    decided = book.fire(firing(), 0)
    assert [alert.reason for alert in decided.publish] == ["ImagePullBackOff"]
    assert decided.notify == []
    assert book.next_due() is None
    resolved = book.resolve(healthy(), 1)
    assert [alert.status for alert in resolved.publish] == [AlertStatus.RESOLVED]
    assert resolved.notify == []
    assert resolved.suppressed == []
    assert book.firing() == []


# --- the book: group wait, de-duplication, repeats, resolutions ------------------------------


def test_group_wait_sends_the_alerts_of_a_group_together() -> None:
    book = state.Book([route(group_wait=10)])
    first = book.fire(firing("A"), 0)
    assert first.notify == []
    assert len(first.publish) == 1
    assert book.fire(firing("B"), 3).notify == []
    other_group = book.fire(firing("C", env="staging"), 4)
    assert other_group.notify == []
    assert book.next_due() == 10
    assert book.flush(9.99).notify == []
    (notification,) = book.flush(10).notify
    assert reasons(notification) == ["A", "B"]
    assert notification.sinks == ("chat",)
    assert not notification.reminder
    (staging,) = book.flush(14).notify
    assert reasons(staging) == ["C"]
    assert book.next_due() == 70


def test_a_new_alert_in_a_notified_group_goes_out_at_once() -> None:
    book = state.Book([route(group_wait=10)])
    book.fire(firing("A"), 0)
    assert len(book.flush(10).notify) == 1
    (notification,) = book.fire(firing("B"), 20).notify
    assert reasons(notification) == ["B"]


def test_an_alert_resolved_within_the_group_wait_is_never_sent() -> None:
    book = state.Book([route(group_wait=10)])
    book.fire(firing(), 0)
    decided = book.resolve(healthy(), 2)
    assert decided.notify == []
    assert [alert.status for alert in decided.publish] == [AlertStatus.RESOLVED]
    (suppression,) = decided.suppressed
    assert suppression.why is state.Held.RESOLVED_WHILE_WAITING
    assert suppression.sinks == ("chat",)
    assert book.flush(100).notify == []
    assert book.next_due() is None


def test_a_repeated_failure_is_sent_once_then_reminded_after_the_interval() -> None:
    book = state.Book([route(repeat=60)])
    (first,) = fire(book, firing(message="failed after 10s"), 0).notify
    assert first.alerts[0].description == "failed after 10s"
    again = fire(book, firing(message="failed after 12s", at=T0 + timedelta(seconds=5)), 5)
    assert again.notify == []
    assert again.publish == []
    (duplicate,) = again.suppressed
    assert duplicate.why is state.Held.DUPLICATE
    assert book.flush(59.9).notify == []
    (reminder,) = book.flush(60).notify
    assert reminder.reminder
    (alert,) = reminder.alerts
    assert alert.description == "failed after 12s"
    assert alert.starts_at == T0
    assert book.next_due() == 120


def test_people_who_were_told_hear_the_resolution() -> None:
    book = state.Book([route()])
    book.fire(firing(), 0)
    decided = book.resolve(healthy(), 30)
    (notification,) = decided.notify
    (alert,) = notification.alerts
    assert alert.status is AlertStatus.RESOLVED
    assert alert.ends_at == T0 + timedelta(minutes=5)
    assert alert.revision == "def"
    assert alert.starts_at == T0
    assert decided.publish == [alert]
    assert book.firing() == []
    book.published(alert)
    assert book.next_due() is None
    assert book.resolve(healthy(), 31).publish == []


def test_resolutions_are_per_origin() -> None:
    book = state.Book([route()])
    book.fire(firing(), 0)
    drift = rules.Resolution("shop", "production", "drift", T0, None, "clean")
    assert book.resolve(drift, 1).notify == []
    assert len(book.firing()) == 1


def test_each_state_change_is_published_once() -> None:
    book = state.Book([route(group_wait=5)])
    warning = book.fire(firing("Slow", phase=DeployPhase.DEGRADED), 0)
    assert [a.severity for a in warning.publish] == [Severity.WARNING]
    for alert in warning.publish:
        book.published(alert)
    assert book.fire(firing("Slow", phase=DeployPhase.DEGRADED), 1).publish == []
    book.flush(5)
    critical = book.fire(firing("Slow"), 6)
    assert [a.severity for a in critical.publish] == [Severity.CRITICAL]
    (notification,) = critical.notify
    assert not notification.reminder
    assert notification.alerts[0].severity is Severity.CRITICAL


def test_a_publish_that_failed_is_owed_without_notifying_twice() -> None:
    book = state.Book([route()])
    first = book.fire(firing(), 0)
    assert len(first.publish) == 1
    assert len(first.notify) == 1
    retried = book.fire(firing(), 0.5)
    assert len(retried.publish) == 1
    assert retried.notify == []
    book.published(retried.publish[0])
    assert book.fire(firing(), 1).publish == []


# --- silences ----------------------------------------------------------------------------------


def test_a_silence_by_reason_holds_notifications_until_it_ends() -> None:
    book = state.Book([route()])
    silence = state.Silence("shop", "production", until=30, reason="A")
    assert book.silence(silence, 0)
    held = book.fire(firing("A"), 1)
    assert held.notify == []
    assert len(held.publish) == 1
    assert [s.why for s in held.suppressed] == [state.Held.SILENCED]
    (other,) = book.fire(firing("B"), 2).notify
    assert reasons(other) == ["B"]
    assert book.flush(29).notify == []
    assert book.next_due() == 30
    (after,) = book.flush(30).notify
    assert reasons(after) == ["A"]
    assert not after.reminder


def test_a_silenced_reminder_is_counted_once_and_sent_when_the_silence_ends() -> None:
    book = state.Book([route(repeat=10)])
    book.fire(firing(), 0)
    book.silence(state.Silence("shop", "production", until=25), 1)
    first = book.flush(10)
    assert first.notify == []
    assert len(first.suppressed) == 1
    book.silence(state.Silence("shop", "production", until=40), 20)
    second = book.flush(25)
    assert second.notify == []
    assert second.suppressed == []
    (reminder,) = book.flush(40).notify
    assert reminder.reminder


def test_silences_by_fingerprint_or_for_a_whole_environment() -> None:
    alert = firing("A")
    by_fingerprint = state.Silence("shop", "production", until=10, fingerprint=alert.fingerprint)
    everything = state.Silence("shop", "production", until=10)
    assert by_fingerprint.covers(alert)
    assert not by_fingerprint.covers(firing("B"))
    assert everything.covers(alert)
    assert everything.covers(firing("B"))
    assert not everything.covers(firing(env="staging"))
    both = state.Silence("shop", "production", until=10, reason="B", fingerprint=alert.fingerprint)
    assert not both.covers(alert)


def test_an_ended_silence_is_ignored() -> None:
    book = state.Book([route()])
    assert not book.silence(state.Silence("shop", "production", until=5), 5)
    assert book.silences(5) == []
    assert len(book.fire(firing(), 6).notify) == 1


def test_a_silence_does_not_hold_back_a_resolution_people_are_owed() -> None:
    book = state.Book([route()])
    book.fire(firing(), 0)
    book.silence(state.Silence("shop", "production", until=100), 1)
    (notification,) = book.resolve(healthy(), 2).notify
    assert notification.alerts[0].status is AlertStatus.RESOLVED


# --- restarts ----------------------------------------------------------------------------------


def test_alerts_read_back_after_a_restart_keep_their_schedule() -> None:
    book = state.Book([route(repeat=60)])
    alert = firing()
    book.restore(alert, 100)
    assert book.firing() == [alert]
    restarted = book.fire(firing(), 101)
    assert restarted.publish == []
    assert restarted.notify == []
    assert book.flush(159).notify == []
    (reminder,) = book.flush(160).notify
    assert reminder.reminder
    (resolved,) = book.resolve(healthy(), 170).notify
    assert resolved.alerts[0].status is AlertStatus.RESOLVED
    other = state.Book([route()])
    other.restore(alert, 1)
    other.restore(alert.model_copy(update={"status": AlertStatus.RESOLVED}), 2)
    assert other.firing() == []


# --- sink formats ------------------------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cr3t-value\n")
    return path


def notification(*alerts: Alert, reminder: bool = False) -> state.Notification:
    return state.Notification(
        sinks=("s",), alerts=alerts, repeat_interval_seconds=600, reminder=reminder
    )


def test_webhook_bodies_are_signed_with_hmac_sha256(secret_file: Path) -> None:
    sink = sinks.WebhookSink(
        "hook",
        config.WebhookSink(
            kind="webhook", url="https://hooks.example.com/a", hmac_secret={"file": secret_file}
        ),
    )
    (request,) = sink.requests(notification(firing()), T0)
    expected = hmac.new(b"s3cr3t-value", request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Gitops-Signature"] == f"sha256={expected}"
    body = json.loads(request.body)
    assert body["status"] == "firing"
    assert body["sink"] == "hook"
    assert body["alerts"][0]["reason"] == "ImagePullBackOff"
    assert "s3cr3t" not in repr(request)
    unsigned = sinks.WebhookSink(
        "hook", config.WebhookSink(kind="webhook", url="https://hooks.example.com/a")
    )
    (plain,) = unsigned.requests(notification(firing()), T0)
    assert "X-Gitops-Signature" not in plain.headers


def test_slack_messages_escape_markup(tmp_path: Path) -> None:
    url_file = tmp_path / "slack"
    url_file.write_text("https://hooks.slack.example.com/services/T0/B0/XYZ")
    sink = sinks.SlackSink("chat", config.SlackSink(kind="slack", url={"file": url_file}))
    alert = firing(message="<b>&broken</b>").model_copy(
        update={"playbook": "https://docs.example.com/playbooks/X.md"}
    )
    (request,) = sink.requests(notification(alert, reminder=True), T0)
    assert request.url == "https://hooks.slack.example.com/services/T0/B0/XYZ"
    body = json.loads(request.body)
    assert body["text"] == "Reminder: [FIRING] shop/production: deploy failed (ImagePullBackOff)"
    section, context = body["blocks"]
    assert "&lt;b&gt;&amp;broken&lt;/b&gt;" in section["text"]["text"]
    assert "<https://docs.example.com/playbooks/X.md|playbook>" in context["elements"][0]["text"]
    assert "XYZ" not in repr(request)


def test_a_slack_url_that_is_not_http_is_refused_without_showing_it(tmp_path: Path) -> None:
    url_file = tmp_path / "slack"
    url_file.write_text("ftp://secret-token@example.com")
    sink = sinks.SlackSink("chat", config.SlackSink(kind="slack", url={"file": url_file}))
    with pytest.raises(sinks.DeliveryError) as caught:
        sink.requests(notification(firing()), T0)
    assert not caught.value.retryable
    assert "secret-token" not in str(caught.value)
    assert str(url_file) in str(caught.value)


def test_a_missing_credential_is_named_not_shown() -> None:
    sink = sinks.GrafanaSink(
        "dash",
        config.GrafanaSink(
            kind="grafana", url="https://grafana.example.com", token={"env": "NO_SUCH_TOKEN_VAR"}
        ),
    )
    with pytest.raises(sinks.DeliveryError, match=r"\{env: NO_SUCH_TOKEN_VAR\}"):
        sink.requests(notification(firing()), T0)


def test_alertmanager_alerts() -> None:
    sink = sinks.AlertmanagerSink(
        "am", config.AlertmanagerSink(kind="alertmanager", url="http://am.example.com:9093/")
    )
    alert = firing().model_copy(update={"playbook": "https://docs.example.com/p.md"})
    resolved = firing("Other").model_copy(
        update={"status": AlertStatus.RESOLVED, "ends_at": T0 + timedelta(minutes=1)}
    )
    now = T0 + timedelta(seconds=30)
    (request,) = sink.requests(notification(alert, resolved), now)
    assert request.url == "http://am.example.com:9093/api/v2/alerts"
    fires, ends = json.loads(request.body)
    assert fires["labels"] == {
        "origin": "deploy",
        "alertname": "ImagePullBackOff",
        "app": "shop",
        "environment": "production",
        "severity": "critical",
        "fingerprint": alert.fingerprint,
    }
    assert fires["annotations"] == {
        "summary": "shop/production: deploy failed (ImagePullBackOff)",
        "description": "revision abc: failed",
        "revision": "abc",
        "runbook_url": "https://docs.example.com/p.md",
    }
    assert fires["startsAt"] == T0.isoformat()
    assert fires["endsAt"] == (now + timedelta(seconds=1200)).isoformat()
    assert ends["endsAt"] == (T0 + timedelta(minutes=1)).isoformat()


def test_grafana_annotations(secret_file: Path) -> None:
    sink = sinks.GrafanaSink(
        "dash",
        config.GrafanaSink(
            kind="grafana", url="https://grafana.example.com", token={"file": secret_file}
        ),
    )
    resolved = firing().model_copy(
        update={"status": AlertStatus.RESOLVED, "ends_at": T0 + timedelta(minutes=1)}
    )
    (request,) = sink.requests(notification(resolved), T0)
    assert request.url == "https://grafana.example.com/api/annotations"
    assert request.headers["Authorization"] == "Bearer s3cr3t-value"
    body = json.loads(request.body)
    assert body["time"] == int(T0.timestamp() * 1000)
    assert body["timeEnd"] == int(T0.timestamp() * 1000) + 60_000
    assert "app:shop" in body["tags"]
    assert "status:resolved" in body["tags"]
    assert body["text"].startswith("[RESOLVED] shop/production")
    assert not sink.wants(notification(firing(), reminder=True))
    assert sink.wants(notification(firing()))


# --- deliveries --------------------------------------------------------------------------------


class FlakySink(sinks.Sink):
    kind = "test"

    def __init__(self) -> None:
        super().__init__("flaky")

    def requests(self, notification: state.Notification, now: datetime) -> list[sinks.HttpRequest]:
        return [sinks.HttpRequest("http://127.0.0.1:9/", b"{}")]


class Transport:
    """Fails with the given errors, in order, then succeeds."""

    def __init__(self, *failures: sinks.DeliveryError) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self, request: sinks.HttpRequest, limit_seconds: float) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)


class Sleeps:
    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)


def _deliveries(**settings: Any) -> tuple[Deliveries, AlerterMetrics, Sleeps, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = AlerterMetrics(registry, ["flaky"])
    sleeps = Sleeps()
    deliveries = Deliveries(
        {"flaky": FlakySink()},
        AlerterSettings.model_validate(settings),
        metrics,
        sleep=sleeps,
    )
    return deliveries, metrics, sleeps, registry


def _count(registry: CollectorRegistry, outcome: str) -> float | None:
    return registry.get_sample_value("gitops_alerts_total", {"sink": "flaky", "outcome": outcome})


def _retryable() -> sinks.DeliveryError:
    return sinks.DeliveryError("the sink answered HTTP 503", retryable=True)


async def test_failed_deliveries_are_retried_with_exponential_backoff() -> None:
    deliveries, _, sleeps, registry = _deliveries(
        sink_attempts=5, retry_backoff_seconds=0.5, retry_backoff_max_seconds=1.5
    )
    transport = Transport(_retryable(), _retryable(), _retryable())
    assert await deliveries.deliver(FlakySink(), notification(firing(), firing("B")), transport)
    assert transport.calls == 4
    assert sleeps.asked == [0.5, 1.0, 1.5]
    assert _count(registry, "delivered") == 2
    assert _count(registry, "failed") == 0


async def test_a_delivery_gives_up_after_its_attempts() -> None:
    deliveries, _, sleeps, registry = _deliveries(sink_attempts=3, retry_backoff_seconds=1)
    transport = Transport(*[_retryable() for _ in range(5)])
    assert not await deliveries.deliver(FlakySink(), notification(firing()), transport)
    assert transport.calls == 3
    assert sleeps.asked == [1, 2]
    assert _count(registry, "failed") == 1


async def test_a_refused_delivery_is_not_retried() -> None:
    deliveries, _, sleeps, registry = _deliveries(sink_attempts=5)
    transport = Transport(sinks.DeliveryError("the sink answered HTTP 401", retryable=False))
    assert not await deliveries.deliver(FlakySink(), notification(firing()), transport)
    assert transport.calls == 1
    assert sleeps.asked == []
    assert _count(registry, "failed") == 1


def test_a_full_sink_queue_drops_and_counts_instead_of_waiting() -> None:
    deliveries, _, _, registry = _deliveries(queue_size=1)
    first = state.Notification(sinks=("flaky",), alerts=(firing(),), repeat_interval_seconds=1)
    deliveries.submit(first)
    deliveries.submit(first)
    assert deliveries.pending() == 1
    assert _count(registry, "failed") == 1


def test_settings_name_the_variable_at_fault() -> None:
    settings = AlerterSettings.from_environ(
        {"GITOPS_PLAYBOOK_BASE_URL": "https://docs.example.com", "GITOPS_ALERT_SINK_ATTEMPTS": ""}
    )
    assert settings.playbook_base_url == "https://docs.example.com"
    assert settings.sink_attempts == 5
    with pytest.raises(ConfigError, match="GITOPS_ALERT_SINK_ATTEMPTS"):
        AlerterSettings.from_environ({"GITOPS_ALERT_SINK_ATTEMPTS": "0"})
    with pytest.raises(ConfigError, match="must not contain credentials") as caught:
        AlerterSettings.from_environ({"GITOPS_PLAYBOOK_BASE_URL": "https://u:pw@x.example.com"})
    assert "pw" not in str(caught.value)
