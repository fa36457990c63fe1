"""``freehold gateway``: published content served to IPFS clients as a trustless gateway.

The subset of the IPFS Trustless Gateway specification (ipfs/specs ``http-gateways/
trustless-gateway.md``, with IPIP-402 and IPIP-412) that verifying clients use, on 127.0.0.1 only:

- ``GET``/``HEAD /ipfs/{cid}`` with ``Accept: application/vnd.ipld.raw`` or ``?format=raw``: the
  block (``Range: bytes=`` for one range gives 206 or 416; several ranges get the whole block, 200);
- ``Accept: application/vnd.ipld.car`` or ``?format=car`` (and ``/ipfs/{cid}/a/b`` through UnixFS
  directories, HAMT shards too): a CARv1 stream in depth-first pre-order, each block once,
  ``dag-scope=all|entity|block`` and ``entity-bytes=from:to``; its root is the requested CID;
- no deserialized responses, no directory listings, no HTML: 400 without a format, 404 for
  what the :class:`BlockSource` does not publish, 405 for other methods, 501 for ``/ipns/``.

Access: every request needs ``Authorization: Bearer <token>`` (401 otherwise), compared in
constant time. The token is never taken from the URL, because real clients cannot put it there:
Helia's trustless-gateway client (``@helia/trustless-gateway-client`` 1.0.6 and
``@helia/block-brokers`` 5.2.4, under ``@helia/verified-fetch`` 8.0.4) sets
``pathname = "/ipfs/<cid>"`` and ``search = "?format=raw"`` on the configured gateway URL, so a
path prefix or a query is dropped, and a URL's user:password is lost in its multiaddr and refused
by fetch(); its ``transformRequestInit`` hook is where a header is added. ``token=None`` (the
CLI's ``--public``) serves published content to anyone on this machine.

Requests are hostile input: the request head is capped at 16 KiB and must arrive within 10 s,
at most 64 connections are served at once (each on its own thread), the Host header must name
this server (no DNS rebinding), and no traceback reaches the client or the terminal.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from types import TracebackType
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from freehold.errors import FreeholdError, ProviderUnavailable, QuorumError, UsageError
from freehold.gateway_dag import (
    BadRequest,
    BlockSource,
    DictBlockSource,
    Missing,
    Scope,
    entity_size,
    lookup,
    parse_entity_bytes,
    resolve_path,
    resolve_range,
    walk,
)
from freehold.unixfs.car import write_car
from freehold.unixfs.cids import cid_str, parse_cid

__all__ = ["GENERATE", "BlockSource", "DictBlockSource", "Gateway", "serve"]

HOST = "127.0.0.1"
MAX_HEAD = 16 * 1024            # request line and headers together
HEAD_TIMEOUT = 10.0             # seconds for a whole request head to arrive (and idle keep-alive)
WRITE_TIMEOUT = 30.0            # seconds one write to the client may take
MAX_CONNECTIONS = 64
CHUNK = 64 * 1024               # CAR responses are sent in chunks of this size
RAW = "application/vnd.ipld.raw"
CAR = "application/vnd.ipld.car"
CAR_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
IMMUTABLE = "public, max-age=29030400, immutable"
GENERATE = "generate"           # Gateway(token=GENERATE): a fresh random token
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class _HeadTooLarge(Exception):
    pass


class _Reply(Exception):
    """An error response decided while handling a request."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}


class _ChunkedWriter:
    """A file-like sink that sends what is written as HTTP/1.1 chunks of about CHUNK bytes."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.buf = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.buf += data
        if len(self.buf) >= CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self.buf:
            self.out.write(b"%x\r\n" % len(self.buf) + bytes(self.buf) + b"\r\n")
            self.buf.clear()

    def finish(self) -> None:
        self.flush()
        self.out.write(b"0\r\n\r\n")


def _accept(header: str) -> str | None:
    """The preferred of RAW and CAR in an Accept header (highest q, then first listed); None if
    it names neither (wildcards do not count: the client must choose). CAR variants other than
    version 1 in dfs (or unknown) order are not ours; ``dups=y`` is answered with ``dups=n``,
    which the response's Content-Type says."""
    best: tuple[float, str] | None = None
    for item in header.split(",")[:32]:
        kind, *raw_params = (part.strip() for part in item.split(";"))
        params: dict[str, str] = {}
        for param in raw_params:
            key, _, value = param.partition("=")
            params[key.strip().lower()] = value.strip().strip('"').lower()
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 0.0
        kind = kind.lower()
        if kind not in (RAW, CAR) or q <= 0:
            continue
        if kind == CAR and (params.get("version", "1") != "1" or params.get("order", "dfs") not in ("dfs", "unk")):
            continue                    # a CAR variant we do not write
        if best is None or q > best[0]:
            best = (q, kind)
    return best[1] if best else None


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as (first, last) inclusive; None to send the whole block (no range,
    several ranges, or a malformed header, which RFC 9110 lets a server ignore); "416" if it
    cannot be satisfied."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first or last) or not (first + last).isdigit() or len(first + last) > 38:
        return None
    if not first:                       # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n and size else "416"
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        return "416"
    return start, min(int(last), size - 1) if last else size - 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128             # listen backlog: a burst of clients is accepted, then judged
    source: BlockSource
    token: bytes | None

    def __init__(self, port: int, source: BlockSource, token: str | None) -> None:
        self.source = source
        self.token = token.encode() if token is not None else None
        self.lock = threading.Lock()
        self.active: set[socket.socket] = set()
        self.closing = False
        super().__init__((HOST, port), _Handler)

    def server_bind(self) -> None:          # no getfqdn() lookup
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        self.server_name, self.server_port = HOST, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            full = self.closing or len(self.active) >= MAX_CONNECTIONS
            if not full:
                self.active.add(request)
        if full:
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def close_request(self, request: Any) -> None:
        with self.lock:
            self.active.discard(request)
        super().close_request(request)

    def drop_connections(self) -> None:
        with self.lock:
            self.closing = True
            conns = list(self.active)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                             # never a traceback on the terminal


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    default_request_version = "HTTP/1.0"  # so that errors about a garbled request line get a status line
    server_version = "freehold-gateway"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version
    server: _Server

    disable_nagle_algorithm = True       # headers and body go out as separate writes

    def setup(self) -> None:
        super().setup()
        self.rfile.close()               # requests are read from the socket by _read_head, bounded
        self.rfile = BytesIO()
        self.pending = b""
        self.sent_headers = False
        self.negotiated_by_accept = False

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    # -- reading a request head, bounded in size and time
    def _read_head(self) -> bytes | None:
        deadline = time.monotonic() + HEAD_TIMEOUT
        buf = self.pending
        while True:
            match = _HEAD_END.search(buf)
            if match:
                self.pending = buf[match.end():]
                return buf[:match.end()]
            if len(buf) > MAX_HEAD:
                raise _HeadTooLarge
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.connection.settimeout(remaining)
            chunk = self.connection.recv(8192)
            if not chunk:
                return None
            buf += chunk

    def handle_one_request(self) -> None:
        self.close_connection = True
        try:
            head = self._read_head()
        except _HeadTooLarge:
            self.request_version, self.command = "HTTP/1.1", ""
            self._plain(431, "request head too large")
            return
        except OSError:                  # a timeout or a reset: close quietly
            return
        if head is None:
            return
        self.connection.settimeout(WRITE_TIMEOUT)
        self.rfile = BytesIO(head)
        self.raw_requestline = self.rfile.readline(MAX_HEAD + 1)
        if not self.parse_request():
            self.close_connection = True
            return
        if len(self.requestline.split()) != 3:      # HTTP/0.9: no headers, no Host, no token
            self.send_error(400, "HTTP/0.9 is not served")
            return
        if self.headers.get("Content-Length", "0").strip() not in ("", "0") or "Transfer-Encoding" in self.headers:
            self.close_connection = True      # a body we will not read
        self.sent_headers = False
        try:
            self._route()
        except _Reply as reply:
            self._plain(reply.status, reply.text, reply.headers)
        except FreeholdError as exc:
            retry = isinstance(exc, ProviderUnavailable | QuorumError)
            self._fail(503 if retry else 500, "storage unavailable, try again" if retry else "storage error",
                       {"Retry-After": "10"} if retry else {})
        except OSError:
            self.close_connection = True
        except Exception:
            self._fail(500, "internal error")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.close_connection = True
        self._plain(code, message or self.responses.get(code, ("error",))[0])

    def _fail(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        if self.sent_headers:            # mid-stream: cut the response so the client sees it is incomplete
            self.close_connection = True
            return
        self._plain(status, text, headers)

    def _plain(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        body = (text + "\n").encode("utf-8", "replace")
        self._start(status, {"Content-Type": "text/plain; charset=utf-8", "Content-Length": str(len(body)),
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", **(headers or {})})
        if self.command != "HEAD":
            self.wfile.write(body)

    def _start(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.sent_headers = True

    # -- routing
    def _route(self) -> None:
        if self.command not in ("GET", "HEAD"):
            raise _Reply(405, "only GET and HEAD", {"Allow": "GET, HEAD"})
        self._check_host()
        self._check_token()
        if not self.path.startswith("/"):
            raise _Reply(400, "expected a path")
        parts = urlsplit(self.path)
        path = parts.path
        if path.startswith("/ipns/"):
            raise _Reply(501, "IPNS is not served here")
        if not path.startswith("/ipfs/"):
            raise _Reply(404, "not found")
        cid_text, *rest = path[len("/ipfs/"):].split("/")
        if rest and rest[-1] == "":
            rest.pop()
        if any(seg in ("", ".", "..") for seg in rest):
            raise _Reply(400, "empty, . or .. path segment")
        segments = [unquote_to_bytes(seg) for seg in rest]
        try:
            cid = parse_cid(cid_text)
            query = dict(parse_qsl(parts.query, keep_blank_values=True, max_num_fields=16))
        except (UsageError, ValueError):
            raise _Reply(400, "malformed CID or query") from None
        if self._negotiate(query) == RAW:
            if segments:
                raise _Reply(400, "raw blocks are served by CID only, without a path")
            self._raw(cid)
        else:
            self._car(cid, segments, query)

    def _check_host(self) -> None:
        hosts = self.headers.get_all("Host") or []
        port = self.server.server_port
        allowed = {f"{HOST}:{port}", f"localhost:{port}"} | ({HOST, "localhost"} if port == 80 else set())
        if len(hosts) != 1 or hosts[0].strip().lower() not in allowed:
            raise _Reply(403, "Host header does not name this gateway")

    def _check_token(self) -> None:
        token = self.server.token
        if token is None:
            return
        values = self.headers.get_all("Authorization") or []
        scheme, _, given = (values[0] if len(values) == 1 else "").strip().partition(" ")
        ok = hmac.compare_digest(given.strip().encode("utf-8", "replace"), token)
        if scheme.lower() != "bearer" or not ok:
            raise _Reply(401, "missing or wrong token", {"WWW-Authenticate": 'Bearer realm="freehold"'})

    def _negotiate(self, query: dict[str, str]) -> str:
        """RAW or CAR: ``?format=`` first (as the spec says), else the Accept header."""
        fmt = query.get("format")
        self.negotiated_by_accept = fmt is None
        if fmt is not None:
            if fmt not in ("raw", "car"):
                raise _Reply(400, "format must be raw or car: this gateway is trustless only")
            return RAW if fmt == "raw" else CAR
        kind = _accept(self.headers.get("Accept", ""))
        if kind is None:
            raise _Reply(400 if not self.headers.get("Accept") else 406,
                         f"ask for {RAW} or {CAR} (Accept header or ?format=raw|car)")
        return kind

    def _common(self, query_format: str, etag: str) -> dict[str, str]:
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": IMMUTABLE, "Etag": etag,
                   "Vary": "Accept", "X-Ipfs-Path": urlsplit(self.path).path}
        if self.negotiated_by_accept:
            parts = urlsplit(self.path)
            sep = "&" if parts.query else ""
            headers["Content-Location"] = f"{parts.path}?{parts.query}{sep}format={query_format}"
        return headers

    def _not_modified(self, etag: str) -> bool:
        wanted = self.headers.get("If-None-Match")
        if wanted is None:
            return False
        tags = {tag.strip() for tag in wanted.split(",")}
        if "*" in tags or etag in tags or f"W/{etag}" in tags:
            self._start(304, {"Etag": etag, "Cache-Control": IMMUTABLE, "Vary": "Accept"})
            return True
        return False

    def _root(self, cid: bytes) -> bytes:
        block = lookup(self.server.source, cid)
        if block is None:
            only_cached = "only-if-cached" in self.headers.get("Cache-Control", "").lower()
            raise _Reply(412 if only_cached else 404, "not published here")
        return block

    # -- application/vnd.ipld.raw
    def _raw(self, cid: bytes) -> None:
        block = self._root(cid)
        name = cid_str(cid)
        etag = f'"{name}.raw"'
        if self._not_modified(etag):
            return
        status, body = 200, block
        headers = {"Content-Type": RAW, "Accept-Ranges": "bytes",
                   "Content-Disposition": f'attachment; filename="{name}.bin"'}
        asked = self.headers.get("Range")
        span = _byte_range(asked, len(block)) if asked is not None else None
        if span == "416":
            raise _Reply(416, "range not satisfiable", {"Content-Range": f"bytes */{len(block)}"})
        if isinstance(span, tuple):
            first, last = span
            status, body = 206, block[first:last + 1]
            etag = f'"{name}.raw.{first}-{last}"'
            headers["Content-Range"] = f"bytes {first}-{last}/{len(block)}"
        headers.update(self._common("raw", etag))
        headers["Content-Length"] = str(len(body))
        self._start(status, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- application/vnd.ipld.car
    def _car(self, cid: bytes, segments: list[bytes], query: dict[str, str]) -> None:
        if query.get("car-version", "1") != "1" or query.get("car-order", "dfs") not in ("dfs", "unk"):
            raise _Reply(400, "only CARv1 in dfs order is written here")
        if query.get("car-dups", "n") not in ("y", "n"):
            raise _Reply(400, "car-dups must be y or n")
        scope_text = query.get("dag-scope", "all")
        if scope_text not in ("all", "entity", "block"):
            raise _Reply(400, "dag-scope must be all, entity or block")
        scope = cast(Scope, scope_text)
        try:
            wanted = parse_entity_bytes(query["entity-bytes"]) if "entity-bytes" in query else None
            root_block = self._root(cid)
            source = self.server.source
            term, term_block, traversed = resolve_path(source, cid, root_block, segments)
            span: tuple[int, int] | None = None
            if wanted is not None:
                scope = "entity"
                size = entity_size(term, term_block)
                if size is not None:
                    span = resolve_range(wanted, size)
                    scope = "entity" if span is not None else "block"
        except BadRequest as exc:
            raise _Reply(400, str(exc)) from None
        except Missing:
            raise _Reply(404, "not published here") from None
        name = cid_str(cid)
        variant = f"{b'/'.join(segments)!r}|{scope}|{span}|dfs|n".encode()
        etag = f'"{name}.car.{hashlib.sha256(variant).hexdigest()[:16]}"'
        if self._not_modified(etag):
            return
        headers = {"Content-Type": CAR_TYPE, "Transfer-Encoding": "chunked", "Accept-Ranges": "none",
                   "Content-Disposition": f'attachment; filename="{name}.car"'}
        headers.update(self._common("car", etag))
        self._start(200, headers)
        if self.command == "HEAD":
            return
        out = _ChunkedWriter(cast(BinaryIO, self.wfile))

        def blocks() -> Iterator[tuple[bytes, bytes]]:
            yield from traversed
            yield from walk(source, term, term_block, scope, span)

        try:
            write_car([cid], blocks(), cast(BinaryIO, out))
        except Missing:
            out.flush()                      # what we have, then a cut without the last chunk:
            self.close_connection = True     # the client sees an incomplete response
            return
        out.finish()


class Gateway:
    """A trustless gateway for ``source`` on http://127.0.0.1:<port>, served from a thread.

    ``token``: the bearer token every request must carry; :data:`GENERATE` (the default) makes a
    random one (read it from :attr:`token`); None serves without one (only for public content).
    """

    def __init__(self, source: BlockSource, *, port: int = 0, token: str | None = GENERATE,
                 host: str = HOST) -> None:
        if host != HOST:
            raise UsageError(f"the gateway listens on {HOST} only, not {host!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise UsageError(f"not a TCP port: {port!r}")
        if token == GENERATE:
            token = secrets.token_urlsafe(32)
        if token is not None and (len(token) < 16 or len(token) > 256 or not token.isascii()
                                  or not token.isprintable() or " " in token):
            raise UsageError("a gateway token is 16 to 256 printable ASCII characters without spaces")
        self.source = source
        self.token: str | None = token
        self.requested_port = port
        self.server: _Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self.server is None:
            raise RuntimeError("the gateway is not started")
        return self.server.server_port

    @property
    def url(self) -> str:
        """The base URL to configure in a client (without the token: it goes in a header)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        if self.server is not None:
            raise RuntimeError("the gateway is already started")
        try:
            self.server = _Server(self.requested_port, self.source, self.token)
        except OSError as exc:
            raise UsageError(f"cannot listen on {HOST}:{self.requested_port}: {exc.strerror or exc}") from None
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="freehold-gateway", daemon=True)
        self.thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the gateway stops (or ``timeout`` seconds pass); Ctrl-C interrupts it."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.thread is not None and self.thread.is_alive():
            if end is not None and time.monotonic() >= end:
                return
            self.thread.join(0.25)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(source: BlockSource, port: int, token: str | None, ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C (for the CLI): ``ready(url)`` is called once the gateway listens."""
    gateway = Gateway(source, port=port, token=token)
    gateway.start()
    try:
        ready(gateway.url)
        gateway.wait()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
