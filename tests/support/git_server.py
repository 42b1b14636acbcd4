"""A Git smart-HTTP server on loopback: `git http-backend` behind HTTP basic authentication.

Tests fetch from it exactly as from an https Git host that wants a token, so credential
handling (asked for on 401, given to the right host only, never in a URL or a log) is tested
against real Git on both sides. Every request is recorded with whether it was authorised.
"""

from __future__ import annotations

import base64
import hmac
import subprocess
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Request:
    """One request the server answered."""

    method: str
    host: str
    path: str
    authorised: bool
    user: str | None


class GitHttpServer:
    """Serves the bare repositories under `root` at http://127.0.0.1:PORT/NAME."""

    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root = root
        self._expected = base64.b64encode(f"{username}:{password}".encode()).decode()
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the server is not started"
        return int(self._server.server_address[1])

    def url(self, name: str) -> str:
        """The clone URL of the repository `name` (without credentials)."""
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        """Listen on a free loopback port in a background thread."""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._handle(self)

            def do_POST(self) -> None:
                server._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output clean; requests are recorded instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _authorised(self, header: str | None) -> tuple[bool, str | None]:
        if not header or not header.startswith("Basic "):
            return False, None
        given = header.removeprefix("Basic ").strip()
        user = base64.b64decode(given).decode(errors="replace").partition(":")[0]
        return hmac.compare_digest(given, self._expected), user

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        authorised, user = self._authorised(handler.headers.get("Authorization"))
        self.requests.append(
            Request(handler.command, handler.headers.get("Host", ""), url.path, authorised, user)
        )
        if not authorised:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="git"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        body = _read_body(handler)
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": url.path,
            "QUERY_STRING": url.query,
            "REQUEST_METHOD": handler.command,
            "CONTENT_TYPE": handler.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": user or "",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_CONTENT_ENCODING": handler.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": handler.headers.get("Git-Protocol", ""),
            "PATH": "/usr/bin:/bin",
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().strip() or b"0", 16)
            if size == 0:
                handler.rfile.readline()
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
