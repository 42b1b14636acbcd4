"""Where a repository lives, how to authenticate to it, and the environment Git runs in.

Everything Git is told about a remote goes through here, so the hardening is in one place:
Git runs with no system or global configuration, hooks disabled, submodules never followed,
only the URL's own transport allowed (so a redirect or a crafted URL cannot switch to `ext::`
or `file://`), no terminal prompts, and credentials handed over through the environment to a
credential helper, never in a URL, a command line, a config file or an error message.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_SCP_LIKE_RE = re.compile(r"(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?!//)(?P<path>.+)")
# `ext::cmd` and friends: git's remote-helper syntax, which can run arbitrary commands.
_REMOTE_HELPER_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEMES = {"https": "https", "http": "http", "ssh": "ssh", "git": "git", "file": "file"}

# The credential helper git runs for `get`: it prints the username and password it finds in
# the environment of the git process. Git runs it through a shell, but the script is a constant
# of ours: no repository name, branch or path is ever part of it.
_CREDENTIAL_HELPER = (
    '!f() { test "$1" = get || exit 0; '
    'printf "username=%s\\npassword=%s\\n" "$GITOPS_GIT_USERNAME" "$GITOPS_GIT_PASSWORD"; }; f'
)


class RemoteError(ValueError):
    """A repository location or credential that Git must not be given."""


@dataclass(frozen=True)
class Remote:
    """A repository location and the credentials to read it (held only in memory).

    `url` is https, http, ssh, git, scp-like (`git@host:path`), `file://` or an absolute
    path; it must not carry a password. `username`/`password` are used for http(s) only,
    `ssh_key_file` for ssh only.
    """

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssh_key_file: Path | None = None

    def __post_init__(self) -> None:
        """Refuse locations and credentials that could be abused or leak."""
        protocol(self.url)
        if self.url.startswith("-"):
            raise RemoteError("a repository URL must not start with '-'")
        if urlsplit(self.url).password is not None:
            raise RemoteError("a repository URL must not contain a password; pass it separately")
        for value in (self.username, self.password):
            if value is not None and ("\n" in value or "\r" in value or "\0" in value):
                raise RemoteError("credentials must not contain line breaks or NUL characters")

    def __str__(self) -> str:
        """The URL without any user information, safe for logs and events."""
        return public_url(self.url)


def protocol(url: str) -> str:
    """The Git transport of a repository location: https, http, ssh, git or file.

    Raises `RemoteError` for anything else (such as `ext::`, which runs commands).
    """
    if url.startswith("/"):
        return "file"
    if _REMOTE_HELPER_RE.match(url):
        raise RemoteError("remote helpers (`transport::address`) are not allowed")
    scheme = urlsplit(url).scheme.lower()
    if scheme in _SCHEMES and "://" in url:
        return _SCHEMES[scheme]
    if _SCP_LIKE_RE.fullmatch(url):
        return "ssh"
    raise RemoteError(
        "not a supported repository location: use https://, http://, ssh://, git://, "
        "git@host:path, file:// or an absolute path"
    )


def public_url(url: str) -> str:
    """The URL with user information (user names and tokens) removed.

    Scp-like locations keep their user (`git@host:path`): ssh user names are not secrets.
    """
    if url.startswith("/") or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def repository_key(url: str) -> str:
    """One name for one repository however its URL is written, to match webhooks to apps.

    `https://github.com/Org/App.git`, `git@github.com:org/app` and `ssh://git@github.com/org/app`
    all become `github.com/org/app` (user, port, `.git` and case dropped); local paths and
    `file://` URLs become the absolute path without `.git`.
    """
    text = url.strip()
    if text.startswith("/") or text.lower().startswith("file://"):
        path = text if text.startswith("/") else urlsplit(text).path
        return posixpath.normpath(path).removesuffix(".git")
    scp = _SCP_LIKE_RE.fullmatch(text) if "://" not in text else None
    if scp is not None:
        host, path = scp.group("host"), scp.group("path")
    else:
        parts = urlsplit(text)
        host, path = parts.hostname or "", parts.path
    path = path.strip("/").removesuffix(".git").rstrip("/")
    return f"{host}/{path}".lower()


def environment(remote: Remote) -> dict[str, str]:
    """The environment variables every git command about `remote` runs with."""
    transport = protocol(remote.url)
    config: list[tuple[str, str]] = [
        ("core.hooksPath", "/dev/null"),
        ("core.fsmonitor", "false"),
        ("submodule.recurse", "false"),
        ("fetch.recurseSubmodules", "false"),
        ("protocol.allow", "never"),
        (f"protocol.{transport}.allow", "always"),
        ("credential.helper", ""),
        ("gc.autoDetach", "false"),
    ]
    env = {
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "",
        "SSH_ASKPASS": "",
        "GIT_ALLOW_PROTOCOL": transport,
        "GIT_PROTOCOL_FROM_USER": "0",
    }
    if transport in ("https", "http") and remote.password is not None:
        parts = urlsplit(remote.url)
        scope = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        config.append((f"credential.{scope}.helper", _CREDENTIAL_HELPER))
        env["GITOPS_GIT_USERNAME"] = remote.username or "git"
        env["GITOPS_GIT_PASSWORD"] = remote.password
    if transport == "ssh":
        command = ["ssh", "-o", "BatchMode=yes"]
        if remote.ssh_key_file is not None:
            command += ["-o", "IdentitiesOnly=yes", "-i", str(remote.ssh_key_file)]
        env["GIT_SSH_COMMAND"] = shlex.join(command)
        env["GIT_SSH_VARIANT"] = "ssh"
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for index, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env
