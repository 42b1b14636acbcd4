"""Git webhooks: is a delivery genuine, which repository and branch does it name.

One route per provider, `POST /webhooks/{github,gitlab,gitea,bitbucket,generic}`, each checked
the provider's way: GitHub `X-Hub-Signature-256`, Gitea `X-Gitea-Signature` and Bitbucket
`X-Hub-Signature` (HMAC-SHA256 of the body), GitLab `X-Gitlab-Token` (the secret itself) and
the generic `X-Gitops-Signature: sha256=<hex HMAC-SHA256 of the body>`. Signatures are
required (unless explicitly switched off with no secret set), compared in constant time, and
checked before the body is parsed; bodies are size-limited before they are read in full.

A webhook only says "look at this repository now": the receiver hands the named repository
(and branch) to the watcher, which fetches it and publishes what changed, and the answer is
2xx only once that is durably in Kafka, so a provider retries a delivery that was not handled.
A redelivered webhook finds nothing new and publishes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import SecretStr

from gitops_git_watcher.metrics import WatcherMetrics
from gitops_runtime import webhooks
from gitops_telemetry import tracing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Push:
    """What a genuine push webhook asks for: look at these repository URLs now."""

    provider: str
    repository_urls: tuple[str, ...]
    # None: the payload does not say (look at every tracked branch); empty: no branch was
    # pushed (a tag, say), so there is nothing to do.
    branches: frozenset[str] | None
    delivery: str | None = None


@dataclass(frozen=True)
class Handled:
    """How a push was handled: what to answer the provider."""

    status: Literal["processed", "ignored"]
    revisions: int = 0
    detail: str = ""


class WebhookRejectedError(Exception):
    """A delivery that is answered with an error status; `outcome` labels the metric."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        """Record the HTTP status, the metric outcome and the message for the sender."""
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


PushHandler = Callable[[Push], Awaitable[Handled]]


# --- Signatures --------------------------------------------------------------------------------


_prefixed_hmac = webhooks.prefixed_hmac_sha256
_bare_hmac = webhooks.bare_hmac_sha256
_token = webhooks.shared_token


# --- Payloads ----------------------------------------------------------------------------------


def _at(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _strings(values: Iterable[Any]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def _github_urls(payload: dict[str, Any]) -> tuple[str, ...]:
    keys = ("clone_url", "html_url", "ssh_url", "git_url", "url")
    return _strings(_at(payload, "repository", key) for key in keys)


def _gitlab_urls(payload: dict[str, Any]) -> tuple[str, ...]:
    project = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url", "url")
    repository = ("git_http_url", "git_ssh_url", "url", "homepage")
    return _strings(
        [_at(payload, "project", key) for key in project]
        + [_at(payload, "repository", key) for key in repository]
    )


def _bitbucket_urls(payload: dict[str, Any]) -> tuple[str, ...]:
    full_name = _at(payload, "repository", "full_name")
    return _strings(
        [
            _at(payload, "repository", "links", "html", "href"),
            f"https://bitbucket.org/{full_name}" if isinstance(full_name, str) else None,
        ]
    )


def _generic_urls(payload: dict[str, Any]) -> tuple[str, ...]:
    keys = ("url", "clone_url", "html_url")
    return _strings(
        [payload.get("repository"), payload.get("repo")]
        + [_at(payload, "repository", key) for key in keys]
    )


def _ref_branches(payload: dict[str, Any]) -> frozenset[str] | None:
    """The branch a `ref` names (`refs/heads/x`), none for tags, None when unknown."""
    ref = payload.get("ref")
    if not isinstance(ref, str):
        branch = payload.get("branch")
        return frozenset([branch]) if isinstance(branch, str) and branch else None
    if ref.startswith("refs/heads/"):
        return frozenset([ref.removeprefix("refs/heads/")])
    if ref.startswith("refs/"):
        return frozenset()
    return frozenset([ref])


def _bitbucket_branches(payload: dict[str, Any]) -> frozenset[str] | None:
    changes = _at(payload, "push", "changes")
    if not isinstance(changes, list):
        return None
    branches: set[str] = set()
    for change in changes:
        for side in ("new", "old"):
            ref = _at(change, side)
            if _at(ref, "type") == "branch" and isinstance(_at(ref, "name"), str):
                branches.add(ref["name"])
    return frozenset(branches)


@dataclass(frozen=True)
class Provider:
    """How one kind of Git server signs, names its events and describes a push."""

    name: str
    signature_header: str
    verify: Callable[[str, bytes, bytes], bool]
    event_header: str | None
    push_events: frozenset[str]
    ping_events: frozenset[str]
    delivery_header: str
    repository_urls: Callable[[dict[str, Any]], tuple[str, ...]]
    branches: Callable[[dict[str, Any]], frozenset[str] | None]


PROVIDERS: Mapping[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider(
            name="github",
            signature_header="X-Hub-Signature-256",
            verify=_prefixed_hmac,
            event_header="X-GitHub-Event",
            push_events=frozenset({"push"}),
            ping_events=frozenset({"ping"}),
            delivery_header="X-GitHub-Delivery",
            repository_urls=_github_urls,
            branches=_ref_branches,
        ),
        Provider(
            name="gitlab",
            signature_header="X-Gitlab-Token",
            verify=_token,
            event_header="X-Gitlab-Event",
            push_events=frozenset({"Push Hook"}),
            ping_events=frozenset(),
            delivery_header="X-Gitlab-Event-UUID",
            repository_urls=_gitlab_urls,
            branches=_ref_branches,
        ),
        Provider(
            name="gitea",
            signature_header="X-Gitea-Signature",
            verify=_bare_hmac,
            event_header="X-Gitea-Event",
            push_events=frozenset({"push"}),
            ping_events=frozenset(),
            delivery_header="X-Gitea-Delivery",
            repository_urls=_github_urls,
            branches=_ref_branches,
        ),
        Provider(
            name="bitbucket",
            signature_header="X-Hub-Signature",
            verify=_prefixed_hmac,
            event_header="X-Event-Key",
            push_events=frozenset({"repo:push", "repo:refs_changed"}),
            ping_events=frozenset({"diagnostics:ping"}),
            delivery_header="X-Request-UUID",
            repository_urls=_bitbucket_urls,
            branches=_bitbucket_branches,
        ),
        Provider(
            name="generic",
            signature_header="X-Gitops-Signature",
            verify=_prefixed_hmac,
            event_header=None,
            push_events=frozenset(),
            ping_events=frozenset(),
            delivery_header="X-Gitops-Delivery",
            repository_urls=_generic_urls,
            branches=_ref_branches,
        ),
    )
}


def parse_push(provider: Provider, body: bytes, headers: Mapping[str, str]) -> Push | Handled:
    """The push a verified delivery describes, or how to answer a delivery that is not one.

    Raises `WebhookRejectedError` (400) for bodies that are not JSON objects or name no
    repository.
    """
    payload = _json_payload(body, headers.get("Content-Type", ""))
    if provider.event_header is not None:
        event = headers.get(provider.event_header)
        if not event:
            raise WebhookRejectedError(
                400, "malformed", f"the {provider.event_header} header is missing"
            )
        if event in provider.ping_events:
            return Handled("ignored", detail="pong")
        if event not in provider.push_events:
            return Handled("ignored", detail=f"{event!r} events are not pushes; nothing to do")
    urls = provider.repository_urls(payload)
    if not urls:
        raise WebhookRejectedError(400, "malformed", "the payload names no repository")
    return Push(
        provider=provider.name,
        repository_urls=urls,
        branches=provider.branches(payload),
        delivery=headers.get(provider.delivery_header),
    )


def _json_payload(body: bytes, content_type: str) -> dict[str, Any]:
    text: str | bytes = body
    if content_type.startswith("application/x-www-form-urlencoded"):
        # GitHub and Gitea can send the JSON as the `payload` form field.
        fields = parse_qs(body.decode("utf-8", "replace"))
        text = (fields.get("payload") or [""])[0]
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError):
        raise WebhookRejectedError(
            400, "malformed", "the body is not JSON; configure the webhook to send JSON"
        ) from None
    if not isinstance(payload, dict):
        raise WebhookRejectedError(400, "malformed", "the body is not a JSON object")
    return payload


# --- HTTP --------------------------------------------------------------------------------------


class WebhookReceiver:
    """The webhook routes: size limit, signature, payload, then the watcher; one root span."""

    def __init__(
        self,
        *,
        secret: SecretStr | None,
        allow_unsigned: bool,
        max_bytes: int,
        on_push: PushHandler,
        metrics: WatcherMetrics,
    ) -> None:
        """Serve webhooks signed with `secret` (or unsigned, if allowed and no secret is set)."""
        self._secret = None if secret is None else secret.get_secret_value().encode()
        self._allow_unsigned = allow_unsigned
        self._max_bytes = max_bytes
        self._on_push = on_push
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        """Whether deliveries can be accepted at all."""
        return self._secret is not None or self._allow_unsigned

    def routes(self) -> list[web.RouteDef]:
        """The HTTP routes to register on the runtime."""
        return [web.post("/webhooks/{provider}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one delivery; 2xx only once whatever it caused is in Kafka."""
        name = request.match_info["provider"]
        provider = PROVIDERS.get(name)
        if provider is None:
            return web.json_response(
                {"error": f"unknown webhook provider; use one of: {', '.join(PROVIDERS)}"},
                status=404,
            )
        with tracing.tracer("gitops_git_watcher").start_as_current_span(
            f"webhook {name}",
            context=otel_context.Context(),
            kind=trace.SpanKind.SERVER,
            attributes={"gitops.webhook.provider": name, "http.request.method": "POST"},
        ) as span:
            outcome, response = await self._answer(provider, request, span)
            span.set_attribute("gitops.webhook.outcome", outcome)
            span.set_attribute("http.response.status_code", response.status)
            self._metrics.webhooks.labels(name, outcome).inc()
            return response

    async def _answer(
        self, provider: Provider, request: web.Request, span: trace.Span
    ) -> tuple[str, web.Response]:
        delivery = request.headers.get(provider.delivery_header)
        if delivery:
            span.set_attribute("gitops.webhook.delivery", delivery[:200])
        try:
            handled = await self._receive(provider, request)
        except WebhookRejectedError as exc:
            if exc.status >= 500:
                span.set_status(Status(StatusCode.ERROR, exc.outcome))
            log.warning(
                "webhook refused",
                extra={
                    "provider": provider.name,
                    "outcome": exc.outcome,
                    "status": exc.status,
                    "delivery": delivery,
                    "error": exc.message,
                },
            )
            return exc.outcome, web.json_response({"error": exc.message}, status=exc.status)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            log.exception(
                "webhook could not be handled; the provider should retry",
                extra={"provider": provider.name, "delivery": delivery},
            )
            return "failed", web.json_response(
                {"error": "the push could not be handled now; retry later"}, status=503
            )
        if handled.status == "processed":
            body = {"status": "processed", "revisions": handled.revisions}
            return "processed", web.json_response(body, status=200)
        log.info(
            "webhook ignored",
            extra={"provider": provider.name, "delivery": delivery, "reason": handled.detail},
        )
        return "ignored", web.json_response(
            {"status": "ignored", "reason": handled.detail}, status=202
        )

    async def _receive(self, provider: Provider, request: web.Request) -> Handled:
        if not self.enabled:
            raise WebhookRejectedError(
                503, "disabled", "webhooks are disabled: no webhook secret is configured"
            )
        body = await self._read_body(request)
        if self._secret is not None:
            signature = request.headers.get(provider.signature_header)
            if not signature:
                raise WebhookRejectedError(
                    401, "unauthorized", f"the {provider.signature_header} header is missing"
                )
            if not provider.verify(signature, body, self._secret):
                raise WebhookRejectedError(
                    401,
                    "unauthorized",
                    f"the {provider.signature_header} header does not match the body",
                )
        push = parse_push(provider, body, request.headers)
        if isinstance(push, Handled):
            return push
        return await self._on_push(push)

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await webhooks.read_limited(request, self._max_bytes)
        except webhooks.PayloadTooLargeError as exc:
            raise WebhookRejectedError(413, "too-large", str(exc)) from None
