"""git-watcher's wiring: the Release step, from Git commits to revisions and desired state."""

from __future__ import annotations

from gitops_config import GitopsConfig
from gitops_runtime.runtimes import Runtime

SERVICE = "git-watcher"


def build(runtime: Runtime, config: GitopsConfig) -> None:
    """Register git-watcher's loops and routes on a runtime."""
    runtime.check("config-loaded", lambda: config is not None)
