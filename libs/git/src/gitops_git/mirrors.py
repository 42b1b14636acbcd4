"""A bare mirror of one remote repository in a cache directory: fetch, heads, history, trees.

The mirror keeps every branch of the remote (`+refs/heads/*:refs/heads/*`, pruned), so a
force-push is an ordinary forced ref update here and a deleted branch simply disappears from
`heads()`. Nothing is ever checked out: the renderer reads trees and blobs by object id.
Every git command runs with the hardened environment of `gitops_git.remotes`.

A `Mirror` is opened as a context manager and is not thread-safe: use one from one thread at
a time (callers serialise per repository anyway, since fetches of one mirror must not overlap).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import git

from gitops_git import remotes, trees

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_MAX_SUMMARY = 500


class GitError(RuntimeError):
    """A git operation failed; the message names the repository (without credentials)."""


@dataclass(frozen=True)
class CommitInfo:
    """Who made a commit (`Name <email>`) and the first line of its message."""

    sha: str
    author: str
    summary: str


def directory_name(url: str) -> str:
    """One directory name per public URL (credentials never count, never show)."""
    return hashlib.sha256(remotes.public_url(url).encode()).hexdigest()[:24]


def _check_sha(sha: str) -> str:
    # Commit ids may come from events; never let one reach git as an option or a revision range.
    if not _SHA_RE.fullmatch(sha):
        raise GitError(f"{sha!r} is not a full commit id")
    return sha


class LocalRepository:
    """A local repository of one remote, opened and closed as a context manager.

    The bare mirror (reading) and the work-tree clone (writing) share this life cycle; each
    says what it is called in errors and how it opens.
    """

    kind = "repository"

    def __init__(self, remote: remotes.Remote, path: Path, *, timeout: float) -> None:
        """Describe the repository of `remote` at `path`; nothing happens until `open()`."""
        self.remote = remote
        self.path = path
        self.timeout = timeout
        self._repo: git.Repo | None = None

    def __enter__(self) -> Self:
        """Open (creating it if needed) the repository."""
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the repository and its git processes."""
        self.close()

    @property
    def repo(self) -> git.Repo:
        """The open GitPython repository."""
        if self._repo is None:
            raise GitError(f"the {self.kind} of {self.remote} is not open")
        return self._repo

    def open(self) -> None:
        """Create the repository on first use; each kind says how."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the git processes GitPython keeps for reading objects."""
        if self._repo is not None:
            self._repo.close()
            self._repo = None


class Mirror(LocalRepository):
    """A bare, pruned mirror of a remote's branches, opened as a context manager."""

    kind = "mirror"

    def __init__(self, remote: remotes.Remote, cache_dir: Path, *, timeout: float = 120.0) -> None:
        """Describe the mirror of `remote` under `cache_dir`; nothing happens until `open()`."""
        super().__init__(remote, cache_dir / f"{directory_name(remote.url)}.git", timeout=timeout)

    def open(self) -> None:
        """Create the bare mirror on first use and point it at the remote."""
        env = remotes.environment(self.remote)
        try:
            if not (self.path / "HEAD").is_file():
                self.path.parent.mkdir(parents=True, exist_ok=True)
                runner = git.Git()
                runner.update_environment(**env)
                runner.init("--bare", "--quiet", "--template=", "--", str(self.path))
            repo = git.Repo(str(self.path))
        except (git.GitCommandError, git.InvalidGitRepositoryError, OSError) as exc:
            raise GitError(f"cannot create the mirror of {self.remote}: {_reason(exc)}") from None
        repo.git.update_environment(**env)
        with repo.config_writer() as writer:
            writer.set_value('remote "origin"', "url", self.remote.url)
            writer.set_value('remote "origin"', "fetch", "+refs/heads/*:refs/heads/*")
        self._repo = repo

    def fetch(self) -> dict[str, str]:
        """Fetch every branch (forced updates and deletions included); return `heads()`."""
        try:
            self.repo.git.fetch(
                "--prune",
                "--no-tags",
                "--no-recurse-submodules",
                "--no-write-fetch-head",
                "--quiet",
                "origin",
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            raise GitError(f"cannot fetch {self.remote}: {_reason(exc)}") from None
        return self.heads()

    def heads(self) -> dict[str, str]:
        """Every branch of the mirror and the commit it points at."""
        output = self.repo.git.for_each_ref("--format=%(objectname) %(refname)", "refs/heads/")
        heads: dict[str, str] = {}
        for line in output.splitlines():
            sha, _, ref = line.partition(" ")
            heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def has_commit(self, sha: str) -> bool:
        """Whether the mirror holds commit `sha`."""
        try:
            self.repo.git.cat_file("-e", f"{_check_sha(sha)}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether `old` is an ancestor of (or equal to) `new`: false after a force-push.

        A commit the mirror does not hold after a full fetch is reachable from no branch, so
        it is no ancestor of `new` either.
        """
        if not self.has_commit(old):
            return False
        try:
            self.repo.git.merge_base("--is-ancestor", _check_sha(old), _check_sha(new))
        except git.GitCommandError as exc:
            if exc.status == 1:
                return False
            raise GitError(f"cannot compare commits in {self.remote}: {_reason(exc)}") from None
        return True

    def commit(self, sha: str) -> CommitInfo:
        """The author and summary of commit `sha`."""
        try:
            commit = self.repo.commit(_check_sha(sha))
            author = f"{commit.author.name} <{commit.author.email}>"
            summary = commit.summary
        except (ValueError, git.GitCommandError) as exc:
            raise GitError(f"cannot read commit {sha} of {self.remote}: {_reason(exc)}") from None
        text = summary if isinstance(summary, str) else summary.decode("utf-8", "replace")
        return CommitInfo(sha, author, text[:_MAX_SUMMARY])

    def snapshot(self, sha: str) -> trees.Snapshot:
        """The tree of commit `sha`, read from the object database (no work tree)."""
        try:
            raw = self.repo.git.ls_tree(
                "-r", "-t", "-l", "-z", "--full-tree", _check_sha(sha), stdout_as_string=False
            )
        except git.GitCommandError as exc:
            raise GitError(f"cannot list commit {sha} of {self.remote}: {_reason(exc)}") from None
        entries: dict[str, trees.TreeEntry] = {}
        for record in raw.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, _, rest = meta.decode("ascii").partition(" ")
            _, _, rest = rest.partition(" ")
            oid, _, size = rest.strip().partition(" ")
            kind = trees.kind_of_mode(mode)
            if kind is None:
                continue
            path = name.decode("utf-8", "surrogateescape")
            size_value = int(size.strip()) if size.strip().isdigit() else 0
            entries[path] = trees.TreeEntry(path, kind, size_value, oid)
        return trees.Snapshot(sha, entries, self._read_blob)

    def _read_blob(self, oid: str) -> bytes:
        try:
            return bytes(self.repo.odb.stream(bytes.fromhex(oid)).read())
        except (ValueError, git.GitCommandError) as exc:
            raise GitError(f"cannot read object {oid} of {self.remote}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    """The useful part of a git failure: its stderr, else the exception text."""
    if isinstance(exc, git.GitCommandError):
        stderr = exc.stderr.strip() if isinstance(exc.stderr, str) else ""
        stderr = stderr.removeprefix("stderr:").strip().strip("'").strip()
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        if lines:
            return " ".join(lines[-3:])
        return f"git exited with status {exc.status}"
    return str(exc) or type(exc).__name__
