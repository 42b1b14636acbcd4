"""Sealed secrets: Secrets that may live in Git because only the cluster can open them.

A value is encrypted with the cluster's public key in the Bitnami Sealed Secrets format, so
files sealed with ``kubeseal`` and with ``gitops seal`` are interchangeable, and the deployer
opens them with its private keys just before it applies them. The package is split by concern:

- :mod:`gitops_sealing.hybrid`: the byte format (RSA-OAEP wrapping a one-time AES-GCM key);
- :mod:`gitops_sealing.sealed`: SealedSecret manifests, scopes, ``seal_secret`` and ``unseal``;
- :mod:`gitops_sealing.keys`: key pairs and certificates, kept and renewed in the cluster;
- :mod:`gitops_sealing.certs`: the public certificate over HTTP, served and fetched.

Nothing here ever puts a plaintext value, a ciphertext or a private key into an exception
message or a log record.
"""
