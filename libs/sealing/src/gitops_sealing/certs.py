"""The sealing certificate over HTTP: served by the deployer, fetched by ``gitops seal``.

Anyone may seal, so the certificate is public: the deployer serves the newest one at
``/v1/cert.pem``, the path Bitnami's controller uses, so ``kubeseal --cert URL`` works against
it too. The client side checks what it got before anything is sealed with it: a PEM
certificate, an RSA key, not expired.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

if TYPE_CHECKING:  # keys needs the Kubernetes client; the CLI's `seal` must not load it
    from gitops_sealing.keys import KeyRing


CERT_PATH = "/v1/cert.pem"
PEM_CONTENT_TYPE = "application/x-pem-file"

FETCH_TIMEOUT_SECONDS = 10.0
MAX_CERT_BYTES = 64 * 1024
"""A certificate is a few kilobytes; more than this is not one."""


class CertificateError(Exception):
    """A certificate could not be fetched or is not fit to seal with; says which and why."""


def cert_handler(
    current_ring: Callable[[], KeyRing],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An aiohttp handler answering with the newest certificate of ``current_ring()``.

    Answers 503 while there is no key pair yet (before the keys are loaded).
    """

    async def handle(_: web.Request) -> web.Response:
        ring = current_ring()
        if not ring.pairs:
            return web.Response(status=503, text="no sealing key yet\n")
        return web.Response(
            body=ring.newest.certificate_pem(), headers={"Content-Type": PEM_CONTENT_TYPE}
        )

    return handle


def cert_routes(current_ring: Callable[[], KeyRing]) -> list[web.RouteDef]:
    """The route to mount on the deployer's HTTP server: ``GET /v1/cert.pem``."""
    return [web.get(CERT_PATH, cert_handler(current_ring))]


def redact_url(url: str) -> str:
    """The URL without any user or password in it, fit for a message."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


async def fetch_certificate_pem(url: str) -> bytes:
    """GET a certificate over HTTP(S). Raises CertificateError saying what went wrong."""
    shown = redact_url(url)
    if urlsplit(url).scheme not in ("http", "https"):
        raise CertificateError(f"cannot fetch a certificate from {shown}: not an http(s) URL")
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_SECONDS)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url) as response,
        ):
            if response.status != 200:
                raise CertificateError(
                    f"cannot fetch the certificate from {shown}: HTTP {response.status}"
                )
            body = await response.content.read(MAX_CERT_BYTES + 1)
    except (aiohttp.ClientError, TimeoutError) as exc:
        # A connection error names host and port only; others may repeat the URL in full.
        reason = str(exc) if isinstance(exc, aiohttp.ClientConnectionError) else ""
        raise CertificateError(
            f"cannot fetch the certificate from {shown}: {reason or type(exc).__name__}"
        ) from None
    if len(body) > MAX_CERT_BYTES:
        raise CertificateError(f"{shown} answered with more than a certificate")
    return body


def sealing_key(pem: bytes, now: datetime.datetime, *, source: str) -> rsa.RSAPublicKey:
    """The RSA public key of a PEM certificate, refusing anything not fit to seal with.

    ``source`` names where the certificate came from in error messages.
    """
    try:
        certificate = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):
        raise CertificateError(f"{source} holds no PEM certificate") from None
    public_key = certificate.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise CertificateError(f"the certificate in {source} does not hold an RSA key")
    if now > certificate.not_valid_after_utc:
        expired = certificate.not_valid_after_utc.date().isoformat()
        raise CertificateError(
            f"the certificate in {source} expired on {expired}; fetch the current one"
        )
    return public_key
