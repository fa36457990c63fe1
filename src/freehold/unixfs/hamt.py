"""HAMT-sharded UnixFS directories, as ``ipfs-unixfs-importer`` 17.1.1 (``dir-sharded.js``) and
``hamt-sharding`` 3.0.8 build them.

Follows the UnixFS spec's HAMTShard section, with the reference's exact choices:

- the hash of a name is MurmurHash3 x64 128 (seed 0) of its UTF-8 bytes, of which the first
  64 bits (``h1``) are used, read most significant bit first, ``fanout_bits`` bits per level;
  past 64 bits the name with one more byte (the depth: 1, 2, ...) is hashed for the next 64;
- a bucket position holds a name, or a sub-shard when two or more names share the prefix;
- a shard node is ``UnixFS{Type: HAMTShard, Data: bitfield, hashType: 0x22, fanout}``, with
  links named ``"%02X" % position`` (sub-shard) or that plus the entry's name, sorted by name;
- the bitfield is ``sparse-array``'s reversed: the positions as bits of a big-endian number
  in as few bytes as hold it (at least one), so its length depends on the highest position;
- a link's Tsize is the child's cumulative size; a shard's size is its block length plus its
  links' sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import mmh3

from .blocks import Block
from .cids import DAG_PB, block_cid
from .dagpb import HAMT_SHARD, Link, UnixFSData, encode_node, encode_unixfs

__all__ = ["MURMUR3_X64_64", "Bucket", "murmur3_x64_128", "shard_bitfield"]

MURMUR3_X64_64 = 0x22


def murmur3_x64_128(key: bytes, seed: int = 0) -> tuple[int, int]:
    """MurmurHash3_x64_128 (Austin Appleby's reference, by the ``mmh3`` C extension): the two
    64-bit halves (h1, h2), unsigned."""
    return mmh3.hash64(key, seed=seed, x64arch=True, signed=False)  # type: ignore[no-any-return]


class _HashBits:
    """The infinite bit stream ``hamt-sharding`` reads a name's position from."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.words: list[int] = []

    def take(self, level: int, bits: int) -> int:
        start, end = level * bits, (level + 1) * bits
        while len(self.words) * 64 < end:
            depth = len(self.words)
            data = self.key if depth == 0 else self.key + bytes((depth & 0xFF,))
            self.words.append(murmur3_x64_128(data)[0])
        value = 0
        for pos in range(start, end):
            word = self.words[pos // 64]
            value = (value << 1) | ((word >> (63 - pos % 64)) & 1)
        return value


@dataclass
class _Leaf:
    key: bytes
    value: object
    hash: _HashBits


class Bucket:
    """One level of the trie: positions to a name's value or a sub-bucket."""

    def __init__(self, bits: int, level: int = 0) -> None:
        self.bits = bits
        self.level = level
        self.children: dict[int, _Leaf | Bucket] = {}

    def _set(self, pos: int, child: _Leaf | Bucket) -> None:
        self.children[pos] = child

    def put(self, key: bytes, value: object) -> None:
        """Insert or replace ``key``."""
        self.insert(_Leaf(key, value, _HashBits(key)))

    def insert(self, leaf: _Leaf) -> None:
        """Place a name (with its hash stream) at this level or below."""
        pos = leaf.hash.take(self.level, self.bits)
        here = self.children.get(pos)
        if isinstance(here, Bucket):
            here.insert(leaf)
        elif here is None or here.key == leaf.key:
            self._set(pos, leaf)
        else:
            sub = Bucket(self.bits, self.level + 1)
            self._set(pos, sub)
            sub.insert(here)
            sub.insert(leaf)

    def get(self, key: bytes) -> object | None:
        """The value stored for ``key``, or None."""
        node: Bucket = self
        hb = _HashBits(key)
        while True:
            here = node.children.get(hb.take(node.level, node.bits))
            if isinstance(here, Bucket):
                node = here
                continue
            return here.value if here is not None and here.key == key else None

    def items(self) -> Iterator[tuple[bytes, object]]:
        """Every (name, value), in trie order."""
        for pos in sorted(self.children):
            child = self.children[pos]
            if isinstance(child, Bucket):
                yield from child.items()
            else:
                yield child.key, child.value

    def flush(self, child_link: Callable[[object], Iterator[Block | tuple[bytes, int]]],
              version: int) -> Iterator[Block | tuple[bytes, int]]:
        """Blocks of this shard in the reference's order (children's blocks, then sub-shards,
        then this node), ending with ``(cid, size)`` of this node. ``child_link(value)`` yields a
        child's blocks and ends with its ``(cid, size)``."""
        width = len(f"{(1 << self.bits) - 1:X}")
        links: list[Link] = []
        total = 0
        for pos in sorted(self.children):
            child = self.children[pos]
            label = f"{pos:0{width}X}".encode()
            result: tuple[bytes, int] | None = None
            source = child.flush(child_link, version) if isinstance(child, Bucket) else child_link(child.value)
            for item in source:
                if isinstance(item, Block):
                    yield item
                else:
                    result = item
            assert result is not None
            name = label if isinstance(child, Bucket) else label + child.key
            links.append(Link(result[0], name, result[1]))
            total += result[1]
        data = encode_unixfs(UnixFSData(HAMT_SHARD, data=shard_bitfield(self.children),
                                        hash_type=MURMUR3_X64_64, fanout=1 << self.bits))
        block = encode_node(data, links)
        cid = block_cid(block, version, DAG_PB)
        yield Block(cid, block)
        yield cid, len(block) + total


def shard_bitfield(positions: Iterable[int]) -> bytes:
    """``Uint8Array.from(sparseArray.bitField().reverse())`` for these set positions: bit ``p``
    is bit ``p % 8`` of byte ``p // 8`` counted from the end, trailing (here leading) zero bytes
    dropped, at least one byte."""
    value = 0
    for pos in positions:
        value |= 1 << pos
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
