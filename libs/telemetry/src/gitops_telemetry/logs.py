"""Structured logs: one JSON object a line, with trace and span ids, and no secrets.

Credentials in URLs are masked by the formatter itself, so a careless `log.info(url)` cannot
leak a token; everything else that is secret must never be passed to a logger at all.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from gitops_telemetry import tracing

_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s:]+(:[^/@\s]*)?@")
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def redact(text: str) -> str:
    """Replace user:password@ in URLs with ***@."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with time, level, logger, message, trace ids and extras."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object for one record."""
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        trace_id, span_id = tracing.current_ids()
        if trace_id:
            payload["trace_id"] = trace_id
            payload["span_id"] = span_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            payload["error"] = redact(self.formatException(record.exc_info))
        return json.dumps(payload, default=str)


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still with the trace id and still redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """One line for one record."""
        trace_id, _ = tracing.current_ids()
        suffix = f" trace={trace_id}" if trace_id else ""
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}{suffix}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line)


def setup_logging(service: str, *, level: str = "INFO", fmt: str = "json") -> None:
    """Send every logger's records to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if fmt == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # kubernetes_asyncio logs whole response bodies at DEBUG, Secrets and keys included, so it
    # never logs below WARNING whatever the level asked for.
    for noisy in ("aiokafka", "kafka", "urllib3", "git", "kubernetes_asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
