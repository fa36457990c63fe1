"""UnixFS files: fixed-size chunks, leaves and a balanced DAG, as ``ipfs-unixfs-importer`` 17.1.1.

Follows the UnixFS spec and IPIP-499's profiles, and reproduces the reference importer's
``fixedSize`` chunker, ``balanced`` layout and ``defaultFileBuilder``:

- the file is cut into ``chunk_size`` chunks; an empty file is one empty chunk;
- a leaf is the chunk itself (raw leaves, codec raw, always CIDv1) or a dag-pb node holding
  ``UnixFS{Type: File, Data: chunk, filesize: len(chunk)}`` (CID of the profile's version);
- leaves are grouped ``max_links`` at a time into ``UnixFS{Type: File, filesize, blocksizes}``
  parents with links named ``""``; the parents are grouped again until one node is left;
  a group that is a lone file's only leaf is that leaf (``reduceSingleLeafToSelf``), any other
  group (even of one child) gets a parent; children holding no file bytes are left out;
- a link's Tsize is the child's block length plus its children's Tsizes.

Block order is the order the reference puts blocks into its blockstore: leaves in file order; a
first-level parent as soon as the ``blockWriteConcurrency`` (10) batch of leaves holding its last
leaf has been written (so after leaf ``ceil(i / 10) * 10``, or at the end of the file); the upper
levels after all leaves, level by level, the root last.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from freehold.errors import UsageError

from .blocks import Block
from .cids import DAG_PB, RAW, encode_varint, make_cid
from .dagpb import FILE, Link, UnixFSData, encode_node, encode_unixfs

__all__ = ["DEFAULT_PROFILE", "PROFILES", "FileImporter", "Profile", "import_file"]


@dataclass(frozen=True)
class Profile:
    """Importer parameters (IPIP-499 profile names; the fields map to the reference's options:
    cidVersion, rawLeaves, fixedSize chunkSize, balanced maxChildrenPerNode,
    shardSplitThresholdBytes, shardSplitStrategy, shardFanoutBits, reduceSingleLeafToSelf,
    blockWriteConcurrency)."""

    name: str
    cid_version: int
    raw_leaves: bool
    chunk_size: int
    max_links: int
    shard_split_threshold: int = 262_144
    shard_split_strategy: str = "links-bytes"    # "links-bytes" (names + CIDs) or "block-bytes"
    shard_fanout_bits: int = 8
    reduce_single_leaf_to_self: bool = True
    write_batch: int = 10                         # the reference's blockWriteConcurrency (order only)

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1) or self.chunk_size < 1 or self.max_links < 2 or self.write_batch < 1:
            raise UsageError(f"bad UnixFS profile {self.name!r}")
        if self.shard_split_strategy not in ("links-bytes", "block-bytes"):
            raise UsageError(f"bad shard split strategy {self.shard_split_strategy!r}")
        if not 1 <= self.shard_fanout_bits <= 16:
            raise UsageError("shard fanout bits must be 1..16")


PROFILES: dict[str, Profile] = {
    "unixfs-v1-2025": Profile("unixfs-v1-2025", cid_version=1, raw_leaves=True, chunk_size=1_048_576,
                              max_links=1024, shard_split_strategy="block-bytes"),
    "unixfs-v0-2015": Profile("unixfs-v0-2015", cid_version=0, raw_leaves=False, chunk_size=262_144,
                              max_links=174, shard_split_strategy="links-bytes"),
}
DEFAULT_PROFILE = "unixfs-v1-2025"

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_INFLIGHT = 6           # leaves hashed ahead of the caller at most


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2)),
                                       thread_name_prefix="freehold-unixfs")
        return _POOL


@dataclass(frozen=True)
class _Child:
    cid: bytes
    tsize: int
    filesize: int


def _leaf(chunk: bytes, offset: int, raw: bool, version: int) -> tuple[Block, _Child]:
    if raw:
        cid = make_cid(1, RAW, hashlib.sha256(chunk).digest())
        return Block(cid, chunk, offset), _Child(cid, len(chunk), len(chunk))
    if chunk:       # the same bytes as encode_node(encode_unixfs(File, chunk, filesize)), one copy
        n = encode_varint(len(chunk))
        inner = 4 + 2 * len(n) + len(chunk)
        data = b"".join((b"\x0a" + encode_varint(inner) + b"\x08\x02\x12" + n, chunk, b"\x18" + n))
    else:
        data = encode_node(encode_unixfs(UnixFSData(FILE, data=chunk, filesize=0)), [])
    cid = make_cid(version, DAG_PB, hashlib.sha256(data).digest())
    return Block(cid, data, offset), _Child(cid, len(data), len(chunk))


def _parent(children: list[_Child], version: int) -> tuple[Block, _Child]:
    kept = [c for c in children if c.filesize > 0]
    sizes = tuple(c.filesize for c in kept)
    data = encode_node(encode_unixfs(UnixFSData(FILE, filesize=sum(sizes), blocksizes=sizes)),
                       [Link(c.cid, b"", c.tsize) for c in kept])
    cid = make_cid(version, DAG_PB, hashlib.sha256(data).digest())
    return Block(cid, data), _Child(cid, len(data) + sum(c.tsize for c in kept), sum(sizes))


class FileImporter:
    """Streaming importer of one file: feed bytes in any pieces with :meth:`update`, then call
    :meth:`finish`; both yield the blocks completed so far, in the reference's order, the last
    block of :meth:`finish` being the file's root. Memory stays near ``chunk_size`` times the
    few leaves hashed ahead (on a thread pool) plus one link per first-level parent."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.root = b""
        self.size = 0
        self.tsize = 0
        self._buf = bytearray()
        self._offset = 0            # file offset of the next chunk
        self._pending: deque[Future[tuple[Block, _Child]]] = deque()
        self._leaves = 0
        self._first: _Child | None = None
        self._group: list[_Child] = []
        self._level1: list[_Child] = []
        self._deferred: list[Block] = []
        self._finished = False

    def update(self, data: bytes | memoryview) -> Iterator[Block]:
        """Add the next bytes of the file; returns the blocks this completed (the work is done
        before it returns, whether or not the iterator is consumed)."""
        if self._finished:
            raise UsageError("FileImporter.update after finish")
        size = self.profile.chunk_size
        view = data if isinstance(data, bytes) else memoryview(data).cast("B")
        if not self._buf and len(view) == size:
            self._submit(bytes(view))
        else:
            pos = 0
            if self._buf:
                pos = min(size - len(self._buf), len(view))
                self._buf += view[:pos]
                if len(self._buf) == size:
                    self._submit(bytes(self._buf))
                    self._buf.clear()
            while len(view) - pos >= size:
                self._submit(bytes(view[pos:pos + size]))
                pos += size
            if pos < len(view):
                self._buf += view[pos:]
        return iter(self._drain(keep=_INFLIGHT))

    def finish(self) -> Iterator[Block]:
        """End of the file: returns the remaining blocks, the root last; sets root, size, tsize."""
        if self._finished:
            raise UsageError("FileImporter.finish called twice")
        if self._buf or self._offset == 0:
            self._submit(bytes(self._buf))
            self._buf.clear()
        out = self._drain(keep=0)
        self._finished = True
        profile = self.profile
        out += self._deferred
        self._deferred = []
        if self._leaves == 1 and profile.reduce_single_leaf_to_self and self._first is not None:
            root = self._first
        else:
            if self._group:
                block, child = _parent(self._group, profile.cid_version)
                self._level1.append(child)
                self._group = []
                out.append(block)
            level = self._level1
            while len(level) > 1:
                upper: list[_Child] = []
                for i in range(0, len(level), profile.max_links):
                    block, child = _parent(level[i:i + profile.max_links], profile.cid_version)
                    upper.append(child)
                    out.append(block)
                level = upper
            root = level[0]
        self.root, self.tsize = root.cid, root.tsize
        return iter(out)

    def _submit(self, chunk: bytes) -> None:
        p = self.profile
        offset = self._offset
        self._offset += len(chunk)
        self.size = self._offset
        if len(chunk) >= 65536:
            self._pending.append(_pool().submit(_leaf, chunk, offset, p.raw_leaves, p.cid_version))
        else:
            fut: Future[tuple[Block, _Child]] = Future()
            fut.set_result(_leaf(chunk, offset, p.raw_leaves, p.cid_version))
            self._pending.append(fut)

    def _drain(self, keep: int) -> list[Block]:
        """Take finished leaves off the queue in order (waiting while more than ``keep`` are
        queued) and build the first-level parents they complete."""
        p = self.profile
        out: list[Block] = []
        while self._pending and (len(self._pending) > keep or self._pending[0].done()):
            block, child = self._pending.popleft().result()
            self._leaves += 1
            if self._first is None:
                self._first = child
            out.append(block)
            self._group.append(child)
            if len(self._group) == p.max_links:
                parent, pchild = _parent(self._group, p.cid_version)
                self._level1.append(pchild)
                self._deferred.append(parent)
                self._group = []
            if self._leaves % p.write_batch == 0 and self._deferred:
                out += self._deferred
                self._deferred = []
        return out


def import_file(chunks: Iterable[bytes], profile: Profile) -> Iterator[Block]:
    """Import a file given as byte pieces of any sizes; yields its blocks, the root last."""
    imp = FileImporter(profile)
    for piece in chunks:
        yield from imp.update(piece)
    yield from imp.finish()
