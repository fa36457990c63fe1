"""What the trustless gateway (:mod:`freehold.gateway`) sends, independent of HTTP: blocks looked
up and checked against their CIDs, UnixFS paths resolved, and the depth-first walks behind CAR
responses (``dag-scope`` and ``entity-bytes`` of the trustless gateway specification, IPIP-402).

Everything here reads blocks lazily from a :class:`BlockSource` and holds at most one block, the
walk's stack of CIDs and the set of CIDs already sent, so a CAR of a DAG of any size streams.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal, Protocol

from freehold.errors import FreeholdError, IntegrityError
from freehold.unixfs.car import verify_block
from freehold.unixfs.cids import DAG_PB, IDENTITY, RAW, other_version, split_cid
from freehold.unixfs.dagpb import DIRECTORY, FILE, HAMT_SHARD, RAW_TYPE, UnixFSData, decode_node, decode_unixfs
from freehold.unixfs.hamt import MURMUR3_X64_64, murmur3_x64_128

__all__ = ["BadRequest", "BlockSource", "DictBlockSource", "Missing", "Scope", "entity_size", "is_empty_identity",
           "lookup", "parse_entity_bytes", "resolve_path", "resolve_range", "walk"]

Scope = Literal["all", "entity", "block"]
MAX_PATH_SEGMENTS = 64          # deeper content paths are refused (400)
MAX_SHARD_DEPTH = 64            # HAMT levels followed while looking one name up


class BlockSource(Protocol):
    """Where the gateway's blocks come from: only blocks of published content."""

    def get(self, cid: bytes) -> bytes | None:
        """The block's bytes if it is part of published content, else None. May raise
        :class:`freehold.errors.FreeholdError` subclasses (storage failures)."""
        ...

    def has(self, cid: bytes) -> bool:
        ...


class DictBlockSource:
    """A :class:`BlockSource` over a mapping of binary CID to block bytes (tests, small publishes)."""

    def __init__(self, blocks: Mapping[bytes, bytes] | None = None) -> None:
        self.blocks: dict[bytes, bytes] = dict(blocks or {})

    def get(self, cid: bytes) -> bytes | None:
        return self.blocks.get(bytes(cid))

    def has(self, cid: bytes) -> bool:
        return bytes(cid) in self.blocks


class Missing(Exception):
    """A block the response needs is not published (404 before streaming, a cut stream after)."""


class BadRequest(Exception):
    """The request's parameters are malformed or ask for what cannot be (400)."""


def is_empty_identity(cid: bytes) -> bool:
    """The empty identity CID (``bafkqaaa`` and its codec variants): the gateway probe."""
    try:
        _, _, code, digest = split_cid(cid)
    except IntegrityError:
        return False
    return code == IDENTITY and digest == b""


def lookup(source: BlockSource, cid: bytes) -> bytes | None:
    """A published block, checked against its CID; None if not published. A dag-pb block asked
    for as CIDv1 is found under its CIDv0 too, and the other way round (the same bytes).
    A block that does not match its CID is an :class:`IntegrityError` (a server fault)."""
    if is_empty_identity(cid):
        return b""
    data = source.get(cid)
    if data is None:
        other = other_version(cid)
        data = source.get(other) if other is not None else None
        if data is None:
            return None
    data = bytes(data)
    verify_block(cid, data)
    return data


def _fetch(source: BlockSource, cid: bytes) -> bytes:
    _, _, code, digest = split_cid(cid)
    if code == IDENTITY:                   # inlined in the link that names it
        verify_block(cid, digest)
        return digest
    data = lookup(source, cid)
    if data is None:
        raise Missing("block not published")
    return data


def _codec(cid: bytes) -> int:
    return split_cid(cid)[1]


def _unixfs(cid: bytes, block: bytes) -> tuple[UnixFSData | None, list[tuple[bytes, bytes]]]:
    """(UnixFS message or None, [(link cid, link name)]) of a block; raw blocks have no links."""
    if _codec(cid) != DAG_PB:
        return None, []
    data, links = decode_node(block)
    pairs = [(link.cid, link.name) for link in links]
    try:
        return decode_unixfs(data), pairs
    except FreeholdError:
        return None, pairs      # dag-pb that is not UnixFS


def _pad_length(msg: UnixFSData) -> int:
    fanout = msg.fanout or 256
    if fanout < 2 or fanout & (fanout - 1) or fanout > 1 << 16:
        raise IntegrityError("HAMT shard: fanout is not a power of two")
    return len(f"{fanout - 1:X}")


def _hash_bits(name: bytes, level: int, bits: int) -> int:
    """Bits ``[level * bits, (level + 1) * bits)`` of a name's HAMT hash stream: murmur3-x64-64
    (h1 of MurmurHash3 x64 128) of the name, then of the name plus one byte 1, 2, ... for each
    further 64 bits, read most significant bit first (as ``hamt-sharding`` reads it)."""
    value = 0
    words: dict[int, int] = {}
    for pos in range(level * bits, (level + 1) * bits):
        depth = pos // 64
        if depth not in words:
            words[depth] = murmur3_x64_128(name if depth == 0 else name + bytes((depth & 0xFF,)))[0]
        value = (value << 1) | ((words[depth] >> (63 - pos % 64)) & 1)
    return value


def _find_in_shard(source: BlockSource, cid: bytes, block: bytes, name: bytes,
                   chain: list[tuple[bytes, bytes]]) -> bytes | None:
    """The CID an entry of a HAMT-sharded directory links to, following the name's hash down
    the sub-shards (appended to ``chain``, the blocks a client needs to check the lookup)."""
    for level in range(MAX_SHARD_DEPTH):
        msg, links = _unixfs(cid, block)
        if msg is None or msg.type != HAMT_SHARD or msg.hash_type != MURMUR3_X64_64:
            raise Missing("not a HAMT shard this gateway can read")
        pad = _pad_length(msg)
        label = f"{_hash_bits(name, level, (msg.fanout or 256).bit_length() - 1):0{pad}X}".encode()
        entry = next(((c, n) for c, n in links if n[:pad] == label), None)
        if entry is None:
            return None
        if entry[1] != label:                  # a name: the entry itself, or another name in its bucket
            return entry[0] if entry[1][pad:] == name else None
        cid, block = entry[0], _fetch(source, entry[0])
        chain.append((cid, block))
    raise Missing("HAMT shard too deep")


def resolve_path(source: BlockSource, root: bytes, root_block: bytes,
                 segments: list[bytes]) -> tuple[bytes, bytes, list[tuple[bytes, bytes]]]:
    """Follow UnixFS directory entries (plain and HAMT-sharded) from ``root``.

    Returns (terminus CID, its block, the blocks traversed before it in the order a
    depth-first walk meets them). :class:`Missing` if an entry or a block is not there."""
    if len(segments) > MAX_PATH_SEGMENTS:
        raise BadRequest("content path too deep")
    cid, block = root, root_block
    traversed: list[tuple[bytes, bytes]] = []
    for name in segments:
        msg, links = _unixfs(cid, block)
        if split_cid(cid)[2] != IDENTITY:
            traversed.append((cid, block))
        child: bytes | None = None
        if msg is not None and msg.type == DIRECTORY:
            child = next((c for c, label in links if label == name), None)
        elif msg is not None and msg.type == HAMT_SHARD:
            child = _find_in_shard(source, cid, block, name, traversed)
        if child is None:
            raise Missing("no such path in the published content")
        cid, block = child, _fetch(source, child)
    return cid, block, traversed


def parse_entity_bytes(text: str) -> tuple[int, int | None]:
    """``from:to`` of the ``entity-bytes`` parameter: integers (negative from the end), ``to``
    may be ``*`` (None). Inclusive, as HTTP ranges."""
    lo_text, sep, hi_text = text.partition(":")
    if not sep:
        raise BadRequest("entity-bytes must be from:to")
    try:
        lo = _bounded_int(lo_text)
        hi = None if hi_text == "*" else _bounded_int(hi_text)
    except ValueError:
        raise BadRequest("entity-bytes must be from:to with integers or *") from None
    if hi is not None and lo >= 0 and hi >= 0 and hi < lo:
        raise BadRequest("entity-bytes: to is before from")
    return lo, hi


def _bounded_int(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 19:
        raise ValueError(text)
    return int(text)


def entity_size(cid: bytes, block: bytes) -> int | None:
    """Byte length of the entity if it is a byte array (a raw block or a UnixFS file), else None."""
    if _codec(cid) == RAW:
        return len(block)
    msg, _ = _unixfs(cid, block)
    if msg is None or msg.type not in (FILE, RAW_TYPE):
        return None
    if msg.filesize is not None:
        return msg.filesize
    return len(msg.data or b"") + sum(msg.blocksizes)


def resolve_range(request: tuple[int, int | None], size: int) -> tuple[int, int] | None:
    """The inclusive byte range ``entity-bytes`` means for an entity of ``size`` bytes; None when
    it is empty (the response is then as for ``dag-scope=block``). :class:`BadRequest` when it
    lies wholly past the end, which the gateway knows before it sends anything."""
    lo, hi = request
    if size == 0:
        return None
    start = lo if lo >= 0 else max(0, size + lo)
    if start >= size:
        raise BadRequest("entity-bytes lies past the end of the entity")
    end = size - 1 if hi is None else (hi if hi >= 0 else size + hi)
    end = min(end, size - 1)
    return (start, end) if end >= start else None


def _children(cid: bytes, block: bytes, scope: Scope, span: tuple[int, int] | None,
              start: int) -> list[tuple[bytes, int]]:
    """The links a walk follows from one block, with each child's offset in the file."""
    if scope == "block" or _codec(cid) != DAG_PB:
        return []
    msg, links = _unixfs(cid, block)
    if scope == "all":
        return [(child, 0) for child, _ in links]
    if msg is None:
        return []                          # not UnixFS: its entity is the block
    if msg.type == HAMT_SHARD:             # the shard nodes enumerate the directory; entries are not in it
        pad = _pad_length(msg)
        return [(child, 0) for child, label in links if len(label) == pad]
    if msg.type not in (FILE, RAW_TYPE):
        return []                          # a directory, symlink or metadata node is its own entity
    if span is None or len(msg.blocksizes) != len(links):
        return [(child, 0) for child, _ in links]
    out = []
    pos = start + len(msg.data or b"")
    for (child, _), size in zip(links, msg.blocksizes, strict=True):
        if size and pos <= span[1] and pos + size - 1 >= span[0]:
            out.append((child, pos))
        pos += size
    return out


def walk(source: BlockSource, root: bytes, root_block: bytes, scope: Scope,
         span: tuple[int, int] | None = None) -> Iterator[tuple[bytes, bytes]]:
    """The blocks of a CAR response in depth-first pre-order (``order=dfs``), each once
    (``dups=n``); identity CIDs are never sent. ``span`` limits a UnixFS file to the blocks
    that hold those bytes. Raises :class:`Missing` when a needed block is not there."""
    seen: set[bytes] = set()
    stack: list[tuple[bytes, int, bytes | None]] = [(root, 0, root_block)]
    while stack:
        cid, start, block = stack.pop()
        if split_cid(cid)[2] == IDENTITY:
            continue
        if cid in seen and (span is None or _codec(cid) == RAW):
            continue                       # already sent whole (with its subtree, when no range cuts it)
        if block is None:
            block = _fetch(source, cid)
        if cid not in seen:
            seen.add(cid)
            yield cid, block
        children = _children(cid, block, scope, span, start)
        stack.extend((child, offset, None) for child, offset in reversed(children))
