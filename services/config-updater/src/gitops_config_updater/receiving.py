"""Image webhooks: registries and CI say a tag was pushed; we publish it to the images topic.

One route per kind, `POST /images/{registry,harbor,github,generic}`, each authenticated the way
that sender can: Docker Registry v2 notifications and Harbor send a configured header
(`Authorization: Bearer <secret>`, or Harbor's "auth header" holding the secret), GitHub signs
package events with `X-Hub-Signature-256`, and the generic `{image, tag, digest}` JSON is signed
with `X-Gitops-Signature: sha256=<hex HMAC-SHA256 of the body>` (the same scheme as the Git
webhooks of git-watcher). Authentication is required unless explicitly switched off with no
secret set, compared in constant time and checked before the body is parsed; bodies are
size-limited before they are read in full (413), malformed bodies are refused (400).

Only tags of images the configuration follows are published, so a chatty registry cannot fill
the topic; the answer is 2xx only once every event is durably in Kafka, so a sender retries a
delivery that was not handled.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import SecretStr

from gitops_config_updater.manifests import ImageRef, canonical_repository, is_digest
from gitops_config_updater.metrics import UpdaterMetrics
from gitops_events import ImagePushed
from gitops_runtime import webhooks
from gitops_telemetry import tracing

log = logging.getLogger(__name__)

_MAX_TAG = 128


class RejectedError(Exception):
    """A delivery answered with an error status; `outcome` labels the metric."""

    def __init__(self, status: int, outcome: str, message: str) -> None:
        """Record the HTTP status, the metric outcome and the message for the sender."""
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.message = message


def _malformed(message: str) -> RejectedError:
    return RejectedError(400, "malformed", message)


# --- Authentication ----------------------------------------------------------------------------


_hmac_sha256 = webhooks.prefixed_hmac_sha256
_bearer = webhooks.bearer_token


# --- Payloads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pushed:
    """One tag a delivery reports."""

    image: str
    tag: str
    digest: str | None


def _at(payload: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(payload, dict):
            return None
        payload = payload.get(key)
    return payload


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _pushed(image: Any, tag: Any, digest: Any) -> Pushed:
    """Validate one reported tag: a repository name, a tag, and a digest if any."""
    name, tag_text, digest_text = _text(image), _text(tag), _text(digest)
    if name is None or tag_text is None:
        raise _malformed("the payload must name an image and a tag")
    if len(tag_text) > _MAX_TAG or any(c in tag_text for c in ":@/ \t\n"):
        raise _malformed("the tag is not a valid image tag")
    if digest_text is not None and not is_digest(digest_text):
        raise _malformed("the digest is not a content digest such as sha256:<hex>")
    ref = ImageRef.parse(name)
    if ref.tag is not None or ref.digest is not None or not ref.repository:
        raise _malformed("the image must be a repository name without tag or digest")
    return Pushed(ref.repository, tag_text, digest_text)


def _registry(payload: dict[str, Any], headers: Mapping[str, str]) -> list[Pushed]:
    events = payload.get("events")
    if not isinstance(events, list):
        raise _malformed("a registry notification has an events list")
    found: list[Pushed] = []
    for event in events:
        if _at(event, "action") != "push" or not _text(_at(event, "target", "tag")):
            continue  # pulls, deletes and pushes by digest name no tag
        host = _text(_at(event, "request", "host"))
        repository = _text(_at(event, "target", "repository"))
        if repository is None:
            raise _malformed("a registry push event names no repository")
        image = f"{host}/{repository}" if host else repository
        found.append(_pushed(image, _at(event, "target", "tag"), _at(event, "target", "digest")))
    return found


def _harbor(payload: dict[str, Any], headers: Mapping[str, str]) -> list[Pushed]:
    if payload.get("type") not in ("PUSH_ARTIFACT", "pushImage"):
        return []
    resources = _at(payload, "event_data", "resources")
    if not isinstance(resources, list):
        raise _malformed("a Harbor push event has event_data.resources")
    found: list[Pushed] = []
    for resource in resources:
        url = _text(_at(resource, "resource_url"))
        if url is None:
            raise _malformed("a Harbor resource has no resource_url")
        found.append(
            _pushed(ImageRef.parse(url).repository, _at(resource, "tag"), _at(resource, "digest"))
        )
    return found


def _github(payload: dict[str, Any], headers: Mapping[str, str]) -> list[Pushed]:
    event = headers.get("X-GitHub-Event", "")
    if event not in ("package", "registry_package"):
        return []
    if payload.get("action") not in ("published", "updated"):
        return []
    package = payload.get(event)
    if str(_at(package, "package_type")).lower() != "container":
        return []
    version = _at(package, "package_version")
    tag = _at(version, "container_metadata", "tag", "name")
    if not _text(tag):
        return []
    url = _text(_at(version, "package_url"))
    if url is not None:
        image = ImageRef.parse(url).repository
    else:
        owner = _text(_at(package, "namespace")) or _text(_at(package, "owner", "login"))
        name = _text(_at(package, "name"))
        image = f"ghcr.io/{owner}/{name}".lower() if owner and name else ""
    digest = _at(version, "container_metadata", "tag", "digest") or _at(version, "version")
    return [_pushed(image, tag, digest if is_digest(str(digest)) else None)]


def _generic(payload: dict[str, Any], headers: Mapping[str, str]) -> list[Pushed]:
    return [_pushed(payload.get("image"), payload.get("tag"), payload.get("digest"))]


@dataclass(frozen=True)
class Kind:
    """How one kind of sender authenticates and describes pushed tags."""

    name: str
    auth_header: str
    verify: Callable[[str, bytes, bytes], bool]
    parse: Callable[[dict[str, Any], Mapping[str, str]], list[Pushed]]


KINDS: Mapping[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("registry", "Authorization", _bearer, _registry),
        Kind("harbor", "Authorization", _bearer, _harbor),
        Kind("github", "X-Hub-Signature-256", _hmac_sha256, _github),
        Kind("generic", "X-Gitops-Signature", _hmac_sha256, _generic),
    )
}


def parse(kind: Kind, body: bytes, headers: Mapping[str, str]) -> list[Pushed]:
    """The tags an authenticated delivery reports; `RejectedError` (400) when malformed."""
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise _malformed("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise _malformed("the body is not a JSON object")
    return kind.parse(payload, headers)


# --- HTTP --------------------------------------------------------------------------------------

Publish = Callable[[ImagePushed], Awaitable[object]]


class ImageWebhooks:
    """The image webhook routes: size limit, authentication, payload, then the images topic."""

    def __init__(
        self,
        *,
        secret: SecretStr | None,
        allow_unsigned: bool,
        max_bytes: int,
        followed: Iterable[str],
        publish: Publish,
        metrics: UpdaterMetrics,
    ) -> None:
        """Accept deliveries authenticated with `secret` about the `followed` images."""
        self._secret = None if secret is None else secret.get_secret_value().encode()
        self._allow_unsigned = allow_unsigned
        self._max_bytes = max_bytes
        self._followed = {canonical_repository(name) for name in followed}
        self._publish = publish
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        """Whether deliveries can be accepted at all."""
        return self._secret is not None or self._allow_unsigned

    def routes(self) -> list[web.RouteDef]:
        """The HTTP routes to register on the runtime."""
        return [web.post("/images/{kind}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        """Answer one delivery; 2xx only once its events are in Kafka."""
        name = request.match_info["kind"]
        kind = KINDS.get(name)
        if kind is None:
            return web.json_response(
                {"error": f"unknown image webhook kind; use one of: {', '.join(KINDS)}"},
                status=404,
            )
        with tracing.tracer("gitops_config_updater").start_as_current_span(
            f"image webhook {name}",
            context=otel_context.Context(),
            kind=trace.SpanKind.SERVER,
            attributes={"gitops.webhook.kind": name},
        ) as span:
            outcome, response = await self._answer(kind, request, span)
            span.set_attribute("gitops.webhook.outcome", outcome)
            span.set_attribute("http.response.status_code", response.status)
            self._metrics.image_webhooks.labels(name, outcome).inc()
            return response

    async def _answer(
        self, kind: Kind, request: web.Request, span: trace.Span
    ) -> tuple[str, web.Response]:
        try:
            published = await self._receive(kind, request)
        except RejectedError as exc:
            log.warning(
                "image webhook refused",
                extra={"kind": kind.name, "outcome": exc.outcome, "error": exc.message},
            )
            return exc.outcome, web.json_response({"error": exc.message}, status=exc.status)
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            log.exception("image webhook could not be handled", extra={"kind": kind.name})
            return "failed", web.json_response(
                {"error": "the delivery could not be handled now; retry later"}, status=503
            )
        if not published:
            return "ignored", web.json_response(
                {"status": "ignored", "reason": "no tag of a followed image"}, status=202
            )
        return "published", web.json_response({"status": "published", "events": published})

    async def _receive(self, kind: Kind, request: web.Request) -> int:
        if not self.enabled:
            raise RejectedError(
                503, "disabled", "image webhooks are disabled: no webhook secret is configured"
            )
        body = await self._read_body(request)
        if self._secret is not None:
            value = request.headers.get(kind.auth_header)
            if not value:
                raise RejectedError(
                    401, "unauthorized", f"the {kind.auth_header} header is missing"
                )
            if not kind.verify(value, body, self._secret):
                raise RejectedError(
                    401, "unauthorized", f"the {kind.auth_header} header does not match"
                )
        published = 0
        for pushed in parse(kind, body, request.headers):
            if canonical_repository(pushed.image) not in self._followed:
                log.info("tag of an image nobody follows ignored", extra={"kind": kind.name})
                continue
            await self._publish(
                ImagePushed(
                    image=pushed.image, tag=pushed.tag, digest=pushed.digest, source=kind.name
                )
            )
            published += 1
        return published

    async def _read_body(self, request: web.Request) -> bytes:
        try:
            return await webhooks.read_limited(request, self._max_bytes)
        except webhooks.PayloadTooLargeError as exc:
            raise RejectedError(413, "too-large", str(exc)) from None
