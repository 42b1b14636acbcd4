"""Real Git repositories on disk for tests: a bare 'remote' and a working clone that pushes to it.

Services read the bare repository over file://, as they would read any Git server; the test
changes it the way people do, by committing in a clone and pushing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(*args: str, cwd: Path) -> str:
    """Run git with a fixed identity; its standard output, stripped."""
    return subprocess.run(
        ["git", "-c", "user.name=Dev Eloper", "-c", "user.email=dev@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class GitRepo:
    """A bare repository under `base` and a working clone of it that commits and pushes."""

    def __init__(self, base: Path, name: str = "config.git", *, branch: str = "main") -> None:
        """Create both; the clone starts on `branch`, and nothing is pushed yet."""
        self.bare = base / "remotes" / name
        self.work = base / "work" / name.removesuffix(".git")
        self.bare.parent.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True)
        git("init", "-q", "--bare", "-b", "main", str(self.bare), cwd=base)
        git("init", "-q", "-b", branch, cwd=self.work)
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    @property
    def url(self) -> str:
        """The file:// URL of the bare repository."""
        return f"file://{self.bare}"

    def write(self, path: str, text: str) -> None:
        """Write a file in the clone (not yet committed)."""
        target = self.work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def commit(self, message: str) -> str:
        """Commit everything in the clone; the new commit's SHA."""
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self, branch: str) -> None:
        """Push the clone's HEAD to `branch` of the bare repository."""
        git("push", "-q", "origin", f"HEAD:{branch}", cwd=self.work)
