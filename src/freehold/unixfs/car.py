"""CARv1 files: write and read, verifying each block against its CID.

Follows the CARv1 specification (ipld/specs ``transport/car/carv1``): a header, the varint
length-prefixed DAG-CBOR map ``{"roots": [CID, ...], "version": 1}`` (encoded with ``dag-cbor``,
so its key order and CID tag 42 are canonical, as ``@ipld/car``'s CarWriter writes it), then for
each block ``varint(len(cid) + len(data)) || cid || data`` with the binary CID.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from freehold.errors import IntegrityError

from .blocks import Block
from .cids import IDENTITY, MAX_IDENTITY_DIGEST, SHA2_256, encode_varint, read_varint, split_cid

__all__ = ["MAX_HEADER", "MAX_SECTION", "read_car", "verify_block", "write_car"]

MAX_HEADER = 1 << 20        # a header larger than this is refused (it holds only the roots)
MAX_SECTION = 1 << 24       # a block section larger than this (16 MiB) is refused


def verify_block(cid: bytes, data: bytes) -> None:
    """Check a block's bytes against its CID's multihash (sha2-256 or identity); IntegrityError
    if they differ, if the CID is malformed, or if its hash function is not one of those."""
    _, _, code, digest = split_cid(cid)
    if code == SHA2_256:
        if hashlib.sha256(data).digest() != digest:
            raise IntegrityError("block does not match its CID (sha2-256)")
    elif code == IDENTITY:
        if len(digest) > MAX_IDENTITY_DIGEST:
            raise IntegrityError("identity CID longer than allowed")
        if bytes(data) != digest:
            raise IntegrityError("block does not match its identity CID")
    else:
        raise IntegrityError(f"cannot verify a block hashed with multihash code 0x{code:x}")


def _header(roots: list[bytes]) -> bytes:
    import dag_cbor  # lazily: multiformats and dag-cbor cost ~45 ms of every command's start
    from multiformats import CID

    return dag_cbor.encode({"roots": [CID.decode(bytes(r)) for r in roots], "version": 1})


def write_car(roots: list[bytes], blocks: Iterable[Block | tuple[bytes, bytes]], out: BinaryIO) -> int:
    """Write a CARv1 with these roots and blocks (in the order given, each CID once: a block
    whose CID was already written is skipped); returns the number of bytes written."""
    for root in roots:
        split_cid(root)
    header = _header(roots)
    head = encode_varint(len(header)) + header
    out.write(head)
    total = len(head)
    seen: set[bytes] = set()
    for item in blocks:
        if isinstance(item, Block):
            cid, data = item.cid, item.data
        else:
            cid, data = item
        if cid in seen:
            continue
        seen.add(cid)
        prefix = encode_varint(len(cid) + len(data)) + cid
        out.write(prefix)
        out.write(data)
        total += len(prefix) + len(data)
    return total


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        raise IntegrityError(f"CAR: truncated {what}")
    return data


def _read_stream_varint(stream: BinaryIO) -> int | None:
    """A varint from the stream, or None at a clean end of the stream."""
    buf = bytearray()
    while True:
        b = stream.read(1)
        if not b:
            if buf:
                raise IntegrityError("CAR: truncated varint")
            return None
        buf += b
        if b[0] < 0x80:
            return read_varint(bytes(buf), 0, "CAR")[0]
        if len(buf) >= 10:
            raise IntegrityError("CAR: varint too long")


def _cid_length(section: bytes) -> int:
    """Length of the binary CID at the start of a block section."""
    if len(section) >= 2 and section[0] == SHA2_256 and section[1] == 32:
        return 34
    pos = 0
    for _ in range(3):          # version, codec, hash code
        _, pos = read_varint(section, pos, "CAR block CID")
    length, pos = read_varint(section, pos, "CAR block CID")
    if length > len(section) - pos:
        raise IntegrityError("CAR: truncated block CID")
    return pos + length


def _parse_header(header: bytes) -> list[bytes]:
    import dag_cbor  # lazily, as in _header
    from multiformats import CID

    try:
        value = dag_cbor.decode(header)
    except Exception as exc:  # dag_cbor raises several error types on garbage
        raise IntegrityError(f"CAR: header is not DAG-CBOR ({exc})") from None
    if not isinstance(value, dict) or set(value) != {"roots", "version"} or value["version"] != 1:
        raise IntegrityError("CAR: header is not a CARv1 header")
    roots = value["roots"]
    if not isinstance(roots, list) or not all(isinstance(r, CID) for r in roots):
        raise IntegrityError("CAR: header roots are not a list of CIDs")
    out = [bytes(r) for r in roots]
    for root in out:
        split_cid(root)
    return out


def read_car(data: bytes | BinaryIO) -> tuple[list[bytes], Iterator[tuple[bytes, bytes]]]:
    """Read a CARv1: its roots now, and an iterator over its (cid, data) blocks, each verified
    against its CID as it is read. IntegrityError on garbage, truncation or a mismatching block."""
    stream: BinaryIO = io.BytesIO(bytes(data)) if isinstance(data, bytes | bytearray | memoryview) else data
    length = _read_stream_varint(stream)
    if length is None or length == 0:
        raise IntegrityError("CAR: no header")
    if length > MAX_HEADER:
        raise IntegrityError("CAR: header too large")
    roots = _parse_header(_read_exact(stream, length, "header"))

    def blocks() -> Iterator[tuple[bytes, bytes]]:
        while True:
            size = _read_stream_varint(stream)
            if size is None:
                return
            if size == 0 or size > MAX_SECTION:
                raise IntegrityError(f"CAR: block section of {size} bytes")
            section = _read_exact(stream, size, "block")
            n = _cid_length(section)
            cid, body = section[:n], section[n:]
            verify_block(cid, body)
            yield cid, body

    return roots, blocks()
