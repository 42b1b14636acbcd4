"""Event bus overhead: one event published and handled, through the bus and through raw aiokafka.

The baseline sends and receives the same bytes with aiokafka alone (no envelope, no trace
context, no per-record commit), so the ratio is what the envelope, tracing, decoding and
at-least-once commits cost per event.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from gitops_bus import Consumer, Publisher, ensure_topics
from gitops_events import Command, Envelope, SyncCommand
from tests.bench.report import Figure, Report
from tests.support.waiting import eventually

EVENTS = 300


async def _baseline(bootstrap: str, topic: str) -> list[float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4()}",
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await producer.start()
    await consumer.start()
    await eventually(consumer.assignment, timeout=30, what="a partition assignment")
    await consumer.seek_to_end()
    samples = []
    try:
        for _ in range(EVENTS):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b'{"app":"demo"}', key=b"demo/staging")
            await asyncio.wait_for(consumer.getone(), timeout=30)
            samples.append(time.perf_counter() - started)
    finally:
        await consumer.stop()
        await producer.stop()
    return samples


async def _through_bus(bootstrap: str, prefix: str) -> list[float]:
    publisher = Publisher(bootstrap, prefix, "gitops/bench")
    await publisher.start()
    arrived: asyncio.Queue[Envelope] = asyncio.Queue()

    async def handler(envelope: Envelope) -> None:
        await arrived.put(envelope)

    # The topic is new and empty, so reading from the beginning sees exactly our events.
    consumer = Consumer(
        bootstrap,
        prefix,
        f"bench-{uuid.uuid4()}",
        ["commands"],
        handler,
        publisher,
        from_beginning=True,
    )
    await consumer.start()
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: consumer.assigned, timeout=30, what="a partition assignment")
    samples = []
    try:
        for _ in range(EVENTS):
            started = time.perf_counter()
            await publisher.publish(
                Command(app="demo", environment="staging", command=SyncCommand())
            )
            await asyncio.wait_for(arrived.get(), timeout=30)
            samples.append(time.perf_counter() - started)
    finally:
        await consumer.stop()
        task.cancel()
        await publisher.stop()
    return samples


async def run(report: Report, bootstrap: str) -> None:
    """Measure both and add them to the report."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await ensure_topics(bootstrap, prefix)
    raw = await _baseline(bootstrap, prefix + "revisions")
    report.add(
        Figure(
            "kafka round trip, raw aiokafka",
            "s",
            raw,
            notes=f"{EVENTS} sequential events, acks=all",
        )
    )
    ours = await _through_bus(bootstrap, prefix)
    report.add(
        Figure(
            "kafka round trip, gitops bus",
            "s",
            ours,
            baseline="kafka round trip, raw aiokafka",
            notes="envelope + traceparent + decode + commit per record",
        )
    )
