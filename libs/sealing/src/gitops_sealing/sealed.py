"""SealedSecret manifests: sealing a Secret, and opening one back into a Secret.

The manifests are Bitnami's ``bitnami.com/v1alpha1`` SealedSecret as ``kubeseal`` writes it:
each value of the Secret is sealed on its own into ``spec.encryptedData`` (standard base64),
and ``spec.template`` keeps the Secret's metadata (labels, annotations), ``type`` and
``immutable``. Where a value may be opened is its scope, written as annotations on the
SealedSecret and bound into every value through the RSA-OAEP label:

- strict (the default): label ``namespace/name``; opens only under that name in that namespace;
- namespace-wide (``sealedsecrets.bitnami.com/namespace-wide: "true"``): label ``namespace``;
- cluster-wide (``sealedsecrets.bitnami.com/cluster-wide: "true"``): empty label.

As in Bitnami's controller, the scope used to open a SealedSecret is read from its own
``metadata.annotations``, and the name and namespace from its own metadata, so moving a strict
value to another object makes it unreadable rather than readable somewhere unintended.

Errors name the object and the key and say why; they never hold a value, sealed or not.
"""

from __future__ import annotations

import base64
import binascii
import copy
import enum
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from gitops_sealing import hybrid

API_VERSION = "bitnami.com/v1alpha1"
KIND = "SealedSecret"

ANNOTATION_PREFIX = "sealedsecrets.bitnami.com/"
NAMESPACE_WIDE_ANNOTATION = ANNOTATION_PREFIX + "namespace-wide"
CLUSTER_WIDE_ANNOTATION = ANNOTATION_PREFIX + "cluster-wide"

# Tools that keep a full copy of the applied object in an annotation would leak the Secret's
# values into the SealedSecret in clear; kubeseal drops them too.
_LAST_APPLIED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
)
# Set by the API server on a live object; meaningless (or misleading) in a file in Git.
_SERVER_FIELDS = (
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
)


class Scope(enum.StrEnum):
    """Where a sealed value may be opened (the names are kubeseal's ``--scope`` values)."""

    STRICT = "strict"
    NAMESPACE_WIDE = "namespace-wide"
    CLUSTER_WIDE = "cluster-wide"


class InvalidSecretError(ValueError):
    """A Secret (or a value) cannot be sealed or read as given; says what to fix, never a value."""


class UnsealError(Exception):
    """A SealedSecret could not be opened: which object, which keys, and why."""

    def __init__(self, object_ref: str, failures: Sequence[tuple[str | None, str]]) -> None:
        """Keep the object ("namespace/name") and (data key or None, reason) per failure."""
        self.object_ref = object_ref
        self.failures = tuple(failures)
        problems = "; ".join(
            f"key {key!r}: {reason}" if key is not None else reason for key, reason in failures
        )
        super().__init__(f"cannot unseal SealedSecret {object_ref}: {problems}")


def scope_label(scope: Scope, namespace: str, name: str) -> bytes:
    """The RSA-OAEP label that binds a value to its scope."""
    match scope:
        case Scope.CLUSTER_WIDE:
            return b""
        case Scope.NAMESPACE_WIDE:
            return namespace.encode()
        case Scope.STRICT:
            return f"{namespace}/{name}".encode()


def scope_of(metadata: Mapping[str, Any]) -> Scope:
    """The scope an object's annotations declare (cluster-wide wins over namespace-wide)."""
    annotations = metadata.get("annotations") or {}
    if annotations.get(CLUSTER_WIDE_ANNOTATION) == "true":
        return Scope.CLUSTER_WIDE
    if annotations.get(NAMESPACE_WIDE_ANNOTATION) == "true":
        return Scope.NAMESPACE_WIDE
    return Scope.STRICT


def with_scope(annotations: Mapping[str, str] | None, scope: Scope) -> dict[str, str]:
    """The annotations with the scope annotations set to declare exactly ``scope``."""
    updated = {
        key: value
        for key, value in (annotations or {}).items()
        if key not in (NAMESPACE_WIDE_ANNOTATION, CLUSTER_WIDE_ANNOTATION)
    }
    if scope is Scope.NAMESPACE_WIDE:
        updated[NAMESPACE_WIDE_ANNOTATION] = "true"
    elif scope is Scope.CLUSTER_WIDE:
        updated[CLUSTER_WIDE_ANNOTATION] = "true"
    return updated


def is_sealed_secret(manifest: Mapping[str, Any]) -> bool:
    """Whether a manifest is a Bitnami SealedSecret."""
    return manifest.get("apiVersion") == API_VERSION and manifest.get("kind") == KIND


def seal_value(
    public_key: rsa.RSAPublicKey,
    value: bytes,
    *,
    scope: Scope,
    namespace: str = "",
    name: str = "",
) -> str:
    """Seal one value for ``spec.encryptedData`` (what ``kubeseal --raw`` prints)."""
    if scope is not Scope.CLUSTER_WIDE and not namespace:
        raise InvalidSecretError(f"a {scope} value needs a namespace")
    if scope is Scope.STRICT and not name:
        raise InvalidSecretError("a strict value needs the name of its Secret")
    sealed = hybrid.encrypt(public_key, value, scope_label(scope, namespace, name))
    return base64.b64encode(sealed).decode("ascii")


def secret_values(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """The values of a Secret manifest: ``data`` decoded, then ``stringData`` on top.

    ``stringData`` wins over ``data`` for the same key, as the API server merges them.
    Raises :class:`InvalidSecretError` naming the key of a value that is not valid.
    """
    values: dict[str, bytes] = {}
    data = secret.get("data") or {}
    string_data = secret.get("stringData") or {}
    if not isinstance(data, Mapping) or not isinstance(string_data, Mapping):
        raise InvalidSecretError("data and stringData must be mappings of key to value")
    for key, encoded in data.items():
        if not isinstance(encoded, str):
            raise InvalidSecretError(
                f"data[{key!r}] must be a base64 string, not {type(encoded).__name__}"
            )
        try:
            values[str(key)] = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidSecretError(
                f"data[{key!r}] is not valid base64 (put plain text under stringData)"
            ) from None
    for key, text in string_data.items():
        if not isinstance(text, str):
            raise InvalidSecretError(
                f"stringData[{key!r}] must be a string, not {type(text).__name__} (quote it)"
            )
        values[str(key)] = text.encode()
    return values


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    cleaned = {k: copy.deepcopy(v) for k, v in metadata.items() if k not in _SERVER_FIELDS}
    annotations = {
        k: v
        for k, v in (cleaned.get("annotations") or {}).items()
        if k not in _LAST_APPLIED_ANNOTATIONS
    }
    if annotations:
        cleaned["annotations"] = annotations
    else:
        cleaned.pop("annotations", None)
    if not cleaned.get("labels"):
        cleaned.pop("labels", None)
    return cleaned


def seal_secret(
    secret: Mapping[str, Any],
    public_key: rsa.RSAPublicKey,
    *,
    scope: Scope | None = None,
    name: str | None = None,
    namespace: str | None = None,
    allow_empty_data: bool = False,
) -> dict[str, Any]:
    """Seal a Secret manifest into a SealedSecret manifest, as ``kubeseal`` does.

    ``scope`` overrides the scope the Secret's annotations declare (default: as annotated,
    strict when not annotated); ``name`` and ``namespace`` override its metadata. Raises
    :class:`InvalidSecretError` when the input is not a Secret, lacks a name or a needed namespace,
    has no values (unless ``allow_empty_data``), or holds a value that is not valid.
    """
    if secret.get("kind") != "Secret" or secret.get("apiVersion", "v1") != "v1":
        raise InvalidSecretError(
            f"expected a v1 Secret, got {secret.get('apiVersion')}/{secret.get('kind')}"
        )
    metadata = secret.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise InvalidSecretError("metadata must be a mapping")
    template_metadata = _clean_metadata(metadata)
    if name:
        template_metadata["name"] = name
    if namespace:
        template_metadata["namespace"] = namespace
    if scope is not None:
        annotations = with_scope(template_metadata.get("annotations"), scope)
        if annotations:
            template_metadata["annotations"] = annotations
        else:
            template_metadata.pop("annotations", None)
    effective_scope = scope_of(template_metadata)
    secret_name = str(template_metadata.get("name") or "")
    secret_namespace = str(template_metadata.get("namespace") or "")
    if not secret_name:
        raise InvalidSecretError("the Secret has no metadata.name (set it, or pass --name)")
    if effective_scope is not Scope.CLUSTER_WIDE and not secret_namespace:
        raise InvalidSecretError(
            f"the Secret {secret_name!r} has no metadata.namespace, which a {effective_scope} "
            "SealedSecret needs (set it, pass --namespace, or seal it cluster-wide)"
        )
    values = secret_values(secret)
    if not values and not allow_empty_data:
        raise InvalidSecretError(
            f"the Secret {secret_name!r} has no data or stringData to seal "
            "(pass --allow-empty-data if that is intended)"
        )
    label = scope_label(effective_scope, secret_namespace, secret_name)
    encrypted_data = {
        key: base64.b64encode(hybrid.encrypt(public_key, value, label)).decode("ascii")
        for key, value in sorted(values.items())
    }
    template: dict[str, Any] = {"metadata": template_metadata}
    if secret.get("type"):
        template["type"] = secret["type"]
    if secret.get("immutable") is not None:
        template["immutable"] = secret["immutable"]
    sealed_metadata: dict[str, Any] = {"name": secret_name}
    if secret_namespace:
        sealed_metadata["namespace"] = secret_namespace
    scope_annotations = with_scope(None, effective_scope)
    if scope_annotations:
        sealed_metadata["annotations"] = scope_annotations
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": sealed_metadata,
        "spec": {"encryptedData": encrypted_data, "template": template},
    }


def _object_ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _diagnose(
    keys: Sequence[rsa.RSAPrivateKey], sealed: bytes, scope: Scope, namespace: str, name: str
) -> str:
    """Why no key opened a value: sealed for another scope of this object, or not ours."""
    for other in Scope:
        if other is scope or (other is not Scope.CLUSTER_WIDE and not namespace):
            continue
        try:
            hybrid.decrypt(keys, sealed, scope_label(other, namespace, name))
        except hybrid.DecryptError:
            continue
        return (
            f"it was sealed {other} but the SealedSecret is annotated {scope}; "
            "fix the scope annotations or seal it again"
        )
    return (
        "no kept key opens it: it was sealed for another name or namespace, for another "
        "cluster's key or a key no longer kept, or it was altered"
    )


def unseal(
    sealed_secret: Mapping[str, Any],
    keys: Sequence[rsa.RSAPrivateKey],
    *,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Open a SealedSecret manifest into the Secret manifest it seals, ready to apply.

    Every key in ``keys`` is tried (put the newest first: it is the likeliest). ``namespace``
    is used when the manifest has none (the namespace it is about to be applied to); a strict
    or namespace-wide SealedSecret needs one. The Secret gets ``spec.template``'s metadata,
    type and immutability, the SealedSecret's name and namespace, and the opened values
    base64-encoded under ``data``. Raises :class:`UnsealError` naming the object, each key
    that failed and why.
    """
    metadata = sealed_secret.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise UnsealError("(unnamed)", [(None, "metadata is not a mapping")])
    name = str(metadata.get("name") or "")
    object_namespace = str(metadata.get("namespace") or namespace or "")
    ref = _object_ref(object_namespace, name or "(unnamed)")
    if not is_sealed_secret(sealed_secret):
        kind = f"{sealed_secret.get('apiVersion')}/{sealed_secret.get('kind')}"
        raise UnsealError(ref, [(None, f"not a {API_VERSION} {KIND} but {kind}")])
    if not name:
        raise UnsealError(ref, [(None, "it has no metadata.name")])
    scope = scope_of(metadata)
    if scope is not Scope.CLUSTER_WIDE and not object_namespace:
        raise UnsealError(ref, [(None, f"a {scope} SealedSecret needs a namespace")])
    spec = sealed_secret.get("spec") or {}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("template") or {}, Mapping):
        raise UnsealError(ref, [(None, "spec and spec.template must be mappings")])
    template = spec.get("template") or {}
    if spec.get("data"):
        raise UnsealError(ref, [(None, "it uses the deprecated spec.data format; seal it again")])
    if template.get("data"):
        raise UnsealError(ref, [(None, "spec.template.data (templated values) is not supported")])
    encrypted_data = spec.get("encryptedData") or {}
    if not isinstance(encrypted_data, Mapping):
        raise UnsealError(ref, [(None, "spec.encryptedData is not a mapping")])
    label = scope_label(scope, object_namespace, name)
    data: dict[str, str] = {}
    failures: list[tuple[str | None, str]] = []
    for key, encoded in encrypted_data.items():
        try:
            sealed = base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            failures.append((str(key), "not valid base64"))
            continue
        try:
            plaintext = hybrid.decrypt(keys, sealed, label)
        except hybrid.NoMatchingKeyError:
            failures.append((str(key), _diagnose(keys, sealed, scope, object_namespace, name)))
            continue
        except hybrid.DecryptError as exc:
            failures.append((str(key), str(exc)))
            continue
        data[str(key)] = base64.b64encode(plaintext).decode("ascii")
    if failures:
        raise UnsealError(ref, failures)
    secret_metadata = _clean_metadata(template.get("metadata") or {})
    secret_metadata["name"] = name
    if object_namespace:
        secret_metadata["namespace"] = object_namespace
    else:
        secret_metadata.pop("namespace", None)
    secret: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": secret_metadata}
    if template.get("type"):
        secret["type"] = template["type"]
    if template.get("immutable") is not None:
        secret["immutable"] = template["immutable"]
    secret["data"] = data
    return secret


def secret_data_digest(secret: Mapping[str, Any]) -> dict[str, str]:
    """A ``sha256:<hex>`` digest per key of a Secret manifest's values (``stringData`` merged).

    Lets the drift detector compare desired and live Secrets without holding their values.
    Raises :class:`InvalidSecretError` naming the key of a value that is not valid.
    """
    return {
        key: "sha256:" + hashlib.sha256(value).hexdigest()
        for key, value in sorted(secret_values(secret).items())
    }
