"""A scripted fake S3 endpoint on loopback: each request gets the next answer of a script.

For what a real server cannot be made to do on demand: answer 5xx, reset a connection,
cut a body short, ignore a header. Everything else is tested against SeaweedFS.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any

Step = tuple[int, str] | str


class Script:
    """What the fake endpoint answers, request by request; the last entry repeats.
    ``(status, error code)``, ``"reset"`` (connection dropped) or ``"short"`` (body cut)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.headers: list[dict[str, str]] = []  # every request's headers, in order
        self.lock = threading.Lock()

    def next(self) -> Step:
        with self.lock:
            return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]


@contextlib.contextmanager
def serve() -> Iterator[tuple[str, Script]]:
    """(endpoint URL, script) of a fake server that lives as long as the context."""
    script = Script((200, ""))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            script.seen.append((self.command, self.path, self.headers.get("Range")))
            script.headers.append({k.lower(): v for k, v in self.headers.items()})
            step = script.next()
            if step == "reset":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if step == "short":  # headers promise 10 bytes, the connection dies after 5
                self.send_response(200)
                self.send_header("Content-Length", "10")
                self.end_headers()
                self.wfile.write(b"01234")
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            assert isinstance(step, tuple)
            status, code = step
            body = b"" if not code else (
                f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>m</Message></Error>".encode())
            if status == 200 and self.command == "GET":
                body = b"0123456789"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", '"e"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_PUT = do_HEAD = do_DELETE = _answer

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()


def provider(endpoint: str, conditional_put: bool | None = None, **params: object) -> Any:
    """An S3Provider on the fake endpoint; ``params`` become URL query parameters."""
    from freehold.providers.s3 import S3Provider

    query = "&".join(f"{k}={v}" for k, v in {"endpoint": endpoint, "region": "us-east-1", **params}.items())
    return S3Provider.from_url(f"s3://fake-bucket/p?{query}", conditional_put=conditional_put)
