"""Sealed secrets from Git to the cluster: sealed by `gitops seal`, opened only by the deployer.

A Secret is sealed with the CLI (a separate process) against the certificate the running
deployer serves at /v1/cert.pem, committed and pushed to a real Git repository on disk,
rendered by git-watcher (a service process polling that repository), carried over the real
Kafka broker as a SealedSecret, and opened by the deployer (in-process, on the Runtime the
service process uses) into a Secret on the real API server. The tests check the data that
arrives for each scope, that a value which does not open fails its revision with nothing
applied, that values sealed before a key renewal still open, and that the plaintext appears
nowhere else: in no record of any topic, in no log line of the deployer, in no span.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from ruamel.yaml import YAML

from gitops_bus import list_topics, tail
from gitops_config import ConfigError, GitopsConfig, load_config
from gitops_deployer import service
from gitops_deployer.settings import DeployerSettings
from gitops_events import DeployEvent, DeployPhase, DesiredState, ObjectRef
from gitops_kube import applying
from gitops_kube.clients import ApiClient, connect, create_namespace
from gitops_kube.discovery import ResourceType
from gitops_kube.sessions import Target
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_sealing import certs, keys, sealed
from gitops_telemetry import tracing
from tests.support.kafka import KafkaTarget
from tests.support.processes import ServiceProcess, run_cli, start_service
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

APP, ENV = "vault", "staging"
SECRET = ResourceType("", "v1", "Secret", "secrets", namespaced=True)
CONFIG_MAP = ResourceType("", "v1", "ConfigMap", "configmaps", namespaced=True)

CONFIG = """\
version: 1
clusters:
  local:
    kubeconfig: {kubeconfig}
apps:
  - name: {app}
    repo: {repo}
    path: deploy
    environments:
      {env}:
        branch: staging
        cluster: local
        namespace: {namespace}
        health_timeout_seconds: 60
"""

SETTINGS_FILE = "deploy/settings.yaml"


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _canary() -> str:
    """A value that must never be seen outside the Secret on the API server."""
    return f"canary-{uuid.uuid4().hex}"


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


# --- manifests -----------------------------------------------------------------------------------


def _secret(name: str, namespace: str | None, values: Mapping[str, str]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": {"team": "vault"}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": dict(values),
    }


def _settings_map(level: str) -> str:
    return (
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  level: '{level}'\n"
    )


def _load_yaml(text: str) -> dict[str, Any]:
    document = YAML(typ="safe", pure=True).load(text)
    assert isinstance(document, dict)
    return document


def _dump_yaml(document: Mapping[str, Any]) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(dict(document), out)
    return out.getvalue()


def _opened(secret: Mapping[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


# --- Git -----------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev Eloper", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class ConfigRepo:
    """A bare repository (what git-watcher reads over file://) and a clone that pushes to it."""

    def __init__(self, base: Path) -> None:
        self.bare = base / "remote" / "vault-config.git"
        self.work = base / "work"
        self.bare.parent.mkdir(parents=True)
        self.work.mkdir()
        _git("init", "-q", "--bare", "-b", "staging", str(self.bare), cwd=base)
        _git("init", "-q", "-b", "staging", cwd=self.work)
        _git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def release(self, files: Mapping[str, str | None], message: str) -> str:
        """Write (or, for None, delete) files, commit, push to staging; the commit's SHA."""
        for path, text in files.items():
            target = self.work / path
            if text is None:
                target.unlink(missing_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "-m", message, cwd=self.work)
        _git("push", "-q", "origin", "HEAD:staging", cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)


# --- the running system --------------------------------------------------------------------------


@dataclass
class Stack:
    """git-watcher and the deployer on one broker and one cluster, and what they emitted."""

    kafka: KafkaTarget
    runtime: Runtime
    spans: InMemorySpanExporter
    repo: ConfigRepo
    namespace: str
    sealing_namespace: str
    watcher: ServiceProcess
    capfd: pytest.CaptureFixture[str]
    events: list[DeployEvent] = field(default_factory=list)
    _log: list[str] = field(default_factory=list)

    @property
    def cert_url(self) -> str:
        return f"http://127.0.0.1:{self.runtime.http_port}{certs.CERT_PATH}"

    async def cert(self) -> bytes:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(self.cert_url)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"] == certs.PEM_CONTENT_TYPE
        return response.content

    async def seal(
        self, secret: Mapping[str, Any], *, scope: str, tmp: Path, cert: Path | None = None
    ) -> str:
        """`gitops seal` as a user runs it; the SealedSecret YAML.

        The certificate comes from the deployer's URL, or from a file that holds one it served.
        """
        source = tmp / f"{_unique('secret')}.yaml"
        source.write_text(_dump_yaml(secret))
        where = str(cert) if cert is not None else self.cert_url
        result = await asyncio.to_thread(
            run_cli, "seal", "--cert", where, "--scope", scope, "-f", str(source), env={}
        )
        source.unlink()
        assert result.returncode == 0, result.stderr
        return result.stdout

    async def wait_for(
        self, phase: DeployPhase, revision: str, *, reason: str | None = None, timeout: float = 90
    ) -> DeployEvent:
        def found() -> DeployEvent | None:
            return next(
                (
                    e
                    for e in self.events
                    if e.phase == phase
                    and e.revision == revision
                    and (reason is None or e.reason == reason)
                ),
                None,
            )

        try:
            event: DeployEvent | None = await eventually(
                found, timeout=timeout, what=f"{phase} {reason or ''} of {revision}"
            )
        except AssertionError as exc:
            seen = [(e.revision, e.phase.value, e.reason, e.message) for e in self.events]
            raise AssertionError(f"{exc}; deploy events: {seen}") from None
        assert event is not None
        return event

    def log(self) -> str:
        """What the deployer logged so far (the test process's standard error)."""
        self._log.append(self.capfd.readouterr().err)
        return "".join(self._log)


async def _collect(kafka: KafkaTarget, into: list[DeployEvent]) -> None:
    async for record in tail(
        kafka.bootstrap_servers, [kafka.prefix + "deploy"], follow=True, idle_timeout=0.2
    ):
        if record.envelope is not None and isinstance(record.envelope.data, DeployEvent):
            into.append(record.envelope.data)


@contextlib.contextmanager
def _restored_process_state() -> Iterator[None]:
    """Undo what Runtime.run does to the process: root log handlers and signal handlers."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        root.handlers[:] = handlers
        root.setLevel(level)


@contextlib.asynccontextmanager
async def running_stack(
    kafka: KafkaTarget,
    kube: ControlPlane,
    admin: ApiClient,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    *,
    renew_interval_seconds: float | None = None,
) -> AsyncIterator[Stack]:
    namespace = _unique("sealed")
    await create_namespace(admin, namespace)
    sealing_namespace = _unique("gitops-keys")  # made by the deployer itself
    repo = ConfigRepo(tmp_path / "git")
    repo.release({SETTINGS_FILE: _settings_map("0")}, "start")
    config_path = tmp_path / "gitops.yaml"
    config_path.write_text(
        CONFIG.format(
            kubeconfig=kube.kubeconfig, app=APP, env=ENV, repo=repo.url, namespace=namespace
        )
    )
    environ = {"GITOPS_SEALING_NAMESPACE": sealing_namespace}
    if renew_interval_seconds is not None:
        environ["GITOPS_SEALING_RENEW_INTERVAL_SECONDS"] = str(renew_interval_seconds)

    spans = InMemorySpanExporter()
    # The bus binds its tracer when a consumer is built, before Runtime.run sets tracing up.
    tracing.setup_tracing(service.SERVICE, exporter=spans)
    runtime = Runtime(
        service.SERVICE,
        kafka.settings(GITOPS_HTTP_PORT=str(free_port()), KUBECONFIG=str(kube.kubeconfig)),
        span_exporter=spans,
    )
    service.build_with(runtime, load_config(config_path), DeployerSettings.from_environ(environ))
    watcher_env = {
        **kafka.env(),
        "GITOPS_CONFIG": str(config_path),
        "GITOPS_POLL_INTERVAL_SECONDS": "0.5",
        "GITOPS_RESTORE_IDLE_SECONDS": "1",
        "GITOPS_GIT_CACHE_DIR": str(tmp_path / "git-cache"),
    }
    with _restored_process_state():
        running = asyncio.create_task(runtime.run())
        watcher = start_service("git-watcher", free_port(), watcher_env, tmp_path / "gw.log")
        collector: asyncio.Task[None] | None = None
        try:

            def deployer_ready() -> bool:
                if running.done():
                    running.result()
                    raise AssertionError("the deployer stopped while starting")
                return all(runtime.readiness().values())

            await eventually(deployer_ready, timeout=90, what="the deployer to be ready")
            await eventually(
                lambda: asyncio.to_thread(watcher.ready), timeout=90, what="git-watcher ready"
            )
            stack = Stack(kafka, runtime, spans, repo, namespace, sealing_namespace, watcher, capfd)
            collector = asyncio.create_task(_collect(kafka, stack.events))
            yield stack
        finally:
            if collector is not None:
                collector.cancel()
                await asyncio.gather(collector, return_exceptions=True)
            await asyncio.to_thread(watcher.terminate)
            runtime.request_stop()
            await asyncio.wait_for(running, 30)


@pytest.fixture
async def admin(kube: ControlPlane) -> AsyncIterator[ApiClient]:
    async with connect(kube.kubeconfig) as api:
        yield api


# --- where the plaintext must not be -------------------------------------------------------------


async def _raw_records(bootstrap_servers: str, topics: Sequence[str]) -> list[Any]:
    """Every record of the topics as stored (value bytes, key, headers), to their end offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        # Without a group, a subscription is given every partition once metadata arrives.
        consumer.subscribe(list(topics))

        def assigned() -> set[TopicPartition] | None:
            assignment: set[TopicPartition] = consumer.assignment()
            return assignment if {tp.topic for tp in assignment} >= set(topics) else None

        partitions = await eventually(assigned, timeout=30, what="every partition of the topics")
        assert partitions is not None
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(partitions))
        records: list[Any] = []
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                return records
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()


async def _assert_nowhere_but_the_cluster(stack: Stack, plaintexts: Sequence[str]) -> None:
    needles = [n for value in plaintexts for n in (value, _b64(value))]
    bootstrap, prefix = stack.kafka.bootstrap_servers, stack.kafka.prefix

    # Every record of every topic of this test, decoded as services read them ...
    topics = sorted(t for t in await list_topics(bootstrap) if t.startswith(prefix))
    decoded = [record async for record in tail(bootstrap, topics)]
    assert all(record.error is None for record in decoded)
    sealed_in_transit = [
        obj.manifest
        for record in decoded
        if record.envelope is not None and isinstance(record.envelope.data, DesiredState)
        for obj in record.envelope.data.objects
        if sealed.is_sealed_secret(obj.manifest)
    ]
    assert sealed_in_transit, "no SealedSecret travelled: the search below would prove nothing"
    # ... and as stored: the raw bytes of values, keys and headers, unknown fields included.
    raw = await _raw_records(bootstrap, topics)
    assert len(raw) >= len(decoded)  # read after: records may have been added meanwhile
    for record in raw:
        stored = b"".join(
            [record.value or b"", record.key or b"", *(value for _, value in record.headers or [])]
        )
        for needle in needles:
            assert needle.encode() not in stored, f"a plaintext value in {record.topic}"

    spans = stack.spans.get_finished_spans()
    assert any(span.name == "unseal" for span in spans)
    for span in spans:
        text = span.to_json()
        for needle in needles:
            assert needle not in text, f"a plaintext value in span {span.name!r}"

    deployer_log = stack.log()
    assert "sealing keys in namespace" in deployer_log, "the deployer's log was not captured"
    for needle in needles:
        assert needle not in deployer_log, "a plaintext value in the deployer's log"
        assert needle not in stack.watcher.output(), "a plaintext value in git-watcher's log"


# --- the tests -----------------------------------------------------------------------------------


async def test_sealed_secrets_of_every_scope_deploy_as_their_original_data(
    kafka: KafkaTarget,
    kube: ControlPlane,
    admin: ApiClient,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    canary = _canary()
    values = {"password": canary, "note": "two lines\nand ünïcödé"}
    async with running_stack(kafka, kube, admin, tmp_path, capfd) as stack:
        ns = stack.namespace
        strict = await stack.seal(_secret("db-strict", ns, values), scope="strict", tmp=tmp_path)
        namespace_wide = _load_yaml(
            await stack.seal(
                _secret("db-namespace", ns, values), scope="namespace-wide", tmp=tmp_path
            )
        )
        # Without a namespace of its own it opens, and lands, in the environment's namespace.
        del namespace_wide["metadata"]["namespace"]
        cluster_wide = await stack.seal(
            _secret("db-cluster", None, values), scope="cluster-wide", tmp=tmp_path
        )
        files = {
            "deploy/db-strict.yaml": strict,
            "deploy/db-namespace.yaml": _dump_yaml(namespace_wide),
            "deploy/db-cluster.yaml": cluster_wide,
            SETTINGS_FILE: _settings_map("1"),
        }
        for text in files.values():
            assert canary not in text
            assert _b64(canary) not in text

        revision = stack.repo.release(files, "sealed database credentials, three scopes")
        healthy = await stack.wait_for(DeployPhase.HEALTHY, revision)

        assert (healthy.applied, healthy.unchanged) == (4, 0)
        for name in ("db-strict", "db-namespace", "db-cluster"):
            secret = await applying.get(admin, SECRET, name, ns)
            assert secret is not None, name
            assert _opened(secret) == values, name
            assert secret["type"] == "Opaque"
            labels = secret["metadata"]["labels"]
            assert labels["team"] == "vault"
            assert (labels["gitops.io/app"], labels["gitops.io/environment"]) == (APP, ENV)
            assert secret["metadata"]["annotations"]["gitops.io/revision"] == revision
            managers = {f["manager"] for f in secret["metadata"]["managedFields"]}
            assert managers == {"gitops-deployer"}
        inventory = await applying.get(admin, CONFIG_MAP, f"gitops-inventory.{APP}.{ENV}", ns)
        assert inventory is not None
        assert '"kind":"Secret"' in inventory["data"]["objects"]
        assert "SealedSecret" not in inventory["data"]["objects"]

        # Removing a SealedSecret from Git prunes its Secret like any other owned object.
        pruned_revision = stack.repo.release({"deploy/db-cluster.yaml": None}, "drop one")
        pruned = await stack.wait_for(DeployPhase.PRUNED, pruned_revision)
        assert pruned.pruned == 1
        assert await applying.get(admin, SECRET, "db-cluster", ns) is None
        await stack.wait_for(DeployPhase.HEALTHY, pruned_revision)

        await _assert_nowhere_but_the_cluster(stack, [canary])


def _tampered(sealed_secret: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The SealedSecret with the last byte of one value's AES-GCM ciphertext flipped."""
    document = _load_yaml(_dump_yaml(sealed_secret))
    ciphertext = bytearray(base64.b64decode(document["spec"]["encryptedData"][key]))
    ciphertext[-1] ^= 0x01
    document["spec"]["encryptedData"][key] = base64.b64encode(bytes(ciphertext)).decode()
    return document


def _sealed_with_a_foreign_key(secret: Mapping[str, Any]) -> dict[str, Any]:
    """Sealed for another cluster: a key pair the deployer has never held."""
    settings = keys.KeySettings(key_size=2048)
    private_key, _ = keys.generate_key_pair(settings, keys.utc_now())
    return sealed.seal_secret(secret, private_key.public_key())


async def test_a_sealed_secret_that_does_not_open_fails_its_revision_and_applies_nothing(
    kafka: KafkaTarget,
    kube: ControlPlane,
    admin: ApiClient,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    canary = _canary()
    values = {"password": canary}
    async with running_stack(kafka, kube, admin, tmp_path, capfd) as stack:
        ns = stack.namespace
        strict = _load_yaml(
            await stack.seal(_secret("db", ns, values), scope="strict", tmp=tmp_path)
        )
        good = stack.repo.release(
            {"deploy/db.yaml": _dump_yaml(strict), SETTINGS_FILE: _settings_map("1")}, "good"
        )
        await stack.wait_for(DeployPhase.HEALTHY, good)

        moved = _load_yaml(_dump_yaml(strict))
        moved["metadata"]["name"] = "db-moved"
        bad_revisions = [
            ("moved", "deploy/db-moved.yaml", moved, "db-moved", "no kept key opens it"),
            ("tampered", "deploy/db.yaml", _tampered(strict, "password"), "db", "altered"),
            (
                "foreign key",
                "deploy/db.yaml",
                _sealed_with_a_foreign_key(_secret("db", ns, values)),
                "db",
                "no kept key opens it",
            ),
        ]
        for level, (what, path, document, name, cause) in enumerate(bad_revisions, start=2):
            files: dict[str, str | None] = {"deploy/db.yaml": None, "deploy/db-moved.yaml": None}
            files[path] = _dump_yaml(document)
            files[SETTINGS_FILE] = _settings_map(str(level))
            revision = stack.repo.release(files, f"a SealedSecret that does not open: {what}")

            failed = await stack.wait_for(DeployPhase.FAILED, revision, reason="UnsealFailed")

            assert failed.source == path, what
            assert failed.involved_object == ObjectRef(
                api_version="bitnami.com/v1alpha1", kind="SealedSecret", name=name, namespace=ns
            ), what
            assert f"SealedSecret {ns}/{name}" in failed.message, what
            assert path in failed.message, what
            assert cause in failed.message, what
            assert "nothing was applied" in failed.message, what
            assert failed.applied == 0, what
            phases = [e.phase for e in stack.events if e.revision == revision]
            assert phases == [DeployPhase.STARTED, DeployPhase.FAILED], what

            settings = await applying.get(admin, CONFIG_MAP, "settings", ns)
            assert settings is not None
            assert settings["data"] == {"level": "1"}, what
            assert settings["metadata"]["annotations"]["gitops.io/revision"] == good, what
            assert await applying.get(admin, SECRET, "db-moved", ns) is None, what
            kept = await applying.get(admin, SECRET, "db", ns)
            assert kept is not None, what
            assert _opened(kept) == values, what
            assert kept["metadata"]["annotations"]["gitops.io/revision"] == good, what

        await _assert_nowhere_but_the_cluster(stack, [canary])


async def test_values_sealed_before_a_key_renewal_still_deploy_and_new_seals_use_the_new_key(
    kafka: KafkaTarget,
    kube: ControlPlane,
    admin: ApiClient,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    old_canary, new_canary = _canary(), _canary()
    async with running_stack(
        kafka, kube, admin, tmp_path, capfd, renew_interval_seconds=15
    ) as stack:
        ns = stack.namespace
        # Sealed with certificate files, each as served then: a renewal may come at any time.
        first_cert = await stack.cert()
        (tmp_path / "first.pem").write_bytes(first_cert)
        old = await stack.seal(
            _secret("old", ns, {"v": old_canary}),
            scope="strict",
            tmp=tmp_path,
            cert=tmp_path / "first.pem",
        )
        first = stack.repo.release({"deploy/old.yaml": old}, "sealed with the first key")
        await stack.wait_for(DeployPhase.HEALTHY, first)

        async def renewed() -> bytes | None:
            cert = await stack.cert()
            return cert if cert != first_cert else None

        second_cert = await eventually(renewed, timeout=90, what="a renewed certificate")
        assert second_cert is not None
        (tmp_path / "second.pem").write_bytes(second_cert)
        new = await stack.seal(
            _secret("new", ns, {"v": new_canary}),
            scope="strict",
            tmp=tmp_path,
            cert=tmp_path / "second.pem",
        )
        second = stack.repo.release({"deploy/new.yaml": new}, "sealed with the renewed key")
        healthy = await stack.wait_for(DeployPhase.HEALTHY, second)

        # Every object is written again (a new revision annotation): the old value was opened
        # again, with the kept old key.
        assert healthy.applied == 3
        for name, value in (("old", old_canary), ("new", new_canary)):
            secret = await applying.get(admin, SECRET, name, ns)
            assert secret is not None
            assert _opened(secret) == {"v": value}
            assert secret["metadata"]["annotations"]["gitops.io/revision"] == second

        # The keys in the cluster: both pairs kept; each value opens only with its own pair.
        ring = await keys.load_keys(admin, stack.sealing_namespace)
        by_cert = {pair.certificate_pem(): pair for pair in ring.pairs}
        assert len(ring.pairs) >= 2
        first_pair, second_pair = by_cert[first_cert], by_cert[second_cert]
        assert second_pair.created > first_pair.created
        old_sealed, new_sealed = _load_yaml(old), _load_yaml(new)
        assert _opened(sealed.unseal(old_sealed, [first_pair.private_key])) == {"v": old_canary}
        assert _opened(sealed.unseal(new_sealed, [second_pair.private_key])) == {"v": new_canary}
        with pytest.raises(sealed.UnsealError):
            sealed.unseal(new_sealed, [first_pair.private_key])
        with pytest.raises(sealed.UnsealError):
            sealed.unseal(old_sealed, [second_pair.private_key])

        await _assert_nowhere_but_the_cluster(stack, [old_canary, new_canary])


def test_settings_are_read_from_the_environment_once_and_checked() -> None:
    settings = DeployerSettings.from_environ(
        {
            "GITOPS_SEALING_NAMESPACE": "platform-keys",
            "GITOPS_SEALING_CLUSTER": "",
            "GITOPS_SEALING_RENEW_INTERVAL_SECONDS": "3600",
        }
    )
    assert settings.sealing_namespace == "platform-keys"
    assert settings.sealing_cluster is None
    key_settings = settings.key_settings()
    assert key_settings.namespace == "platform-keys"
    assert key_settings.renew_interval.total_seconds() == 3600
    assert DeployerSettings.from_environ({}).sealing_namespace == "gitops-system"

    with pytest.raises(ConfigError, match="GITOPS_SEALING_NAMESPACE") as invalid:
        DeployerSettings.from_environ({"GITOPS_SEALING_NAMESPACE": "Not_A_Name"})
    assert "Not_A_Name" not in str(invalid.value).replace("'Not_A_Name' is not", "")

    config = GitopsConfig.model_validate(
        {"clusters": {"local": {"kubeconfig": "/etc/gitops/kubeconfig"}}, "apps": []}
    )
    named = DeployerSettings.from_environ({"GITOPS_SEALING_CLUSTER": "local"})
    assert named.sealing_target(config, None) == (
        "local",
        Target(Path("/etc/gitops/kubeconfig")),
    )
    unset = DeployerSettings.from_environ({})
    assert unset.sealing_target(config, "/etc/gitops/default-kubeconfig")[1] == Target(
        Path("/etc/gitops/default-kubeconfig")
    )
    with pytest.raises(ConfigError, match=r"GITOPS_SEALING_CLUSTER.*no cluster 'remote'"):
        DeployerSettings.from_environ({"GITOPS_SEALING_CLUSTER": "remote"}).sealing_target(
            config, None
        )
