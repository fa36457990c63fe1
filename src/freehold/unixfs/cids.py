"""Binary CIDs: build, split strictly, print and parse (the CID and multihash specs).

A CID is handled as its binary form (``bytes``) everywhere in :mod:`freehold.unixfs`:

- CIDv0: the bare sha2-256 multihash ``12 20 <32 bytes>`` of a dag-pb block; text is base58btc
  without a multibase prefix (``Qm…``).
- CIDv1: ``varint(1) varint(codec) multihash``; text is multibase base32 lower case (``b…``).

Multibase text of other bases is accepted by :func:`parse_cid` through ``multiformats``.
"""

from __future__ import annotations

import base64
import hashlib

from freehold.errors import IntegrityError, UsageError

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
SHA2_256 = 0x12
IDENTITY = 0x00
MAX_IDENTITY_DIGEST = 128   # an identity multihash longer than this is refused (as boxo/kubo do)


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 varint (multiformats unsigned-varint, also protobuf's varint)."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | memoryview, pos: int, what: str = "varint") -> tuple[int, int]:
    """Decode a minimal unsigned varint of at most 64 bits at ``pos``; returns (value, new pos).

    Raises IntegrityError on truncation, overflow or a non-minimal encoding."""
    value = 0
    shift = 0
    n = len(buf)
    start = pos
    while True:
        if pos >= n:
            raise IntegrityError(f"{what}: truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if b == 0 and pos - start > 1:
                raise IntegrityError(f"{what}: non-minimal varint")
            if value >= 1 << 64:
                raise IntegrityError(f"{what}: varint overflows 64 bits")
            return value, pos
        shift += 7
        if shift >= 70:
            raise IntegrityError(f"{what}: varint too long")


def make_cid(version: int, codec: int, digest: bytes, hash_code: int = SHA2_256) -> bytes:
    """The binary CID of a digest (CIDv0 only for dag-pb sha2-256)."""
    mh = encode_varint(hash_code) + encode_varint(len(digest)) + digest
    if version == 0:
        if codec != DAG_PB or hash_code != SHA2_256 or len(digest) != 32:
            raise UsageError("CIDv0 is only for dag-pb blocks hashed with sha2-256")
        return mh
    if version != 1:
        raise UsageError(f"unknown CID version {version}")
    return b"\x01" + encode_varint(codec) + mh


def block_cid(data: bytes | memoryview, version: int, codec: int) -> bytes:
    """sha2-256 CID of a block."""
    return make_cid(version, codec, hashlib.sha256(data).digest())


def split_cid(cid: bytes | memoryview) -> tuple[int, int, int, bytes]:
    """Strictly split a binary CID into (version, codec, multihash code, digest).

    Raises IntegrityError unless the bytes are exactly one well-formed CID."""
    cid = bytes(cid)
    if len(cid) == 34 and cid[0] == SHA2_256 and cid[1] == 32:
        return 0, DAG_PB, SHA2_256, cid[2:]
    version, pos = read_varint(cid, 0, "CID")
    if version != 1:
        raise IntegrityError(f"CID: unsupported version {version}")
    codec, pos = read_varint(cid, pos, "CID")
    code, pos = read_varint(cid, pos, "CID")
    length, pos = read_varint(cid, pos, "CID")
    if len(cid) - pos != length:
        raise IntegrityError("CID: multihash length does not match its digest")
    if code == SHA2_256 and length != 32:
        raise IntegrityError("CID: sha2-256 digest is not 32 bytes")
    return 1, codec, code, cid[pos:]


def other_version(cid: bytes) -> bytes | None:
    """The same dag-pb sha2-256 block's CID in the other version (v0 <-> v1), if it has one
    (raw and identity CIDs have no CIDv0). IntegrityError if ``cid`` is malformed."""
    version, codec, code, digest = split_cid(cid)
    if codec != DAG_PB or code != SHA2_256:
        return None
    return make_cid(1 if version == 0 else 0, DAG_PB, digest)


def cid_str(cid: bytes) -> str:
    """Text form: CIDv0 base58btc (``Qm…``), CIDv1 multibase base32 lower case (``bafy…``/``bafk…``)."""
    try:
        version, _, _, _ = split_cid(cid)
    except IntegrityError as exc:
        raise UsageError(f"not a CID: {exc}") from None
    if version == 0:
        from multiformats import CID  # lazily: ~30 ms of import, not every command's

        return str(CID.decode(bytes(cid)))
    return "b" + base64.b32encode(bytes(cid)).decode("ascii").lower().rstrip("=")


def parse_cid(text: str) -> bytes:
    """Binary CID from its text (CIDv0 base58btc, or any multibase CIDv1); UsageError if malformed."""
    if not isinstance(text, str) or not text or len(text) > 512:
        raise UsageError("not a CID: empty or too long")
    try:
        if text[0] == "b":
            body = text[1:]
            raw = base64.b32decode(body.upper() + "=" * (-len(body) % 8))
            split_cid(raw)
            if cid_str(raw) != text:       # upper case, padding or stray low bits
                raise ValueError("not canonical base32")
        else:
            from multiformats import CID  # lazily, as in cid_str

            raw = bytes(CID.decode(text))
            split_cid(raw)
    except (ValueError, KeyError, IntegrityError, UsageError, TypeError) as exc:   # binascii.Error is a ValueError
        raise UsageError(f"not a CID: {text!r} ({exc})") from None
    if raw[0] == SHA2_256 and not text.startswith("Qm"):
        raise UsageError(f"not a CID: {text!r} (a bare multihash)")
    return raw
