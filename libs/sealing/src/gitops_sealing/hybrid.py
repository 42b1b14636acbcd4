"""The sealed-value byte format, as Bitnami Sealed Secrets defines it.

One value is encrypted with AES-256-GCM under a fresh random 32-byte session key. Because the
key is used once, the nonce is fixed at twelve zero bytes. The session key is encrypted with
RSA-OAEP (SHA-256 for both the hash and MGF1) under the cluster's public key, with a label that
binds the value to where it may be opened (see :func:`gitops_sealing.sealed.scope_label`).
The sealed bytes are::

    len(rsa_ciphertext) as 2 bytes, big-endian || rsa_ciphertext || aes_ciphertext_and_tag

Decryption failures are told apart only as far as the format allows: OAEP cannot say whether
the key or the label was wrong, but a session key that opens and an AES tag that then fails
means the value itself was altered.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

SESSION_KEY_BYTES = 32
"""AES-256."""

ZERO_NONCE = bytes(12)
"""The GCM nonce: safe to fix because every session key encrypts exactly one value."""

_LENGTH_BYTES = 2


class DecryptError(Exception):
    """A sealed value could not be opened; the message says why and never holds any bytes."""


class MalformedError(DecryptError):
    """The bytes are not in the sealed-value format at all (e.g. truncated)."""


class NoMatchingKeyError(DecryptError):
    """No key opened the session key: another key, another label (scope), or altered bytes."""


class TamperedError(DecryptError):
    """The session key opened but the AES-GCM tag did not verify: the value was altered."""


def _oaep(label: bytes) -> padding.OAEP:
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=label
    )


def encrypt(public_key: rsa.RSAPublicKey, plaintext: bytes, label: bytes) -> bytes:
    """Seal one value for the holder of the matching private key, bound to ``label``."""
    session_key = os.urandom(SESSION_KEY_BYTES)
    wrapped_key = public_key.encrypt(session_key, _oaep(label))
    sealed_value = AESGCM(session_key).encrypt(ZERO_NONCE, plaintext, None)
    return len(wrapped_key).to_bytes(_LENGTH_BYTES, "big") + wrapped_key + sealed_value


def decrypt(private_keys: Sequence[rsa.RSAPrivateKey], sealed: bytes, label: bytes) -> bytes:
    """Open one sealed value with whichever of the keys it was sealed for.

    Raises :class:`MalformedError`, :class:`NoMatchingKeyError` or :class:`TamperedError`.
    """
    if len(sealed) < _LENGTH_BYTES:
        raise MalformedError("too short to be a sealed value")
    wrapped_length = int.from_bytes(sealed[:_LENGTH_BYTES], "big")
    if len(sealed) < _LENGTH_BYTES + wrapped_length:
        raise MalformedError("shorter than the encrypted session key it announces")
    wrapped_key = sealed[_LENGTH_BYTES : _LENGTH_BYTES + wrapped_length]
    sealed_value = sealed[_LENGTH_BYTES + wrapped_length :]
    for private_key in private_keys:
        try:
            session_key = private_key.decrypt(wrapped_key, _oaep(label))
        except ValueError:  # OAEP failed: not this key, or not this label
            continue
        try:
            return AESGCM(session_key).decrypt(ZERO_NONCE, sealed_value, None)
        except InvalidTag:
            raise TamperedError("the encrypted value was altered (authentication failed)") from None
        except ValueError:  # a session key of a length AES does not have
            raise MalformedError("the session key is not an AES key") from None
    raise NoMatchingKeyError("no key opens its session key")
