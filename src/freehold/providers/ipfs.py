"""IPFS node provider: objects in a node's MFS, pinned, through the kubo-style RPC.

URL form, with every query parameter optional::

    ipfs://127.0.0.1:5001/PREFIX?connect_timeout=5&read_timeout=60&attempts=3

``host:port`` is the node's RPC API (default port 5001), spoken over plain ``http`` with
``POST /api/v0/...``; the URL carries no credentials. Tested against js-ipfs 0.18
(ipfs-core + ipfs-http-server); kubo's RPC has the same endpoints (differences are in
docs/design.md, "the ipfs:// provider").

Mapping. Object ``a/b/c`` is the MFS file ``/PREFIX/a/b/c``; ``/`` in names become MFS
directories. ``head`` is ``files/stat``, ``get`` is ``files/read`` with ``offset``/``count``
(a ranged get reads only the blocks of the range), ``list`` walks ``files/ls?long=true``
from the directory the prefix points into, ``delete`` is ``files/rm``. A directory is never
an object (``head`` says None, ``get`` ObjectNotFound, ``delete`` leaves it).

Writes. A new name: ``add?pin=true`` (the whole body is imported and pinned under the node's
GC lock, or nothing is: an interrupted upload leaves no content), then ``files/cp
/ipfs/CID /PREFIX/name``, which refuses a name that exists (under the MFS lock): that is
``put_new``'s atomic create-if-absent, so ``conditional_put`` holds for every writer of
the node. Replacing an existing name (``put``): on js-ipfs ``files/write?truncate=true``,
which imports the new content first and swaps the directory link under the MFS lock (old
or new, never a mix; an interrupted upload changes nothing), then ``pin/add`` of the new
CID, which also proves every block is present; on kubo, whose ``files/write`` flushes a
partial body and whose ``files/mv`` replaces a file, ``add`` + ``files/cp`` to
``/.freehold-tmp/`` + ``files/mv`` over the name. The node kind is read once from
``version`` (kubo answers with ``Golang``).

GC. Content is protected twice: by MFS (js-ipfs's ``repo/gc`` marks the MFS root; kubo's
too) and by a recursive pin of each object's CID. ``delete`` and a replace ``pin/rm`` the
old CID once the name no longer holds it. Two names with identical bytes share one CID
and one pin: deleting one unpins it, and the other stays protected by MFS alone. Caveat
on js-ipfs: MFS operations do not take the GC lock, so a ``repo/gc`` that runs *during*
a write can collect a directory node that write just made; do not run GC while writing.

Durability. js-ipfs keeps blocks and the MFS root in files written with fsync + rename
(datastore-fs), pins in LevelDB; every MFS call here passes ``flush=true``.

Errors. Connection failures and timeouts are ProviderUnavailable (idempotent calls are
retried ``attempts`` times first); the node's error text is classified, never echoed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse

from ..errors import (
    ObjectNotFound,
    ProviderError,
    ProviderPermission,
    ProviderQuota,
    ProviderUnavailable,
    UsageError,
)
from .base import Capabilities, Data, Location, ProviderInfo, as_parts, check_name

__all__ = ["IpfsProvider"]

DEFAULT_PORT = 5001
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 3
TMP_DIR = ".freehold-tmp"
# A kept-alive connection idle longer than this is reopened: Node closes idle ones after 5 s.
IDLE_REUSE = 2.0

# Calls the node itself abandons after read_timeout: reading a block missing from its repo waits
# for the network, even offline (js-ipfs), so without this a lost block is a hang, not an error.
_BOUNDED = frozenset({"files/stat", "files/ls", "files/read", "files/cp", "files/mv", "files/rm", "pin/add",
                      "pin/rm"})
_URL_PARAMS = ("connect_timeout", "read_timeout", "attempts")
_SECRET_PARAMS = re.compile(r"(secret|access|key|token|password|credential|auth)", re.IGNORECASE)
# What the node's error messages say, by meaning (js-ipfs and kubo wordings).
_MISSING = re.compile(r"does not exist|not exist|no link named|not found|no such", re.IGNORECASE)
_EXISTS = re.compile(r"already has entry|already exists|file exists", re.IGNORECASE)
_NOT_PINNED = re.compile(r"not pinned", re.IGNORECASE)
_PAST_END = re.compile(r"offset must be less than|offset was past (the )?end", re.IGNORECASE)
_NOT_FILE = re.compile(r"not a file|is a directory", re.IGNORECASE)
_NODE_TIMEOUT = re.compile(r"request timed out|context deadline exceeded", re.IGNORECASE)
_NO_SPACE = re.compile(r"no space left|ENOSPC|quota|disk full", re.IGNORECASE)


class _RpcError(Exception):
    """The node answered a call with an error (HTTP status, the node's message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _one_line(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(name: str, value: str, kind: type[int] | type[float]) -> Any:
    try:
        result = kind(value)
    except ValueError:
        raise UsageError(f"ipfs URL parameter {name} must be a number, got {_one_line(value, 40)!r}") from None
    if not result > 0 or (kind is int and result < 1):
        raise UsageError(f"ipfs URL parameter {name} must be positive")
    return result


def _same_cid(a: str, b: str) -> bool:
    """Whether two CID strings name the same content (any version or multibase)."""
    if a == b:
        return True
    try:
        from multiformats import CID

        ca, cb = CID.decode(a), CID.decode(b)
        return bool(ca.codec == cb.codec and bytes(ca.digest) == bytes(cb.digest))
    except Exception:
        return False


class IpfsProvider:
    """The MFS directory ``/PREFIX`` of one IPFS node, reached through its RPC API.

    One keep-alive HTTP connection per thread; calls of several threads go in parallel.
    """

    inline = False

    def __init__(self, host: str, port: int = DEFAULT_PORT, prefix: str = "", *, jurisdiction: str = "",
                 operator: str = "", connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, attempts: int = DEFAULT_ATTEMPTS) -> None:
        if not host or any(c in host for c in "/@?#") or not host.isascii():
            raise UsageError("ipfs URL needs the node's API address as host:port")
        if not 0 < int(port) < 65536:
            raise UsageError("ipfs URL has an invalid port")
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_name(prefix)
            except UsageError:
                raise UsageError(f"invalid ipfs MFS prefix {_one_line(prefix, 70)!r}") from None
            if prefix.split("/")[0] == TMP_DIR:
                raise UsageError(f"ipfs MFS prefix must not start with {TMP_DIR} (reserved)")
        self.host = host.lower().strip("[]")
        self.port = int(port)
        self.prefix = prefix
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.attempts = int(attempts)
        shown_host = f"[{self.host}]" if ":" in self.host else self.host
        self.api = f"http://{shown_host}:{self.port}"
        self._root = f"/{prefix}" if prefix else ""
        self._label = f"ipfs://{shown_host}:{self.port}/{prefix}".rstrip("/")
        query = {name: f"{value:g}" if isinstance(value, float) else str(value)
                 for name, value, default in (("connect_timeout", self.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                                              ("read_timeout", self.read_timeout, DEFAULT_READ_TIMEOUT),
                                              ("attempts", self.attempts, DEFAULT_ATTEMPTS))
                 if value != default}
        url = f"ipfs://{shown_host}:{self.port}" + (f"/{quote(prefix)}" if prefix else "")
        if query:
            url += "?" + urlencode(query)
        self.info = ProviderInfo(url=url, jurisdiction=jurisdiction, operator=operator,
                                 extra={"api": self.api, "prefix": prefix})
        self._local = threading.local()
        self._conns: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()
        self._kubo: bool | None = None
        # MFS directories (relative names) seen to be directories: a put below needs no check.
        self._dirs: set[str] = set()

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> IpfsProvider:
        try:
            parsed = urlparse(url)
            port = parsed.port
        except ValueError:
            raise UsageError("malformed ipfs URL (want ipfs://host:port/prefix)") from None
        if parsed.scheme != "ipfs":
            raise UsageError("not an ipfs URL (want ipfs://host:port/prefix)")
        if "@" in parsed.netloc:
            raise UsageError("credentials never go in an ipfs URL")
        if parsed.fragment or parsed.params or not parsed.hostname:
            raise UsageError("ipfs URL must be ipfs://host:port/prefix (the node's RPC API address)")
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parsed.query, keep_blank_values=True):
            if name not in _URL_PARAMS:
                if _SECRET_PARAMS.search(name):
                    raise UsageError("credentials never go in an ipfs URL")
                raise UsageError(f"unknown ipfs URL parameter {_one_line(name, 40)!r} "
                                 f"(known: {', '.join(_URL_PARAMS)})")
            options[name] = _number(name, value, int if name == "attempts" else float)
        return cls(parsed.hostname, port or DEFAULT_PORT, unquote(parsed.path), **options, **kw)

    def __repr__(self) -> str:
        return f"IpfsProvider({self._label})"

    @property
    def capabilities(self) -> Capabilities:
        """``put_new`` is ``files/cp``, refused under the node's MFS lock when the name
        exists; a replace swaps one link (js-ipfs) or is one ``files/mv`` (kubo)."""
        return Capabilities(conditional_put=True, ranged_get=True, atomic_replace=True)

    @property
    def location(self) -> Location:
        """``("ipfs", "http://host:port", prefix)``; names are not resolved."""
        return ("ipfs", self.api, self.prefix)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()

    # -- RPC --------------------------------------------------------------------------------------

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.connect_timeout)
            self._local.conn = conn
            with self._lock:
                self._conns.add(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
            with self._lock:
                self._conns.discard(conn)

    def _call(self, what: str, endpoint: str, args: list[tuple[str, str]], body: list[memoryview] | None = None,
              *, retry: bool = True) -> bytes:
        """POST one RPC call and return its body; _RpcError when the node refuses it.
        Connection failures and timeouts are retried (when ``retry``) and then raised as
        ProviderUnavailable."""
        if endpoint in _BOUNDED:
            args = [*args, ("timeout", f"{self.read_timeout:g}s")]
        path = f"/api/v0/{endpoint}?" + urlencode(args, quote_via=quote, safe="/")
        tries = self.attempts if retry else 1
        attempt = 0
        while True:
            attempt += 1
            reused = getattr(self._local, "conn", None) is not None and self._local.conn.sock is not None
            try:
                return self._once(path, body)
            except _RpcError:
                raise
            except TimeoutError:
                self._drop()
                reason = "timed out"
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                reason = "connection failed"
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError)
                if reused and stale and attempt == 1:
                    tries += 1  # a kept-alive connection the node had closed: the call never ran
            if attempt >= tries:
                break
            time.sleep(min(0.1 * 2 ** attempt, 1.0))
        tries_text = f" after {tries} attempts" if tries > 1 else ""
        raise ProviderUnavailable(f"{what}: IPFS node {self.api} {reason}{tries_text}")

    def _once(self, path: str, body: list[memoryview] | None) -> bytes:
        conn = self._conn()
        now = time.monotonic()
        if conn.sock is not None and now - getattr(self._local, "used", now) > IDLE_REUSE:
            conn.close()
        self._local.used = now
        if conn.sock is None:
            conn.timeout = self.connect_timeout
            conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(self.read_timeout)
        conn.putrequest("POST", path, skip_accept_encoding=True)
        conn.putheader("User-Agent", "freehold")
        if body is None:
            conn.putheader("Content-Length", "0")
            conn.endheaders()
        else:
            boundary = secrets.token_hex(16)
            head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"data\"\r\n"
                    "Content-Type: application/octet-stream\r\n\r\n").encode()
            tail = f"\r\n--{boundary}--\r\n".encode()
            conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
            conn.putheader("Content-Length", str(len(head) + sum(p.nbytes for p in body) + len(tail)))
            conn.endheaders(head)
            for part in body:
                if part.nbytes:
                    conn.send(part.cast("B") if part.ndim != 1 or part.itemsize != 1 else part)
            conn.send(tail)
        resp = conn.getresponse()
        data = resp.read()
        self._local.used = time.monotonic()
        if resp.will_close:
            self._drop()
        if resp.status == 200:
            return data
        message = ""
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            message = str(json.loads(data).get("Message", ""))
        if resp.status in (502, 503, 504) and not message:
            raise OSError(f"HTTP {resp.status}")  # a proxy in front of the node: retried
        raise _RpcError(resp.status, message)

    def _fail(self, exc: _RpcError, what: str) -> ProviderError:
        """A refused call as the Freehold error to act on; the node's text is not echoed."""
        if _NO_SPACE.search(exc.message):
            return ProviderQuota(f"{what}: IPFS node {self.api} is out of space")
        if exc.status in (401, 403):
            return ProviderPermission(f"{what}: IPFS node {self.api} refused access (HTTP {exc.status})")
        if exc.status == 404 and not exc.message:
            return ProviderError(f"{what}: {self.api} has no such RPC endpoint (is it an IPFS node's API port?)")
        if exc.status == 405:
            return ProviderError(f"{what}: {self.api} refused the method (is it the RPC API, not a gateway?)")
        if _NODE_TIMEOUT.search(exc.message):
            return ProviderUnavailable(f"{what}: IPFS node {self.api} gave up after {self.read_timeout:g} s "
                                       "(a block it needs may be missing from its repo)")
        if _MISSING.search(exc.message):
            return ObjectNotFound(f"{what}: not found")
        if exc.status >= 500:
            return ProviderUnavailable(f"{what}: IPFS node {self.api} failed the request (HTTP {exc.status})")
        return ProviderError(f"{what}: IPFS node {self.api} refused the request (HTTP {exc.status})")

    def _json(self, data: bytes, what: str) -> dict[str, Any]:
        """The last JSON object of a (possibly newline-delimited) answer."""
        lines = [line for line in data.splitlines() if line.strip()]
        with contextlib.suppress(ValueError, IndexError):
            value = json.loads(lines[-1])
            if isinstance(value, dict):
                return value
        raise ProviderError(f"{what}: IPFS node {self.api} sent an answer that is not JSON")

    # -- paths and node facts ---------------------------------------------------------------------

    def _mfs(self, name: str) -> str:
        check_name(name)
        if not self.prefix and name.split("/")[0] == TMP_DIR:
            raise UsageError(f"invalid object name {name!r} ({TMP_DIR}/ is reserved)")
        return f"{self._root}/{name}"

    def _is_kubo(self, what: str) -> bool:
        if self._kubo is None:
            try:
                answer = self._json(self._call(what, "version", []), what)
            except _RpcError as exc:
                raise self._fail(exc, what) from None
            self._kubo = "Golang" in answer or "ipfs-core" not in answer
        return self._kubo

    def _stat(self, path: str, what: str) -> tuple[str, int, str] | None:
        """(type, size, CID) of an MFS path, or None when absent."""
        try:
            answer = self._json(self._call(what, "files/stat", [("arg", path)]), what)
        except _RpcError as exc:
            err = self._fail(exc, what)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from None
        try:
            return str(answer["Type"]), int(answer.get("Size") or 0), str(answer["Hash"])
        except (KeyError, TypeError, ValueError):
            raise ProviderError(f"{what}: IPFS node {self.api} sent a malformed files/stat answer") from None

    def _add(self, parts: list[memoryview], what: str) -> str:
        """Import and pin ``parts`` as one UnixFS file (CIDv1, dag-pb leaves so that js-ipfs's
        ``files/write`` can later replace it); its CID."""
        args = [("pin", "true"), ("cid-version", "1"), ("raw-leaves", "false"), ("quieter", "true"),
                ("wrap-with-directory", "false"), ("progress", "false")]
        try:
            answer = self._json(self._call(what, "add", args, parts), what)
        except _RpcError as exc:
            raise self._fail(exc, what) from None
        cid = answer.get("Hash")
        if not isinstance(cid, str) or not cid:
            raise ProviderError(f"{what}: IPFS node {self.api} sent an add answer without a CID")
        return cid

    def _unpin(self, cid: str, what: str) -> None:
        try:
            self._call(what, "pin/rm", [("arg", cid), ("recursive", "true")])
        except _RpcError as exc:
            if not _NOT_PINNED.search(exc.message):
                raise self._fail(exc, what) from None

    def _pin(self, cid: str, what: str) -> None:
        try:
            self._call(what, "pin/add", [("arg", cid), ("recursive", "true")])
        except _RpcError as exc:
            raise self._fail(exc, what) from None

    def _check_parents(self, name: str, what: str) -> None:
        """Refuse a name below an object: js-ipfs's ``files/cp`` would add the link to the file
        node itself (changing its CID) instead of failing. The nearest existing ancestor must
        be a directory."""
        rel = name.rpartition("/")[0]
        first = rel
        while rel and rel not in self._dirs:
            found = self._stat(f"{self._root}/{rel}", what)
            if found is not None:
                if found[0] != "directory":
                    raise ProviderError(f"{what}: object {rel} is in the way (a name cannot be below an object)")
                break
            rel = rel.rpartition("/")[0]
        if first:
            self._dirs.add(first)

    def _cp(self, cid: str, dest: str, what: str) -> bool:
        """Link ``/ipfs/CID`` at ``dest``; False when something already has that name."""
        try:
            self._call(what, "files/cp", [("arg", f"/ipfs/{cid}"), ("arg", dest), ("parents", "true"),
                                          ("flush", "true")], retry=False)
        except _RpcError as exc:
            if _EXISTS.search(exc.message):
                return False
            raise self._fail(exc, what) from None
        return True

    # -- the protocol -----------------------------------------------------------------------------

    def check_writable(self) -> None:
        what = f"write to {self._label}"
        probe = f"/{TMP_DIR}/probe-{secrets.token_hex(6)}"
        try:
            self._call(what, "files/mkdir", [("arg", probe), ("parents", "true"), ("flush", "true")], retry=False)
            self._call(what, "files/rm", [("arg", probe), ("recursive", "true")])
        except _RpcError as exc:
            raise self._fail(exc, what) from None

    def put(self, name: str, data: Data) -> None:
        path = self._mfs(name)
        parts = as_parts(data)
        what = f"write {name} to {self._label}"
        for _ in range(3):
            old = self._stat(path, what)
            if old is None:
                self._check_parents(name, what)
                cid = self._add(parts, what)
                if self._cp(cid, path, what):
                    return
                continue  # created meanwhile by another writer: replace it
            kind, _size, old_cid = old
            if kind != "file":
                raise ProviderError(f"{what}: a directory of that name is in the way")
            self._replace(path, parts, old_cid, what)
            return
        raise ProviderUnavailable(f"{what}: the name keeps changing under concurrent writers")

    def _replace(self, path: str, parts: list[memoryview], old_cid: str, what: str) -> None:
        if self._is_kubo(what):
            cid = self._add(parts, what)
            if _same_cid(cid, old_cid):
                return
            tmp = f"/{TMP_DIR}/{secrets.token_hex(8)}"
            if not self._cp(cid, tmp, what):
                raise ProviderError(f"{what}: temporary name {tmp} is taken")
            try:
                self._call(what, "files/mv", [("arg", tmp), ("arg", path), ("flush", "true")], retry=False)
            except _RpcError as exc:
                with contextlib.suppress(ProviderError, _RpcError):
                    self._call(what, "files/rm", [("arg", tmp)])
                raise self._fail(exc, what) from None
        else:
            args = [("arg", path), ("create", "true"), ("truncate", "true"), ("parents", "true"),
                    ("cid-version", "1"), ("raw-leaves", "false"), ("flush", "true")]
            try:
                self._call(what, "files/write", args, parts, retry=False)
            except _RpcError as exc:
                raise self._fail(exc, what) from None
            new = self._stat(path, what)
            if new is None:
                raise ObjectNotFound(f"{what}: deleted while being written")
            cid = new[2]
            # Recursive: fails unless every block of the new content is in the repo.
            self._pin(cid, what)
        if not _same_cid(cid, old_cid):
            self._unpin(old_cid, what)

    def put_new(self, name: str, data: Data) -> bool:
        path = self._mfs(name)
        what = f"write {name} to {self._label}"
        existing = self._stat(path, what)
        if existing is not None:
            if existing[0] != "file":
                raise ProviderError(f"{what}: a directory of that name is in the way")
            return False
        self._check_parents(name, what)
        cid = self._add(as_parts(data), what)
        if self._cp(cid, path, what):
            return True
        now = self._stat(path, what)  # lost a race: keep the pin only if the winner's bytes are ours
        if now is None or not _same_cid(now[2], cid):
            self._unpin(cid, what)
        return False

    def get(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._mfs(name)
        what = f"read {name} from {self._label}"
        offset = max(start or 0, 0)
        if end is not None and end <= offset:
            found = self._stat(path, what)
            if found is None or found[0] != "file":
                raise ObjectNotFound(f"{what}: not found")
            return b""
        args = [("arg", path)]
        if offset:
            args.append(("offset", str(offset)))
        if end is not None:
            args.append(("count", str(end - offset)))
        try:
            return self._call(what, "files/read", args)
        except _RpcError as exc:
            if _PAST_END.search(exc.message):
                return b""
            if _NOT_FILE.search(exc.message):
                raise ObjectNotFound(f"{what}: not found") from None
            raise self._fail(exc, what) from None

    def head(self, name: str) -> int | None:
        found = self._stat(self._mfs(name), f"stat {name} in {self._label}")
        if found is None or found[0] != "file":
            return None
        return found[1]

    def _ls(self, path: str, what: str) -> list[tuple[str, int, int]]:
        """(name, type, size) of a directory's entries; type 0 is a file, 1 a directory."""
        try:
            answer = self._json(self._call(what, "files/ls", [("arg", path), ("long", "true")]), what)
        except _RpcError as exc:
            err = self._fail(exc, what)
            if isinstance(err, ObjectNotFound):
                return []
            raise err from None
        out: list[tuple[str, int, int]] = []
        for entry in answer.get("Entries") or ():
            try:
                out.append((str(entry["Name"]), int(entry.get("Type") or 0), int(entry.get("Size") or 0)))
            except (KeyError, TypeError, ValueError):
                raise ProviderError(f"{what}: IPFS node {self.api} sent a malformed files/ls answer") from None
        return out

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        what = f"list {self._label}"
        head = prefix.rpartition("/")[0]
        if head:
            try:
                check_name(head)
            except UsageError:
                return
        start = f"{self._root}/{head}" if head else (self._root or "/")
        found = self._stat(start, what)
        if found is None or found[0] != "directory":
            return
        pending = [head]
        while pending:
            rel = pending.pop()
            for entry, kind, size in self._ls(f"{self._root}/{rel}" if rel else (self._root or "/"), what):
                name = f"{rel}/{entry}" if rel else entry
                if not self.prefix and not rel and entry == TMP_DIR:
                    continue
                if kind == 1:
                    if name.startswith(prefix) or prefix.startswith(name + "/"):
                        pending.append(name)
                    continue
                if not name.startswith(prefix):
                    continue
                try:
                    check_name(name)
                except UsageError:
                    continue
                yield name, size

    def delete(self, name: str) -> None:
        path = self._mfs(name)
        what = f"delete {name} in {self._label}"
        found = self._stat(path, what)
        if found is None or found[0] != "file":
            return
        try:
            self._call(what, "files/rm", [("arg", path)])
        except _RpcError as exc:
            err = self._fail(exc, what)
            if isinstance(err, ObjectNotFound):
                return
            raise err from None
        self._unpin(found[2], what)
