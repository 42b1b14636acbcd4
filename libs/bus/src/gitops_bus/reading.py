"""Reading topics outside any consumer group, for people: `gitops events` and tests.

A reader never commits offsets and never joins a group, so tailing the topics cannot
disturb the services' own consumption.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from gitops_events import DecodeError, Envelope, decode


@dataclass(frozen=True)
class Record:
    """One record as read: its place, and the envelope or why it could not be decoded."""

    topic: str
    partition: int
    offset: int
    key: str | None
    envelope: Envelope | None
    error: DecodeError | None


async def tail(
    bootstrap_servers: str,
    topics: Sequence[str],
    *,
    follow: bool = False,
    idle_timeout: float = 1.0,
) -> AsyncIterator[Record]:
    """Yield every record of the topics from the beginning, partition by partition in order.

    Without follow, stop at the end offsets the topics had when reading started, so the caller
    has seen exactly everything published before it asked, however slow the broker. With
    follow, keep waiting for new records (polling every idle_timeout seconds). Topics that do
    not exist yet are read as empty.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        wanted = [topic for topic in topics if topic in await consumer.topics()]
        if not wanted:
            return
        # Without a group, a subscription is given every partition once metadata arrives.
        consumer.subscribe(wanted)
        partitions = await _assigned(consumer, set(wanted))
        ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
        while True:
            if not follow and await _all_reached(consumer, ends):
                return
            batches = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                for record in records:
                    yield _record(tp, record)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()


async def _assigned(consumer: AIOKafkaConsumer, topics: set[str]) -> list[TopicPartition]:
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        assignment: set[TopicPartition] = consumer.assignment()
        if {tp.topic for tp in assignment} >= topics:
            return sorted(assignment, key=lambda tp: (tp.topic, tp.partition))
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no partition metadata for {sorted(topics)} within 30 s")
        await asyncio.sleep(0.02)  # the assignment comes from the client's metadata task


async def _all_reached(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    for tp, end in ends.items():
        position: int = await consumer.position(tp)
        if position < end:
            return False
    return True


def _record(tp: TopicPartition, record: Any) -> Record:
    envelope: Envelope | None = None
    error: DecodeError | None = None
    try:
        envelope = decode(list(record.headers or []), record.value)
    except DecodeError as exc:
        error = exc
    return Record(
        topic=tp.topic,
        partition=tp.partition,
        offset=record.offset,
        key=record.key.decode("utf-8", "replace") if record.key else None,
        envelope=envelope,
        error=error,
    )
