"""git-watcher against the real broker and real Git: pushes in, revisions and desired state out.

The service runs in-process on the real `Runtime` (HTTP on a free port, the real Kafka broker
with this test's topic prefix, spans to an in-memory exporter). The config repositories are
real bare repositories, read over file:// and over smart HTTP with basic authentication
(`git http-backend`); changes are made with the git CLI and pushed, as people do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitops_bus import tail
from gitops_config import ConfigError, GitopsConfig
from gitops_events import DesiredState, Envelope, Revision
from gitops_git_watcher import service
from gitops_git_watcher.settings import WatcherSettings
from gitops_git_watcher.webhooks import PROVIDERS, Provider, Push, parse_push
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing
from tests.support.git_server import GitHttpServer
from tests.support.kafka import KafkaTarget
from tests.support.processes import start_service
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
KUBECTL = REPO / ".cache" / "bin" / "kubectl"
SECRET = "webhook-secret-for-tests"

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: {greeting}
"""
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
"""


# --- Git ---------------------------------------------------------------------------------------


class ConfigRepo:
    """A bare 'remote' repository and a working clone that commits and pushes to it."""

    def __init__(self, base: Path, name: str = "config.git") -> None:
        self.bare = base / "remotes" / name
        self.work = base / "work" / name.removesuffix(".git")
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True)
        # HEAD names a branch that is never pushed, so that any branch may be deleted.
        _git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base)
        _git("init", "-q", "-b", "staging", cwd=self.work)
        _git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def write(self, path: str, text: str | bytes) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text)

    def symlink(self, path: str, to: str) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        target.symlink_to(to)

    def remove(self, path: str) -> None:
        _git("rm", "-q", "-r", "--", path, cwd=self.work)

    def commit(self, message: str) -> str:
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return self.head()

    def head(self) -> str:
        return _git("rev-parse", "HEAD", cwd=self.work)

    def push(self, branch: str = "staging", *, force: bool = False) -> None:
        _git(
            "push", "-q", *(["--force"] if force else []), "origin", f"HEAD:{branch}", cwd=self.work
        )

    def delete(self, branch: str) -> None:
        _git("push", "-q", "origin", f":{branch}", cwd=self.work)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev Eloper", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    config_repo = ConfigRepo(tmp_path)
    config_repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="hello"))
    config_repo.write("apps/demo/deployment.yaml", DEPLOYMENT)
    config_repo.write("README.md", "the demo config repo\n")
    config_repo.commit("demo app")
    config_repo.push("staging")
    config_repo.push("production")
    return config_repo


def _config(*apps: dict[str, Any]) -> GitopsConfig:
    return GitopsConfig.model_validate(
        {
            "clusters": {"local": {"kubeconfig": "/dev/null"}},
            "apps": list(apps),
        }
    )


def _app(
    url: str,
    *,
    name: str = "demo",
    path: str = "apps/demo",
    render: str = "plain",
    credentials: dict[str, str] | None = None,
) -> dict[str, Any]:
    app: dict[str, Any] = {
        "name": name,
        "repo": url,
        "path": path,
        "render": render,
        "environments": {
            "staging": {"branch": "staging", "cluster": "local", "namespace": f"{name}-staging"},
            "production": {
                "branch": "production",
                "cluster": "local",
                "namespace": f"{name}-production",
            },
        },
    }
    if credentials is not None:
        app["credentials"] = credentials
    return app


# --- The service -------------------------------------------------------------------------------


class Watcher:
    """A running git-watcher: its runtime, HTTP port and spans."""

    def __init__(self, runtime: Runtime, exporter: InMemorySpanExporter) -> None:
        self.runtime = runtime
        self.exporter = exporter

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.runtime.http_port}{path}"

    async def deliver(
        self,
        provider: str,
        payload: dict[str, Any] | bytes,
        *,
        secret: str | None = SECRET,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signed = _signature_headers(PROVIDERS[provider], body, secret) if secret else {}
        all_headers = {
            "Content-Type": "application/json",
            **_event_headers(provider),
            **signed,
            **(headers or {}),
        }
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.post(
                self.url(f"/webhooks/{provider}"), content=body, headers=all_headers
            )

    async def metric(self, name: str, **labels: str) -> float:
        async with httpx.AsyncClient(timeout=10) as client:
            text = (await client.get(self.url("/metrics"))).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


def _event_headers(provider: str) -> dict[str, str]:
    return {
        "github": {"X-GitHub-Event": "push"},
        "gitlab": {"X-Gitlab-Event": "Push Hook"},
        "gitea": {"X-Gitea-Event": "push"},
        "bitbucket": {"X-Event-Key": "repo:push"},
        "generic": {},
    }[provider]


def _signature_headers(provider: Provider, body: bytes, secret: str) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    value = {
        "github": f"sha256={digest}",
        "bitbucket": f"sha256={digest}",
        "generic": f"sha256={digest}",
        "gitea": digest,
        "gitlab": secret,
    }[provider.name]
    return {provider.signature_header: value}


def _push(url: str, branch: str = "staging", **extra: Any) -> dict[str, Any]:
    """A GitHub-style push payload naming the repository by its clone URL."""
    return {"ref": f"refs/heads/{branch}", "repository": {"clone_url": url}, **extra}


@asynccontextmanager
async def running(
    kafka: KafkaTarget, config: GitopsConfig, settings: WatcherSettings
) -> AsyncIterator[Watcher]:
    exporter = InMemorySpanExporter()
    # The publisher takes its tracer when the runtime is built, before `run()` sets tracing
    # up; set it up first so that its spans reach this test's exporter too.
    tracing.setup_tracing(service.SERVICE, exporter=exporter)
    runtime = Runtime(
        service.SERVICE, kafka.settings(GITOPS_HTTP_PORT=str(free_port())), span_exporter=exporter
    )
    service.build_with(runtime, config, settings)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    task = asyncio.create_task(runtime.run())

    def ready() -> bool:
        if task.done():
            task.result()  # raises what stopped the service
            raise AssertionError("git-watcher stopped while starting")
        return runtime.http_port is not None and all(runtime.readiness().values())

    try:
        await eventually(ready, timeout=60, what="git-watcher to be ready")
        yield Watcher(runtime, exporter)
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, timeout=30)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        root.handlers[:] = handlers
        root.setLevel(level)


def _settings(tmp_path: Path, **overrides: Any) -> WatcherSettings:
    values: dict[str, Any] = {
        "poll_interval_seconds": 3600,
        "webhook_secret": SECRET,
        "cache_dir": tmp_path / "cache",
        "kubectl": str(KUBECTL),
        "restore_idle_seconds": 1.0,
        **overrides,
    }
    return WatcherSettings.model_validate(values)


async def _events(kafka: KafkaTarget, topic: str) -> list[Envelope]:
    return [
        record.envelope
        async for record in tail(kafka.bootstrap_servers, [kafka.prefix + topic], idle_timeout=1.5)
        if record.envelope is not None
    ]


async def _revisions(kafka: KafkaTarget, subject: str = "demo/staging") -> list[Revision]:
    found = [e.data for e in await _events(kafka, "revisions") if e.subject == subject]
    return [r for r in found if isinstance(r, Revision)]


async def _desired(kafka: KafkaTarget, subject: str = "demo/staging") -> list[DesiredState]:
    found = [e.data for e in await _events(kafka, "desired") if e.subject == subject]
    return [d for d in found if isinstance(d, DesiredState)]


def _count(expected: int, probe: Callable[[], Any]) -> Callable[[], Any]:
    async def check() -> Any:
        found = await probe()
        return found if len(found) >= expected else None

    return check


# --- Webhooks and polling ----------------------------------------------------------------------


async def test_signed_webhook_publishes_revision_and_desired_state_in_one_trace(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    config = _config(_app(repo.url))
    async with running(kafka, config, _settings(tmp_path)) as watcher:
        first = repo.head()
        initial = await eventually(
            _count(1, lambda: _desired(kafka)), timeout=30, what="the initial desired state"
        )
        assert initial[0].revision == first

        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="bonjour"))
        second = repo.commit("say bonjour")
        repo.push("staging")
        watcher.exporter.clear()
        response = await watcher.deliver(
            "github", _push(repo.url), headers={"X-GitHub-Delivery": "d-1"}
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "processed", "revisions": 1}

        # 2xx means the events are in Kafka already: no waiting needed.
        revisions = await _revisions(kafka)
        desired = await _desired(kafka)
        detected = await watcher.metric(
            "gitops_revisions_detected_total", app="demo", environment="staging", trigger="webhook"
        )
        processed = await watcher.metric(
            "gitops_webhooks_total", provider="github", outcome="processed"
        )
        renders = await watcher.metric("gitops_render_duration_seconds_count")

    assert [r.revision for r in revisions] == [first, second]
    revision = revisions[-1]
    assert revision.previous_revision == first
    assert revision.change == "pushed"
    assert revision.trigger == "webhook"
    assert revision.repo == repo.url
    assert revision.branch == "staging"
    assert revision.author == "Dev Eloper <dev@example.com>"
    assert revision.message == "say bonjour"
    assert revision.render_error is None

    state = desired[-1]
    assert (state.revision, state.cluster, state.namespace) == (second, "local", "demo-staging")
    assert state.digest != initial[0].digest
    assert [(o.source, o.manifest["kind"]) for o in state.objects] == [
        ("apps/demo/configmap.yaml", "ConfigMap"),
        ("apps/demo/deployment.yaml", "Deployment"),
    ]
    assert state.objects[0].manifest["data"] == {"greeting": "bonjour"}
    assert (detected, processed) == (1, 1)
    assert renders >= 3  # staging and production at start, staging again

    spans = watcher.exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "webhook github")
    in_trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
    render = next(s for s in in_trace if s.name == "render")
    publishes = [s for s in in_trace if s.name.startswith("publish ")]
    assert root.parent is None
    assert render.parent is not None
    assert render.parent.span_id == root.context.span_id
    assert {s.name for s in publishes} == {
        "publish io.gitops.revision.v1",
        "publish io.gitops.desired.v1",
    }
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in publishes)
    assert {s.name for s in in_trace} == {"webhook github", "render", *(p.name for p in publishes)}
    envelopes = [e for e in await _events(kafka, "desired") if e.subject == "demo/staging"]
    assert envelopes[-1].traceparent is not None
    assert envelopes[-1].traceparent.split("-")[1] == format(root.context.trace_id, "032x")


async def test_polling_alone_follows_the_branch_and_skips_unchanged_renders(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    config = _config(_app(repo.url))
    async with running(kafka, config, _settings(tmp_path, poll_interval_seconds=0.3)) as watcher:
        await eventually(
            _count(1, lambda: _revisions(kafka)), timeout=30, what="the first polled revision"
        )
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="hallo"))
        changed = repo.commit("say hallo")
        repo.push("staging")
        revisions = await eventually(
            _count(2, lambda: _revisions(kafka)), timeout=30, what="the second polled revision"
        )
        assert revisions[-1].revision == changed
        assert revisions[-1].trigger == "poll"

        repo.write("README.md", "only the README changes\n")
        repo.commit("docs only")
        repo.push("staging")

        async def third_head_seen() -> bool:
            seen = await watcher.metric(
                "gitops_revisions_detected_total", environment="staging", trigger="poll"
            )
            return seen >= 3

        await eventually(third_head_seen, timeout=30, what="the README commit to be polled")
        revisions = await _revisions(kafka)
        desired = await _desired(kafka)
        spans = watcher.exporter.get_finished_spans()

    assert [r.revision for r in revisions][-1] == changed, "an unchanged render published"
    assert len(revisions) == 2
    assert len(desired) == 2
    root = next(s for s in spans if s.name == "poll demo/staging")
    render = next(
        s for s in spans if s.name == "render" and s.context.trace_id == root.context.trace_id
    )
    assert root.parent is None
    assert render.parent is not None
    assert render.parent.span_id == root.context.span_id


async def test_a_redelivered_webhook_gives_one_revision(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    async with running(kafka, _config(_app(repo.url)), _settings(tmp_path)) as watcher:
        await eventually(_count(1, lambda: _revisions(kafka)), timeout=30, what="start-up")
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="again"))
        repo.commit("again")
        repo.push("staging")
        delivery = {"X-GitHub-Delivery": "same-delivery"}
        payload = _push(repo.url)
        first = await watcher.deliver("github", payload, headers=delivery)
        second = await watcher.deliver("github", payload, headers=delivery)
        both = await asyncio.gather(
            *(watcher.deliver("github", payload, headers=delivery) for _ in range(3))
        )
    assert first.json() == {"status": "processed", "revisions": 1}
    assert second.json() == {"status": "processed", "revisions": 0}
    assert all(r.json() == {"status": "processed", "revisions": 0} for r in both)
    assert len(await _revisions(kafka)) == 2
    assert len(await _desired(kafka)) == 2


async def test_force_push_is_followed(kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path) -> None:
    async with running(kafka, _config(_app(repo.url)), _settings(tmp_path)) as watcher:
        await eventually(_count(1, lambda: _revisions(kafka)), timeout=30, what="start-up")
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="oops"))
        pushed = repo.commit("a mistake")
        repo.push("staging")
        assert (await watcher.deliver("github", _push(repo.url))).status_code == 200
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="fixed"))
        _git("commit", "-q", "-a", "--amend", "-m", "the mistake, rewritten", cwd=repo.work)
        rewritten = repo.head()
        repo.push("staging", force=True)
        response = await watcher.deliver("github", _push(repo.url, forced=True))
    assert response.json() == {"status": "processed", "revisions": 1}
    revision = (await _revisions(kafka))[-1]
    assert (revision.change, revision.revision, revision.previous_revision) == (
        "force-pushed",
        rewritten,
        pushed,
    )
    state = (await _desired(kafka))[-1]
    assert state.revision == rewritten
    assert state.objects[0].manifest["data"] == {"greeting": "fixed"}


async def test_a_deleted_branch_is_a_deleted_revision_and_never_a_desired_state(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    async with running(kafka, _config(_app(repo.url)), _settings(tmp_path)) as watcher:
        await eventually(_count(1, lambda: _desired(kafka)), timeout=30, what="start-up")
        before = await _desired(kafka)
        repo.delete("staging")
        response = await watcher.deliver("github", _push(repo.url, deleted=True))
        again = await watcher.deliver("github", _push(repo.url, deleted=True))
    assert response.json() == {"status": "processed", "revisions": 1}
    assert again.json() == {"status": "processed", "revisions": 0}
    revision = (await _revisions(kafka))[-1]
    assert (revision.change, revision.revision, revision.previous_revision) == (
        "deleted",
        None,
        before[0].revision,
    )
    assert revision.render_error is None
    assert await _desired(kafka) == before
    assert len(await _revisions(kafka, "demo/production")) == 1


async def test_each_render_failure_is_a_revision_naming_the_file_and_no_desired_state(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    bomb = ['a0: &a0 ["x","x","x","x","x","x","x","x","x"]'] + [
        f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)
    ]
    many = "---\n".join(
        CONFIGMAP.replace("settings", f"cm-{i}").format(greeting="x") for i in range(6)
    )
    cases: list[tuple[str, Callable[[], None], str]] = [
        (
            "MalformedYaml",
            lambda: repo.write("apps/demo/bad.yaml", "kind: [oops\n"),
            "apps/demo/bad.yaml",
        ),
        (
            "YamlAliasBomb",
            lambda: repo.write("apps/demo/bomb.yaml", "\n".join(bomb)),
            "apps/demo/bomb.yaml",
        ),
        (
            "DuplicateKey",
            lambda: repo.write(
                "apps/demo/dup.yaml", CONFIGMAP.format(greeting="a") + "kind: Secret\n"
            ),
            "apps/demo/dup.yaml",
        ),
        (
            "NotKubernetesObject",
            lambda: repo.write("apps/demo/values.yaml", "replicas: 3\n"),
            "apps/demo/values.yaml",
        ),
        (
            "SymlinkOutsideRepo",
            lambda: repo.symlink("apps/demo/passwd.yaml", "../../../../../../etc/passwd"),
            "apps/demo/passwd.yaml",
        ),
        (
            "SymlinkOutsideAppPath",
            lambda: repo.symlink("apps/demo/readme.yaml", "../../README.md"),
            "apps/demo/readme.yaml",
        ),
        (
            "FileTooLarge",
            lambda: repo.write("apps/demo/big.yaml", "# " + "x" * 5000 + "\n"),
            "apps/demo/big.yaml",
        ),
        ("TooManyObjects", lambda: repo.write("apps/demo/many.yaml", many), "apps/demo/many.yaml"),
    ]
    settings = _settings(tmp_path, max_file_bytes=4096, max_objects=5)
    async with running(kafka, _config(_app(repo.url)), settings) as watcher:
        initial = await eventually(_count(1, lambda: _desired(kafka)), timeout=30, what="start-up")
        for reason, make, source in cases:
            make()
            sha = repo.commit(f"break it: {reason}")
            repo.push("staging", force=True)
            response = await watcher.deliver("github", _push(repo.url))
            assert response.json() == {"status": "processed", "revisions": 1}, reason
            revision = (await _revisions(kafka))[-1]
            assert revision.revision == sha, reason
            assert revision.render_error is not None, reason
            assert (revision.render_error.reason, revision.render_error.source) == (reason, source)
            assert source in revision.render_error.message, revision.render_error.message
            _git("reset", "-q", "--hard", "HEAD~1", cwd=repo.work)
        failures = await watcher.metric(
            "gitops_render_failures_total", app="demo", environment="staging"
        )
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="repaired"))
        repaired = repo.commit("repaired")
        repo.push("staging", force=True)
        assert (await watcher.deliver("github", _push(repo.url))).status_code == 200
    desired = await _desired(kafka)
    assert [d.revision for d in desired] == [initial[0].revision, repaired]
    assert failures == len(cases)


async def test_every_provider_is_verified_its_own_way(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    payloads: dict[str, dict[str, Any]] = {
        "github": _push(repo.url),
        "gitea": _push(repo.url),
        "gitlab": {"ref": "refs/heads/staging", "project": {"git_http_url": repo.url}},
        "bitbucket": {
            "push": {"changes": [{"new": {"type": "branch", "name": "staging"}}]},
            "repository": {"links": {"html": {"href": repo.url}}},
        },
        "generic": {"repository": repo.url, "ref": "staging"},
    }
    async with running(kafka, _config(_app(repo.url)), _settings(tmp_path)) as watcher:
        await eventually(_count(1, lambda: _revisions(kafka)), timeout=30, what="start-up")
        for published, (provider, payload) in enumerate(payloads.items(), start=1):
            repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting=provider))
            repo.commit(f"via {provider}")
            repo.push("staging")
            unsigned = await watcher.deliver(provider, payload, secret=None)
            forged = await watcher.deliver(provider, payload, secret="not-the-secret")
            assert (unsigned.status_code, forged.status_code) == (401, 401), provider
            assert len(await _revisions(kafka)) == published, f"{provider}: published unsigned"
            response = await watcher.deliver(provider, payload)
            assert response.json() == {"status": "processed", "revisions": 1}, provider
        unauthorized = await watcher.metric("gitops_webhooks_total", outcome="unauthorized")
    revisions = await _revisions(kafka)
    assert [r.message for r in revisions[1:]] == [f"via {p}" for p in payloads]
    assert all(r.trigger == "webhook" for r in revisions[1:])
    assert unauthorized == 2 * len(payloads)


async def test_bad_deliveries_are_refused_and_publish_nothing(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, max_webhook_bytes=4096)
    async with running(kafka, _config(_app(repo.url)), settings) as watcher:
        await eventually(_count(1, lambda: _revisions(kafka)), timeout=30, what="start-up")
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="unseen"))
        repo.commit("must not be published by a bad delivery")
        repo.push("staging")
        oversize = await watcher.deliver("github", _push(repo.url, padding="x" * 5000))
        chunked = await _chunked(watcher, b"{" + b" " * 8192 + b"}")
        malformed = await watcher.deliver("github", b"{not json")
        not_object = await watcher.deliver("github", b"[1, 2]")
        no_repo = await watcher.deliver("github", {"ref": "refs/heads/staging"})
        unknown = await watcher.deliver("github", _push("https://example.com/other/repo.git"))
        tag = await watcher.deliver("github", {**_push(repo.url), "ref": "refs/tags/v1"})
        untracked = await watcher.deliver("github", _push(repo.url, branch="feature"))
        ping = await watcher.deliver("github", {"zen": "hi"}, headers={"X-GitHub-Event": "ping"})
        no_provider = await watcher.deliver("github", _push(repo.url))
        async with httpx.AsyncClient() as client:
            nowhere = await client.post(watcher.url("/webhooks/svn"), content=b"{}")
    assert oversize.status_code == 413
    assert chunked.status_code == 413
    assert (malformed.status_code, not_object.status_code, no_repo.status_code) == (400, 400, 400)
    for ignored in (unknown, tag, untracked, ping):
        assert ignored.status_code == 202, ignored.text
        assert ignored.json()["status"] == "ignored"
    assert nowhere.status_code == 404
    # Only the last, well-formed delivery published the commit.
    assert no_provider.json() == {"status": "processed", "revisions": 1}
    assert len(await _revisions(kafka)) == 2


async def _chunked(watcher: Watcher, body: bytes) -> httpx.Response:
    async def stream() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1024):
            yield body[start : start + 1024]

    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        **_signature_headers(PROVIDERS["github"], body, SECRET),
    }
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(watcher.url("/webhooks/github"), content=stream(), headers=headers)


async def test_webhooks_are_refused_when_no_secret_is_configured(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, webhook_secret=None)
    async with running(kafka, _config(_app(repo.url)), settings) as watcher:
        response = await watcher.deliver("generic", {"repository": repo.url}, secret=None)
    assert response.status_code == 503
    assert "no webhook secret" in response.json()["error"]


async def test_a_restart_publishes_nothing_new(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    config = _config(_app(repo.url))
    async with running(kafka, config, _settings(tmp_path)):
        await eventually(_count(1, lambda: _desired(kafka)), timeout=30, what="first run")
    # A fresh cache too: the mirror is rebuilt, the published state comes back from Kafka.
    async with running(kafka, config, _settings(tmp_path, cache_dir=tmp_path / "c2")) as watcher:
        response = await watcher.deliver("github", _push(repo.url))
    assert response.json() == {"status": "processed", "revisions": 0}
    assert len(await _revisions(kafka)) == 1
    assert len(await _desired(kafka)) == 1


async def test_kustomize_apps_share_the_repository_mirror(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    repo.write("kustomize/base/kustomization.yaml", "resources: [configmap.yaml]\n")
    repo.write("kustomize/base/configmap.yaml", CONFIGMAP.format(greeting="kustomized"))
    repo.write("kustomize/overlay/kustomization.yaml", "resources: [../base]\nnamePrefix: k-\n")
    repo.commit("a kustomize app")
    repo.push("staging")
    config = _config(
        _app(repo.url), _app(repo.url, name="kz", path="kustomize/overlay", render="kustomize")
    )
    async with running(kafka, config, _settings(tmp_path)):
        desired = await eventually(
            _count(1, lambda: _desired(kafka, "kz/staging")),
            timeout=30,
            what="the kustomize app's desired state",
        )
        assert len(await _desired(kafka, "demo/staging")) == 1
    objects = desired[0].objects
    assert [(o.source, o.manifest["metadata"]["name"]) for o in objects] == [
        ("kustomize/base/configmap.yaml", "k-settings")
    ]
    assert len(list((tmp_path / "cache").iterdir())) == 1


async def test_gitops_run_git_watcher_reads_its_settings_from_the_environment(
    kafka: KafkaTarget, repo: ConfigRepo, tmp_path: Path
) -> None:
    config = tmp_path / "gitops.yaml"
    config.write_text(json.dumps(_config(_app(repo.url)).model_dump(mode="json")))
    env = {
        **kafka.env(),
        "GITOPS_CONFIG": str(config),
        "GITOPS_WEBHOOK_SECRET": SECRET,
        "GITOPS_POLL_INTERVAL_SECONDS": "3600",
        "GITOPS_GIT_CACHE_DIR": str(tmp_path / "process-cache"),
        "GITOPS_KUBECTL": str(KUBECTL),
    }
    process = start_service("git-watcher", free_port(), env, tmp_path / "git-watcher.log")
    try:
        await eventually(process.ready, timeout=60, what="git-watcher /readyz")
        await eventually(_count(1, lambda: _desired(kafka)), timeout=30, what="the first poll")
        repo.write("apps/demo/configmap.yaml", CONFIGMAP.format(greeting="from a process"))
        pushed = repo.commit("from a process")
        repo.push("staging")
        body = json.dumps(_push(repo.url)).encode()
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                process.url("/webhooks/github"),
                content=body,
                headers={
                    "X-GitHub-Event": "push",
                    **_signature_headers(PROVIDERS["github"], body, SECRET),
                },
            )
    finally:
        code = process.terminate()
    assert response.json() == {"status": "processed", "revisions": 1}, process.output()[-3000:]
    assert code == 0, process.output()[-3000:]
    assert (await _desired(kafka))[-1].revision == pushed
    assert list((tmp_path / "process-cache").iterdir())
    assert SECRET not in process.output()


# --- Smart HTTP with credentials ---------------------------------------------------------------


@pytest.fixture
def git_server(repo: ConfigRepo) -> Iterator[GitHttpServer]:
    server = GitHttpServer(repo.bare.parent, "bot", "t0ken-s3cret")
    server.start()
    yield server
    server.stop()


async def test_https_credentials_are_used_by_reference_and_never_leak(
    kafka: KafkaTarget,
    repo: ConfigRepo,
    git_server: GitHttpServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = git_server.url(repo.bare.name)
    other_host = url.replace("127.0.0.1", "localhost")
    monkeypatch.setenv("TEST_GIT_CREDENTIALS", "bot:t0ken-s3cret")
    monkeypatch.setenv("TEST_WRONG_CREDENTIALS", "bot:wrong-s3cret")
    config = _config(
        _app(url, credentials={"env": "TEST_GIT_CREDENTIALS"}),
        _app(other_host, name="denied", credentials={"env": "TEST_WRONG_CREDENTIALS"}),
    )
    async with running(kafka, config, _settings(tmp_path)) as watcher:
        desired = await eventually(
            _count(1, lambda: _desired(kafka)), timeout=30, what="a desired state fetched over HTTP"
        )
        denied = await watcher.deliver("github", _push(other_host))
        failures = await watcher.metric("gitops_git_fetch_failures_total")
    logs = capsys.readouterr().err
    assert desired[0].repo == url
    assert [o.manifest["kind"] for o in desired[0].objects] == ["ConfigMap", "Deployment"]
    first_request = git_server.requests[0]
    assert not first_request.authorised, "credentials must be sent only when asked for"
    assert any(r.authorised and r.user == "bot" for r in git_server.requests)
    assert not any(r.authorised for r in git_server.requests if r.host.startswith("localhost"))
    assert denied.status_code == 502
    assert "s3cret" not in denied.text
    assert failures >= 2  # the initial poll and the webhook
    assert await _desired(kafka, "denied/staging") == []
    for envelope in await _events(kafka, "revisions") + await _events(kafka, "desired"):
        assert "s3cret" not in envelope.data.model_dump_json()
    assert "cannot fetch repository" in logs, "the test must see the service's logs"
    assert "s3cret" not in logs


# --- Payload parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "payload", "urls", "branches"),
    [
        (
            "github",
            {
                "ref": "refs/heads/main",
                "repository": {
                    "clone_url": "https://github.com/o/r.git",
                    "ssh_url": "git@github.com:o/r.git",
                },
            },
            ("https://github.com/o/r.git", "git@github.com:o/r.git"),
            {"main"},
        ),
        (
            "gitlab",
            {
                "ref": "refs/heads/main",
                "project": {
                    "git_ssh_url": "git@gitlab.com:o/r.git",
                    "web_url": "https://gitlab.com/o/r",
                },
            },
            ("git@gitlab.com:o/r.git", "https://gitlab.com/o/r"),
            {"main"},
        ),
        (
            "gitea",
            {"ref": "refs/tags/v1", "repository": {"html_url": "https://gitea.io/o/r"}},
            ("https://gitea.io/o/r",),
            set(),
        ),
        (
            "bitbucket",
            {
                "push": {
                    "changes": [
                        {"new": {"type": "branch", "name": "a"}},
                        {"old": {"type": "branch", "name": "b"}, "new": None},
                    ]
                },
                "repository": {"full_name": "o/r"},
            },
            ("https://bitbucket.org/o/r",),
            {"a", "b"},
        ),
        ("generic", {"repository": {"url": "/srv/git/r.git"}}, ("/srv/git/r.git",), None),
    ],
)
def test_each_provider_payload_names_repository_and_branches(
    provider: str, payload: dict[str, Any], urls: tuple[str, ...], branches: set[str] | None
) -> None:
    headers = {"Content-Type": "application/json", **_event_headers(provider)}
    push = parse_push(PROVIDERS[provider], json.dumps(payload).encode(), headers)
    assert isinstance(push, Push)
    assert push.repository_urls == urls
    assert push.branches == (None if branches is None else frozenset(branches))


def test_settings_come_from_the_environment_and_errors_name_the_variable() -> None:
    settings = WatcherSettings.from_environ(
        {
            "GITOPS_WEBHOOK_SECRET": "s3cret",
            "GITOPS_POLL_INTERVAL_SECONDS": "15",
            "GITOPS_KUBECTL": "",  # empty counts as unset
            "UNRELATED": "x",
        }
    )
    assert settings.poll_interval_seconds == 15
    assert settings.kubectl == "kubectl"
    assert settings.webhook_secret is not None
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        WatcherSettings.from_environ(
            {"GITOPS_POLL_INTERVAL_SECONDS": "-1", "GITOPS_WEBHOOK_SECRET": "s3cret"}
        )
    assert "GITOPS_POLL_INTERVAL_SECONDS" in str(caught.value)
    assert "s3cret" not in str(caught.value)
