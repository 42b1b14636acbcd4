"""Reading topics outside any consumer group, for people: `gitops events` and tests.

A reader never commits offsets and never joins a group, so tailing the topics cannot
disturb the services' own consumption.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer

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
    """Yield every record of the topics from the beginning; with follow, keep waiting for more.

    Without follow, stop once no record arrived for idle_timeout seconds.
    """
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=int(idle_timeout * 1000))
            if not batches and not follow:
                return
            for tp, records in sorted(batches.items(), key=lambda item: item[0].partition):
                for record in records:
                    envelope: Envelope | None = None
                    error: DecodeError | None = None
                    try:
                        envelope = decode(list(record.headers or []), record.value)
                    except DecodeError as exc:
                        error = exc
                    yield Record(
                        topic=tp.topic,
                        partition=tp.partition,
                        offset=record.offset,
                        key=record.key.decode("utf-8", "replace") if record.key else None,
                        envelope=envelope,
                        error=error,
                    )
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
