"""Where notifications go: one HTTP request format per kind of sink, and the HTTP call itself.

Each sink turns a `Notification` into the requests its receiver understands (building them is
pure, so the formats are unit-tested byte for byte), and `send` makes one HTTP call and sorts
its failure into retryable or not. Credentials (the HMAC key, the Slack URL, the Grafana token)
are resolved from their references when a request is built, so a rotated secret file is picked
up without a restart, and they live only in the request: `HttpRequest` keeps URL, headers and
body out of its repr, and every `DeliveryError` message is written here, from the status code or
the exception type, never from the exception text (aiohttp puts the URL in it, and a Slack URL
is itself the secret).

| kind | request |
|---|---|
| webhook | POST the URL; JSON body; `X-Gitops-Signature: sha256=<hex HMAC-SHA256 of the body>` |
| slack | POST the (secret) incoming-webhook URL; `{"text": ..., "blocks": [...]}` |
| alertmanager | POST `<url>/api/v2/alerts`; labels, annotations, `startsAt`, `endsAt` |
| grafana | POST `<url>/api/annotations` per alert; `Authorization: Bearer <token>`; tags |
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr

from gitops_alerter.state import Notification
from gitops_config import ConfigError
from gitops_config import models as config_models
from gitops_events import Alert, AlertStatus

SIGNATURE_HEADER = "X-Gitops-Signature"
"""The webhook header carrying `sha256=<hex>` when the sink has an HMAC secret."""
USER_AGENT = "gitops-alerter/0.1"
WEBHOOK_VERSION = "1"
"""Version of the webhook body; changes to it are additive."""

ALERTMANAGER_MIN_MARGIN_SECONDS = 300.0
"""A firing alert pushed to Alertmanager ends one repeat interval plus at least this much later,
unless re-sent (reminders re-send it), so it expires if the alerter is gone for good."""

SLACK_MAX_ALERTS = 20
"""Alerts shown as blocks in one Slack message (Slack allows 50 blocks); the rest are counted."""
SLACK_MAX_TEXT = 2500
"""Characters of a description in a Slack block (Slack allows 3000 per text object)."""


class DeliveryError(Exception):
    """A request a sink did not accept; the message is safe to log (no URL, no secret)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        """Describe the failure and whether trying again may help."""
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class HttpRequest:
    """One POST to a sink; URL, headers and body may hold secrets and stay out of the repr."""

    url: str = field(repr=False)
    body: bytes = field(repr=False)
    headers: Mapping[str, str] = field(repr=False, default_factory=dict)


class Sink:
    """A named receiver of notifications; subclasses build the requests of their kind."""

    kind = ""

    def __init__(self, name: str) -> None:
        """A sink called `name` in `alerts.sinks`."""
        self.name = name

    def wants(self, notification: Notification) -> bool:
        """Whether this sink takes the notification at all (every one, unless overridden)."""
        return True

    def requests(self, notification: Notification, now: datetime) -> list[HttpRequest]:
        """The HTTP requests that deliver a notification; raises `DeliveryError`."""
        raise NotImplementedError

    def credentials(self) -> list[config_models.CredentialRef]:
        """The secrets this sink reads, to check them at start-up."""
        return []


class WebhookSink(Sink):
    """Generic webhook: the notification as JSON, signed when an HMAC secret is configured."""

    kind = "webhook"

    def __init__(self, name: str, config: config_models.WebhookSink) -> None:
        """A webhook sink from its gitops.yaml entry."""
        super().__init__(name)
        self.config = config

    def requests(self, notification: Notification, now: datetime) -> list[HttpRequest]:
        """One POST with the alerts as in the alerts topic (`io.gitops.alert.v1`)."""
        body = _json(
            {
                "version": WEBHOOK_VERSION,
                "sink": self.name,
                "status": group_status(notification.alerts).value,
                "reminder": notification.reminder,
                "alerts": [alert.model_dump(mode="json") for alert in notification.alerts],
            }
        )
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        if self.config.hmac_secret is not None:
            secret = _resolve(self.config.hmac_secret, self.name)
            headers[SIGNATURE_HEADER] = signature(secret, body)
        return [HttpRequest(self.config.url, body, headers)]

    def credentials(self) -> list[config_models.CredentialRef]:
        """The HMAC secret, when there is one."""
        return [self.config.hmac_secret] if self.config.hmac_secret else []


class SlackSink(Sink):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, ...)."""

    kind = "slack"

    def __init__(self, name: str, config: config_models.SlackSink) -> None:
        """A Slack sink from its gitops.yaml entry."""
        super().__init__(name)
        self.config = config

    def requests(self, notification: Notification, now: datetime) -> list[HttpRequest]:
        """One POST of a message with a text fallback and a block per alert."""
        url = _resolve(self.config.url, self.name).get_secret_value()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DeliveryError(
                f"the URL in {self.config.url} is not an http(s) URL", retryable=False
            )
        body = _json(slack_message(notification))
        return [HttpRequest(url, body, {"Content-Type": "application/json"})]

    def credentials(self) -> list[config_models.CredentialRef]:
        """The webhook URL, which is itself the secret."""
        return [self.config.url]


class AlertmanagerSink(Sink):
    """Prometheus Alertmanager's v2 API: the alerts as Alertmanager alerts."""

    kind = "alertmanager"

    def __init__(self, name: str, config: config_models.AlertmanagerSink) -> None:
        """An Alertmanager sink from its gitops.yaml entry."""
        super().__init__(name)
        self.config = config

    def requests(self, notification: Notification, now: datetime) -> list[HttpRequest]:
        """One POST of every alert of the notification to `/api/v2/alerts`."""
        body = _json(alertmanager_alerts(notification, now))
        url = self.config.url.rstrip("/") + "/api/v2/alerts"
        return [HttpRequest(url, body, {"Content-Type": "application/json"})]


class GrafanaSink(Sink):
    """Grafana annotations: one per alert, tagged so dashboards can show them next to graphs."""

    kind = "grafana"

    def __init__(self, name: str, config: config_models.GrafanaSink) -> None:
        """A Grafana sink from its gitops.yaml entry."""
        super().__init__(name)
        self.config = config

    def wants(self, notification: Notification) -> bool:
        """Annotations record what happened; a reminder is not a new event on a dashboard."""
        return not notification.reminder

    def requests(self, notification: Notification, now: datetime) -> list[HttpRequest]:
        """One POST to `/api/annotations` per alert, with the bearer token."""
        token = _resolve(self.config.token, self.name).get_secret_value()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        url = self.config.url.rstrip("/") + "/api/annotations"
        return [
            HttpRequest(url, _json(grafana_annotation(alert)), headers)
            for alert in notification.alerts
        ]

    def credentials(self) -> list[config_models.CredentialRef]:
        """The API token."""
        return [self.config.token]


def from_config(name: str, config: config_models.Sink) -> Sink:
    """The sink of one `alerts.sinks` entry."""
    if isinstance(config, config_models.WebhookSink):
        return WebhookSink(name, config)
    if isinstance(config, config_models.SlackSink):
        return SlackSink(name, config)
    if isinstance(config, config_models.AlertmanagerSink):
        return AlertmanagerSink(name, config)
    return GrafanaSink(name, config)


# --- formats -----------------------------------------------------------------------------------


def signature(secret: SecretStr, body: bytes) -> str:
    """The `X-Gitops-Signature` value of a body: `sha256=` and the hex HMAC-SHA256."""
    digest = hmac.new(secret.get_secret_value().encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def group_status(alerts: Sequence[Alert]) -> AlertStatus:
    """Firing when any alert of a notification fires, resolved when all are."""
    if any(alert.status is AlertStatus.FIRING for alert in alerts):
        return AlertStatus.FIRING
    return AlertStatus.RESOLVED


def headline(alert: Alert) -> str:
    """`[FIRING] summary` or `[RESOLVED] summary`: the one line people read first."""
    return f"[{alert.status.value.upper()}] {alert.summary}"


def slack_message(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook message: a text fallback and a section per alert."""
    prefix = "Reminder: " if notification.reminder else ""
    text = "\n".join(prefix + headline(alert) for alert in notification.alerts)
    blocks: list[dict[str, Any]] = []
    for alert in notification.alerts[:SLACK_MAX_ALERTS]:
        icon = ":white_check_mark:" if alert.status is AlertStatus.RESOLVED else ":rotating_light:"
        body = f"{icon} *{_slack_escape(prefix + headline(alert))}*"
        if alert.description:
            body += f"\n```{_slack_escape(_truncate(alert.description, SLACK_MAX_TEXT))}```"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body}})
        facts = [f"severity: {alert.severity.value}", f"reason: {_slack_escape(alert.reason)}"]
        if alert.revision:
            facts.append(f"revision: {_slack_escape(alert.revision[:12])}")
        if alert.playbook:
            facts.append(f"<{alert.playbook}|playbook>")
        facts.append(f"fingerprint: {alert.fingerprint}")
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": " · ".join(facts)}]}
        )
    hidden = len(notification.alerts) - SLACK_MAX_ALERTS
    if hidden > 0:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": f"and {hidden} more alerts"}}
        )
    return {"text": text, "blocks": blocks}


def alertmanager_alerts(notification: Notification, now: datetime) -> list[dict[str, Any]]:
    """The body of `POST /api/v2/alerts`: one postable alert per alert of the notification.

    Labels identify the alert in Alertmanager (`alertname` is the reason); annotations carry
    the text. A firing alert ends after a repeat interval and a margin unless it is re-sent;
    a resolved one ends when it was resolved.
    """
    margin = max(notification.repeat_interval_seconds, ALERTMANAGER_MIN_MARGIN_SECONDS)
    lifetime = timedelta(seconds=notification.repeat_interval_seconds + margin)
    postable = []
    for alert in notification.alerts:
        annotations = {"summary": alert.summary}
        if alert.description:
            annotations["description"] = alert.description
        if alert.revision:
            annotations["revision"] = alert.revision
        if alert.playbook:
            annotations["runbook_url"] = alert.playbook
        ends = alert.ends_at if alert.status is AlertStatus.RESOLVED else None
        postable.append(
            {
                "labels": {
                    **alert.labels,
                    "alertname": alert.reason,
                    "app": alert.app,
                    "environment": alert.environment,
                    "severity": alert.severity.value,
                    "fingerprint": alert.fingerprint,
                },
                "annotations": annotations,
                "startsAt": alert.starts_at.isoformat(),
                "endsAt": (ends or now + lifetime).isoformat(),
            }
        )
    return postable


def grafana_annotation(alert: Alert) -> dict[str, Any]:
    """A Grafana annotation: a point when an alert fires, a region from start to end when over."""
    annotation: dict[str, Any] = {
        "time": _millis(alert.starts_at),
        "tags": [
            "gitops",
            "alert",
            f"app:{alert.app}",
            f"environment:{alert.environment}",
            f"reason:{alert.reason}",
            f"severity:{alert.severity.value}",
            f"status:{alert.status.value}",
        ],
        "text": "\n".join(
            part
            for part in (headline(alert), alert.description, alert.playbook)
            if part is not None
        ),
    }
    if alert.status is AlertStatus.RESOLVED and alert.ends_at is not None:
        annotation["timeEnd"] = _millis(alert.ends_at)
    return annotation


# --- HTTP --------------------------------------------------------------------------------------


async def send(session: aiohttp.ClientSession, request: HttpRequest, limit_seconds: float) -> None:
    """POST one request; raises `DeliveryError` unless the sink answered 2xx.

    Timeouts, connection failures, 408, 425, 429 and 5xx may pass and are retryable; any other
    answer (a wrong token, a wrong path) will not, and is not. Redirects are not followed, so
    a token is never sent on to another host.
    """
    try:
        async with session.post(
            request.url,
            data=request.body,
            headers=dict(request.headers),
            timeout=aiohttp.ClientTimeout(total=limit_seconds),
            allow_redirects=False,
        ) as response:
            status = response.status
    except TimeoutError:
        raise DeliveryError(f"no answer within {limit_seconds:g}s", retryable=True) from None
    except aiohttp.InvalidURL:
        raise DeliveryError("the sink URL is not valid", retryable=False) from None
    except (aiohttp.ClientError, OSError) as error:
        raise DeliveryError(f"request failed ({type(error).__name__})", retryable=True) from None
    if 200 <= status < 300:
        return
    retryable = status in (408, 425, 429) or status >= 500
    raise DeliveryError(f"the sink answered HTTP {status}", retryable=retryable)


# --- helpers -----------------------------------------------------------------------------------


def _resolve(reference: config_models.CredentialRef, sink: str) -> SecretStr:
    try:
        return reference.resolve()
    except ConfigError as error:
        # The message names the reference ({env: X} or {file: /path}), never a value.
        raise DeliveryError(f"sink {sink}: {error}", retryable=True) from None


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _millis(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as markup; escape them as Slack documents."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
