"""A clone with a work tree, for the one service that writes to Git: commit, merge, push.

Reading Git never needs a work tree (see `gitops_git.mirrors`), but editing files, committing
and merging do. A `Workspace` is a private clone of one remote in a cache directory: every
change starts from a fresh fetch and a hard reset of the branch to the remote's head, so a
failed attempt leaves nothing behind, and pushing never forces: a push the remote refuses
because someone else pushed first raises `PushRejectedError`, and the caller fetches,
re-applies its change and tries again.

Git runs with the hardened environment of `gitops_git.remotes` (hooks disabled, no system or
global configuration, only the remote's own transport), symlinks are checked out as plain
files (so an edit can never be redirected outside the work tree), commits are never signed
with a key found on the machine, and credentials never appear in URLs, command lines or
errors. Like `Mirror`, a `Workspace` is not thread-safe: callers serialise per repository.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import git

from gitops_git import remotes
from gitops_git.mirrors import GitError, LocalRepository, _reason, directory_name

_SHA_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_ABBREVIATED_SHA_RE = re.compile(r"[0-9a-f]{7,64}")


class PushRejectedError(GitError):
    """The remote refused a push because its branch moved on (not a fast-forward)."""


class MergeConflictError(GitError):
    """A merge stopped on conflicts; nothing was committed. `paths` are the files at fault."""

    def __init__(self, message: str, paths: Sequence[str]) -> None:
        """Keep the conflicting paths next to the message."""
        super().__init__(message)
        self.paths = tuple(paths)


@dataclass(frozen=True)
class Identity:
    """Who commits: `Name <email>` as Git records it (author and committer)."""

    name: str
    email: str

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>"


def _check_branch(branch: str) -> str:
    # Branch names come from the configuration; never let one reach git as an option.
    if not branch or branch.startswith("-") or ".." in branch or any(c.isspace() for c in branch):
        raise GitError(f"{branch!r} is not a branch name git may be given")
    return branch


class Workspace(LocalRepository):
    """A private clone of one remote with a work tree, opened as a context manager."""

    kind = "workspace"

    def __init__(
        self,
        remote: remotes.Remote,
        work_dir: Path,
        author: Identity,
        *,
        timeout: float = 120.0,
    ) -> None:
        """Describe the clone of `remote` under `work_dir`; nothing happens until `open()`."""
        super().__init__(remote, work_dir / directory_name(remote.url), timeout=timeout)
        self.author = author

    @property
    def root(self) -> Path:
        """The top of the work tree: where the files of the checked-out branch are."""
        return self.path

    def open(self) -> None:
        """Create the clone on first use and point it at the remote."""
        env = self._environment()
        try:
            if not (self.path / ".git" / "HEAD").is_file():
                self.path.mkdir(parents=True, exist_ok=True)
                runner = git.Git()
                runner.update_environment(**env)
                runner.init("--quiet", "--template=", "--", str(self.path))
            repo = git.Repo(str(self.path))
        except (git.GitCommandError, git.InvalidGitRepositoryError, OSError) as exc:
            raise GitError(f"cannot create a workspace for {self.remote}: {_reason(exc)}") from None
        repo.git.update_environment(**env)
        with repo.config_writer() as writer:
            writer.set_value('remote "origin"', "url", self.remote.url)
            writer.set_value('remote "origin"', "fetch", "+refs/heads/*:refs/remotes/origin/*")
        self._repo = repo

    def reset(self, branch: str) -> str:
        """Fetch, then make `branch` exactly the remote's head of it; return that commit.

        Anything left in the work tree (a failed edit, an aborted merge) is discarded.
        """
        self._fetch()
        remote_ref = f"refs/remotes/origin/{_check_branch(branch)}"
        try:
            head = self.repo.git.rev_parse("--verify", "--quiet", f"{remote_ref}^{{commit}}")
        except git.GitCommandError:
            raise GitError(f"{self.remote} has no branch {branch!r}") from None
        self._run("checkout", "--quiet", "--force", "-B", branch, remote_ref)
        self._run("reset", "--hard", "--quiet")
        self._run("clean", "-d", "-x", "--force", "--quiet")
        return str(head)

    def head(self) -> str:
        """The commit the work tree is at."""
        return str(self.repo.git.rev_parse("HEAD"))

    def commit_all(self, message: str) -> str | None:
        """Commit every change in the work tree; return the new commit, None if nothing changed."""
        self._run("add", "--all")
        try:
            self.repo.git.diff("--cached", "--quiet")
            return None
        except git.GitCommandError as exc:
            if exc.status != 1:
                raise GitError(f"cannot compare changes in {self.remote}: {_reason(exc)}") from None
        self._run("commit", "--quiet", "--no-verify", "--no-gpg-sign", "-m", message)
        return self.head()

    def resolve(self, revision: str, branch: str) -> str:
        """The full id of commit `revision` (an id or a prefix) on the remote's `branch`.

        Raises `GitError` when it names no commit, or one that is not on that branch.
        """
        if not _ABBREVIATED_SHA_RE.fullmatch(revision):
            raise GitError(f"{revision!r} is not a commit id")
        try:
            sha = str(self.repo.git.rev_parse("--verify", "--quiet", f"{revision}^{{commit}}"))
        except git.GitCommandError:
            raise GitError(f"{revision} is not a commit of {self.remote}") from None
        if not self.is_ancestor(sha, f"refs/remotes/origin/{_check_branch(branch)}"):
            raise GitError(f"commit {revision} is not on branch {branch!r} of {self.remote}")
        return sha

    def first_parent(self, sha: str) -> str | None:
        """The first parent of commit `sha`, None for a root commit."""
        if not _SHA_RE.fullmatch(sha):
            raise GitError(f"{sha!r} is not a full commit id")
        try:
            return str(self.repo.git.rev_parse("--verify", "--quiet", f"{sha}^1"))
        except git.GitCommandError:
            return None

    def is_ancestor(self, old: str, new: str) -> bool:
        """Whether commit `old` is an ancestor of (or equal to) `new`."""
        try:
            self.repo.git.merge_base("--is-ancestor", old, new)
        except git.GitCommandError as exc:
            if exc.status == 1:
                return False
            raise GitError(f"cannot compare commits in {self.remote}: {_reason(exc)}") from None
        return True

    def merge(self, source: str, message: str, *, ours: bool = False) -> None:
        """Merge commit or remote branch `source` into the checked-out branch with a merge commit.

        `source` is a full commit id or `origin/<branch>`. With `ours`, the merge records
        `source` as merged but keeps this branch's files (`git merge -s ours`), so later merges
        never bring its changes. On conflicts the merge is aborted and `MergeConflictError`
        names the files.
        """
        if not (_SHA_RE.fullmatch(source) or source.startswith("origin/")):
            raise GitError(f"{source!r} is neither a commit id nor a remote branch")
        if source.startswith("origin/"):
            _check_branch(source.removeprefix("origin/"))
        strategy = ["--strategy", "ours"] if ours else []
        try:
            self.repo.git.merge(
                "--no-ff",
                "--no-edit",
                "--no-verify",
                "--no-gpg-sign",
                "--quiet",
                *strategy,
                "-m",
                message,
                source,
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            conflicts = self._conflicts()
            self._abort_merge()
            if conflicts:
                raise MergeConflictError(
                    f"merging {source} in {self.remote} conflicts in: {', '.join(conflicts)}",
                    conflicts,
                ) from None
            raise GitError(f"cannot merge {source} in {self.remote}: {_reason(exc)}") from None

    def push(self, branch: str) -> None:
        """Push the checked-out branch to the remote's `branch`, never forcing.

        Raises `PushRejectedError` when the remote's branch moved on since `reset`.
        """
        refspec = f"HEAD:refs/heads/{_check_branch(branch)}"
        try:
            self.repo.git.push(
                "--porcelain",
                "--no-verify",
                "--no-recurse-submodules",
                "origin",
                refspec,
                kill_after_timeout=self.timeout,
            )
        except git.GitCommandError as exc:
            output = f"{exc.stdout} {exc.stderr}"
            if any(
                marker in output
                for marker in (
                    "non-fast-forward",
                    "fetch first",
                    "[rejected]",
                    "stale info",
                    "cannot lock ref",
                )
            ):
                raise PushRejectedError(
                    f"{self.remote} refused the push to {branch!r}: the branch moved on"
                ) from None
            raise GitError(f"cannot push to {branch!r} of {self.remote}: {_reason(exc)}") from None

    def _fetch(self) -> None:
        try:
            self._run(
                "fetch", "--prune", "--no-tags", "--no-recurse-submodules", "--quiet", "origin"
            )
        except GitError as exc:
            raise GitError(f"cannot fetch {self.remote}: {exc}") from None

    def _conflicts(self) -> list[str]:
        try:
            output = self.repo.git.diff("--name-only", "--diff-filter=U")
        except git.GitCommandError:
            return []
        return [line for line in str(output).splitlines() if line]

    def _abort_merge(self) -> None:
        try:
            self.repo.git.merge("--abort")
        except git.GitCommandError:
            self._run("reset", "--hard", "--quiet")

    def _run(self, command: str, *args: str) -> None:
        try:
            self.repo.git.execute(
                ["git", command, *args], kill_after_timeout=self.timeout, with_extended_output=False
            )
        except git.GitCommandError as exc:
            raise GitError(f"git {command} failed in {self.remote}: {_reason(exc)}") from None

    def _environment(self) -> dict[str, str]:
        env = remotes.environment(self.remote)
        extra = [("core.symlinks", "false"), ("commit.gpgSign", "false"), ("merge.ff", "false")]
        count = int(env["GIT_CONFIG_COUNT"])
        for index, (key, value) in enumerate(extra, start=count):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        env["GIT_CONFIG_COUNT"] = str(count + len(extra))
        env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = self.author.name
        env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = self.author.email
        return env
