"""config-updater's wiring: image events and promotion requests to commits in config repos."""

from __future__ import annotations

from gitops_config import GitopsConfig
from gitops_runtime.runtimes import Runtime

SERVICE = "config-updater"


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register config-updater's consumers on a runtime."""
    runtime.check("config-loaded", lambda: config is not None)
