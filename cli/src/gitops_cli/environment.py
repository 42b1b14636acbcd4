"""Where the CLI finds its settings: the process environment over `.local/env` from `make up`."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from gitops_config import Settings

LOCAL_ENV = Path(".local") / "env"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (shell quoting allowed, comments skipped) of an env file, if it exists."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        key = key.removeprefix("export ").strip()
        parts = shlex.split(raw) if raw.strip() else [""]
        values[key] = parts[0] if parts else ""
    return values


def load_settings() -> Settings:
    """Settings from the environment, falling back to what `make up` wrote."""
    environ = {**read_env_file(Path.cwd() / LOCAL_ENV), **os.environ}
    return Settings.from_env(environ)
