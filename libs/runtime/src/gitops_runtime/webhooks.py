"""What every webhook receiver needs: a body read within a size limit and signature checks.

git-watcher (Git providers) and config-updater (registries) both accept signed deliveries;
the checks are security code, so they live once, here, and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

_CHUNK = 64 * 1024


class PayloadTooLargeError(Exception):
    """The delivery is larger than the receiver accepts."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"the payload is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


async def read_limited(request: web.Request, max_bytes: int) -> bytes:
    """The request body, refused (PayloadTooLargeError) as soon as it passes max_bytes."""
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLargeError(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _hmac_hex(body: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, body, hashlib.sha256).hexdigest().encode()


def _header_bytes(value: str) -> bytes:
    return value.strip().encode("utf-8", "surrogateescape")


def prefixed_hmac_sha256(value: str, body: bytes, secret: bytes) -> bool:
    """A `sha256=<hex>` signature header (GitHub, Bitbucket, generic); no sha1."""
    scheme, _, digest = value.strip().partition("=")
    if scheme.lower() != "sha256":
        return False
    return hmac.compare_digest(_header_bytes(digest.lower()), _hmac_hex(body, secret))


def bare_hmac_sha256(value: str, body: bytes, secret: bytes) -> bool:
    """A hex HMAC-SHA256 without prefix (Gitea)."""
    return hmac.compare_digest(_header_bytes(value.lower()), _hmac_hex(body, secret))


def shared_token(value: str, body: bytes, secret: bytes) -> bool:
    """The secret itself (GitLab); body is unused, so all checks share one signature."""
    return hmac.compare_digest(_header_bytes(value), secret)


def bearer_token(value: str, body: bytes, secret: bytes) -> bool:
    """The secret as a token, with or without a `Bearer ` scheme (registries, Harbor)."""
    token = value.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:]
    return shared_token(token, body, secret)
