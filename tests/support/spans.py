"""A span exporter that keeps finished spans in memory, for asserting on trace structure."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

__all__ = ["InMemorySpanExporter"]
