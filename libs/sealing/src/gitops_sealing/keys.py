"""The deployer's sealing key pairs: made, kept in the cluster, renewed, and all kept.

Each key pair is an RSA key with a self-signed certificate, stored as Bitnami's controller
stores it: a ``kubernetes.io/tls`` Secret (``tls.key`` as a PKCS#1 PEM, ``tls.crt``) labelled
``sealedsecrets.bitnami.com/sealed-secrets-key=active`` in the deployer's own namespace. Keys
exported from a Bitnami controller can therefore be copied in, and ours can be taken out for
``kubeseal --recovery-unseal``.

A key pair's age is its certificate's ``notBefore``. The newest pair seals; every kept pair
opens, so values sealed before a renewal keep working. Renewal adds a pair and removes none:
retiring an old key is a deliberate act (delete its Secret) once nothing sealed with it is left.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from gitops_kube import secrets
from gitops_kube.clients import ApiClient, KubeApiError

log = logging.getLogger(__name__)

KEY_LABEL = "sealedsecrets.bitnami.com/sealed-secrets-key"
"""The label that marks a Secret as a sealing key pair (Bitnami's)."""

ACTIVE = "active"
"""The value of :data:`KEY_LABEL` on key pairs in use."""

KEY_NAME_PREFIX = "sealed-secrets-key"
"""The ``generateName`` of new key Secrets, as Bitnami's controller names its own."""

Clock = Callable[[], datetime.datetime]
"""Gives the current time, timezone-aware; injected so that tests can move it."""


def utc_now() -> datetime.datetime:
    """The current time in UTC (the default :data:`Clock`)."""
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class KeySettings:
    """Where the key pairs live and how they are made and renewed."""

    namespace: str = "gitops-system"
    """The deployer's own namespace, which holds the key Secrets."""
    renew_interval: datetime.timedelta = datetime.timedelta(days=30)
    """A new key pair is made when the newest is this old (Bitnami's default)."""
    key_size: int = 4096
    """RSA modulus size in bits."""
    certificate_lifetime: datetime.timedelta = datetime.timedelta(days=3650)
    """How long a certificate is valid (``kubeseal`` refuses to seal with an expired one)."""
    common_name: str = "sealed-secret"
    """Subject CN and O of the certificates (what Bitnami's bring-your-own-key recipe uses)."""


class KeyStoreError(Exception):
    """The key pairs could not be read from or written to the cluster; says where and why."""


@dataclass(frozen=True)
class KeyPair:
    """One key pair and the Secret it is kept in."""

    name: str
    """The name of its Secret."""
    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def created(self) -> datetime.datetime:
        """When the pair was made: its certificate's ``notBefore`` (what orders the pairs)."""
        return self.certificate.not_valid_before_utc

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The key that seals for this pair."""
        return self.private_key.public_key()

    def certificate_pem(self) -> bytes:
        """The certificate as PEM, what ``kubeseal --cert`` and ``gitops seal --cert`` read."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class KeyRing:
    """All kept key pairs, oldest first."""

    pairs: tuple[KeyPair, ...] = ()

    @classmethod
    def of(cls, pairs: Sequence[KeyPair]) -> KeyRing:
        """A ring of these pairs, put in order of age."""
        return cls(tuple(sorted(pairs, key=lambda pair: (pair.created, pair.name))))

    @property
    def newest(self) -> KeyPair:
        """The pair that seals. Raises LookupError when the ring is empty."""
        if not self.pairs:
            raise LookupError("no sealing key pair yet")
        return self.pairs[-1]

    @property
    def private_keys(self) -> tuple[rsa.RSAPrivateKey, ...]:
        """The keys that open, newest first (the likeliest to match), for ``unseal``."""
        return tuple(pair.private_key for pair in reversed(self.pairs))

    def renewal_due(self, now: datetime.datetime, interval: datetime.timedelta) -> bool:
        """Whether a new pair is needed: none yet, or the newest is ``interval`` old."""
        return not self.pairs or now - self.newest.created >= interval

    def with_pair(self, pair: KeyPair) -> KeyRing:
        """A ring of these pairs and one more."""
        return KeyRing.of([*self.pairs, pair])


def generate_key_pair(
    settings: KeySettings, now: datetime.datetime
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A new RSA key and its self-signed certificate, valid from ``now``.

    Takes a second or more of CPU for a 4096-bit key: call it off the event loop.
    """
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=settings.key_size)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, settings.common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, settings.common_name),
        ]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + settings.certificate_lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(private_key, hashes.SHA256())
    )
    return private_key, certificate


def key_secret(
    namespace: str, private_key: rsa.RSAPrivateKey, certificate: x509.Certificate
) -> dict[str, Any]:
    """The manifest of the Secret that keeps a key pair (named by the server on creation)."""
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1, as Bitnami writes it
        serialization.NoEncryption(),
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "generateName": KEY_NAME_PREFIX,
            "namespace": namespace,
            "labels": {KEY_LABEL: ACTIVE},
        },
        "type": "kubernetes.io/tls",
        "data": {
            "tls.key": base64.b64encode(key_pem).decode("ascii"),
            "tls.crt": base64.b64encode(cert_pem).decode("ascii"),
        },
    }


def read_key_secret(secret: dict[str, Any]) -> KeyPair:
    """The key pair kept in a Secret. Raises KeyStoreError naming the Secret and the fault."""
    metadata = secret.get("metadata") or {}
    where = f"{metadata.get('namespace')}/{metadata.get('name')}"
    data = secret.get("data") or {}
    try:
        key_pem = base64.b64decode(data["tls.key"], validate=True)
        cert_pem = base64.b64decode(data["tls.crt"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise KeyStoreError(
            f"sealing key Secret {where} lacks a valid tls.key or tls.crt"
        ) from None
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise KeyStoreError(
            f"sealing key Secret {where}: tls.key is not a PEM private key"
        ) from None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise KeyStoreError(f"sealing key Secret {where}: tls.key is not an RSA key")
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]
    except (ValueError, IndexError):
        raise KeyStoreError(
            f"sealing key Secret {where}: tls.crt is not a PEM certificate"
        ) from None
    if certificate.public_key() != private_key.public_key():
        raise KeyStoreError(f"sealing key Secret {where}: tls.crt is not for tls.key")
    return KeyPair(str(metadata.get("name")), private_key, certificate)


async def load_keys(api: ApiClient, namespace: str) -> KeyRing:
    """All key pairs kept in a namespace (an empty ring when there are none)."""
    try:
        found = await secrets.list_secrets(api, namespace, f"{KEY_LABEL}={ACTIVE}")
    except (KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
        raise KeyStoreError(
            f"cannot list the sealing keys in namespace {namespace}: {exc} "
            "(the deployer needs get/list/create on Secrets there)"
        ) from exc
    return KeyRing.of([read_key_secret(secret) for secret in found])


async def create_key_pair(api: ApiClient, settings: KeySettings, now: datetime.datetime) -> KeyPair:
    """Make a new key pair and keep it as a Secret; return it with the Secret's name."""
    private_key, certificate = await asyncio.to_thread(generate_key_pair, settings, now)
    try:
        created = await secrets.create_secret(
            api, key_secret(settings.namespace, private_key, certificate)
        )
    except (KubeApiError, aiohttp.ClientError, TimeoutError) as exc:
        raise KeyStoreError(
            f"cannot create a sealing key Secret in namespace {settings.namespace}: {exc} "
            "(does the namespace exist, and may the deployer create Secrets there?)"
        ) from exc
    pair = KeyPair(created["metadata"]["name"], private_key, certificate)
    log.info(
        "created sealing key pair %s/%s (certificate valid until %s)",
        settings.namespace,
        pair.name,
        certificate.not_valid_after_utc.isoformat(),
    )
    return pair


class SealingKeys:
    """The deployer's key ring: loaded (or first made) at start, renewed on an interval.

    ``ring`` is what unsealing and the certificate endpoint read; it is replaced, never
    changed in place, so readers need no lock.
    """

    def __init__(self, api: ApiClient, settings: KeySettings, *, now: Clock = utc_now) -> None:
        """Bind to an API client and settings; nothing is read until :meth:`start`."""
        self._api = api
        self._settings = settings
        self._now = now
        self._ring = KeyRing()

    @property
    def ring(self) -> KeyRing:
        """The key pairs as last loaded or renewed."""
        return self._ring

    async def start(self) -> KeyRing:
        """Load the kept key pairs, making the first (or a due) one; return the ring.

        Raises KeyStoreError when the keys cannot be read or written: without them the
        deployer can neither open sealed secrets nor tell anyone how to seal.
        """
        await self.renew_if_due()
        log.info(
            "sealing keys in namespace %s: %d pair(s), newest %s",
            self._settings.namespace,
            len(self._ring.pairs),
            self._ring.newest.name,
        )
        return self._ring

    async def renew_if_due(self) -> bool:
        """Reload the pairs from the cluster and add a new one when due; say whether it did.

        Reloading first picks up pairs added meanwhile (by another replica, or restored from
        a backup), so a renewal is not repeated.
        """
        self._ring = await load_keys(self._api, self._settings.namespace)
        if not self._ring.renewal_due(self._now(), self._settings.renew_interval):
            return False
        pair = await create_key_pair(self._api, self._settings, self._now())
        self._ring = self._ring.with_pair(pair)
        return True

    def seconds_until_renewal(self) -> float:
        """How long until the newest pair is due for renewal (0 when it is due now)."""
        if not self._ring.pairs:
            return 0.0
        due = self._ring.newest.created + self._settings.renew_interval
        return max(0.0, (due - self._now()).total_seconds())

    async def run(self, *, check_every: float = 3600.0, retry_after: float = 60.0) -> None:
        """Renew forever: wake when renewal is due, or every ``check_every`` seconds at most.

        The regular wake-up also reloads pairs added from outside. A failure to reach the
        keys is logged and retried after ``retry_after`` seconds, the ring kept as it was
        (the pairs it holds still open and seal). Call :meth:`start` first.
        """
        wait = min(check_every, self.seconds_until_renewal())
        while True:
            await asyncio.sleep(wait)
            try:
                await self.renew_if_due()
            except KeyStoreError as exc:
                log.warning("sealing keys not renewed, retrying in %.0fs: %s", retry_after, exc)
                wait = retry_after
            else:
                wait = min(check_every, self.seconds_until_renewal())
