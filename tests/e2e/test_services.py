"""Service processes over the real broker: health endpoints, one trace across processes, SIGTERM.

`gitops sync` (one process) asks for a sync the deployer cannot do yet (nothing rendered), the
deployer (a second process) reports the failed deploy, and the alerter (a third) raises an
alert. The envelope and traceparent must survive each hop, and the spans every process exports
over OTLP must form one trace: each consumer span a child of the producer span before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitops_bus import tail
from gitops_events import Alert, Command, DeployEvent, Envelope
from gitops_localstack.kubernetes import ControlPlane
from gitops_localstack.processes import free_port
from tests.support.kafka import KafkaTarget
from tests.support.otlp import OtlpReceiver
from tests.support.processes import ServiceProcess, run_cli, start_service
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e

CONFIG = """\
version: 1
clusters:
  local:
    kubeconfig: {kubeconfig}
apps:
  - name: demo
    repo: file:///nonexistent/demo.git
    environments:
      staging:
        branch: staging
        cluster: local
        namespace: demo-staging
"""


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    otlp = OtlpReceiver()
    await otlp.start()
    yield otlp
    await otlp.stop()


def _env(
    kafka: KafkaTarget, config: Path, otlp: OtlpReceiver, kube: ControlPlane
) -> dict[str, str]:
    return {
        **kafka.env(),
        "GITOPS_CONFIG": str(config),
        "KUBECONFIG": str(kube.kubeconfig),
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "GITOPS_LOG_FORMAT": "json",
    }


async def _records(kafka: KafkaTarget, topic: str) -> list[Envelope]:
    found = []
    async for record in tail(kafka.bootstrap_servers, [kafka.prefix + topic]):
        if record.envelope is not None:
            found.append(record.envelope)
    return found


async def test_event_crosses_three_processes_in_one_trace(
    kafka: KafkaTarget, receiver: OtlpReceiver, kube: ControlPlane, tmp_path: Path
) -> None:
    config = tmp_path / "gitops.yaml"
    config.write_text(CONFIG.format(kubeconfig=kube.kubeconfig))
    env = _env(kafka, config, receiver, kube)
    services: list[ServiceProcess] = [
        start_service(name, free_port(), env, tmp_path / f"{name}.log")
        for name in ("deployer", "alerter")
    ]
    try:
        for service in services:
            await eventually(service.ready, timeout=60, what=f"{service.name} /readyz")
            health = httpx.get(service.url("/healthz"), timeout=5)
            assert health.status_code == 200
            assert health.json() == {"status": "ok", "service": service.name}

        result = run_cli("sync", "demo", "staging", env=env)
        assert result.returncode == 0, result.stderr
        assert "sync requested for demo/staging" in result.stdout

        alerts = await eventually(
            lambda: _records(kafka, "alerts"), timeout=30, what="an alert on the alerts topic"
        )
        commands = await _records(kafka, "commands")
        deploys = await _records(kafka, "deploy")

        command, deploy, alert = commands[0], deploys[0], alerts[0]
        assert isinstance(command.data, Command)
        assert isinstance(deploy.data, DeployEvent)
        assert isinstance(alert.data, Alert)
        assert command.source == "gitops/cli"
        assert deploy.source == "gitops/deployer"
        assert alert.source == "gitops/alerter"
        assert deploy.data.phase == "failed"
        assert deploy.data.reason == "NoDesiredState"
        assert alert.data.reason == "NoDesiredState"
        assert alert.data.status == "firing"
        assert alert.subject == deploy.subject == command.subject == "demo/staging"

        assert command.traceparent
        assert deploy.traceparent
        assert alert.traceparent
        trace_id = command.traceparent.split("-")[1]
        assert deploy.traceparent.split("-")[1] == trace_id
        assert alert.traceparent.split("-")[1] == trace_id

        for service in services:
            metrics = httpx.get(service.url("/metrics"), timeout=5).text
            families = {f.name: f for f in text_string_to_metric_families(metrics)}
            consumed = families["gitops_events_consumed"]
            assert any(
                s.value >= 1 and s.labels.get("outcome") == "ok" for s in consumed.samples
            ), service.name
            assert "gitops_events_published" in families
    finally:
        codes = {service.name: service.terminate() for service in services}

    assert codes == {"deployer": 0, "alerter": 0}, {s.name: s.output()[-2000:] for s in services}

    def chain() -> bool:
        return bool(
            receiver.named("gitops-cli", "publish io.gitops.command.v1")
            and receiver.named("deployer", "publish io.gitops.deploy.v1")
            and receiver.named("alerter", "publish io.gitops.alert.v1")
        )

    await eventually(chain, timeout=20, what="spans of all three processes")
    cli_publish = receiver.named("gitops-cli", "publish io.gitops.command.v1")[0]
    deployer_handle = receiver.named("deployer", "handle io.gitops.command.v1")[0]
    deployer_publish = receiver.named("deployer", "publish io.gitops.deploy.v1")[0]
    alerter_handle = receiver.named("alerter", "handle io.gitops.deploy.v1")[0]
    alerter_publish = receiver.named("alerter", "publish io.gitops.alert.v1")[0]
    assert {cli_publish.trace_id, deployer_handle.trace_id, alerter_publish.trace_id} == {trace_id}
    assert deployer_handle.parent_span_id == cli_publish.span_id
    assert deployer_publish.parent_span_id == deployer_handle.span_id
    assert alerter_handle.parent_span_id == deployer_publish.span_id
    assert alerter_publish.parent_span_id == alerter_handle.span_id


async def test_logs_are_json_with_trace_ids(
    kafka: KafkaTarget, receiver: OtlpReceiver, kube: ControlPlane, tmp_path: Path
) -> None:
    import json

    config = tmp_path / "gitops.yaml"
    config.write_text(CONFIG.format(kubeconfig=kube.kubeconfig))
    env = _env(kafka, config, receiver, kube)
    deployer = start_service("deployer", free_port(), env, tmp_path / "deployer.log")
    try:
        await eventually(deployer.ready, timeout=60, what="deployer /readyz")
        assert run_cli("suspend", "demo", "staging", env=env).returncode == 0

        def suspended_line() -> dict[str, object]:
            for line in deployer.output().splitlines():
                entry: dict[str, object] = json.loads(line)
                if entry.get("message") == "suspended":
                    return entry
            return {}

        entry = await eventually(suspended_line, timeout=20, what="the 'suspended' log line")
    finally:
        assert deployer.terminate() == 0
    assert entry["service"] == "deployer"
    assert entry["subject"] == "demo/staging"
    assert len(str(entry["trace_id"])) == 32
    assert len(str(entry["span_id"])) == 16
