"""drift-detector's wiring: desired state and live watches to drift events."""

from __future__ import annotations

from gitops_config import GitopsConfig
from gitops_runtime.runtimes import Runtime

SERVICE = "drift-detector"


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register drift-detector's consumers and watches on a runtime."""
    runtime.check("config-loaded", lambda: config is not None)
