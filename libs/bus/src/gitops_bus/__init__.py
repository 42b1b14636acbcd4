"""Kafka for the services: publish and consume events in the envelope, with traces and dead letters.

This is the only package that imports aiokafka. Services hand it typed events and handlers;
it takes care of the CloudEvents headers, W3C trace context, at-least-once delivery (an offset
is committed only after its handler succeeded) and the dead-letter topic for records that
cannot be parsed or handled, so that one bad record never stops a partition.
"""

from gitops_bus.admin import ensure_topics, list_topics
from gitops_bus.consuming import Consumer, Handler
from gitops_bus.producing import Publisher
from gitops_bus.reading import Record, tail

__all__ = ["Consumer", "Handler", "Publisher", "Record", "ensure_topics", "list_topics", "tail"]
