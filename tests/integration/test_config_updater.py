"""config-updater against the real broker and real Git: image events and promotions to commits.

The service runs in-process on the real `Runtime` (HTTP on a free port, the real Kafka broker
with this test's topic prefix, spans to an in-memory exporter). The config repository is a real
bare repository served over smart HTTP with basic authentication (`git http-backend`), so the
updater clones, fetches and pushes exactly as against a Git host that wants a token; the test
side makes its own changes with the git CLI, as people do.
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
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitops_bus import tail
from gitops_config import GitopsConfig
from gitops_config_updater import service
from gitops_config_updater.settings import UpdaterSettings
from gitops_events import Command, Envelope, ImagePushed, PromoteCommand
from gitops_localstack.processes import free_port
from gitops_runtime.runtimes import Runtime
from gitops_telemetry import tracing
from tests.support.git_server import GitHttpServer
from tests.support.kafka import KafkaTarget
from tests.support.processes import run_cli
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration

SECRET = "image-webhook-secret-for-tests"
GIT_USER, GIT_TOKEN = "updater", "git-token-for-tests"
IMAGE = "registry.example.com/team/demo"

DEPLOYMENT = """\
# The demo web tier; the config-updater keeps its image current.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1   # one is enough for the demo
  template:
    spec:
      containers:
        - name: web
          image: "registry.example.com/team/demo:1.2.0"  # updated by the config-updater
"""


# --- Git ---------------------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Dev Eloper", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class RacingServer(GitHttpServer):
    """The smart-HTTP server, with a hook run before a request is answered (to race a push)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, GIT_USER, GIT_TOKEN)
        self.before_push: Callable[[], None] | None = None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        # A push starts with the receive-pack advertisement: whatever lands before it is news
        # to a client that fetched earlier, which must then refuse to push (not fast-forward).
        if "service=git-receive-pack" in handler.path and self.before_push is not None:
            hook, self.before_push = self.before_push, None
            hook()
        super()._handle(handler)


class ConfigRepo:
    """The bare repository the updater writes to, and a clone people work in."""

    def __init__(self, base: Path) -> None:
        self.bare = base / "remotes" / "config.git"
        self.work = base / "work"
        self.bare.parent.mkdir(parents=True)
        self.work.mkdir()
        _git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base)
        _git("init", "-q", "-b", "staging", cwd=self.work)
        _git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def write(self, path: str, text: str) -> None:
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit(self, message: str) -> str:
        _git("add", "-A", cwd=self.work)
        _git("commit", "-q", "-m", message, cwd=self.work)
        return _git("rev-parse", "HEAD", cwd=self.work)

    def push(self, branch: str) -> None:
        _git("push", "-q", "origin", f"HEAD:{branch}", cwd=self.work)

    def switch(self, branch: str) -> None:
        _git("fetch", "-q", "origin", cwd=self.work)
        _git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=self.work)

    def head(self, branch: str) -> str:
        return _git("rev-parse", f"refs/heads/{branch}", cwd=self.bare)

    def show(self, branch: str, path: str) -> str:
        return _git("show", f"{branch}:{path}", cwd=self.bare)

    def log(self, branch: str, fmt: str = "%H") -> list[str]:
        return _git("log", f"--format={fmt}", branch, cwd=self.bare).splitlines()


@pytest.fixture
def repo(tmp_path: Path) -> ConfigRepo:
    config_repo = ConfigRepo(tmp_path)
    config_repo.write("apps/demo/deployment.yaml", DEPLOYMENT)
    config_repo.write("apps/demo/settings.yaml", "greeting: hello\n")
    config_repo.commit("demo app")
    config_repo.push("staging")
    config_repo.push("production")
    return config_repo


@pytest.fixture
def server(repo: ConfigRepo, monkeypatch: pytest.MonkeyPatch) -> Iterator[RacingServer]:
    http = RacingServer(repo.bare.parent)
    http.start()
    monkeypatch.setenv("DEMO_GIT_CREDENTIALS", f"{GIT_USER}:{GIT_TOKEN}")
    yield http
    http.stop()


def _config(url: str, policy: dict[str, Any] | None = None) -> GitopsConfig:
    return GitopsConfig.model_validate(
        {
            "clusters": {"local": {"kubeconfig": "/dev/null"}},
            "apps": [
                {
                    "name": "demo",
                    "repo": url,
                    "path": "apps/demo",
                    "credentials": {"env": "DEMO_GIT_CREDENTIALS"},
                    "environments": {
                        "staging": {"branch": "staging", "cluster": "local", "namespace": "s"},
                        "production": {
                            "branch": "production",
                            "cluster": "local",
                            "namespace": "p",
                        },
                    },
                }
            ],
            "images": [
                {
                    "name": IMAGE,
                    "app": "demo",
                    "policy": policy or {"kind": "semver", "range": ">=1.0.0 <2.0.0"},
                }
            ],
        }
    )


# --- The service -------------------------------------------------------------------------------


class Updater:
    """A running config-updater: its runtime, a publisher for events, its spans."""

    def __init__(self, runtime: Runtime, exporter: InMemorySpanExporter) -> None:
        self.runtime = runtime
        self.exporter = exporter

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.runtime.http_port}{path}"

    async def deliver(
        self, kind: str, payload: dict[str, Any] | bytes, headers: dict[str, str]
    ) -> httpx.Response:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        async with httpx.AsyncClient(timeout=60) as client:
            return await client.post(
                self.url(f"/images/{kind}"),
                content=body,
                headers={"Content-Type": "application/json", **headers},
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

    async def publish(self, event: ImagePushed | Command) -> None:
        await self.runtime.publisher.publish(event)


def _signed(body: bytes, header: str = "X-Gitops-Signature") -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {header: f"sha256={digest}"}


def _generic(tag: str, digest: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"image": IMAGE, "tag": tag, "digest": digest}).encode()
    return body, _signed(body)


@asynccontextmanager
async def running(
    kafka: KafkaTarget, config: GitopsConfig, tmp_path: Path, **overrides: Any
) -> AsyncIterator[Updater]:
    exporter = InMemorySpanExporter()
    tracing.setup_tracing(service.SERVICE, exporter=exporter)
    settings = UpdaterSettings.model_validate(
        {
            "webhook_secret": SECRET,
            "work_dir": tmp_path / "clones",
            "author_name": "Image Bot",
            "author_email": "bot@example.com",
            "max_webhook_bytes": 4096,
            **overrides,
        }
    )
    runtime = Runtime(
        service.SERVICE, kafka.settings(GITOPS_HTTP_PORT=str(free_port())), span_exporter=exporter
    )
    service.build_with(runtime, config, settings)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    task = asyncio.create_task(runtime.run())

    def ready() -> bool:
        if task.done():
            task.result()
            raise AssertionError("config-updater stopped while starting")
        return runtime.http_port is not None and all(runtime.readiness().values())

    try:
        await eventually(ready, timeout=60, what="config-updater to be ready")
        yield Updater(runtime, exporter)
    finally:
        runtime.request_stop()
        await asyncio.wait_for(task, timeout=30)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        root.handlers[:] = handlers
        root.setLevel(level)


async def _images(kafka: KafkaTarget) -> list[ImagePushed]:
    found: list[Envelope] = [
        record.envelope
        async for record in tail(kafka.bootstrap_servers, [kafka.prefix + "images"])
        if record.envelope is not None
    ]
    return [e.data for e in found if isinstance(e.data, ImagePushed)]


def _metric_at_least(updater: Updater, value: float, name: str, **labels: str) -> Any:
    async def probe() -> bool:
        return await updater.metric(name, **labels) >= value

    return probe


# --- Image automation --------------------------------------------------------------------------


async def test_signed_image_event_commits_the_new_tag_on_staging(
    kafka: KafkaTarget,
    repo: ConfigRepo,
    server: RacingServer,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    production = repo.head("production")
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        body, headers = _generic("1.3.0")
        response = await updater.deliver("generic", body, headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "published", "events": 1}

        await eventually(
            lambda: "demo:1.3.0" in repo.show("staging", "apps/demo/deployment.yaml"),
            timeout=60,
            what="the new tag on staging",
        )
        assert repo.show("staging", "apps/demo/deployment.yaml") == DEPLOYMENT.replace(
            "demo:1.2.0", "demo:1.3.0"
        ).rstrip("\n")
        assert repo.head("production") == production
        author, subject = repo.log("staging", "%an <%ae>|%s")[0].split("|")
        assert author == "Image Bot <bot@example.com>"
        assert subject == f"Update {IMAGE} from 1.2.0 to 1.3.0"
        message = _git("log", "-1", "--format=%B", "staging", cwd=repo.bare)
        assert "Policy: semver >=1.0.0 <2.0.0" in message
        assert "apps/demo/deployment.yaml: Deployment web web" in message
        await eventually(
            _metric_at_least(updater, 1, "gitops_image_updates_total", outcome="updated"),
            timeout=10,
            what="the update counted",
        )
        assert (
            await updater.metric("gitops_commits_pushed_total", app="demo", environment="staging")
            == 1
        )
        spans = {s.name: s for s in updater.exporter.get_finished_spans()}
        update, commit, push = spans["image update"], spans["commit"], spans["push"]
        assert commit.parent is not None
        assert push.parent is not None
        assert commit.parent.span_id == update.context.span_id
        assert push.parent.span_id == update.context.span_id
        assert update.parent is not None
        handling = next(
            s
            for s in updater.exporter.get_finished_spans()
            if s.context.span_id == update.parent.span_id
        )
        assert handling.name == f"handle {ImagePushed.EVENT_TYPE}"
    assert all(GIT_TOKEN not in r.path for r in server.requests)
    assert any(r.authorised and r.user == GIT_USER for r in server.requests)
    logged = capfd.readouterr()
    assert "image updated" in logged.err
    assert GIT_TOKEN not in logged.out + logged.err


async def test_webhooks_are_authenticated_bounded_and_parsed(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    digest = "sha256:" + "d" * 64
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        body, _ = _generic("1.4.0")
        assert (await updater.deliver("generic", body, {})).status_code == 401
        bad = {"X-Gitops-Signature": "sha256=" + "0" * 64}
        assert (await updater.deliver("generic", body, bad)).status_code == 401
        broken = b"{not json"
        assert (await updater.deliver("generic", broken, _signed(broken))).status_code == 400
        no_tag = json.dumps({"image": IMAGE}).encode()
        assert (await updater.deliver("generic", no_tag, _signed(no_tag))).status_code == 400
        large = json.dumps({"image": IMAGE, "tag": "1.4.0", "pad": "x" * 5000}).encode()
        assert (await updater.deliver("generic", large, _signed(large))).status_code == 413
        other = json.dumps({"image": "registry.example.com/other", "tag": "1.0.0"}).encode()
        assert (await updater.deliver("generic", other, _signed(other))).status_code == 202

        registry = {
            "events": [
                {
                    "action": "push",
                    "target": {"repository": "team/demo", "tag": "1.4.1", "digest": digest},
                    "request": {"host": "registry.example.com"},
                },
                {"action": "pull", "target": {"repository": "team/demo", "tag": "1.0.0"}},
            ]
        }
        token = {"Authorization": f"Bearer {SECRET}"}
        assert (await updater.deliver("registry", registry, {})).status_code == 401
        assert (await updater.deliver("registry", registry, token)).status_code == 200
        harbor = {
            "type": "PUSH_ARTIFACT",
            "event_data": {
                "resources": [{"tag": "1.4.2", "digest": digest, "resource_url": f"{IMAGE}:1.4.2"}]
            },
        }
        assert (
            await updater.deliver("harbor", harbor, {"Authorization": SECRET})
        ).status_code == 200
        github = {
            "action": "published",
            "package": {
                "package_type": "CONTAINER",
                "package_version": {
                    "package_url": f"{IMAGE}:1.4.3",
                    "container_metadata": {"tag": {"name": "1.4.3", "digest": digest}},
                },
            },
        }
        github_body = json.dumps(github).encode()
        github_headers = {
            "X-GitHub-Event": "package",
            **_signed(github_body, "X-Hub-Signature-256"),
        }
        assert (await updater.deliver("github", github_body, github_headers)).status_code == 200

        pushed = await eventually(
            lambda: _count_images(kafka, 3), timeout=30, what="three image events"
        )
        assert pushed is not None
        assert [(p.tag, p.source, p.digest) for p in pushed] == [
            ("1.4.1", "registry", digest),
            ("1.4.2", "harbor", digest),
            ("1.4.3", "github", digest),
        ]
        assert {p.image for p in pushed} == {IMAGE}
        await eventually(
            lambda: "demo:1.4.3" in repo.show("staging", "apps/demo/deployment.yaml"),
            timeout=60,
            what="the newest tag on staging",
        )


async def _count_images(kafka: KafkaTarget, expected: int) -> list[ImagePushed] | None:
    found = await _images(kafka)
    return found if len(found) >= expected else None


async def test_no_downgrade_and_no_commit_when_current(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    head = repo.head("staging")
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        await updater.publish(ImagePushed(image=IMAGE, tag="1.1.0"))
        await updater.publish(ImagePushed(image=IMAGE, tag="1.2.0"))
        await updater.publish(ImagePushed(image=IMAGE, tag="2.0.0"))
        for outcome in ("older", "current", "rejected"):
            await eventually(
                _metric_at_least(updater, 1, "gitops_image_updates_total", outcome=outcome),
                timeout=60,
                what=f"an image event counted as {outcome}",
            )
        assert await updater.metric("gitops_image_updates_total", outcome="updated") == 0
    assert repo.head("staging") == head


async def test_a_push_that_loses_the_race_is_reapplied_on_the_new_head(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    repo.write("apps/demo/settings.yaml", "greeting: hello from a person\n")
    competing = repo.commit("a person pushes at the same moment")

    def race() -> None:
        _git("push", "-q", "origin", "HEAD:staging", cwd=repo.work)

    server.before_push = race
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        await updater.publish(ImagePushed(image=IMAGE, tag="1.5.0"))
        await eventually(
            lambda: "demo:1.5.0" in repo.show("staging", "apps/demo/deployment.yaml"),
            timeout=60,
            what="the new tag on staging after a retry",
        )
        assert await updater.metric("gitops_push_retries_total", app="demo") == 1
    history = repo.log("staging")
    assert history[1] == competing  # the update sits on top of the competing commit
    assert repo.show("staging", "apps/demo/settings.yaml") == "greeting: hello from a person"


# --- Promotion ---------------------------------------------------------------------------------


def _promote(skip: list[str] | None = None) -> Command:
    return Command(
        app="demo",
        environment="production",
        command=PromoteCommand(from_environment="staging", skip=skip or []),
        requested_by="test",
    )


async def test_promotion_merges_staging_into_production(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    repo.write("apps/demo/settings.yaml", "greeting: promoted\n")
    staged = repo.commit("a change to promote")
    repo.push("staging")
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        await updater.publish(_promote())
        await eventually(
            lambda: repo.show("production", "apps/demo/settings.yaml") == "greeting: promoted",
            timeout=60,
            what="the change on production",
        )
        merge = repo.log("production", "%P|%s")[0]
        parents, subject = merge.split("|")
        assert staged in parents.split()
        assert len(parents.split()) == 2
        assert subject == "Promote demo from staging to production"
        await eventually(
            _metric_at_least(updater, 1, "gitops_promotions_total", outcome="promoted"),
            timeout=10,
            what="the promotion counted",
        )
        head = repo.head("production")
        await updater.publish(_promote())
        await eventually(
            _metric_at_least(updater, 1, "gitops_promotions_total", outcome="current"),
            timeout=60,
            what="a second promotion with nothing new",
        )
    assert repo.head("production") == head


async def test_skipped_commits_stay_out_of_this_and_later_promotions(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    repo.write("apps/demo/experiment.yaml", "experiment: on\n")
    skipped = repo.commit("an experiment that must stay in staging")
    repo.write("apps/demo/settings.yaml", "greeting: ready\n")
    repo.commit("a change to promote")
    repo.push("staging")
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        await updater.publish(_promote(skip=[skipped[:10]]))
        await eventually(
            lambda: repo.show("production", "apps/demo/settings.yaml") == "greeting: ready",
            timeout=60,
            what="the promoted change on production",
        )
        files = _git("ls-tree", "-r", "--name-only", "production", cwd=repo.bare).splitlines()
        assert "apps/demo/experiment.yaml" not in files
        assert _git("merge-base", "--is-ancestor", skipped, "production", cwd=repo.bare) == ""

        repo.write("apps/demo/settings.yaml", "greeting: later\n")
        repo.commit("a later change")
        repo.push("staging")
        await updater.publish(_promote())
        await eventually(
            lambda: repo.show("production", "apps/demo/settings.yaml") == "greeting: later",
            timeout=60,
            what="the later change on production",
        )
        files = _git("ls-tree", "-r", "--name-only", "production", cwd=repo.bare).splitlines()
        assert "apps/demo/experiment.yaml" not in files
        assert await updater.metric("gitops_promotions_total", outcome="promoted") == 2


async def test_a_conflicting_promotion_pushes_nothing(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    repo.write("apps/demo/settings.yaml", "greeting: from staging\n")
    repo.commit("staging says one thing")
    repo.push("staging")
    repo.switch("production")
    repo.write("apps/demo/settings.yaml", "greeting: hotfix on production\n")
    repo.commit("production says another")
    repo.push("production")
    production = repo.head("production")
    async with running(kafka, _config(server.url("config.git")), tmp_path) as updater:
        await updater.publish(_promote())
        await eventually(
            _metric_at_least(updater, 1, "gitops_promotions_total", outcome="conflict"),
            timeout=60,
            what="the conflict counted",
        )
        assert await updater.metric("gitops_commits_pushed_total") == 0
    assert repo.head("production") == production


async def test_gitops_promote_asks_the_updater_to_merge(
    kafka: KafkaTarget, repo: ConfigRepo, server: RacingServer, tmp_path: Path
) -> None:
    repo.write("apps/demo/settings.yaml", "greeting: via the cli\n")
    repo.commit("a change to promote")
    repo.push("staging")
    config = _config(server.url("config.git"))
    config_file = tmp_path / "gitops.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json", exclude_none=True)))
    env = {"GITOPS_CONFIG": str(config_file), **kafka.env()}

    mistake = await asyncio.to_thread(
        run_cli, "promote", "demo", "--from", "staging", "--to", "prod", env=env
    )
    assert mistake.returncode == 2
    assert "no environment 'prod'" in mistake.stderr
    bad_sha = await asyncio.to_thread(
        run_cli,
        "promote",
        "demo",
        "--from",
        "staging",
        "--to",
        "production",
        "--skip",
        "-x",
        env=env,
    )
    assert bad_sha.returncode == 2
    assert "not a commit id" in bad_sha.stderr

    async with running(kafka, config, tmp_path) as updater:
        result = await asyncio.to_thread(
            run_cli, "promote", "demo", "--from", "staging", "--to", "production", env=env
        )
        assert result.returncode == 0, result.stderr
        assert "promote requested for demo/production" in result.stdout
        await eventually(
            lambda: repo.show("production", "apps/demo/settings.yaml") == "greeting: via the cli",
            timeout=60,
            what="the change on production",
        )
        assert await updater.metric("gitops_promotions_total", outcome="promoted") == 1
