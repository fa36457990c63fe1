"""dag-pb nodes and the UnixFS ``Data`` message inside them.

Follows the IPLD DAG-PB specification (ipld/specs ``codecs/dag-pb/spec.md``) and the UnixFS
specification (ipfs/specs ``unixfs.md``):

- ``PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }`` with the Links written
  before Data (the order @ipld/dag-pb and go-codec-dagpb write, and IPIP-499's profiles use);
- ``PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }``,
  fields in that order; :func:`encode_node` always writes all three (as the reference importers
  do) and :func:`decode_node` maps an absent Name to ``b""`` and an absent Tsize to 0;
- links sorted by their name bytes, as ``@ipld/dag-pb``'s ``prepare`` sorts them (a stable
  sort: links of equal names keep their order).

Decoding is strict in the ways the JavaScript and Go decoders are (wire types, field numbers,
field order inside a link, duplicate fields, interleaved Links/Data/Links, a Hash that is not a
CID, truncation, varints over 64 bits) and also rejects non-minimal varints, so that every block
it accepts encodes back to itself (apart from a data-first block, which it accepts as the UnixFS
spec says decoders must). Anything malformed raises :class:`freehold.errors.IntegrityError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from freehold.errors import IntegrityError

from .cids import encode_varint, read_varint, split_cid

__all__ = [
    "DIRECTORY", "FILE", "HAMT_SHARD", "METADATA", "RAW_TYPE", "SYMLINK",
    "Link", "UnixFSData", "decode_node", "decode_unixfs", "encode_node", "encode_unixfs",
    "link_size", "sort_links",
]

# UnixFS Data.DataType
RAW_TYPE, DIRECTORY, FILE, METADATA, SYMLINK, HAMT_SHARD = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True)
class Link:
    """One PBLink: the child's binary CID, its name (UTF-8 bytes) and its cumulative size."""

    cid: bytes
    name: bytes
    tsize: int


def _len_field(tag: int, payload: bytes) -> bytes:
    return bytes((tag,)) + encode_varint(len(payload)) + payload


def _encode_link(link: Link) -> bytes:
    return (_len_field(0x0A, link.cid) + _len_field(0x12, link.name)
            + b"\x18" + encode_varint(link.tsize))


def link_size(name_len: int, cid_len: int, tsize: int) -> int:
    """Bytes one link adds to an encoded PBNode (its key, length and body)."""
    body = (1 + len(encode_varint(cid_len)) + cid_len + 1 + len(encode_varint(name_len)) + name_len
            + 1 + len(encode_varint(tsize)))
    return 1 + len(encode_varint(body)) + body


def sort_links(links: list[Link]) -> list[Link]:
    """Links in canonical order: by name bytes, stable (``@ipld/dag-pb``'s ``linkComparator``)."""
    return sorted(links, key=lambda link: link.name)


def encode_node(data: bytes | None, links: list[Link]) -> bytes:
    """Canonical dag-pb bytes: the links (sorted by name) first, then Data if not None."""
    if any(links[i].name > links[i + 1].name for i in range(len(links) - 1)):
        links = sort_links(links)
    parts = [_len_field(0x12, _encode_link(link)) for link in links]
    if data is not None:
        parts.append(_len_field(0x0A, bytes(data)))
    return b"".join(parts)


def _read_bytes(buf: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    length, pos = read_varint(buf, pos, what)
    if length > end - pos:
        raise IntegrityError(f"{what}: truncated field")
    return buf[pos:pos + length], pos + length


def _decode_link(buf: bytes) -> Link:
    pos, end = 0, len(buf)
    cid: bytes | None = None
    name: bytes | None = None
    tsize: int | None = None
    while pos < end:
        key, pos = read_varint(buf, pos, "dag-pb link")
        num, wire = key >> 3, key & 7
        if num == 1:
            if cid is not None or name is not None or tsize is not None:
                raise IntegrityError("dag-pb link: Hash repeated or out of order")
            if wire != 2:
                raise IntegrityError("dag-pb link: wrong wire type for Hash")
            cid, pos = _read_bytes(buf, pos, end, "dag-pb link")
        elif num == 2:
            if name is not None or tsize is not None:
                raise IntegrityError("dag-pb link: Name repeated or out of order")
            if wire != 2:
                raise IntegrityError("dag-pb link: wrong wire type for Name")
            name, pos = _read_bytes(buf, pos, end, "dag-pb link")
        elif num == 3:
            if tsize is not None:
                raise IntegrityError("dag-pb link: Tsize repeated")
            if wire != 0:
                raise IntegrityError("dag-pb link: wrong wire type for Tsize")
            tsize, pos = read_varint(buf, pos, "dag-pb link")
        else:
            raise IntegrityError(f"dag-pb link: unknown field {num}")
    if cid is None:
        raise IntegrityError("dag-pb link: no Hash")
    split_cid(cid)
    return Link(cid=cid, name=name if name is not None else b"", tsize=tsize or 0)


def decode_node(block: bytes) -> tuple[bytes | None, list[Link]]:
    """Decode a dag-pb block strictly into (Data or None, links); IntegrityError if malformed."""
    if not isinstance(block, bytes | bytearray | memoryview):
        raise IntegrityError("dag-pb: not bytes")
    buf = bytes(block)
    pos, end = 0, len(buf)
    data: bytes | None = None
    links: list[Link] = []
    links_done = False
    while pos < end:
        key, pos = read_varint(buf, pos, "dag-pb node")
        num, wire = key >> 3, key & 7
        if wire != 2:
            raise IntegrityError(f"dag-pb node: wrong wire type {wire}")
        if num == 1:
            if data is not None:
                raise IntegrityError("dag-pb node: Data repeated")
            data, pos = _read_bytes(buf, pos, end, "dag-pb node")
            links_done = bool(links)
        elif num == 2:
            if links_done:
                raise IntegrityError("dag-pb node: Links interleaved with Data")
            body, pos = _read_bytes(buf, pos, end, "dag-pb node")
            links.append(_decode_link(body))
        else:
            raise IntegrityError(f"dag-pb node: unknown field {num}")
    return data, links


@dataclass(frozen=True)
class UnixFSData:
    """The UnixFS ``Data`` protobuf message (field numbers 1-8 of the UnixFS spec)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None


def encode_unixfs(msg: UnixFSData) -> bytes:
    """Encode a UnixFS Data message as ``ipfs-unixfs`` does: fields in number order, blocksizes
    unpacked, an empty ``Data`` left out."""
    out = bytearray(b"\x08" + encode_varint(msg.type))
    if msg.data:
        out += _len_field(0x12, msg.data)
    if msg.filesize is not None:
        out += b"\x18" + encode_varint(msg.filesize)
    for size in msg.blocksizes:
        out += b"\x20" + encode_varint(size)
    if msg.hash_type is not None:
        out += b"\x28" + encode_varint(msg.hash_type)
    if msg.fanout is not None:
        out += b"\x30" + encode_varint(msg.fanout)
    if msg.mode is not None:
        out += b"\x38" + encode_varint(msg.mode)
    if msg.mtime is not None:
        secs, nsecs = msg.mtime
        inner = b"\x08" + encode_varint(secs & 0xFFFFFFFFFFFFFFFF)
        if nsecs is not None:
            inner += b"\x15" + nsecs.to_bytes(4, "little")
        out += _len_field(0x42, inner)
    return bytes(out)


def _skip(buf: bytes, pos: int, end: int, wire: int) -> int:
    if wire == 0:
        return read_varint(buf, pos, "unixfs")[1]
    if wire == 1:
        pos += 8
    elif wire == 2:
        return _read_bytes(buf, pos, end, "unixfs")[1]
    elif wire == 5:
        pos += 4
    else:
        raise IntegrityError(f"unixfs: unsupported wire type {wire}")
    if pos > end:
        raise IntegrityError("unixfs: truncated field")
    return pos


def decode_unixfs(buf: bytes | None) -> UnixFSData:
    """Decode a UnixFS Data message (protobuf rules: unknown fields skipped, packed or unpacked
    blocksizes); IntegrityError if malformed or if Type is missing."""
    if buf is None:
        raise IntegrityError("unixfs: dag-pb node has no Data")
    buf = bytes(buf)
    pos, end = 0, len(buf)
    vals: dict[str, object] = {}
    sizes: list[int] = []
    varint_fields = {1: "type", 3: "filesize", 5: "hash_type", 6: "fanout", 7: "mode"}
    while pos < end:
        key, pos = read_varint(buf, pos, "unixfs")
        num, wire = key >> 3, key & 7
        if num in varint_fields and wire == 0:
            vals[varint_fields[num]], pos = read_varint(buf, pos, "unixfs")
        elif num == 2 and wire == 2:
            vals["data"], pos = _read_bytes(buf, pos, end, "unixfs")
        elif num == 4 and wire == 0:
            size, pos = read_varint(buf, pos, "unixfs")
            sizes.append(size)
        elif num == 4 and wire == 2:
            packed, pos = _read_bytes(buf, pos, end, "unixfs")
            p = 0
            while p < len(packed):
                size, p = read_varint(packed, p, "unixfs")
                sizes.append(size)
        elif num == 8 and wire == 2:
            inner, pos = _read_bytes(buf, pos, end, "unixfs")
            vals["mtime"] = _decode_mtime(inner)
        elif num in varint_fields or num in (2, 4, 8):
            raise IntegrityError(f"unixfs: wrong wire type for field {num}")
        else:
            pos = _skip(buf, pos, end, wire)
    if "type" not in vals:
        raise IntegrityError("unixfs: no Type")
    return UnixFSData(blocksizes=tuple(sizes), **vals)  # type: ignore[arg-type]


def _decode_mtime(inner: bytes) -> tuple[int, int | None]:
    pos, secs, nsecs = 0, 0, None
    while pos < len(inner):
        key, pos = read_varint(inner, pos, "unixfs mtime")
        if key == 0x08:
            secs, pos = read_varint(inner, pos, "unixfs mtime")
            if secs >= 1 << 63:
                secs -= 1 << 64
        elif key == 0x15:
            if pos + 4 > len(inner):
                raise IntegrityError("unixfs mtime: truncated")
            nsecs = int.from_bytes(inner[pos:pos + 4], "little")
            pos += 4
        else:
            pos = _skip(inner, pos, len(inner), key & 7)
    return secs, nsecs
