"""The whole loop, four services as processes: Release → Observe → Orient → Decide → Act.

git-watcher, deployer, drift-detector and alerter run as `gitops run SERVICE` against the real
broker and the real API server, and export their spans over OTLP to a real receiver. A commit is
pushed to the staging branch of a real bare repository and announced with a signed generic
webhook; the deployer makes it a running Deployment. Then someone scales the Deployment by hand:
the drift detector reports the field within 2 s, self-heal has the deployer put Git's value back,
the drift resolves, and the alerter raises exactly one `DriftDetected` alert (on the alerts topic
and at a webhook sink) and resolves it. The spans form one trace per cause, tied together: the
release trace runs from the webhook through every service, and the drift's trace starts at a
watch-triggered evaluation that links back to the revision. Every service's `/metrics` moves
with the story, and each process exits 0 on SIGTERM.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitops_bus import tail
from gitops_events import (
    Alert,
    AlertStatus,
    Command,
    DeployEvent,
    DeployPhase,
    DesiredState,
    DriftEvent,
    DriftStatus,
    Envelope,
    Revision,
    SyncCommand,
)
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from tests.support.kafka import KafkaTarget
from tests.support.otlp import OtlpReceiver, ReceivedSpan
from tests.support.processes import ServiceProcess, start_service
from tests.support.repos import GitRepo
from tests.support.sinks import SinkReceiver
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

E = TypeVar("E")

SERVICES = ("git-watcher", "deployer", "drift-detector", "alerter")
WEBHOOK_SECRET = "release-loop-webhook-secret"
SINK = "hook"
SINK_PATH = "/hooks/gitops"
GROUP_WAIT_SECONDS = 0.0
"""No group wait. Self-heal resolves this drift ~0.1-0.2 s after the alert fires, and an alert
resolved within its group wait is never sent (as in Alertmanager): with a wait of 0.2 s the sink
would hear nothing at all, by design, and any wait in between makes the test a race."""
REPEAT_INTERVAL_SECONDS = 3600.0

DETECTION_DEADLINE = 2.0
"""Seconds from `kubectl scale` to the drift event at this test's consumer."""
HEAL_DEADLINE = 10.0
"""Seconds from `kubectl scale` to the drift resolved by self-heal."""

# OTLP span kinds (opentelemetry/proto/trace/v1/trace.proto).
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: example.invalid/web:1
          resources:
            requests: {cpu: 100m, memory: 32Mi}
"""


# --- what the test sees on the topics -----------------------------------------------------------


@dataclass
class Seen:
    """An event as this test's consumer received it, and when (time.monotonic())."""

    envelope: Envelope
    arrived: float


@dataclass
class Topics:
    """Every event of the test's topics, as it arrives."""

    app: str
    seen: list[Seen] = field(default_factory=list)

    def of(self, kind: type[E]) -> list[tuple[Seen, E]]:
        """The events of one type about the test's app, in arrival order."""
        return [
            (s, s.envelope.data)
            for s in self.seen
            if isinstance(s.envelope.data, kind)
            and getattr(s.envelope.data, "app", None) == self.app
        ]

    def deploys(self, revision: str) -> list[tuple[Seen, DeployEvent]]:
        return [(s, e) for s, e in self.of(DeployEvent) if e.revision == revision]

    def drift(self, status: DriftStatus) -> tuple[Seen, DriftEvent] | None:
        return next(((s, e) for s, e in self.of(DriftEvent) if e.status is status), None)

    def alerts(self) -> list[tuple[Seen, Alert]]:
        return self.of(Alert)

    def summary(self) -> str:
        """One line per event, for messages of failed waits."""
        lines = []
        for s in self.seen:
            data = s.envelope.data
            detail = getattr(data, "phase", None) or getattr(data, "status", None) or ""
            lines.append(f"{s.envelope.type} {detail} {getattr(data, 'reason', '') or ''}")
        return "; ".join(lines)


async def _follow(kafka: KafkaTarget, into: list[Seen]) -> None:
    names = ("revisions", "desired", "deploy", "drift", "commands", "alerts")
    topics = [kafka.prefix + name for name in names]
    async for record in tail(kafka.bootstrap_servers, topics, follow=True, idle_timeout=0.05):
        if record.envelope is not None:
            into.append(Seen(record.envelope, time.monotonic()))


# --- metrics ----------------------------------------------------------------------------------


Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(service: ServiceProcess) -> Scrape:
    """Every sample of a service's /metrics, parsed by the Prometheus client's parser."""
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(service.url("/metrics"))
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(scrape: Scrape, name: str, **labels: str) -> float | None:
    """The sum of the samples of `name` whose labels include `labels`; None when none has."""
    wanted = set(labels.items())
    found = [v for (n, ls), v in scrape.items() if n == name and wanted <= ls]
    return sum(found) if found else None


async def _scrape_all(services: dict[str, ServiceProcess]) -> dict[str, Scrape]:
    return {name: await _scrape(service) for name, service in services.items()}


# --- traces -----------------------------------------------------------------------------------


def _ids(envelope: Envelope) -> tuple[str, str]:
    """(trace id, span id) of the span that published an event, from its traceparent."""
    assert envelope.traceparent, f"{envelope.type} carries no traceparent"
    _, trace_id, span_id, _ = envelope.traceparent.split("-")
    return trace_id, span_id


class Spans:
    """The spans the OTLP receiver got, indexed."""

    def __init__(self, spans: Iterable[ReceivedSpan]) -> None:
        self.all = list(spans)
        self.by_id = {s.span_id: s for s in self.all}

    def get(self, span_id: str) -> ReceivedSpan:
        found = self.by_id.get(span_id)
        assert found is not None, f"span {span_id} was never exported"
        return found

    def of_event(self, envelope: Envelope) -> ReceivedSpan:
        """The publish span of an event."""
        trace_id, span_id = _ids(envelope)
        span = self.get(span_id)
        assert span.trace_id == trace_id
        assert span.name == f"publish {envelope.type}", span
        assert span.kind == PRODUCER, span
        return span

    def parent(self, span: ReceivedSpan) -> ReceivedSpan:
        assert span.parent_span_id is not None, f"{span.service} {span.name} is a root span"
        return self.get(span.parent_span_id)

    def children(self, span: ReceivedSpan, service: str, name: str) -> list[ReceivedSpan]:
        return [
            s
            for s in self.all
            if s.parent_span_id == span.span_id and s.service == service and s.name == name
        ]

    def child(self, span: ReceivedSpan, service: str, name: str) -> ReceivedSpan:
        found = self.children(span, service, name)
        assert len(found) == 1, f"{service} {name!r} under {span.service} {span.name!r}: {found}"
        return found[0]

    def services_in(self, trace_id: str) -> set[str]:
        return {s.service for s in self.all if s.trace_id == trace_id}

    def names_in(self, trace_id: str, service: str) -> set[str]:
        return {s.name for s in self.all if s.trace_id == trace_id and s.service == service}


# --- the system -------------------------------------------------------------------------------


@pytest.fixture
async def otlp() -> AsyncIterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
async def sink() -> AsyncIterator[SinkReceiver]:
    receiver = SinkReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


def _config(
    path: Path, kube: ControlPlane, repo: GitRepo, app: str, namespace: str, hook: str
) -> Path:
    """gitops.yaml for one app whose staging environment self-heals (JSON is YAML)."""
    config = {
        "version": 1,
        "clusters": {"local": {"kubeconfig": str(kube.kubeconfig)}},
        "apps": [
            {
                "name": app,
                "repo": repo.url,
                "path": "deploy",
                "environments": {
                    "staging": {
                        "branch": "staging",
                        "cluster": "local",
                        "namespace": namespace,
                        "self_heal": True,
                        "health_timeout_seconds": 60,
                    }
                },
            }
        ],
        "alerts": {
            "routes": [
                {
                    "match": {"app": app},
                    "sinks": [SINK],
                    "group_wait_seconds": GROUP_WAIT_SECONDS,
                    "repeat_interval_seconds": REPEAT_INTERVAL_SECONDS,
                }
            ],
            "sinks": {SINK: {"kind": "webhook", "url": hook}},
        },
    }
    path.write_text(json.dumps(config, indent=2))
    return path


def _signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return {"Content-Type": "application/json", "X-Gitops-Signature": f"sha256={digest}"}


async def _kubectl(kube: ControlPlane, *args: str) -> str:
    result = await asyncio.to_thread(kube.kubectl, *args)
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


async def _deployment(kube: ControlPlane, namespace: str) -> dict[str, Any]:
    live: dict[str, Any] = json.loads(
        await _kubectl(kube, "-n", namespace, "get", "deployment/web", "-o", "json")
    )
    return live


def _available(deployment: dict[str, Any]) -> bool:
    conditions = deployment.get("status", {}).get("conditions", [])
    return any(c["type"] == "Available" and c["status"] == "True" for c in conditions)


def _logs(services: Iterable[ServiceProcess]) -> str:
    return "\n".join(f"--- {s.name} ---\n{s.output()[-3000:]}" for s in services)


async def test_a_release_drifts_heals_and_alerts_once_in_one_linked_trace(
    kafka: KafkaTarget,
    kube: ControlPlane,
    otlp: OtlpReceiver,
    sink: SinkReceiver,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    app = f"rel-{uuid.uuid4().hex[:8]}"
    namespace = app
    repo = GitRepo(tmp_path / "git")
    repo.write("README.md", "the release loop's config repo\n")
    repo.commit("initial")
    repo.push("main")  # staging does not exist yet: the webhook brings the first revision
    config = _config(tmp_path / "gitops.yaml", kube, repo, app, namespace, sink.url(SINK_PATH))
    env = {
        **kafka.env(),
        "GITOPS_CONFIG": str(config),
        "KUBECONFIG": str(kube.kubeconfig),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "GITOPS_LOG_FORMAT": "json",
        # git-watcher
        "GITOPS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "GITOPS_POLL_INTERVAL_SECONDS": "3600",
        "GITOPS_GIT_CACHE_DIR": str(tmp_path / "git-cache"),
        "GITOPS_KUBECTL": str(kube.bin_dir / "kubectl"),
        "GITOPS_RESTORE_IDLE_SECONDS": "0.5",
        # drift-detector
        "GITOPS_DRIFT_RESTORE_IDLE_SECONDS": "0.5",
    }
    services = {
        name: start_service(name, free_port(), env, tmp_path / f"{name}.log") for name in SERVICES
    }
    topics = Topics(app)
    follower: asyncio.Task[None] | None = None
    codes: dict[str, int] = {}
    completed = False
    try:
        for service in services.values():
            await eventually(service.ready, timeout=60, what=f"{service.name} /readyz")
        follower = asyncio.create_task(_follow(kafka, topics.seen))
        before = await _scrape_all(services)
        started_up = time.monotonic()

        # --- Release: a commit on staging, announced by a signed generic webhook ------------------
        repo.write("deploy/web.yaml", DEPLOYMENT)
        sha = repo.commit("web: two replicas")
        repo.push("staging")
        body = json.dumps({"repository": repo.url, "ref": "refs/heads/staging"}).encode()
        async with httpx.AsyncClient(timeout=60) as client:
            response = await client.post(
                services["git-watcher"].url("/webhooks/generic"),
                content=body,
                headers=_signed(body),
            )
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "processed", "revisions": 1}

        await eventually(
            lambda: any(e.phase is DeployPhase.HEALTHY for _, e in topics.deploys(sha)),
            timeout=60,
            what=f"a healthy deploy of {sha[:8]}; events: {topics.summary()}",
        )
        released = time.monotonic()
        deployment = await _deployment(kube, namespace)
        assert _available(deployment), deployment.get("status")
        assert deployment["spec"]["replicas"] == 2
        assert deployment["metadata"]["labels"]["gitops.io/app"] == app

        [(_, revision)] = topics.of(Revision)
        assert (revision.revision, revision.trigger, revision.change) == (sha, "webhook", "pushed")
        assert revision.render_error is None
        [(_, desired)] = topics.of(DesiredState)
        assert desired.revision == sha
        assert [o.manifest["kind"] for o in desired.objects] == ["Deployment"]
        assert [e.phase for _, e in topics.deploys(sha)] == [
            DeployPhase.STARTED,
            DeployPhase.APPLIED,
            DeployPhase.HEALTHY,
        ]

        # The detector has compared after the deploy (its watch on Deployments is up) and is
        # quiet: no comparison in flight, nothing drifted.
        last_total: list[float] = []

        async def detector_settled() -> bool:
            scrape = await _scrape(services["drift-detector"])
            labels = {"app": app, "environment": "staging", "outcome": "ok"}
            after_deploy = _value(
                scrape, "gitops_drift_evaluations_total", **labels, trigger="deploy"
            )
            total = _value(scrape, "gitops_drift_evaluations_total", **labels) or 0.0
            settled = (after_deploy or 0) >= 2 and last_total[-1:] == [total]
            last_total.append(total)
            return settled

        await eventually(
            detector_settled, timeout=30, interval=0.3, what="the detector to compare the deploy"
        )
        assert topics.of(DriftEvent) == []
        released_metrics = await _scrape_all(services)

        # --- Observe, Orient: an out-of-band change -----------------------------------------------
        scaled = time.monotonic()
        await _kubectl(kube, "-n", namespace, "scale", "deployment/web", "--replicas=5")
        await eventually(
            lambda: topics.drift(DriftStatus.DETECTED),
            timeout=15,
            interval=0.01,
            what=f"the drift detected; events: {topics.summary()}",
        )
        found = topics.drift(DriftStatus.DETECTED)
        assert found is not None
        detected_seen, detected = found
        detection = detected_seen.arrived - scaled
        assert detection < DETECTION_DEADLINE, f"drift reported {detection:.2f}s after the scale"
        assert detected.revision == sha
        assert {
            (f"{o.object.kind}/{o.object.name}", o.drift, f.path, f.desired, f.live)
            for o in detected.objects
            for f in o.fields
        } == {("Deployment/web", "modified", "/spec/replicas", 2, 5)}

        # --- Decide, Act: self-heal has the deployer put Git's value back -------------------------
        await eventually(
            lambda: topics.drift(DriftStatus.RESOLVED),
            timeout=HEAL_DEADLINE,
            interval=0.01,
            what=f"the drift resolved by self-heal; events: {topics.summary()}",
        )
        found = topics.drift(DriftStatus.RESOLVED)
        assert found is not None
        resolved_seen, resolved = found
        healed = resolved_seen.arrived - scaled
        assert resolved.fingerprint == detected.fingerprint
        assert resolved.objects == []
        assert (await _deployment(kube, namespace))["spec"]["replicas"] == 2
        [(sync_seen, sync)] = topics.of(Command)
        assert isinstance(sync.command, SyncCommand)
        assert sync.requested_by == "drift-detector"
        # The heal's deploy ends (applied) before it is healthy; the resolution can come between.
        await eventually(
            lambda: len(topics.deploys(sha)) >= 6,
            timeout=30,
            what=f"the heal's deploy healthy; events: {topics.summary()}",
        )
        assert [e.phase for _, e in topics.deploys(sha)] == [
            DeployPhase.STARTED,
            DeployPhase.APPLIED,
            DeployPhase.HEALTHY,
        ] * 2
        assert [e.status for _, e in topics.of(DriftEvent)] == [
            DriftStatus.DETECTED,
            DriftStatus.RESOLVED,
        ]

        # --- Act for people: one alert fires, one notification, then it resolves ------------------
        await eventually(
            lambda: (
                len(sink.requests(SINK_PATH)) >= 2
                and any(a.status is AlertStatus.RESOLVED for _, a in topics.alerts())
            ),
            timeout=15,
            what=f"the alert resolved at the sink; events: {topics.summary()}",
        )
        alerts = topics.alerts()
        assert [(a.status, a.reason) for _, a in alerts] == [
            (AlertStatus.FIRING, "DriftDetected"),
            (AlertStatus.RESOLVED, "DriftDetected"),
        ]
        (firing_seen, firing), (resolved_alert_seen, resolved_alert) = alerts
        assert firing.fingerprint == resolved_alert.fingerprint
        assert firing.revision == sha
        assert firing.description == f"Deployment {namespace}/web modified: /spec/replicas"

        notifications = sink.requests(SINK_PATH)
        bodies = [n.json() for n in notifications]
        assert [n.status for n in notifications] == [200, 200]
        assert [b["status"] for b in bodies] == ["firing", "resolved"]
        assert [b["reminder"] for b in bodies] == [False, False]
        assert [[a["fingerprint"] for a in b["alerts"]] for b in bodies] == [
            [firing.fingerprint],
            [firing.fingerprint],
        ]
        assert bodies[0]["alerts"][0]["reason"] == "DriftDetected"
        assert bodies[0]["alerts"][0]["status"] == "firing"
        notified = notifications[0].at - firing_seen.arrived

        # --- /metrics of every service moved with the story ---------------------------------------
        after = await _scrape_all(services)
        completed = True
    finally:
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        # Stop off the event loop: the services flush their last spans to this loop's receiver.
        stopped = await asyncio.gather(
            *(asyncio.to_thread(s.terminate) for s in services.values()), return_exceptions=True
        )
        codes = {
            name: code if isinstance(code, int) else -1
            for name, code in zip(services, stopped, strict=True)
        }
        if not completed:
            print(_logs(services.values()))  # shown by pytest with the failure

    # --- SIGTERM: every process exits 0 ---------------------------------------------------------
    assert codes == dict.fromkeys(SERVICES, 0), _logs(services.values())
    for service in services.values():
        assert WEBHOOK_SECRET not in service.output()

    env_labels = {"app": app, "environment": "staging"}
    gw, dep, det, alr = ((before[n], released_metrics[n], after[n]) for n in SERVICES)
    # git-watcher: one revision, found by the webhook, rendered once.
    for scrape in (*gw, *dep, *det, *alr):
        assert _value(scrape, "gitops_build_info") == 1
    revisions = [
        _value(s, "gitops_revisions_detected_total", **env_labels, trigger="webhook") or 0
        for s in gw
    ]
    assert revisions == [0, 1, 1]
    webhooks = [
        _value(s, "gitops_webhooks_total", provider="generic", outcome="processed") or 0 for s in gw
    ]
    assert webhooks == [0, 1, 1]
    assert [_value(s, "gitops_render_duration_seconds_count") for s in gw] == [0, 1, 1]
    # deployer: the release and the self-heal sync, both healthy; the heal wrote the Deployment.
    deploys = [_value(s, "gitops_deploys_total", **env_labels, outcome="healthy") or 0 for s in dep]
    assert deploys == [0, 1, 2]
    applied = [_value(s, "gitops_objects_applied_total", **env_labels) or 0 for s in dep]
    assert applied[0] == 0 < applied[1] < applied[2], applied
    assert (
        _value(dep[2], "gitops_app_info", **env_labels, revision=sha, health_status="Healthy") == 1
    )
    # drift-detector: one Deployment drifted, was detected from a watch, healed and resolved.
    heal = {
        outcome: [
            _value(s, "gitops_self_heal_total", **env_labels, outcome=outcome) or 0 for s in det
        ]
        for outcome in ("requested", "resolved")
    }
    assert heal == {"requested": [0, 0, 1], "resolved": [0, 0, 1]}
    drifted = [_value(s, "gitops_drift_objects", **env_labels, kind="Deployment") for s in det]
    assert drifted == [None, None, 0], "the Deployment was never counted as drifted"
    detections = [_value(s, "gitops_drift_detection_seconds_count") or 0 for s in det]
    assert detections[1] == 0 < detections[2], detections
    watched = [
        _value(s, "gitops_drift_evaluations_total", **env_labels, trigger="watch", outcome="ok")
        or 0
        for s in det
    ]
    assert watched[2] > watched[1], watched
    # alerter: two notifications delivered (firing, resolved), none failed, nothing firing now.
    delivered = [_value(s, "gitops_alerts_total", sink=SINK, outcome="delivered") for s in alr]
    assert delivered == [0, 0, 2]
    assert _value(alr[2], "gitops_alerts_total", sink=SINK, outcome="failed") == 0
    assert _value(alr[2], "gitops_alert_delivery_seconds_count", sink=SINK) == 2
    assert _value(alr[2], "gitops_alerts_firing") == 0
    for name, scrape in after.items():
        consumed = _value(scrape, "gitops_events_consumed_total", outcome="ok") or 0
        published = _value(scrape, "gitops_events_published_total") or 0
        assert consumed > 0 or name == "git-watcher", name
        assert published > 0, name
        assert _value(scrape, "gitops_dead_letters_total") is None, name

    # --- Traces: the release is one trace, the drift's trace links back to it -------------------
    def exported() -> bool:
        return {s.service for s in otlp.spans} >= set(SERVICES) and bool(
            otlp.named("alerter", f"alert delivery {SINK}")
        )

    await eventually(exported, timeout=20, what="the spans of all four services")
    spans = Spans(otlp.spans)
    [(revision_seen, _)] = topics.of(Revision)
    [(desired_seen, _)] = topics.of(DesiredState)

    # Release: webhook (root) → publish → deployer and drift-detector handle → ... → alerter.
    [webhook] = otlp.named("git-watcher", "webhook generic")
    assert webhook.parent_span_id is None
    assert webhook.kind == SERVER
    release = webhook.trace_id
    spans.child(webhook, "git-watcher", "render")
    publish_revision = spans.of_event(revision_seen.envelope)
    publish_desired = spans.of_event(desired_seen.envelope)
    assert publish_revision.parent_span_id == webhook.span_id
    assert publish_desired.parent_span_id == webhook.span_id
    deployer_handle = spans.child(publish_desired, "deployer", "handle io.gitops.desired.v1")
    assert deployer_handle.kind == CONSUMER
    spans.child(publish_revision, "deployer", "handle io.gitops.revision.v1")
    for name in ("dry-run", "apply", "health wait"):
        assert spans.children(deployer_handle, "deployer", name), name
    release_deploys = topics.deploys(sha)[:3]
    for seen, _ in release_deploys:
        assert spans.of_event(seen.envelope).parent_span_id == deployer_handle.span_id
    healthy_publish = spans.of_event(release_deploys[2][0].envelope)
    spans.child(healthy_publish, "alerter", "handle io.gitops.deploy.v1")
    detector_handle = spans.child(publish_desired, "drift-detector", "handle io.gitops.desired.v1")
    applied_publish = spans.of_event(release_deploys[1][0].envelope)
    detector_deploy_handle = spans.child(
        applied_publish, "drift-detector", "handle io.gitops.deploy.v1"
    )
    spans.child(detector_deploy_handle, "drift-detector", "drift evaluation")
    assert spans.services_in(release) == set(SERVICES)

    # Drift: a watch-triggered evaluation is a root span linked to the span that handled the
    # revision's desired state; the drift, the sync, the heal and the alert are its trace.
    publish_detected = spans.of_event(detected_seen.envelope)
    watch_evaluation = spans.parent(publish_detected)
    assert (watch_evaluation.service, watch_evaluation.name) == (
        "drift-detector",
        "drift evaluation",
    )
    assert watch_evaluation.parent_span_id is None
    drift = watch_evaluation.trace_id
    assert drift != release
    assert watch_evaluation.links == ((release, detector_handle.span_id),)
    publish_sync = spans.of_event(sync_seen.envelope)
    assert publish_sync.parent_span_id == watch_evaluation.span_id
    deployer_sync = spans.child(publish_sync, "deployer", "handle io.gitops.command.v1")
    heal_deploys = topics.deploys(sha)[3:]
    for seen, _ in heal_deploys:
        assert spans.of_event(seen.envelope).parent_span_id == deployer_sync.span_id
    alerter_detected = spans.child(publish_detected, "alerter", "handle io.gitops.drift.v1")
    publish_firing = spans.of_event(firing_seen.envelope)
    assert publish_firing.parent_span_id == alerter_detected.span_id
    delivery = spans.child(alerter_detected, "alerter", f"alert delivery {SINK}")
    assert delivery.kind == CLIENT
    assert spans.services_in(drift) >= {"drift-detector", "deployer", "alerter"}

    # The resolution: the comparison after the heal's deploy (in the drift's trace), or one a
    # watch event started (a root linked to the revision, like the detection).
    publish_resolved = spans.of_event(resolved_seen.envelope)
    resolving = spans.parent(publish_resolved)
    assert (resolving.service, resolving.name) == ("drift-detector", "drift evaluation")
    if resolving.parent_span_id is None:
        resolved_by = "a watch event (a root linked to the revision)"
        assert resolving.links == ((release, detector_handle.span_id),)
    else:
        resolved_by = "the heal's deploy (in the drift's trace)"
        cause = spans.parent(resolving)
        assert (cause.service, cause.name) == ("drift-detector", "handle io.gitops.deploy.v1")
        assert cause.trace_id == drift
        assert spans.parent(cause).span_id in {
            spans.of_event(seen.envelope).span_id for seen, _ in heal_deploys
        }
    alerter_resolved = spans.child(publish_resolved, "alerter", "handle io.gitops.drift.v1")
    assert spans.of_event(resolved_alert_seen.envelope).parent_span_id == alerter_resolved.span_id
    spans.child(alerter_resolved, "alerter", f"alert delivery {SINK}")

    linked = spans.services_in(release) | spans.services_in(drift)
    assert linked == set(SERVICES)

    total = time.monotonic() - began
    print(
        f"release loop: services ready {started_up - began:.1f}s, "
        f"webhook to healthy {released - started_up:.1f}s, "
        f"drift detected {detection:.3f}s and resolved {healed:.2f}s after kubectl scale, "
        f"resolution by {resolved_by}, "
        f"firing notification {notified:+.3f}s from the alert on the topic; total {total:.1f}s"
    )
