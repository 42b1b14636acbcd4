"""The bus against a real Kafka broker: envelope, trace context, at-least-once, dead letters."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from opentelemetry.trace import SpanKind

from gitops_bus import Consumer, Publisher, ensure_topics, tail
from gitops_events import (
    Command,
    DeadLetter,
    Envelope,
    SyncCommand,
    encode,
)
from gitops_telemetry import tracing
from tests.support.kafka import KafkaTarget
from tests.support.spans import InMemorySpanExporter
from tests.support.waiting import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def publisher(kafka: KafkaTarget) -> AsyncIterator[Publisher]:
    await ensure_topics(kafka.bootstrap_servers, kafka.prefix)
    started = Publisher(kafka.bootstrap_servers, kafka.prefix, "gitops/test")
    await started.start()
    yield started
    await started.stop()


async def _dead_letters(kafka: KafkaTarget) -> list[DeadLetter]:
    found = []
    async for record in tail(kafka.bootstrap_servers, [kafka.prefix + "deadletter"]):
        assert record.envelope is not None
        assert isinstance(record.envelope.data, DeadLetter)
        found.append(record.envelope.data)
    return found


async def test_consumer_span_is_child_of_producer_span(
    kafka: KafkaTarget, publisher: Publisher
) -> None:
    exporter = InMemorySpanExporter()
    tracing.setup_tracing("test-bus", exporter=exporter)
    received: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        received.append(envelope)

    consumer = Consumer(
        kafka.bootstrap_servers, kafka.prefix, "g1", ["commands"], handler, publisher
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        sent = await publisher.publish(
            Command(app="demo", environment="staging", command=SyncCommand(), requested_by="me")
        )
        await eventually(lambda: received, timeout=20, what="the command to arrive")
    finally:
        await consumer.stop()
        task.cancel()

    got = received[0]
    assert got.id == sent.id
    assert got.type == "io.gitops.command.v1"
    assert got.source == "gitops/test"
    assert got.subject == "demo/staging"
    assert got.traceparent == sent.traceparent
    assert isinstance(got.data, Command)
    assert got.data.requested_by == "me"

    spans = {s.name: s for s in exporter.get_finished_spans()}
    producer = spans["publish io.gitops.command.v1"]
    handled = spans["handle io.gitops.command.v1"]
    assert producer.kind is SpanKind.PRODUCER
    assert handled.kind is SpanKind.CONSUMER
    assert handled.context.trace_id == producer.context.trace_id
    assert handled.parent is not None
    assert handled.parent.span_id == producer.context.span_id
    assert sent.traceparent is not None
    assert sent.traceparent.split("-")[2] == format(producer.context.span_id, "016x")


async def test_bad_records_go_to_dead_letters_and_consumption_goes_on(
    kafka: KafkaTarget, publisher: Publisher
) -> None:
    topic = kafka.prefix + "commands"
    good = Envelope.wrap(
        Command(app="demo", environment="staging", command=SyncCommand()), "gitops/test"
    )
    key, value, headers = encode(good)
    broken_headers = [(k, v) for k, v in headers if k != "ce_id"]
    unknown_type = [(k, b"io.gitops.nonsense.v1" if k == "ce_type" else v) for k, v in headers]
    invalid_payload = json.dumps({"app": "demo", "command": {"action": "explode"}}).encode()
    await publisher.send_raw(topic, key, value, broken_headers)
    await publisher.send_raw(topic, key, value, unknown_type)
    await publisher.send_raw(topic, key, invalid_payload, headers)
    await publisher.send_raw(topic, key, value, headers)

    handled: list[Envelope] = []

    async def handler(envelope: Envelope) -> None:
        handled.append(envelope)

    consumer = Consumer(
        kafka.bootstrap_servers, kafka.prefix, "g-dlq", ["commands"], handler, publisher
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(lambda: handled, timeout=20, what="the good record to be handled")
        letters = await eventually(lambda: _three(kafka), timeout=20, what="three dead letters")
    finally:
        await consumer.stop()
        task.cancel()
    assert [h.id for h in handled] == [good.id]
    by_offset = {letter.offset: letter for letter in letters}
    assert by_offset[0].reason == "broken-envelope"
    assert "ce_id" in by_offset[0].error
    assert by_offset[1].reason == "unknown-event-type"
    assert "io.gitops.nonsense.v1" in by_offset[1].error
    assert by_offset[2].reason == "invalid-payload"
    assert "command" in by_offset[2].error
    assert all(letter.topic == topic and letter.consumer_group == "g-dlq" for letter in letters)
    assert by_offset[2].value == invalid_payload.decode()

    committed = await _committed(kafka, "g-dlq", topic)
    assert committed == 4, "the offset advanced past the bad records and the good one"


async def _three(kafka: KafkaTarget) -> list[DeadLetter]:
    letters = await _dead_letters(kafka)
    return letters if len(letters) >= 3 else []


async def _committed(kafka: KafkaTarget, group: str, topic: str) -> int:
    """Sum of the group's committed offsets over the topic's partitions, asked of the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)
    finally:
        await admin.close()


async def test_handler_failure_is_retried_then_dead_lettered(
    kafka: KafkaTarget, publisher: Publisher
) -> None:
    attempts: list[str] = []

    async def failing(envelope: Envelope) -> None:
        attempts.append(envelope.id)
        raise RuntimeError("cluster unreachable")

    consumer = Consumer(
        kafka.bootstrap_servers,
        kafka.prefix,
        "g-fail",
        ["commands"],
        failing,
        publisher,
        attempts=3,
        retry_backoff=0.01,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    try:
        sent = await publisher.publish(
            Command(app="demo", environment="prod", command=SyncCommand())
        )
        letters = await eventually(lambda: _dead_letters(kafka), timeout=20, what="a dead letter")
    finally:
        await consumer.stop()
        task.cancel()
    assert attempts == [sent.id] * 3
    assert letters[0].reason == "handler-failed"
    assert "RuntimeError: cluster unreachable" in letters[0].error
    assert letters[0].headers["ce_id"] == sent.id
