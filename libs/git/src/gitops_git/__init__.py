"""The one place that talks to Git: mirrors of remote repositories and commits read as data.

Only this package imports GitPython. Services get branch heads, history questions (is this a
force-push?) and the tree of a commit as plain values, and never run git themselves. Git is
run with settings a hostile repository cannot abuse (see `gitops_git.remotes`), with argument
lists only, and credentials never appear in URLs, command lines, logs or errors.
"""

from gitops_git.mirrors import CommitInfo, GitError, Mirror
from gitops_git.remotes import Remote, RemoteError, protocol, public_url, repository_key
from gitops_git.trees import EntryKind, Snapshot, TreeEntry

__all__ = [
    "CommitInfo",
    "EntryKind",
    "GitError",
    "Mirror",
    "Remote",
    "RemoteError",
    "Snapshot",
    "TreeEntry",
    "protocol",
    "public_url",
    "repository_key",
]
