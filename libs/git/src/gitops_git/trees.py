"""The files of one commit as data: paths, kinds and sizes, and their contents on demand.

Rendering reads a commit straight from the object database instead of checking it out, so a
hostile repository never gets a work tree of its own making: symlinks stay data (their target
is their content) for the renderer to judge, and submodules are entries, never fetched.
A `Snapshot` can also be built from a plain mapping, which keeps render logic testable
without Git.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class EntryKind(StrEnum):
    """What a tree entry is."""

    FILE = "file"
    SYMLINK = "symlink"
    DIRECTORY = "directory"
    SUBMODULE = "submodule"


_KIND_BY_MODE = {
    "100644": EntryKind.FILE,
    "100755": EntryKind.FILE,
    "100664": EntryKind.FILE,
    "120000": EntryKind.SYMLINK,
    "040000": EntryKind.DIRECTORY,
    "160000": EntryKind.SUBMODULE,
}


def kind_of_mode(mode: str) -> EntryKind | None:
    """The kind of a tree entry from its octal Git mode, or None for modes Git never writes."""
    return _KIND_BY_MODE.get(mode)


@dataclass(frozen=True)
class TreeEntry:
    """One path of a commit and what it is.

    A symlink's target is its content; a submodule is a commit of another repository, which
    is never followed.
    """

    path: str
    kind: EntryKind
    size: int
    oid: str


class Snapshot:
    """The tree of one commit, with contents read lazily by object id."""

    def __init__(
        self,
        commit: str,
        entries: Mapping[str, TreeEntry],
        read_object: Callable[[str], bytes],
    ) -> None:
        """Wrap `entries` (by repo-relative path) and a function that reads a blob by oid."""
        self.commit = commit
        self.entries = entries
        self._read_object = read_object

    def read(self, path: str) -> bytes:
        """The content of a file, or the target of a symlink, at `path`."""
        entry = self.entries[path]
        if entry.kind not in (EntryKind.FILE, EntryKind.SYMLINK):
            raise IsADirectoryError(f"{path} is a {entry.kind}, not a file")
        return self._read_object(entry.oid)

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, bytes],
        *,
        symlinks: Mapping[str, str] | None = None,
        commit: str = "0" * 40,
    ) -> Snapshot:
        """A snapshot of in-memory files and symlinks (path to target), for tests and tools."""
        entries: dict[str, TreeEntry] = {}
        contents: dict[str, bytes] = {}

        def add(path: str, kind: EntryKind, data: bytes) -> None:
            oid = f"{len(contents):040x}"
            contents[oid] = data
            entries[path] = TreeEntry(path, kind, len(data), oid)
            parent = path.rpartition("/")[0]
            while parent and parent not in entries:
                entries[parent] = TreeEntry(parent, EntryKind.DIRECTORY, 0, "")
                parent = parent.rpartition("/")[0]

        for path, data in files.items():
            add(path, EntryKind.FILE, data)
        for path, target in (symlinks or {}).items():
            add(path, EntryKind.SYMLINK, target.encode())
        return cls(commit, entries, contents.__getitem__)
