"""Trees (docs/design.md §11): loading them (tree packs are cached whole, locally and in an LRU),
and the one walker that ls, restore and check share."""

from __future__ import annotations

import collections
import os
import threading
from collections.abc import Iterator

from .. import formats
from ..errors import FreeholdError, IntegrityError, UsageError
from ..formats import BLOB_TREE, Node, PackRecord
from .blobs import BlobCodec
from .cache import LocalCache
from .index import Index
from .reader import BlobReader

TREE_PACKS_IN_MEMORY = 64 * 1024 * 1024


class TreePacks:
    """Long-lived: the in-memory LRU of whole tree packs (sealed bytes)."""

    def __init__(self) -> None:
        self.packs: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()
        self.lock = threading.Lock()


class TreeStore:
    def __init__(self, index: Index, codec: BlobCodec, reader: BlobReader, cache: LocalCache,
                 lru: TreePacks) -> None:
        self.index = index
        self.codec = codec
        self.reader = reader
        self.cache = cache
        self.lru = lru
        self.pinned: dict[bytes, formats.Tree] = {}   # trees that are not blobs (a grant's virtual root)

    def cache_pack(self, pack_id: bytes, pack: bytes | bytearray | memoryview) -> None:
        """Keep a sealed copy of a tree pack: one file per pack, not one per directory."""
        self.cache.put("packs", pack_id.hex(), pack)

    def _cached_pack(self, rec: PackRecord) -> bytes | None:
        data = self.cache.get("packs", rec.id.hex())
        if data is None and rec.blobs and rec.blobs[0].t == BLOB_TREE:
            try:  # a tree pack not cached yet (new machine, deleted cache): fetch it whole, once
                data = self.reader.read_range_fast(rec, 0, rec.len)
            except FreeholdError:
                return None
            self.cache_pack(rec.id, data)
        return data if data is not None and len(data) == rec.len else None

    def load(self, tree_id: bytes) -> formats.Tree:
        if tree_id in self.pinned:
            return self.pinned[tree_id]
        loc = self.index.lookup(tree_id)
        plain = None
        if loc is not None:
            lru = self.lru
            with lru.lock:
                pack = lru.packs.get(loc.pack_id)
                if pack is None:
                    pack = self._cached_pack(self.index.pack(loc.pack_id))
                    if pack is not None:
                        lru.packs[loc.pack_id] = pack
                        while sum(map(len, lru.packs.values())) > TREE_PACKS_IN_MEMORY:
                            lru.packs.popitem(last=False)
                else:
                    lru.packs.move_to_end(loc.pack_id)
            if pack is not None:
                e = loc.entry
                try:
                    plain = self.codec.open(tree_id, BLOB_TREE, memoryview(pack)[e.o: e.o + e.l], e.s)
                except IntegrityError:
                    with lru.lock:  # a damaged cached copy: read from providers
                        lru.packs.pop(loc.pack_id, None)
                    self.cache.drop("packs", loc.pack_id.hex())
        if plain is None:
            plain = self.reader.read_blob(tree_id)
        return formats.decode(plain, formats.Tree, f"tree {tree_id.hex()[:12]}")

    def walk(self, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node below a tree, depth first, with its '/'-joined path."""
        for node in self.load(tree_id).nodes:
            path = f"{prefix}{os.fsdecode(node.name)}"
            yield path, node
            if node.type == "dir" and node.subtree is not None:
                yield from self.walk(node.subtree, path + "/")

    def blob_ids(self, root: bytes, seen: set[bytes] | None = None) -> set[bytes]:
        """Every blob a tree needs: its own id, its subtrees' and its files' chunks (iterative:
        a deep tree must not exhaust the stack). ``seen``: trees already walked, skipped."""
        seen = set() if seen is None else seen
        out: set[bytes] = set()
        todo = [root]
        while todo:
            tid = todo.pop()
            if tid in seen:
                continue
            seen.add(tid)
            out.add(tid)
            for node in self.load(tid).nodes:
                out.update(node.content)
                if node.subtree is not None:
                    todo.append(node.subtree)
        return out

    def find(self, root: bytes, path: str) -> Node | None:
        """The node at a '/'-separated path below a root tree; None for the root itself."""
        parts = [p for p in path.strip("/").split("/") if p and p != "."]
        if not parts:
            return None
        tree = self.load(root)
        node: Node | None = None
        for i, part in enumerate(parts):
            found = [n for n in tree.nodes if n.name == os.fsencode(part)]
            if not found:
                raise UsageError(f"{path!r} is not in this snapshot")
            node = found[0]
            if i < len(parts) - 1:
                if node.type != "dir" or node.subtree is None:
                    raise UsageError(f"{path!r} is not in this snapshot")
                tree = self.load(node.subtree)
        return node
