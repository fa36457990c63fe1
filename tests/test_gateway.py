"""``freehold gateway``: the trustless gateway over HTTP, checked with Python's HTTP client and
with real IPFS clients (``@helia/verified-fetch``; ``@ipld/car`` + ``ipfs-unixfs-exporter``)."""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import freehold.gateway as gateway_module
from freehold.errors import ProviderUnavailable, UsageError
from freehold.gateway import DictBlockSource, Gateway
from freehold.unixfs import PROFILES, Profile, cid_str, decode_node, import_path, parse_cid, read_car
from freehold.unixfs.cids import DAG_PB, RAW, block_cid, split_cid
from freehold.unixfs.dagpb import FILE, HAMT_SHARD, decode_unixfs

TOKEN = "t0ken-for-the-gateway-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAR_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
# small chunks and 4 links per node: a 3 MB file is a tree of two levels; a folder of 40 names
# is a HAMT shard
SMALL = Profile("test-small", cid_version=1, raw_leaves=True, chunk_size=256 * 1024, max_links=4,
                shard_split_threshold=1000, shard_split_strategy="block-bytes")
BIG = random.Random(7).randbytes(3_000_000)


@dataclass
class Published:
    source: DictBlockSource
    root: bytes                 # the folder
    hello: bytes                # a 12-byte file on its own
    big: bytes                  # the 3 MB file on its own
    v0_root: bytes              # a folder imported with the CIDv0 profile
    folder: Path


def _import(path: Path, profile: Profile, blocks: dict[bytes, bytes]) -> bytes:
    out = list(import_path(path, profile))
    blocks.update((b.cid, b.data) for b in out)
    return out[-1].cid


@pytest.fixture(scope="module")
def pub(tmp_path_factory: pytest.TempPathFactory) -> Published:
    top = tmp_path_factory.mktemp("published")
    folder = top / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "hello.txt").write_bytes(b"hello world\n")
    (folder / "sub" / "big.bin").write_bytes(BIG)
    for i in range(40):
        (folder / "sub" / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
    blocks: dict[bytes, bytes] = {}
    root = _import(folder, SMALL, blocks)
    hello = _import(folder / "hello.txt", PROFILES["unixfs-v1-2025"], blocks)
    big = _import(folder / "sub" / "big.bin", PROFILES["unixfs-v1-2025"], blocks)
    v0_root = _import(folder / "sub", PROFILES["unixfs-v0-2015"], blocks)
    return Published(DictBlockSource(blocks), root, hello, big, v0_root, folder)


@pytest.fixture(scope="module")
def gw(pub: Published) -> Iterator[Gateway]:
    with Gateway(pub.source, token=TOKEN) as g:
        yield g


def request(g: Gateway, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            auth: bool = True) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
    try:
        conn.request(method, path, headers={**(AUTH if auth else {}), **(headers or {})})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def car_blocks(body: bytes) -> tuple[list[bytes], list[tuple[bytes, bytes]]]:
    roots, blocks = read_car(body)          # read_car checks every block against its CID
    return roots, list(blocks)


def dfs(source: DictBlockSource, cid: bytes, seen: set[bytes] | None = None) -> list[bytes]:
    """Depth-first pre-order of a DAG, each CID once: what order=dfs; dups=n means."""
    seen = set() if seen is None else seen
    if cid in seen:
        return []
    seen.add(cid)
    out = [cid]
    if split_cid(cid)[1] == DAG_PB:
        for link in decode_node(source.blocks[cid])[1]:
            out += dfs(source, link.cid, seen)
    return out


def child(source: DictBlockSource, cid: bytes, name: bytes) -> bytes:
    return next(link.cid for link in decode_node(source.blocks[cid])[1] if link.name == name)


# -- binding and construction

def test_binds_loopback_only(gw: Gateway) -> None:
    assert gw.url == f"http://127.0.0.1:{gw.port}"
    assert gw.server is not None and gw.server.socket.getsockname()[0] == "127.0.0.1"
    for host in ("0.0.0.0", "::", "localhost", "192.168.1.2"):
        with pytest.raises(UsageError):
            Gateway(DictBlockSource(), host=host)
    with pytest.raises(UsageError):
        Gateway(DictBlockSource(), token="short")
    fresh = Gateway(DictBlockSource())
    assert fresh.token is not None and len(fresh.token) >= 32       # a random token by default
    # bound to 127.0.0.1 itself, not to the loopback range or every address
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.2", gw.port), timeout=2).close()
    with pytest.raises(UsageError):
        Gateway(DictBlockSource(), port=gw.port).start()           # the port is taken
    with pytest.raises(UsageError):
        Gateway(DictBlockSource(), port=70000)


# -- raw blocks

def test_raw_block_get_and_head(gw: Gateway, pub: Published) -> None:
    name = cid_str(pub.hello)
    status, headers, body = request(gw, f"/ipfs/{name}?format=raw")
    assert (status, body) == (200, b"hello world\n")
    assert headers["content-type"] == "application/vnd.ipld.raw"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "public, max-age=29030400, immutable"
    assert headers["etag"] == f'"{name}.raw"'
    assert headers["content-length"] == "12"
    assert headers["content-disposition"] == f'attachment; filename="{name}.bin"'
    assert "content-location" not in headers
    status, headers, body = request(gw, f"/ipfs/{name}", {"Accept": "application/vnd.ipld.raw"}, method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "12")
    assert headers["content-location"] == f"/ipfs/{name}?format=raw"
    # a dag-pb block, asked for as CIDv0 (how it was published) and as CIDv1 (the same bytes)
    v0 = pub.v0_root
    assert cid_str(v0).startswith("Qm")
    v1 = b"\x01\x70" + v0
    for text in (cid_str(v0), cid_str(v1), parse_cid_base36(v1)):
        status, _, body = request(gw, f"/ipfs/{text}?format=raw")
        assert (status, body) == (200, pub.source.blocks[v0])
    # the probe of the spec
    assert request(gw, "/ipfs/bafkqaaa?format=raw")[::2] == (200, b"")


def parse_cid_base36(cid: bytes) -> str:
    from multiformats import CID
    text = CID.decode(cid).encode("base36")
    assert parse_cid(text) == cid
    return text


def test_raw_ranges(gw: Gateway, pub: Published) -> None:
    name = cid_str(pub.hello)
    status, headers, body = request(gw, f"/ipfs/{name}?format=raw", {"Range": "bytes=0-4"})
    assert (status, body, headers["content-range"], headers["content-length"]) == (206, b"hello", "bytes 0-4/12", "5")
    assert headers["etag"] == f'"{name}.raw.0-4"'
    status, headers, body = request(gw, f"/ipfs/{name}?format=raw", {"Range": "bytes=-6"})
    assert (status, body, headers["content-range"]) == (206, b"world\n", "bytes 6-11/12")
    status, _, body = request(gw, f"/ipfs/{name}?format=raw", {"Range": "bytes=6-100"})
    assert (status, body) == (206, b"world\n")
    for past in ("bytes=12-", "bytes=50-60", "bytes=-0"):
        status, headers, _ = request(gw, f"/ipfs/{name}?format=raw", {"Range": past})
        assert (status, headers["content-range"]) == (416, "bytes */12"), past
    # several ranges, and malformed ones, get the whole block
    for whole in ("bytes=0-1,4-5", "bytes=x-y", "items=0-1"):
        assert request(gw, f"/ipfs/{name}?format=raw", {"Range": whole})[::2] == (200, b"hello world\n")


def test_if_none_match(gw: Gateway, pub: Published) -> None:
    name = cid_str(pub.hello)
    status, headers, body = request(gw, f"/ipfs/{name}?format=raw", {"If-None-Match": f'"{name}.raw"'})
    assert (status, body, headers["etag"]) == (304, b"", f'"{name}.raw"')


# -- CAR responses

def test_car_of_whole_dag(gw: Gateway, pub: Published) -> None:
    name = cid_str(pub.root)
    status, headers, body = request(gw, f"/ipfs/{name}", {"Accept": "application/vnd.ipld.car"})
    assert status == 200
    assert headers["content-type"] == CAR_TYPE
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "public, max-age=29030400, immutable"
    assert headers["content-disposition"] == f'attachment; filename="{name}.car"'
    assert headers["etag"].startswith(f'"{name}.car.')
    roots, blocks = car_blocks(body)
    assert roots == [pub.root]
    assert [cid for cid, _ in blocks] == dfs(pub.source, pub.root)
    assert all(pub.source.blocks[cid] == data for cid, data in blocks)
    # the same with ?format=car, and with Accept parameters we honour
    assert request(gw, f"/ipfs/{name}?format=car")[2] == body
    accept = "application/vnd.ipld.car; version=1; order=dfs; dups=y, application/vnd.ipld.raw;q=0.5"
    assert request(gw, f"/ipfs/{name}", {"Accept": accept})[2] == body
    status, headers, body = request(gw, f"/ipfs/{name}?format=car", method="HEAD")
    assert (status, body, headers["content-type"]) == (200, b"", CAR_TYPE)


def test_car_scopes(gw: Gateway, pub: Published) -> None:
    name = cid_str(pub.root)
    etags = set()
    for scope in ("all", "entity", "block"):
        headers = request(gw, f"/ipfs/{name}?format=car&dag-scope={scope}")[1]
        etags.add(headers["etag"])
    assert len(etags) == 3                    # the scope is in the Etag
    _, blocks = car_blocks(request(gw, f"/ipfs/{name}?format=car&dag-scope=block")[2])
    assert [cid for cid, _ in blocks] == [pub.root]
    # a plain folder's entity is its own block
    _, blocks = car_blocks(request(gw, f"/ipfs/{name}?format=car&dag-scope=entity")[2])
    assert [cid for cid, _ in blocks] == [pub.root]
    # a HAMT-sharded folder's entity is its shard nodes, not the entries
    sub = child(pub.source, pub.root, b"sub")
    assert decode_unixfs(decode_node(pub.source.blocks[sub])[0]).type == HAMT_SHARD
    _, blocks = car_blocks(request(gw, f"/ipfs/{cid_str(sub)}?format=car&dag-scope=entity")[2])
    assert blocks and all(decode_unixfs(decode_node(d)[0]).type == HAMT_SHARD for _, d in blocks)
    assert blocks[0][0] == sub and len(blocks) > 1
    # a file's entity is the whole file
    big = pub.big
    _, blocks = car_blocks(request(gw, f"/ipfs/{cid_str(big)}?format=car&dag-scope=entity")[2])
    assert [cid for cid, _ in blocks] == dfs(pub.source, big)


def _leaf_spans(source: DictBlockSource, cid: bytes, start: int = 0) -> Iterator[tuple[bytes, int, int, list[bytes]]]:
    """(leaf, first byte, end, ancestors) of a file DAG of raw leaves."""
    if split_cid(cid)[1] == RAW:
        yield cid, start, start + len(source.blocks[cid]), []
        return
    data, links = decode_node(source.blocks[cid])
    msg = decode_unixfs(data)
    assert msg.type == FILE
    pos = start
    for link, size in zip(links, msg.blocksizes, strict=True):
        for leaf, a, b, up in _leaf_spans(source, link.cid, pos):
            yield leaf, a, b, [cid, *up]
        pos += size


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("0:0", 0, 0), ("300000:800000", 300_000, 800_000), ("-1000:*", 2_999_000, 2_999_999),
    ("2000000:*", 2_000_000, 2_999_999), ("100:-2500000", 100, 499_999), ("2999999:5000000", 2_999_999, 2_999_999),
])
def test_entity_bytes(gw: Gateway, pub: Published, spec: str, first: int, last: int) -> None:
    file_cid = _big_in_folder(pub)
    status, headers, body = request(gw, f"/ipfs/{cid_str(file_cid)}?format=car&entity-bytes={spec}")
    assert status == 200 and headers["content-type"] == CAR_TYPE
    _, blocks = car_blocks(body)
    got = [cid for cid, _ in blocks]
    spans = list(_leaf_spans(pub.source, file_cid))
    assert len({up[0] for *_, up in spans}) == 1 and max(len(up) for *_, up in spans) == 2   # two levels
    wanted_leaves = [leaf for leaf, a, b, _ in spans if a <= last and b > first]
    expected = []
    for leaf, _, _, up in spans:
        if leaf in wanted_leaves:
            expected += [c for c in up if c not in expected] + [leaf]
    assert got == expected                    # the minimal blocks, in dfs order
    data = b"".join(d for c, d in blocks if split_cid(c)[1] == RAW)
    offset = next(a for leaf, a, _, _ in spans if leaf == wanted_leaves[0])
    assert data[first - offset:last - offset + 1] == BIG[first:last + 1]


def _big_in_folder(pub: Published) -> bytes:
    """The 3 MB file in the folder: a two-level tree of 256 KiB raw leaves."""
    return child_hamt(pub, b"big.bin")


def child_hamt(pub: Published, name: bytes) -> bytes:
    """An entry of the sharded folder ``sub``, found by scanning its shards."""
    stack = [child(pub.source, pub.root, b"sub")]
    while stack:
        for link in decode_node(pub.source.blocks[stack.pop()])[1]:
            if link.name[2:] == name:
                return link.cid
            if len(link.name) == 2:
                stack.append(link.cid)
    raise KeyError(name)


def test_entity_bytes_edges(gw: Gateway, pub: Published) -> None:
    name = cid_str(_big_in_folder(pub))
    assert request(gw, f"/ipfs/{name}?format=car&entity-bytes=3000000:*")[0] == 400     # past the end
    for bad in ("5", "a:b", "10:5", "1:2:3", "--1:*", "99999999999999999999999:*"):
        assert request(gw, f"/ipfs/{name}?format=car&entity-bytes={bad}")[0] == 400, bad
    # a zero-length range is as dag-scope=block
    _, blocks = car_blocks(request(gw, f"/ipfs/{name}?format=car&entity-bytes=-10:-20")[2])
    assert [cid for cid, _ in blocks] == [_big_in_folder(pub)]
    # entity-bytes on a folder is ignored (dag-scope=entity)
    _, blocks = car_blocks(request(gw, f"/ipfs/{cid_str(pub.root)}?format=car&entity-bytes=0:10")[2])
    assert [cid for cid, _ in blocks] == [pub.root]


def test_car_paths(gw: Gateway, pub: Published) -> None:
    root = cid_str(pub.root)
    sub = child(pub.source, pub.root, b"sub")
    f7 = child_hamt(pub, b"f7.txt")
    status, _, body = request(gw, f"/ipfs/{root}/sub/f7.txt?format=car")
    assert status == 200
    roots, blocks = car_blocks(body)
    got = [cid for cid, _ in blocks]
    assert roots == [pub.root] and got[:2] == [pub.root, sub] and got[-1] == f7
    # the shard nodes between sub and f7 are exactly those on the name's way down
    middle = got[2:-1]
    for parent, nxt in zip([sub, *middle], [*middle, f7], strict=True):
        assert nxt in {link.cid for link in decode_node(pub.source.blocks[parent])[1]}
    assert request(gw, f"/ipfs/{root}/sub/?format=car&dag-scope=block")[0] == 200
    _, blocks = car_blocks(request(gw, f"/ipfs/{root}/hello.txt?format=car")[2])
    assert [c for c, _ in blocks] == [pub.root, child(pub.source, pub.root, b"hello.txt")]
    for missing in ("nope", "sub/nope.txt", "hello.txt/deeper", "sub/f7.txt/x"):
        assert request(gw, f"/ipfs/{root}/{missing}?format=car")[0] == 404, missing
    assert request(gw, f"/ipfs/{root}/sub/../hello.txt?format=car")[0] == 400
    assert request(gw, f"/ipfs/{root}/hello.txt?format=raw")[0] == 400     # raw blocks take no path


def test_cut_stream_when_a_child_block_is_missing(pub: Published) -> None:
    blocks = dict(pub.source.blocks)
    order = dfs(pub.source, pub.big)
    del blocks[order[-1]]
    with Gateway(DictBlockSource(blocks), token=TOKEN) as g:
        conn = http.client.HTTPConnection("127.0.0.1", g.port, timeout=10)
        conn.request("GET", f"/ipfs/{cid_str(pub.big)}?format=car", headers=AUTH)
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises(http.client.IncompleteRead) as cut:
            resp.read()
        conn.close()
        roots, sent = car_blocks(cut.value.partial)
        assert roots == [pub.big] and [cid for cid, _ in sent] == order[:-1]
        # the gateway still answers
        assert request(g, f"/ipfs/{cid_str(pub.hello)}?format=raw")[0] == 200


# -- errors

def test_errors(gw: Gateway, pub: Published) -> None:
    unpublished = cid_str(block_cid(b"never published", 1, RAW))
    assert request(gw, f"/ipfs/{unpublished}?format=raw")[0] == 404
    assert request(gw, f"/ipfs/{unpublished}?format=car")[0] == 404
    assert request(gw, f"/ipfs/{unpublished}?format=raw", method="HEAD")[0] == 404
    assert request(gw, f"/ipfs/{unpublished}?format=raw", {"Cache-Control": "only-if-cached"})[0] == 412
    for garbage in ("garbage", "Qm123", "bafy", "b" + cid_str(pub.hello)[1:].upper(), "x" * 600, "%00"):
        assert request(gw, f"/ipfs/{garbage}?format=raw")[0] == 400, garbage
    name = cid_str(pub.hello)
    for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
        status, headers, _ = request(gw, f"/ipfs/{name}?format=raw", method=method)
        assert (status, headers.get("allow")) == (405, "GET, HEAD"), method
    status, headers, body = request(gw, f"/ipfs/{name}")          # no format: nothing deserialized
    assert status == 400 and headers["content-type"].startswith("text/plain") and b"<" not in body
    assert request(gw, f"/ipfs/{name}", {"Accept": "text/html"})[0] == 406
    assert request(gw, f"/ipfs/{name}?format=tar")[0] == 400
    assert request(gw, f"/ipfs/{name}?format=car&car-version=2")[0] == 400
    assert request(gw, f"/ipfs/{name}?format=car&dag-scope=everything")[0] == 400
    assert request(gw, "/ipns/example.com?format=raw")[0] == 501
    for other in ("/", "/ipfs/", "/index.html", "/../etc/passwd", f"/x/ipfs/{name}"):
        assert request(gw, other + "?format=raw")[0] in (400, 404), other


def test_storage_errors_are_500_or_503_without_a_traceback(pub: Published, capfd: pytest.CaptureFixture[str]) -> None:
    class Failing(DictBlockSource):
        def get(self, cid: bytes) -> bytes | None:
            raise ProviderUnavailable("the disk is gone")

    name = cid_str(pub.hello)
    corrupt = DictBlockSource({pub.hello: b"not hello\n"})
    with Gateway(Failing(), token=TOKEN) as g, Gateway(corrupt, token=TOKEN) as h:
        status, headers, body = request(g, f"/ipfs/{name}?format=raw")
        assert (status, headers["retry-after"]) == (503, "10") and b"disk" not in body
        assert request(h, f"/ipfs/{name}?format=raw")[0] == 500
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


# -- the token

def test_token_rules(gw: Gateway, pub: Published) -> None:
    path = f"/ipfs/{cid_str(pub.hello)}?format=raw"
    status, headers, _ = request(gw, path, auth=False)
    assert (status, headers["www-authenticate"]) == (401, 'Bearer realm="freehold"')
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}", "Bearer"):
        assert request(gw, path, {"Authorization": wrong}, auth=False)[0] == 401, wrong
    assert request(gw, path, {"Authorization": f"bearer {TOKEN}"}, auth=False)[0] == 200
    assert request(gw, path)[0] == 200
    # the token is not taken from the URL: clients drop path prefixes and queries (see gateway.py)
    assert request(gw, f"/{TOKEN}{path}", auth=False)[0] == 401
    assert request(gw, f"{path}&token={TOKEN}", auth=False)[0] == 401
    # 404 and 400 are not told apart without the token
    assert request(gw, "/ipfs/garbage?format=raw", auth=False)[0] == 401
    with Gateway(pub.source, token=None) as public:
        assert request(public, path, auth=False)[0] == 200


def test_host_header_must_name_the_gateway(gw: Gateway, pub: Published) -> None:
    path = f"/ipfs/{cid_str(pub.hello)}?format=raw"
    assert request(gw, path, {"Host": f"localhost:{gw.port}"})[0] == 200
    assert request(gw, path, {"Host": f"evil.example:{gw.port}"})[0] == 403


# -- hostile clients

def raw_exchange(g: Gateway, data: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(("127.0.0.1", g.port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_hostile_requests(gw: Gateway, pub: Published, monkeypatch: pytest.MonkeyPatch,
                          capfd: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(gateway_module, "HEAD_TIMEOUT", 1.0)
    path = f"/ipfs/{cid_str(pub.hello)}?format=raw"
    # a huge header: 431 and the connection closed, at once
    reply = raw_exchange(gw, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: " + b"a" * 40_000 + b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    for junk in (b"\x00\x01\x02\r\n\r\n", b"GET\r\n\r\n", b"GET /ipfs/x HTTP/9.9\r\n\r\n", b"GET /ipfs/x\r\n\r\n"):
        reply = raw_exchange(gw, junk)
        assert reply == b"" or reply.startswith(b"HTTP/1.1 4") or reply.startswith(b"HTTP/1.1 505"), junk
    # slow clients: one that never finishes its head, one that drips it; others are served meanwhile
    stalled = socket.create_connection(("127.0.0.1", gw.port))
    stalled.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\n")
    dripper = socket.create_connection(("127.0.0.1", gw.port))
    stop = threading.Event()

    def drip() -> None:
        try:
            while not stop.is_set():
                dripper.sendall(b"X")
                time.sleep(0.05)
        except OSError:
            pass

    threading.Thread(target=drip, daemon=True).start()
    start = time.monotonic()
    for _ in range(10):
        assert request(gw, path)[0] == 200
    assert time.monotonic() - start < 2
    # both are cut off once the head deadline passes
    stalled.settimeout(5)
    assert stalled.recv(100) == b""
    time.sleep(1.2)
    stop.set()
    dripper.settimeout(5)
    try:
        closed = dripper.recv(100) == b""
    except ConnectionResetError:
        closed = True                       # (a timeout here would fail the test)
    assert closed
    stalled.close()
    dripper.close()
    # keep-alive: several requests on one connection, and pipelined ones
    one = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{gw.port}\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    last = one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
    reply = raw_exchange(gw, one * 3 + last)
    assert reply.count(b"HTTP/1.1 200 OK") == 4 and reply.count(b"hello world\n") == 4
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err


def test_too_many_connections_are_refused_not_queued(pub: Published) -> None:
    with Gateway(pub.source, token=TOKEN) as g:
        held = [socket.create_connection(("127.0.0.1", g.port)) for _ in range(gateway_module.MAX_CONNECTIONS + 5)]
        try:
            time.sleep(0.3)
            assert g.server is not None and len(g.server.active) <= gateway_module.MAX_CONNECTIONS
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if request(g, f"/ipfs/{cid_str(pub.hello)}?format=raw")[0] == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("the gateway did not recover")


def test_serve_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        from freehold.gateway import DictBlockSource, serve
        serve(DictBlockSource(), 0, None, lambda url: print(url, flush=True))
        print("stopped", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
        conn.request("GET", "/ipfs/bafkqaaa?format=raw")
        assert conn.getresponse().status == 200
        conn.close()
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "stopped" and "Traceback" not in err


# -- real clients

@pytest.fixture(scope="module")
def jsclient() -> object:
    from freehold.testing.jsclient import JSClient, JSClientUnavailable
    try:
        return JSClient.install()
    except JSClientUnavailable as exc:
        if shutil.which("npm") is None:  # only a machine without npm skips; a failed install fails
            pytest.skip(f"no real IPFS client here: {exc}")
        raise


def test_real_clients_fetch_and_verify(gw: Gateway, pub: Published, jsclient: object, tmp_path: Path) -> None:
    from freehold.testing.jsclient import JSClient, car_task, fetch_task
    assert isinstance(jsclient, JSClient)
    root, hello, big, v0 = (cid_str(c) for c in (pub.root, pub.hello, pub.big, pub.v0_root))
    f7 = (pub.folder / "sub" / "f7.txt").read_bytes()
    tasks = {
        "hello": (fetch_task(f"ipfs://{hello}", tmp_path / "hello"), b"hello world\n"),
        "big": (fetch_task(f"ipfs://{big}", tmp_path / "big"), BIG),
        "in-folder": (fetch_task(f"ipfs://{root}/sub/big.bin", tmp_path / "in-folder"), BIG),
        "in-hamt": (fetch_task(f"ipfs://{root}/sub/f7.txt", tmp_path / "in-hamt"), f7),
        "v0": (fetch_task(f"ipfs://{v0}/f7.txt", tmp_path / "v0"), f7),
        "car-big": (car_task(big, tmp_path / "car-big"), BIG),
        "car-path": (car_task(root, tmp_path / "car-path", "sub/big.bin"), BIG),
        "car-hamt": (car_task(root, tmp_path / "car-hamt", "sub/f7.txt", "dag-scope=entity"), f7),
        "car-range": (car_task(root, tmp_path / "car-range", "sub/big.bin", "entity-bytes=1000000:1299999",
                               offset=1_000_000, length=300_000), BIG[1_000_000:1_300_000]),
    }
    results = jsclient.run(gw.url, gw.token, [task for task, _ in tasks.values()])
    for (label, (task, expected)), result in zip(tasks.items(), results, strict=True):
        assert result["ok"], (label, result)
        assert Path(task["out"]).read_bytes() == expected, label
        assert result["requests"] and all(r.startswith("/ipfs/") for r in result["requests"]), label
        if task["kind"] == "car":
            assert result["contentType"] == CAR_TYPE and result["requests"] == [result["requests"][0]]
        else:
            assert all(r.endswith("?format=raw") for r in result["requests"]), label
    assert len(results[1]["requests"]) > 2                  # the big file came block by block


def test_real_client_token_rules(gw: Gateway, pub: Published, jsclient: object,
                                                    tmp_path: Path) -> None:
    from freehold.testing.jsclient import JSClient, fetch_task
    assert isinstance(jsclient, JSClient)
    results = jsclient.run(gw.url, "not-the-token-at-all", [fetch_task(f"ipfs://{cid_str(pub.hello)}", tmp_path / "x")])
    assert not results[0]["ok"] and not (tmp_path / "x").exists()
    with Gateway(pub.source, token=None) as public:
        [result] = jsclient.run(public.url, None, [fetch_task(f"ipfs://{cid_str(pub.hello)}", tmp_path / "y")])
        assert result["ok"] and (tmp_path / "y").read_bytes() == b"hello world\n"
        # why the token goes in a header: the client drops a base URL's path prefix and query
        [result] = jsclient.run(f"{public.url}/{TOKEN}/?token={TOKEN}", None,
                                [fetch_task(f"ipfs://{cid_str(pub.hello)}", tmp_path / "z")])
        assert result["ok"] and result["requests"] == [f"/ipfs/{cid_str(pub.hello)}?format=raw"]
