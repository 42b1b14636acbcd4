"""An alert storm: 100 drift events for one object become one notification and one resolution.

The alerter runs in-process on the real `Runtime` against the real broker (as in
test_alerter.py); its two webhook sinks are a real HTTP receiver on loopback
(`tests.support.sinks`), and every request that reaches it has its HMAC signature verified
against the sink's own secret. One sink answers 500 a few times: it must be retried until it
gets the notification, and must not hold back the other sink.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import pytest

from gitops_config import GitopsConfig, load_config
from gitops_events import (
    Alert,
    AlertStatus,
    DriftEvent,
    DriftStatus,
    FieldDiff,
    ObjectDrift,
    ObjectRef,
)
from tests.integration.test_alerter import _settings, receiver, running_alerter
from tests.support.kafka import KafkaTarget
from tests.support.sinks import Received, SinkReceiver
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

__all__ = ["receiver"]  # the fixture, imported for this module's tests

SECRETS = {"/hook": "storm-hook-secret", "/flaky": "storm-flaky-secret"}
"""Each sink's HMAC secret, by the path it posts to."""

STORM = 100
"""Drift events published for the same object before it is resolved."""

FLAKY_FAILURES = 3
"""How many times the flaky sink answers 500 before it accepts."""

WEB = ObjectRef(api_version="apps/v1", kind="Deployment", name="web", namespace="shop")


def _config(tmp_path: Path, receiver: SinkReceiver) -> GitopsConfig:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    sinks = []
    for where, secret in SECRETS.items():
        name = where.strip("/")
        (secrets / name).write_text(secret + "\n")
        sinks.append(
            f'    {name}: {{kind: webhook, url: "{receiver.url(where)}", '
            f'hmac_secret: {{file: "{secrets / name}"}}}}'
        )
    newline = "\n"
    config = f"""\
version: 1
clusters:
  local: {{in_cluster: true}}
apps:
  - name: shop
    repo: file:///srv/git/shop.git
    environments:
      production: {{branch: production, cluster: local, namespace: shop}}
alerts:
  routes:
    - match: {{reason: DriftDetected}}
      sinks: [hook, flaky]
      group_wait_seconds: 0.5
      repeat_interval_seconds: 300
  sinks:
{newline.join(sinks)}
"""
    path = tmp_path / "gitops.yaml"
    path.write_text(config)
    return load_config(path)


def _drift(number: int) -> DriftEvent:
    """The `number`th event of the storm: detected first, then changed, each with other fields."""
    fields = [FieldDiff(path="/spec/replicas", desired=2, live=3 + number)]
    if number % 2:
        fields.append(FieldDiff(path="/spec/template/spec/containers/0/image"))
    return DriftEvent(
        app="shop",
        environment="production",
        revision="abc123",
        status=DriftStatus.DETECTED if number == 0 else DriftStatus.CHANGED,
        fingerprint=f"storm-{number % 2}",
        objects=[ObjectDrift(object=WEB, drift="modified", fields=fields)],
    )


def _verified(request: Received) -> None:
    """Assert the request carries the right HMAC-SHA256 signature of its exact body."""
    secret = SECRETS[request.path].encode()
    expected = "sha256=" + hmac.new(secret, request.body, hashlib.sha256).hexdigest()
    signature = request.headers.get("X-Gitops-Signature", "")
    assert hmac.compare_digest(signature, expected), (request.path, signature)


def _statuses(requests: list[Received]) -> list[str]:
    return [str(r.json()["status"]) for r in requests]


async def test_a_drift_storm_notifies_once_resolves_once_and_a_failing_sink_is_retried_alone(
    kafka: KafkaTarget, receiver: SinkReceiver, tmp_path: Path
) -> None:
    receiver.fail("/flaky", 500, times=FLAKY_FAILURES)
    settings = _settings(sink_attempts=FLAKY_FAILURES + 2, retry_backoff_seconds=0.5)
    async with running_alerter(kafka, _config(tmp_path, receiver), settings) as alerter:
        started = time.monotonic()
        for number in range(STORM):
            await alerter.publisher.publish(_drift(number))
        published = time.monotonic() - started
        assert published < 60, f"the storm took {published:.1f}s to publish"

        def firing(path: str) -> list[Received]:
            return [r for r in receiver.delivered(path) if r.json()["status"] == "firing"]

        await eventually(lambda: firing("/hook"), timeout=30, what="the firing notification")
        await eventually(
            lambda: firing("/flaky"), timeout=30, what="the flaky sink's notification, retried"
        )
        # The hook was served before the flaky sink's first retry: its 500s held nothing back.
        flaky = receiver.requests("/flaky")
        assert [r.status for r in flaky] == [500] * FLAKY_FAILURES + [200], flaky
        (fired,) = firing("/hook")
        assert fired.at < flaky[1].at, "the hook waited for the failing sink's retries"
        assert len({r.body for r in flaky}) == 1, "the retries did not resend the same body"

        resolved = _drift(STORM).model_copy(
            update={"status": DriftStatus.RESOLVED, "fingerprint": "storm-1", "objects": []}
        )
        await alerter.publisher.publish(resolved)

        def resolutions() -> bool:
            return all(
                any(status == "resolved" for status in _statuses(receiver.delivered(path)))
                for path in SECRETS
            )

        await eventually(resolutions, timeout=30, what="the resolution at both sinks")
        # Anything else the storm could still cause (a reminder, a late update) would be due
        # within the group wait and the retry backoff; give it that long to show.
        await eventually(
            lambda: time.monotonic() - receiver.received[-1].at > 2.0,
            timeout=30,
            what="the receiver to go quiet",
        )

        assert _statuses(receiver.delivered("/hook")) == ["firing", "resolved"]
        assert _statuses(receiver.delivered("/flaky")) == ["firing", "resolved"]
        assert len(receiver.requests("/hook")) == 2
        assert len(receiver.requests("/flaky")) == FLAKY_FAILURES + 2
        for request in receiver.received:
            _verified(request)
        (alert,) = firing("/hook")[0].json()["alerts"]
        assert alert["reason"] == "DriftDetected"

        alerts = [a for _, a in await alerter.alerts() if isinstance(a, Alert)]
        drift_alerts = [a for a in alerts if a.reason == "DriftDetected"]
        assert [a.status for a in drift_alerts] == [AlertStatus.FIRING, AlertStatus.RESOLVED]
        assert alerter.metric("gitops_alerts_total", sink="hook", outcome="delivered") == 2
        assert alerter.metric("gitops_alerts_total", sink="flaky", outcome="delivered") == 2
        assert alerter.metric("gitops_alerts_total", sink="flaky", outcome="failed") == 0
        print(
            f"alert storm: {STORM} drift events published in {published:.2f}s; "
            f"hook: {_statuses(receiver.requests('/hook'))}; "
            f"flaky: {[r.status for r in flaky]} then resolved; "
            f"hook served {flaky[-1].at - fired.at:.2f}s before the flaky sink's success"
        )
