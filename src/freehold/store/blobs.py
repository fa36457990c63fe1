"""Blob envelopes (docs/design.md §5, §6): sealing and opening data and tree blobs, one place."""

from __future__ import annotations

from ..crypto import KIND_DATA, KIND_TREE, VaultKeys, decode, decode_many, open_sealed, seal, unseal
from ..errors import IntegrityError
from ..formats import BLOB_TREE, ENC_NONE, ENC_ZSTD, PackEntry

DECODE_BATCH_MIN = 16  # coalesced reads of at least this many blobs decode their zstd bodies in one call


def describe(blob_id: bytes) -> str:
    """How errors name a blob."""
    return f"blob {blob_id.hex()[:12]}"


def envelope_kind(blob_type: int) -> int:
    return KIND_TREE if blob_type == BLOB_TREE else KIND_DATA


class BlobCodec:
    def __init__(self, keys: VaultKeys) -> None:
        self.keys = keys

    # ``blob_id`` below is the blob's reference (what trees hold); the envelope's context is its
    # index id (``keys.locate``), the same bytes in format 1.

    def seal(self, blob_id: bytes, blob_type: int, body: bytes | bytearray | memoryview,
             encoding: int = ENC_NONE) -> bytearray:
        return seal(self.keys.blob_key(blob_id), envelope_kind(blob_type), self.keys.locate(blob_id), body,
                    encoding)

    def open(self, blob_id: bytes, blob_type: int, env: bytes | bytearray | memoryview,
             size: int | None = None) -> bytes:
        """Authenticate, decrypt, decode and verify one blob envelope."""
        data = open_sealed(self.keys.blob_key(blob_id), envelope_kind(blob_type), self.keys.locate(blob_id), env,
                           describe(blob_id))
        self.check(blob_id, data, size)
        return data

    def authenticate(self, blob_id: bytes, blob_type: int, env: bytes | bytearray | memoryview) -> None:
        """Raise IntegrityError unless ``env`` is an authentic envelope of this blob (made with its
        key, for its id): enough to copy it as it is, without decoding it."""
        unseal(self.keys.blob_key(blob_id), envelope_kind(blob_type), self.keys.locate(blob_id), env,
               describe(blob_id))

    def check(self, blob_id: bytes, data: bytes | memoryview, size: int | None) -> None:
        """A blob's plaintext must have its recorded size and hash to its id."""
        if (size is not None and len(data) != size) or not self.keys.proves(blob_id, data):
            raise IntegrityError(f"{describe(blob_id)} does not match its id")

    def open_group(self, group: list[PackEntry], data: bytes, start: int,
                   refs: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        """``open`` for every blob of a coalesced read (pack bytes from ``start``), the zstd bodies
        decoded in one batch (values are bytes or read-only memoryviews). ``refs``: index id ->
        reference, for a 2.0 vault (format 1: the ids are the references). Keyed by reference."""
        view = memoryview(data)

        def ref(e: PackEntry) -> bytes:
            return e.id if refs is None else refs[e.id]
        if len(group) < DECODE_BATCH_MIN:
            return {ref(e): self.open(ref(e), e.t, view[e.o - start: e.o + e.l - start], e.s) for e in group}
        out: dict[bytes, bytes] = {}
        packed: list[tuple[PackEntry, bytes]] = []
        for e in group:
            encoding, body = unseal(self.keys.blob_key(ref(e)), envelope_kind(e.t), e.id,
                                    view[e.o - start: e.o + e.l - start], describe(e.id))
            if encoding == ENC_ZSTD:
                packed.append((e, body))
            else:
                out[ref(e)] = body
        plains = decode_many([b for _, b in packed], [e.s for e, _ in packed]) if packed else []
        if plains is None:  # some body is bad: decode one by one to name it
            plains = [decode(ENC_ZSTD, b, describe(e.id)) for e, b in packed]
        for (e, _), plain in zip(packed, plains, strict=True):
            out[ref(e)] = plain  # type: ignore[assignment]
        for e in group:
            self.check(ref(e), out[ref(e)], e.s)
        return out
