"""Raw requests to the API server for any kind, and the one place their failures are described.

The generated kubernetes_asyncio API has one method per built-in kind and nothing for custom
resources or server-side apply, so discovery, applying, pruning and health all speak to the
REST paths directly through ``ApiClient.call_api``. Failures become :class:`RequestError` (or
:class:`UnreachableError`) with a message built from the server's ``Status`` object, with the
values the server echoes back masked: an API server repeats an invalid value in its message
(``Invalid value: "..."``), and for a Secret that value may be the secret itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import kubernetes_asyncio.client.exceptions as _exceptions_module

from gitops_kube.clients import ApiClient, KubeApiError

_exceptions: Any = _exceptions_module

APPLY_PATCH = "application/apply-patch+yaml"
"""Content type of a server-side apply request (JSON is valid YAML, so the body is JSON)."""

REQUEST_TIMEOUT_SECONDS = 30.0

# `Invalid value: "abc": must be ...`, `Invalid value: 3: ...`, `Unsupported value: "x": ...`:
# the quoted (or bare) value up to the next ": " is what the server echoes back.
_ECHOED_VALUE = re.compile(
    r"(?P<label>(?:Invalid|Unsupported|Duplicate|Forbidden|Required) value): "
    r'(?P<value>"(?:[^"\\]|\\.)*"|map\[[^\]]*\]|\[\]\w+\{[^}]*\}|\{[^}]*\}|\[[^\]]*\]|[^:\s]+)'
)
# Server-side apply's schema errors: `.spec.x: expected string, got &value.valueUnstructured{...}`
# print the offending value after "got"; only a plain type name is kept.
_GOT_VALUE = re.compile(r", got (?P<type>[a-z]+\b)?[^\n;]*")
# The field path at the start of such an error, after "...object (ns/name; ...): ".
_SCHEMA_FIELD = re.compile(r"(?:^|: )(?P<field>\.[^\s:]+): ")


@dataclass(frozen=True)
class Cause:
    """One field the server complained about: its path and the kind of complaint."""

    field: str
    reason: str


class RequestError(KubeApiError):
    """The API server answered with an error ``Status``; the message never echoes values."""

    def __init__(
        self, status: int, reason: str, message: str, causes: Sequence[Cause] = ()
    ) -> None:
        """Keep the HTTP status, the Status reason, a safe message and the fields at fault."""
        super().__init__(status, reason, message)
        self.causes = tuple(causes)


class UnreachableError(KubeApiError):
    """No answer from the API server: connection refused, TLS failure or timeout."""

    def __init__(self, message: str) -> None:
        """Describe the transport failure (the server address is fine to show, never a token)."""
        super().__init__(0, "Unreachable", message)


def mask_values(message: str) -> str:
    """Replace the values an API server message repeats back with ``<masked>``."""
    masked = _ECHOED_VALUE.sub(lambda m: f"{m.group('label')}: <masked>", message)
    return _GOT_VALUE.sub(lambda m: f", got {m.group('type') or '<masked>'}", masked)


def describe_status(status_code: int, body: str, *, sensitive: bool) -> RequestError:
    """Turn an error response into a RequestError with a message safe for events and logs.

    With ``sensitive`` (the object is a Secret), the server's own text is left out entirely and
    only the Status reason and the field paths remain.
    """
    status: dict[str, Any] = {}
    try:
        parsed = json.loads(body)
        if isinstance(parsed, dict):
            status = parsed
    except ValueError:
        status = {}
    reason = str(status.get("reason") or _status_reason(status_code))
    details = status.get("details") if isinstance(status.get("details"), dict) else {}
    causes = [
        Cause(field=str(c.get("field") or ""), reason=str(c.get("reason") or ""))
        for c in (details or {}).get("causes", []) or []
        if isinstance(c, dict)
    ]
    text = str(status.get("message") or "")
    if not causes and (schema_field := _SCHEMA_FIELD.search(text)):
        causes = [Cause(field=schema_field.group("field"), reason="FieldValueTypeInvalid")]
    if sensitive:
        fields = ", ".join(sorted({c.field for c in causes if c.field}))
        message = f"{reason}" + (f" at {fields}" if fields else "")
    else:
        message = mask_values(text or body[:500] or reason)
    return RequestError(status_code, reason, message, causes)


def _status_reason(status_code: int) -> str:
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        409: "Conflict",
        410: "Gone",
        415: "UnsupportedMediaType",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(status_code, f"HTTP{status_code}")


async def request(
    api: ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Mapping[str, Any] | None = None,
    content_type: str = "application/json",
    sensitive: bool = False,
) -> dict[str, Any]:
    """Send one request and return the JSON object the server answered with.

    Raises RequestError for an error status (values masked; with ``sensitive`` only the reason
    and field paths) and UnreachableError when the server cannot be reached.
    """
    try:
        result = await api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=dict(body) if body is not None else None,
            response_types_map={200: "object", 201: "object", 202: "object"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=True,
            _request_timeout=REQUEST_TIMEOUT_SECONDS,
        )
    except _exceptions.ApiException as exc:
        raise describe_status(
            int(exc.status or 0), str(exc.body or ""), sensitive=sensitive
        ) from None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UnreachableError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(result, dict):
        raise RequestError(
            0,
            "UnexpectedResponse",
            f"{method} {path} answered with {type(result).__name__}, not an object",
        )
    return result
