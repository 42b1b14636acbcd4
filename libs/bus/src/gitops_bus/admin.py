"""Creating the system's topics (idempotently) with the partitions and compaction they need."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from gitops_events import TOPICS

log = logging.getLogger(__name__)

DEFAULT_PARTITIONS = 6


async def ensure_topics(
    bootstrap_servers: str,
    prefix: str,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    replication_factor: int = 1,
) -> list[str]:
    """Create every topic of the contract that does not exist yet; return all their names."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="gitops-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=prefix + spec.name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs={"cleanup.policy": "compact"} if spec.compacted else {},
            )
            for spec in TOPICS
            if prefix + spec.name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:
                log.info("topics created concurrently by another process")
            log.info("created topics", extra={"topics": [t.name for t in wanted]})
    finally:
        await admin.close()
    return [prefix + spec.name for spec in TOPICS]


async def list_topics(bootstrap_servers: str) -> set[str]:
    """The names of the topics that exist on the cluster."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="gitops-admin")
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()
