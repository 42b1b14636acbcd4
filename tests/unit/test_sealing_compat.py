"""Sealed values are Bitnami Sealed Secrets values, proven against an independent reference.

The reference below is the documented algorithm written directly on `cryptography` primitives
(it shares no code with gitops_sealing): RSA-OAEP with SHA-256 (and MGF1-SHA-256) wraps a
random 32-byte AES-256-GCM key; the value is encrypted under a 12-byte zero nonce; the sealed
bytes are the RSA ciphertext's length as 2 big-endian bytes, the RSA ciphertext, then the
AES-GCM ciphertext with its tag; the OAEP label is "namespace/name" (strict), "namespace"
(namespace-wide) or empty (cluster-wide); values are standard base64 in `spec.encryptedData`.
The production code must open what the reference seals, and the reference what it seals.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID
from ruamel.yaml import YAML

from gitops_sealing import certs, keys, sealed
from gitops_sealing.sealed import Scope, UnsealError

NOW = datetime.datetime(2025, 3, 1, 12, 0, tzinfo=datetime.UTC)
SCOPES = ["strict", "namespace-wide", "cluster-wide"]


# --- the reference implementation -------------------------------------------------------------


def ref_label(scope: str, namespace: str, name: str) -> bytes:
    if scope == "cluster-wide":
        return b""
    if scope == "namespace-wide":
        return namespace.encode()
    return f"{namespace}/{name}".encode()


def ref_oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
    )


def ref_encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes, label: bytes) -> bytes:
    session_key = os.urandom(32)
    rsa_ciphertext = public_key.encrypt(session_key, ref_oaep(label))
    aes_ciphertext = AESGCM(session_key).encrypt(b"\x00" * 12, plaintext, None)
    return struct.pack(">H", len(rsa_ciphertext)) + rsa_ciphertext + aes_ciphertext


def ref_decrypt(private_key: rsa.RSAPrivateKey, sealed_bytes: bytes, label: bytes) -> bytes:
    (rsa_length,) = struct.unpack(">H", sealed_bytes[:2])
    rsa_ciphertext = sealed_bytes[2 : 2 + rsa_length]
    session_key = private_key.decrypt(rsa_ciphertext, ref_oaep(label))
    return AESGCM(session_key).decrypt(b"\x00" * 12, sealed_bytes[2 + rsa_length :], None)


def ref_seal_b64(
    public_key: rsa.RSAPublicKey, plaintext: bytes, scope: str, namespace: str, name: str
) -> str:
    sealed_bytes = ref_encrypt(public_key, plaintext, ref_label(scope, namespace, name))
    return base64.standard_b64encode(sealed_bytes).decode()


def kubeseal_document(
    public_key: rsa.RSAPublicKey,
    values: dict[str, bytes],
    scope: str,
    namespace: str,
    name: str,
) -> dict[str, Any]:
    """A SealedSecret as `kubeseal --format yaml` writes one, sealed by the reference."""
    annotation = {
        "strict": "",
        "namespace-wide": '\n  annotations:\n    sealedsecrets.bitnami.com/namespace-wide: "true"',
        "cluster-wide": '\n  annotations:\n    sealedsecrets.bitnami.com/cluster-wide: "true"',
    }[scope]
    encrypted = "\n".join(
        f"    {key}: {ref_seal_b64(public_key, value, scope, namespace, name)}"
        for key, value in values.items()
    )
    text = f"""---
apiVersion: bitnami.com/v1alpha1
kind: SealedSecret
metadata:{annotation}
  creationTimestamp: null
  name: {name}
  namespace: {namespace}
spec:
  encryptedData:
{encrypted}
  template:
    metadata:{annotation.replace(chr(10), chr(10) + "    ")}
      creationTimestamp: null
      labels:
        app: shop
      name: {name}
      namespace: {namespace}
    type: Opaque
"""
    document = YAML(typ="safe", pure=True).load(text)
    assert isinstance(document, dict)
    return document


# --- keys -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster_key() -> rsa.RSAPrivateKey:
    """The production default: RSA-4096 with its certificate, as the deployer makes it."""
    private_key, _ = keys.generate_key_pair(keys.KeySettings(), NOW)
    return private_key


@pytest.fixture(scope="module")
def stranger_key() -> rsa.RSAPrivateKey:
    """Another cluster's key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def renewed_pairs() -> tuple[keys.KeyPair, keys.KeyPair]:
    """A key pair 31 days old and the one that renewed it today."""
    settings = keys.KeySettings(key_size=2048)
    old_key, old_cert = keys.generate_key_pair(settings, NOW - datetime.timedelta(days=31))
    new_key, new_cert = keys.generate_key_pair(settings, NOW)
    return keys.KeyPair("sealed-secrets-keyold", old_key, old_cert), keys.KeyPair(
        "sealed-secrets-keynew", new_key, new_cert
    )


VALUES = {
    "password": b"hunter2-\x00\xff-binary",
    "url": b"postgres://shop:s3cret@db/shop",
    "empty": b"",
}


def _secret(namespace: str = "shop", name: str = "db") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "shop"},
            "annotations": {"team": "payments"},
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(v).decode() for k, v in VALUES.items()},
    }


def _assert_leaks_nothing(error: Exception, document: dict[str, Any]) -> None:
    message = str(error)
    for value in VALUES.values():
        if value:
            assert value.decode(errors="replace") not in message
    for ciphertext in document["spec"]["encryptedData"].values():
        assert ciphertext[:24] not in message


# --- the production code's values open with the reference, and the other way round ------------


def test_wire_format_is_length_rsa_aes(cluster_key: rsa.RSAPrivateKey) -> None:
    value = b"the value"
    sealed_b64 = sealed.seal_value(
        cluster_key.public_key(), value, scope=Scope.STRICT, namespace="shop", name="db"
    )
    raw = base64.b64decode(sealed_b64, validate=True)
    (rsa_length,) = struct.unpack(">H", raw[:2])
    assert rsa_length == 512  # RSA-4096
    assert len(raw) == 2 + 512 + len(value) + 16  # AES-GCM: same length plus a 16-byte tag
    assert ref_decrypt(cluster_key, raw, b"shop/db") == value


@pytest.mark.parametrize("scope", SCOPES)
def test_reference_opens_what_production_seals(cluster_key: rsa.RSAPrivateKey, scope: str) -> None:
    manifest = sealed.seal_secret(_secret(), cluster_key.public_key(), scope=Scope(scope))

    assert manifest["apiVersion"] == "bitnami.com/v1alpha1"
    assert manifest["kind"] == "SealedSecret"
    assert manifest["metadata"]["name"] == "db"
    assert manifest["metadata"]["namespace"] == "shop"
    expected_annotations = {
        "strict": {},
        "namespace-wide": {"sealedsecrets.bitnami.com/namespace-wide": "true"},
        "cluster-wide": {"sealedsecrets.bitnami.com/cluster-wide": "true"},
    }[scope]
    assert manifest["metadata"].get("annotations", {}) == expected_annotations
    template = manifest["spec"]["template"]
    assert template["type"] == "Opaque"
    assert template["metadata"]["labels"] == {"app": "shop"}
    assert template["metadata"]["annotations"] == {"team": "payments", **expected_annotations}
    assert set(manifest["spec"]["encryptedData"]) == set(VALUES)
    for key, encoded in manifest["spec"]["encryptedData"].items():
        raw = base64.standard_b64decode(encoded)
        assert ref_decrypt(cluster_key, raw, ref_label(scope, "shop", "db")) == VALUES[key]


@pytest.mark.parametrize("scope", SCOPES)
def test_production_opens_what_the_reference_seals(
    cluster_key: rsa.RSAPrivateKey, scope: str
) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, scope, "shop", "db")

    secret = sealed.unseal(document, [cluster_key])

    assert secret["apiVersion"] == "v1"
    assert secret["kind"] == "Secret"
    assert secret["metadata"]["name"] == "db"
    assert secret["metadata"]["namespace"] == "shop"
    assert secret["metadata"]["labels"] == {"app": "shop"}
    assert "creationTimestamp" not in secret["metadata"]
    assert secret["type"] == "Opaque"
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == VALUES


@pytest.mark.parametrize("scope", SCOPES)
def test_production_round_trip(cluster_key: rsa.RSAPrivateKey, scope: str) -> None:
    manifest = sealed.seal_secret(_secret(), cluster_key.public_key(), scope=Scope(scope))
    secret = sealed.unseal(manifest, [cluster_key])
    assert secret["data"] == _secret()["data"]
    assert sealed.secret_data_digest(secret) == sealed.secret_data_digest(_secret())


def test_raw_value_matches_kubeseal_raw(cluster_key: rsa.RSAPrivateKey) -> None:
    for scope in SCOPES:
        sealed_b64 = sealed.seal_value(
            cluster_key.public_key(), b"v", scope=Scope(scope), namespace="shop", name="db"
        )
        raw = base64.standard_b64decode(sealed_b64)
        assert ref_decrypt(cluster_key, raw, ref_label(scope, "shop", "db")) == b"v"


# --- scopes bind where a value may be opened --------------------------------------------------


def _moved(document: dict[str, Any], namespace: str, name: str) -> dict[str, Any]:
    moved = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
    moved["metadata"]["name"] = name
    return moved


@pytest.mark.parametrize(("namespace", "name"), [("shop", "other"), ("other", "db")])
def test_strict_value_does_not_open_under_another_name_or_namespace(
    cluster_key: rsa.RSAPrivateKey, namespace: str, name: str
) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")

    with pytest.raises(UnsealError) as caught:
        sealed.unseal(_moved(document, namespace, name), [cluster_key])

    error = caught.value
    assert error.object_ref == f"{namespace}/{name}"
    assert {key for key, _ in error.failures} == set(VALUES)
    assert f"SealedSecret {namespace}/{name}" in str(error)
    assert "'password'" in str(error)
    _assert_leaks_nothing(error, document)


def test_namespace_wide_value_opens_under_another_name_only(
    cluster_key: rsa.RSAPrivateKey,
) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "namespace-wide", "shop", "db")

    renamed = sealed.unseal(_moved(document, "shop", "renamed"), [cluster_key])
    assert renamed["metadata"]["name"] == "renamed"
    assert {k: base64.b64decode(v) for k, v in renamed["data"].items()} == VALUES

    with pytest.raises(UnsealError, match="other/db"):
        sealed.unseal(_moved(document, "other", "db"), [cluster_key])


def test_cluster_wide_value_opens_anywhere(cluster_key: rsa.RSAPrivateKey) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "cluster-wide", "shop", "db")

    moved = sealed.unseal(_moved(document, "elsewhere", "renamed"), [cluster_key])
    assert moved["metadata"]["namespace"] == "elsewhere"
    assert {k: base64.b64decode(v) for k, v in moved["data"].items()} == VALUES

    without_namespace = {**document, "metadata": {"name": "db", **_scope_only(document)}}
    placed = sealed.unseal(without_namespace, [cluster_key], namespace="target")
    assert placed["metadata"]["namespace"] == "target"


def _scope_only(document: dict[str, Any]) -> dict[str, Any]:
    return {"annotations": document["metadata"]["annotations"]}


def test_changing_the_scope_annotation_does_not_widen_a_value(
    cluster_key: rsa.RSAPrivateKey,
) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")
    widened = {
        **document,
        "metadata": {
            **document["metadata"],
            "annotations": {"sealedsecrets.bitnami.com/cluster-wide": "true"},
        },
    }

    with pytest.raises(UnsealError, match="sealed strict but the SealedSecret is annotated"):
        sealed.unseal(widened, [cluster_key])


def test_strict_and_namespace_wide_need_a_namespace(cluster_key: rsa.RSAPrivateKey) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")
    del document["metadata"]["namespace"]

    with pytest.raises(UnsealError, match="needs a namespace"):
        sealed.unseal(document, [cluster_key])


# --- tampering and unknown keys ---------------------------------------------------------------


def _flip(raw: bytes, index: int) -> bytes:
    return raw[:index] + bytes([raw[index] ^ 0x01]) + raw[index + 1 :]


TAMPERINGS: dict[str, Callable[[bytes], bytes]] = {
    "aes ciphertext": lambda raw: _flip(raw, len(raw) - 20),
    "aes tag": lambda raw: _flip(raw, len(raw) - 1),
    "rsa ciphertext": lambda raw: _flip(raw, 100),
    "length header": lambda raw: _flip(raw, 1),
    "truncated": lambda raw: raw[:300],
    "appended": lambda raw: raw + b"\x00",
    "one byte": lambda raw: raw[:1],
}


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_tampered_values_do_not_open(cluster_key: rsa.RSAPrivateKey, how: str) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")
    encrypted = document["spec"]["encryptedData"]
    raw = base64.b64decode(encrypted["password"])
    encrypted["password"] = base64.b64encode(TAMPERINGS[how](raw)).decode()

    with pytest.raises(UnsealError) as caught:
        sealed.unseal(document, [cluster_key])

    assert [key for key, _ in caught.value.failures] == ["password"]
    if how in ("aes ciphertext", "aes tag", "appended"):
        assert "altered" in str(caught.value)
    _assert_leaks_nothing(caught.value, document)


def test_invalid_base64_is_reported_per_key(cluster_key: rsa.RSAPrivateKey) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")
    document["spec"]["encryptedData"]["url"] = "not base64!"

    with pytest.raises(UnsealError, match=r"key 'url': not valid base64"):
        sealed.unseal(document, [cluster_key])


def test_value_for_an_unknown_key_does_not_open(
    cluster_key: rsa.RSAPrivateKey, stranger_key: rsa.RSAPrivateKey
) -> None:
    document = kubeseal_document(stranger_key.public_key(), VALUES, "cluster-wide", "shop", "db")

    with pytest.raises(UnsealError, match="no kept key opens it") as caught:
        sealed.unseal(document, [cluster_key])

    assert caught.value.object_ref == "shop/db"
    _assert_leaks_nothing(caught.value, document)


def test_unsupported_formats_are_refused(cluster_key: rsa.RSAPrivateKey) -> None:
    document = kubeseal_document(cluster_key.public_key(), VALUES, "strict", "shop", "db")
    templated = {**document, "spec": {**document["spec"], "template": {"data": {"k": "{{x}}"}}}}
    legacy = {**document, "spec": {"data": "AAAA"}}

    with pytest.raises(UnsealError, match="templated"):
        sealed.unseal(templated, [cluster_key])
    with pytest.raises(UnsealError, match=r"deprecated spec\.data"):
        sealed.unseal(legacy, [cluster_key])
    with pytest.raises(UnsealError, match=r"not a bitnami\.com/v1alpha1 SealedSecret"):
        sealed.unseal(_secret(), [cluster_key])


# --- key renewal ------------------------------------------------------------------------------


def test_renewal_keeps_old_values_open_and_seals_with_the_new_key(
    renewed_pairs: tuple[keys.KeyPair, keys.KeyPair],
) -> None:
    old, new = renewed_pairs
    ring = keys.KeyRing.of([new, old])
    assert ring.newest is new
    assert ring.private_keys == (new.private_key, old.private_key)

    # A value sealed (by kubeseal) before the renewal still opens.
    before = kubeseal_document(old.public_key, VALUES, "strict", "shop", "db")
    secret = sealed.unseal(before, ring.private_keys)
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == VALUES

    # New values are sealed for the new key only.
    after = sealed.seal_secret(_secret(), ring.newest.public_key)
    raw = base64.b64decode(after["spec"]["encryptedData"]["password"])
    assert ref_decrypt(new.private_key, raw, b"shop/db") == VALUES["password"]
    with pytest.raises(ValueError, match="Decryption failed"):
        ref_decrypt(old.private_key, raw, b"shop/db")

    # Without the old key, the old value no longer opens.
    with pytest.raises(UnsealError, match="no kept key opens it"):
        sealed.unseal(before, [new.private_key])


def test_renewal_is_due_after_the_interval(
    renewed_pairs: tuple[keys.KeyPair, keys.KeyPair],
) -> None:
    old, new = renewed_pairs
    interval = datetime.timedelta(days=30)
    assert keys.KeyRing().renewal_due(NOW, interval)
    assert keys.KeyRing.of([old]).renewal_due(NOW, interval)
    assert not keys.KeyRing.of([old, new]).renewal_due(NOW, interval)
    assert keys.KeyRing.of([old, new]).renewal_due(NOW + interval, interval)


def test_key_secret_round_trips_in_bitnami_layout(
    renewed_pairs: tuple[keys.KeyPair, keys.KeyPair],
) -> None:
    old, _ = renewed_pairs
    manifest = keys.key_secret("gitops-system", old.private_key, old.certificate)

    assert manifest["type"] == "kubernetes.io/tls"
    assert manifest["metadata"]["labels"] == {
        "sealedsecrets.bitnami.com/sealed-secrets-key": "active"
    }
    key_pem = base64.b64decode(manifest["data"]["tls.key"])
    assert key_pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")  # PKCS#1, as Bitnami
    manifest["metadata"]["name"] = "sealed-secrets-keyabcde"
    pair = keys.read_key_secret(manifest)
    assert pair.name == "sealed-secrets-keyabcde"
    assert pair.created == NOW - datetime.timedelta(days=31)
    assert pair.public_key.public_numbers() == old.public_key.public_numbers()


def test_certificate_is_self_signed_for_sealing(
    renewed_pairs: tuple[keys.KeyPair, keys.KeyPair],
) -> None:
    _, new = renewed_pairs
    certificate = new.certificate
    assert certificate.subject == certificate.issuer
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "sealed-secret"
    )
    assert certificate.not_valid_after_utc - certificate.not_valid_before_utc == (
        datetime.timedelta(days=3650)
    )
    public_key = certs.sealing_key(new.certificate_pem(), NOW, source="test")
    assert public_key.public_numbers() == new.public_key.public_numbers()


def test_expired_or_foreign_certificates_are_refused(
    renewed_pairs: tuple[keys.KeyPair, keys.KeyPair],
) -> None:
    _, new = renewed_pairs
    later = NOW + datetime.timedelta(days=3651)
    with pytest.raises(certs.CertificateError, match="expired"):
        certs.sealing_key(new.certificate_pem(), later, source="cert.pem")
    with pytest.raises(certs.CertificateError, match="no PEM certificate"):
        certs.sealing_key(b"hello", NOW, source="cert.pem")

    ec_key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ec")])
    ec_cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ec_key.public_key())
        .serial_number(1)
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=1))
        .sign(ec_key, hashes.SHA256())
    )
    with pytest.raises(certs.CertificateError, match="RSA"):
        certs.sealing_key(ec_cert.public_bytes(serialization.Encoding.PEM), NOW, source="x")


# --- sealing input ----------------------------------------------------------------------------


def test_seal_secret_follows_kubeseal_for_metadata_and_string_data(
    cluster_key: rsa.RSAPrivateKey,
) -> None:
    secret = _secret()
    secret["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = (
        '{"data": {"password": "hunter2"}}'
    )
    secret["metadata"] |= {"uid": "u-1", "resourceVersion": "7", "creationTimestamp": None}
    secret["stringData"] = {"password": "from-string-data", "token": "t"}
    secret["immutable"] = True

    manifest = sealed.seal_secret(secret, cluster_key.public_key(), namespace="moved")

    template = manifest["spec"]["template"]
    assert template["metadata"] == {
        "name": "db",
        "namespace": "moved",
        "labels": {"app": "shop"},
        "annotations": {"team": "payments"},
    }
    assert template["immutable"] is True
    opened = sealed.unseal(manifest, [cluster_key])
    values = {k: base64.b64decode(v) for k, v in opened["data"].items()}
    assert values == {**VALUES, "password": b"from-string-data", "token": b"t"}
    assert opened["immutable"] is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "ConfigMap"}, "expected a v1 Secret"),
        ({"data": {"password": "hunter2!!"}}, r"data\['password'\] is not valid base64"),
        ({"data": {}, "stringData": {"port": 5432}}, r"stringData\['port'\] must be a string"),
        ({"data": {}}, "no data or stringData"),
        ({"metadata": {"name": "db"}}, "no metadata.namespace"),
        ({"metadata": {"namespace": "shop"}}, "no metadata.name"),
    ],
)
def test_seal_secret_refuses_bad_input_without_echoing_it(
    cluster_key: rsa.RSAPrivateKey, change: dict[str, Any], message: str
) -> None:
    secret = {**_secret(), **change}
    with pytest.raises(sealed.InvalidSecretError, match=message) as caught:
        sealed.seal_secret(secret, cluster_key.public_key())
    assert "hunter2" not in str(caught.value)
    assert "5432" not in str(caught.value)


def test_secret_data_digest_is_sha256_per_key_with_string_data_merged() -> None:
    secret = _secret()
    secret["stringData"] = {"token": "t"}
    digest = sealed.secret_data_digest(secret)
    assert digest == {
        key: "sha256:" + hashlib.sha256(value).hexdigest()
        for key, value in {**VALUES, "token": b"t"}.items()
    }
    as_string_data = {**secret, "data": {}, "stringData": {"token": "t"}}
    assert sealed.secret_data_digest(as_string_data) == {"token": digest["token"]}


def test_reference_rejects_a_wrong_label(cluster_key: rsa.RSAPrivateKey) -> None:
    """The reference itself can fail: it is not a tautology."""
    raw = base64.b64decode(
        sealed.seal_value(
            cluster_key.public_key(), b"v", scope=Scope.STRICT, namespace="shop", name="db"
        )
    )
    with pytest.raises(ValueError, match="Decryption failed"):
        ref_decrypt(cluster_key, raw, b"shop/other")
    with pytest.raises(InvalidTag):
        ref_decrypt(cluster_key, _flip(raw, len(raw) - 1), b"shop/db")
