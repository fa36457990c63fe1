"""The ipfs:// provider on a real js-ipfs node: the contract, GC and pins, timeouts, restart,
and a vault with one IPFS provider among three.

One js-ipfs node serves the module (a fresh MFS prefix per test); the restart and vault
tests start their own. The node is installed by freehold.testing.jsipfs (npm, once); the
tests skip only when npm is absent.
"""

from __future__ import annotations

import json
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from freehold.errors import ObjectNotFound, ProviderError, ProviderUnavailable, UsageError
from freehold.providers import open_provider
from freehold.providers.base import Provider, overlapping
from freehold.providers.ipfs import IpfsProvider
from freehold.testing.contract import ProviderContract
from freehold.testing.jsipfs import JsIpfsError, JsIpfsNode, npm_available

from .conftest import make_env, same_tree, write_tree

pytestmark = pytest.mark.skipif(not npm_available(), reason="npm not found: cannot install js-ipfs")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfsNode]:
    with JsIpfsNode(tmp_path_factory.mktemp("jsipfs")) as n:
        yield n


@pytest.fixture(scope="module")
def gc_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfsNode]:
    """A node of its own for the GC tests: sweeping what the contract left behind takes ~15 s."""
    with JsIpfsNode(tmp_path_factory.mktemp("jsipfs-gc")) as n:
        yield n


def _provider(node: JsIpfsNode, prefix: str | None = None, **params: object) -> IpfsProvider:
    p = open_provider(node.url(f"t-{uuid.uuid4().hex[:10]}" if prefix is None else prefix, **params))
    assert isinstance(p, IpfsProvider)
    return p


def _cid(node: JsIpfsNode, p: IpfsProvider, name: str) -> str:
    return str(node.rpc("files/stat", ("arg", f"/{p.prefix}/{name}"))[0]["Hash"])


def _pinned(node: JsIpfsNode, cid: str) -> bool:
    try:
        keys = node.rpc("pin/ls", ("arg", cid), ("type", "recursive"))[0]["Keys"]
    except JsIpfsError as exc:
        assert "not pinned" in str(exc)
        return False
    return bool(keys)


def _digest(cid: str) -> bytes:
    from multiformats import CID

    return bytes(CID.decode(cid).digest)


def _has_block(node: JsIpfsNode, cid: str) -> bool:
    """Whether the repo holds the block (``refs/local``: js-ipfs's ``block/stat`` of a missing
    block waits for the network even offline, until its ``timeout``)."""
    return _digest(cid) in {_digest(r["Ref"]) for r in node.rpc("refs/local")}


# -- the contract --------------------------------------------------------------------------------


class TestIpfsContract(ProviderContract):
    """A fresh MFS prefix per test on the module's node."""

    large_size = 3 * 1024 * 1024  # spans 12 UnixFS chunks of 256 KiB

    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        return _provider(request.getfixturevalue("node"))


# -- the URL -------------------------------------------------------------------------------------


def test_url_forms_and_location() -> None:
    p = IpfsProvider.from_url("ipfs://127.0.0.1:5001//vault/a/?read_timeout=2&attempts=1")
    assert p.location == ("ipfs", "http://127.0.0.1:5001", "vault/a")
    assert p.info.url == "ipfs://127.0.0.1:5001/vault/a?read_timeout=2&attempts=1"
    assert IpfsProvider.from_url("ipfs://LocalHost/x").location == ("ipfs", "http://localhost:5001", "x")
    assert IpfsProvider.from_url("ipfs://[::1]:5002").location == ("ipfs", "http://[::1]:5002", "")
    assert IpfsProvider.from_url("ipfs://node.example:5001/p").api == "http://node.example:5001"  # any host
    outer, inner = (IpfsProvider.from_url(u).location for u in ("ipfs://h:1/v", "ipfs://h:1/v/in"))
    assert overlapping(outer, inner) and not overlapping(outer, IpfsProvider.from_url("ipfs://h:2/v").location)
    for bad in ("ipfs://user:pw@127.0.0.1:5001/x", "ipfs://127.0.0.1:5001/x?token=abc", "ipfs:///x",
                "ipfs://127.0.0.1:99999/x", "ipfs://127.0.0.1:5001/a/../b", "ipfs://h/x?attempts=0",
                "ipfs://h/x?bogus=1", "ipfs://h/.freehold-tmp"):
        with pytest.raises(UsageError) as info:
            open_provider(bad)
        assert "pw" not in str(info.value) and "abc" not in str(info.value)


# -- pins and garbage collection -----------------------------------------------------------------


def test_content_survives_gc(gc_node: JsIpfsNode) -> None:
    node = gc_node
    p = _provider(node)
    rng = random.Random(5)
    objects = {f"keep/{i}": rng.randbytes(size) for i, size in enumerate((0, 1, 5000, 700_000))}
    for name, data in objects.items():
        p.put(name, data)
    p.put("keep/replaced", b"old contents")
    p.put("keep/replaced", b"new contents, longer")
    objects["keep/replaced"] = b"new contents, longer"
    assert p.put_new("keep/made-new", b"by put_new") is True
    objects["keep/made-new"] = b"by put_new"
    for name in objects:
        assert _pinned(node, _cid(node, p, name)), f"{name} is not pinned"
    node.gc()
    for name, data in objects.items():
        assert p.get(name) == data
    assert dict(p.list()) == {name: len(data) for name, data in objects.items()}


def test_deleted_and_replaced_content_is_unpinned_and_collected(gc_node: JsIpfsNode) -> None:
    node = gc_node
    p = _provider(node)
    rng = random.Random(6)
    gone, old, new = rng.randbytes(300_000), rng.randbytes(2000), rng.randbytes(2100)
    p.put("gone", gone)
    p.put("swap", old)
    gone_cid, old_cid = _cid(node, p, "gone"), _cid(node, p, "swap")
    p.delete("gone")
    p.put("swap", new)
    assert not _pinned(node, gone_cid) and not _pinned(node, old_cid)
    assert _pinned(node, _cid(node, p, "swap"))
    removed = {_digest(c) for c in node.gc()}
    assert _digest(gone_cid) in removed and _digest(old_cid) in removed
    assert not _has_block(node, gone_cid) and not _has_block(node, old_cid)
    assert p.get("swap") == new


def test_same_bytes_under_two_names(gc_node: JsIpfsNode) -> None:
    node = gc_node
    """One CID, one pin: deleting one name unpins it; the other name is still kept by MFS."""
    p = _provider(node)
    data = random.Random(7).randbytes(4000)
    p.put("twin/a", data)
    p.put("twin/b", data)
    p.delete("twin/a")
    node.gc()
    assert p.get("twin/b") == data


def test_interrupted_upload_changes_nothing(node: JsIpfsNode) -> None:
    """A body cut short (connection closed mid-upload) is neither linked nor pinned."""
    p = _provider(node)
    p.put("cut", b"the original")
    pins_before = node.rpc("pin/ls", ("type", "recursive"))[0]["Keys"]
    boundary = "b0und4ry"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"NEW" * 100_000
    for endpoint in (f"files/write?arg=/{p.prefix}/cut&create=true&truncate=true", "add?pin=true"):
        with socket.create_connection(("127.0.0.1", node.port)) as s:
            s.sendall(f"POST /api/v0/{endpoint} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                      f"boundary={boundary}\r\nContent-Length: {len(head) + 1000}\r\n\r\n".encode() + head)
            time.sleep(0.3)
        time.sleep(0.3)
        assert p.get("cut") == b"the original"
    assert node.rpc("pin/ls", ("type", "recursive"))[0]["Keys"] == pins_before


# -- reads ---------------------------------------------------------------------------------------


def test_ranged_gets_across_chunks(node: JsIpfsNode) -> None:
    p = _provider(node)
    data = random.Random(8).randbytes(1_100_000)  # 5 chunks of 256 KiB
    p.put("r", data)
    chunk = 256 * 1024
    for start, end in ((0, 1), (chunk - 3, chunk + 3), (chunk, 2 * chunk), (1, 1_099_999),
                       (4 * chunk + 5, None), (1_099_999, 2_000_000), (1_100_000, None), (None, 17)):
        assert p.get("r", start, end) == data[start or 0: end]
    p.put("r", data[:1000])  # replaced through files/write: ranges still exact
    assert p.get("r", 990, 2000) == data[990:1000]


# -- failures ------------------------------------------------------------------------------------


def test_stalled_node_fails_fast_and_cleanly(node: JsIpfsNode) -> None:
    p = _provider(node, read_timeout=0.5, attempts=2)
    p.put("x", b"here")
    node.pause()
    try:
        for call in (lambda: p.get("x"), lambda: p.put("y", b"1"), lambda: p.head("x"), lambda: list(p.list())):
            began = time.monotonic()
            with pytest.raises(ProviderUnavailable) as info:
                call()
            assert time.monotonic() - began < 4
            text = str(info.value)
            assert "timed out" in text and "\n" not in text and "Traceback" not in text
    finally:
        node.resume()
    assert p.get("x") == b"here"


def test_nothing_listening_fails_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = open_provider(f"ipfs://127.0.0.1:{port}/x?connect_timeout=1&attempts=2")
    began = time.monotonic()
    with pytest.raises(ProviderUnavailable) as info:
        p.get("a")
    assert time.monotonic() - began < 3
    assert str(info.value) == f"read a from ipfs://127.0.0.1:{port}/x: IPFS node http://127.0.0.1:{port} " \
                              "connection failed after 2 attempts"
    with pytest.raises(ProviderUnavailable):
        p.check_writable()


def test_refused_write_is_a_clean_error(node: JsIpfsNode) -> None:
    p = _provider(node)
    p.put("file", b"x")
    for call in (lambda: p.put("file/below", b"y"), lambda: p.put_new("file/below", b"y")):
        with pytest.raises(ProviderError) as info:
            call()
        assert "\n" not in str(info.value) and str(info.value).startswith("write file/below to ipfs://")
    p.put("dir/x", b"1")
    with pytest.raises(ProviderError, match="directory of that name"):
        p.put("dir", b"2")
    with pytest.raises(ObjectNotFound):
        p.get("dir")


# -- restart -------------------------------------------------------------------------------------


def test_restart_on_same_repo_keeps_everything(tmp_path: Path) -> None:
    own = JsIpfsNode(tmp_path / "node")
    with own:
        p = _provider(own, "durable")
        data = random.Random(9).randbytes(600_000)
        p.put("a/big", data)
        p.put("a/small", b"s")
        p.put("a/small", b"replaced")
        own.stop()
        with pytest.raises(ProviderUnavailable):
            p.get("a/small")
        own.start()  # same repo, same port: the provider's URL still names it
        assert p.get("a/big") == data and p.get("a/small") == b"replaced"
        assert dict(p.list()) == {"a/big": len(data), "a/small": 8}
        own.gc()
        assert p.get("a/big", 100, 200) == data[100:200]
        assert _pinned(own, _cid(own, p, "a/big"))


# -- a vault ---------------------------------------------------------------------------------------


def test_vault_with_an_ipfs_provider_survives_its_loss(tmp_path: Path) -> None:
    env = make_env(tmp_path / "v", k=2, n=2)
    own = JsIpfsNode(tmp_path / "node")
    with own:
        urls = [*env.urls, own.url("vault", connect_timeout=1, attempts=1)]
        src = write_tree(tmp_path / "src", small=20, big=300_000)
        out = json.loads(env.cli("init", "--k", "2", "--n", "3", *urls, "--json").stdout)
        assert out["providers"][2].startswith("ipfs://127.0.0.1:")
        env.cli("backup", str(src))
        prov = open_provider(urls[2])
        assert any(True for _ in prov.list()), "nothing was stored on the IPFS node"
        env.cli("restore", "latest", "--target", str(tmp_path / "out1"))
        same_tree(src, tmp_path / "out1" / "src")
        own.stop()
        env.cli("restore", "latest", "--target", str(tmp_path / "out2"))
        same_tree(src, tmp_path / "out2" / "src")
