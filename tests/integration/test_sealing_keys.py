"""Sealing keys live in the real API server, and `gitops seal` seals what `unseal` opens.

The key pairs are Secrets in the deployer's namespace: made on first start, reused on the next,
renewed once the interval has passed (the clock is injected and moved), the old pair kept.
The CLI runs as users run it, as a separate process, with the certificate from a file, from a
URL served by the deployer's certificate route, and fetched with --fetch-cert.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from ruamel.yaml import YAML

from gitops_kube import secrets
from gitops_kube.clients import ApiClient, connect, create_namespace
from gitops_localstack.kubernetes import ControlPlane
from gitops_sealing import certs, keys, sealed
from tests.support.processes import GITOPS, run_cli
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

KEY_SELECTOR = "sealedsecrets.bitnami.com/sealed-secrets-key=active"
VALUES = {"password": "hunter2-integration", "api-token": "t0k3n\nwith newline"}


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime.datetime) -> None:
        self.now = now

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += datetime.timedelta(**delta)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def api(kube: ControlPlane) -> AsyncIterator[ApiClient]:
    async with connect(kube.kubeconfig) as client:
        yield client


@pytest.fixture
async def namespace(api: ApiClient) -> str:
    name = _unique("sealing")
    await create_namespace(api, name)
    return name


@pytest.fixture(scope="module")
async def ring(kube: ControlPlane) -> keys.KeyRing:
    """The key ring of a deployer started once for this module's CLI tests."""
    async with connect(kube.kubeconfig) as client:
        namespace = _unique("sealing-cli")
        await create_namespace(client, namespace)
        return await keys.SealingKeys(client, keys.KeySettings(namespace=namespace)).start()


@pytest.fixture
def cert_file(ring: keys.KeyRing, tmp_path: Path) -> Path:
    path = tmp_path / "cert.pem"
    path.write_bytes(ring.newest.certificate_pem())
    return path


def _secret_manifest(namespace: str = "shop", name: str = "db") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "shop"}},
        "type": "Opaque",
        "data": {"password": base64.b64encode(VALUES["password"].encode()).decode()},
        "stringData": {"api-token": VALUES["api-token"]},
    }


def _write_yaml(path: Path, manifest: dict[str, Any]) -> Path:
    YAML(typ="safe", pure=True).dump(manifest, path)
    return path


def _load_yaml(text: str) -> dict[str, Any]:
    document = YAML(typ="safe", pure=True).load(text)
    assert isinstance(document, dict)
    return document


def _opened(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


# --- keys in the cluster ----------------------------------------------------------------------


async def test_keys_are_created_reused_and_renewed(api: ApiClient, namespace: str) -> None:
    clock = Clock(keys.utc_now().replace(microsecond=0))
    settings = keys.KeySettings(namespace=namespace)

    # First start: one key pair, kept as a Bitnami-style TLS Secret.
    first = await keys.SealingKeys(api, settings, now=clock).start()
    stored = await secrets.list_secrets(api, namespace, KEY_SELECTOR)
    assert len(stored) == 1
    [key_secret] = stored
    assert key_secret["type"] == "kubernetes.io/tls"
    assert key_secret["metadata"]["name"] == first.newest.name
    assert key_secret["metadata"]["name"].startswith("sealed-secrets-key")
    assert base64.b64decode(key_secret["data"]["tls.crt"]) == first.newest.certificate_pem()
    assert first.newest.private_key.key_size == 4096
    assert first.newest.created == clock.now

    # Second start, before the interval: the same pair, nothing new.
    clock.advance(days=29)
    manager = keys.SealingKeys(api, settings, now=clock)
    second = await manager.start()
    assert [pair.name for pair in second.pairs] == [first.newest.name]
    assert second.newest.public_key.public_numbers() == first.newest.public_key.public_numbers()
    assert len(await secrets.list_secrets(api, namespace, KEY_SELECTOR)) == 1
    assert manager.seconds_until_renewal() == datetime.timedelta(days=1).total_seconds()

    # A value sealed now, with the first pair.
    before = sealed.seal_secret(_secret_manifest(), second.newest.public_key)

    # Once the interval has passed: a new pair, the old one kept.
    clock.advance(days=1)
    assert await manager.renew_if_due()
    renewed = manager.ring
    assert len(renewed.pairs) == 2
    assert renewed.pairs[0].name == first.newest.name
    assert renewed.newest.name != first.newest.name
    assert renewed.newest.created == clock.now
    stored = await secrets.list_secrets(api, namespace, KEY_SELECTOR)
    assert {s["metadata"]["name"] for s in stored} == {first.newest.name, renewed.newest.name}
    assert not await manager.renew_if_due()

    # A later start loads both; the newest seals, both open.
    third = await keys.SealingKeys(api, settings, now=clock).start()
    assert [pair.name for pair in third.pairs] == [pair.name for pair in renewed.pairs]
    assert third.newest.name == renewed.newest.name
    assert _opened(sealed.unseal(before, third.private_keys)) == VALUES
    after = sealed.seal_secret(_secret_manifest(), third.newest.public_key)
    assert _opened(sealed.unseal(after, [third.newest.private_key])) == VALUES
    with pytest.raises(sealed.UnsealError, match="no kept key opens it"):
        sealed.unseal(after, [third.pairs[0].private_key])


async def test_renewal_loop_renews_when_due(api: ApiClient, namespace: str) -> None:
    clock = Clock(keys.utc_now().replace(microsecond=0))
    settings = keys.KeySettings(namespace=namespace, key_size=2048)
    manager = keys.SealingKeys(api, settings, now=clock)
    await manager.start()
    loop = asyncio.create_task(manager.run(check_every=0.05))
    try:
        assert len(manager.ring.pairs) == 1
        clock.advance(days=30)
        await eventually(
            lambda: len(manager.ring.pairs) == 2, timeout=30, what="the renewed key pair"
        )
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
    assert manager.ring.newest.created == clock.now
    assert len(await secrets.list_secrets(api, namespace, KEY_SELECTOR)) == 2


async def test_missing_namespace_is_a_clear_error(api: ApiClient) -> None:
    missing = _unique("absent")
    settings = keys.KeySettings(namespace=missing, key_size=2048)

    with pytest.raises(keys.KeyStoreError, match=f"in namespace {missing}.*namespace exist"):
        await keys.SealingKeys(api, settings).start()


# --- `gitops seal` ------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["strict", "namespace-wide", "cluster-wide"])
async def test_cli_seals_what_unseal_opens(
    ring: keys.KeyRing, cert_file: Path, tmp_path: Path, scope: str
) -> None:
    secret_file = _write_yaml(tmp_path / "secret.yaml", _secret_manifest())

    result = await asyncio.to_thread(
        run_cli, "seal", "--cert", str(cert_file), "--scope", scope, "-f", str(secret_file), env={}
    )

    assert result.returncode == 0, result.stderr
    for value in VALUES.values():
        assert value not in result.stdout
    document = _load_yaml(result.stdout)
    assert sealed.scope_of(document["metadata"]) == sealed.Scope(scope)
    secret = sealed.unseal(document, ring.private_keys)
    assert _opened(secret) == VALUES
    assert secret["metadata"] == {
        "name": "db",
        "namespace": "shop",
        "labels": {"app": "shop"},
        **({"annotations": document["metadata"]["annotations"]} if scope != "strict" else {}),
    }
    assert secret["type"] == "Opaque"

    moved = {**document, "metadata": {**document["metadata"], "name": "other"}}
    if scope == "strict":
        with pytest.raises(sealed.UnsealError, match="shop/other"):
            sealed.unseal(moved, ring.private_keys)
    else:
        assert _opened(sealed.unseal(moved, ring.private_keys)) == VALUES


async def test_cli_reads_json_from_stdin(ring: keys.KeyRing, cert_file: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [GITOPS, "seal", "--cert", str(cert_file), "--namespace", "moved"],
        input=json.dumps(_secret_manifest()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    secret = sealed.unseal(_load_yaml(result.stdout), ring.private_keys)
    assert secret["metadata"]["namespace"] == "moved"
    assert _opened(secret) == VALUES


async def test_cli_raw_seals_one_value(ring: keys.KeyRing, cert_file: Path, tmp_path: Path) -> None:
    value_file = tmp_path / "value"
    value_file.write_bytes(b"raw-value")

    result = await asyncio.to_thread(
        run_cli,
        "seal",
        "--raw",
        "--cert",
        str(cert_file),
        "--namespace",
        "shop",
        "--name",
        "db",
        "--from-file",
        str(value_file),
        env={},
    )

    assert result.returncode == 0, result.stderr
    document = {
        "apiVersion": "bitnami.com/v1alpha1",
        "kind": "SealedSecret",
        "metadata": {"name": "db", "namespace": "shop"},
        "spec": {"encryptedData": {"value": result.stdout}},
    }
    assert _opened(sealed.unseal(document, ring.private_keys)) == {"value": "raw-value"}


async def test_cli_errors_never_echo_values(cert_file: Path, tmp_path: Path) -> None:
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text("stringData:\n  password: hunter2-dup\n  password: hunter3-dup\n")
    bad_base64 = _write_yaml(
        tmp_path / "bad.yaml", {**_secret_manifest(), "data": {"password": "hunter2-b64!"}}
    )

    for path, expected in [(duplicate, "line 3, column 3"), (bad_base64, "data['password']")]:
        result = await asyncio.to_thread(
            run_cli, "seal", "--cert", str(cert_file), "-f", str(path), env={}
        )
        assert result.returncode == 1
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
        for leaked in ("hunter2", "hunter3"):
            assert leaked not in result.stderr + result.stdout


# --- the certificate route --------------------------------------------------------------------


async def _serve(current: list[keys.KeyRing]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.add_routes(certs.cert_routes(lambda: current[0]))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_certificate_route_serves_what_the_cli_fetches_and_seals_with(
    ring: keys.KeyRing, tmp_path: Path
) -> None:
    current = [keys.KeyRing()]
    runner, url = await _serve(current)
    try:
        not_yet = await asyncio.to_thread(
            run_cli, "seal", "--fetch-cert", "--controller-url", url, env={}
        )
        assert not_yet.returncode == 1
        assert "HTTP 503" in not_yet.stderr

        current[0] = ring
        fetched = await asyncio.to_thread(
            run_cli, "seal", "--fetch-cert", "--controller-url", url + "/", env={}
        )
        assert fetched.returncode == 0, fetched.stderr
        assert fetched.stdout.encode() == ring.newest.certificate_pem()

        secret_file = _write_yaml(tmp_path / "secret.yaml", _secret_manifest())
        by_url = await asyncio.to_thread(
            run_cli,
            "seal",
            "--cert",
            f"{url}{certs.CERT_PATH}",
            "-f",
            str(secret_file),
            env={},
        )
        assert by_url.returncode == 0, by_url.stderr
        assert _opened(sealed.unseal(_load_yaml(by_url.stdout), ring.private_keys)) == VALUES
    finally:
        await runner.cleanup()
