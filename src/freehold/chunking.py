"""Content-defined chunking and chunk compression (pure functions, no I/O of their own).

FastCDC with a gear table seeded from the vault's key, so chunk boundaries (and
hence sizes) cannot be used to fingerprint known files across vaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import zstandard
from pyfastcdc import FastCDC

from .formats import ENC_NONE, ENC_ZSTD

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024

# Compression is skipped when a 64 KiB probe does not shrink by at least this much.
PROBE = 64 * 1024
PROBE_RATIO = 0.97
ZSTD_LEVEL = 3
# Files up to this size are read whole and cut in memory; larger ones in blocks of READ_BLOCK.
WHOLE_FILE = 8 * 1024 * 1024
READ_BLOCK = 8 * 1024 * 1024


def _compiled() -> bool:
    import pyfastcdc.cy.fastcdc  # noqa: F401 - the compiled module, ~200x faster than the fallback

    return True


class Chunker:
    def __init__(self, seed: int, min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE,
                 max_size: int = MAX_SIZE) -> None:
        _compiled()
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)

    def cut(self, data: bytes) -> Iterator[bytes | memoryview]:
        """Chunks of an in-memory buffer, as views into it. Used for files up to WHOLE_FILE
        bytes: the stream chunker sets up a max_size buffer per stream (~0.6 ms a file)."""
        if len(data) <= self._cdc.min_size:
            if data:
                yield data
            return
        view = memoryview(data)
        for chunk in self._cdc.cut_buf(data):
            yield view[chunk.offset: chunk.offset + chunk.length]

    def chunks(self, stream: BinaryIO) -> Iterator[memoryview]:
        """Chunks of a stream of any size, as views into READ_BLOCK-sized buffers.

        Cuts exactly where ``cut`` would on the whole content: every chunk but the last of
        a buffer ends at a real cut point or at max_size, which no later byte can change;
        the last one is carried into the next buffer unless the stream has ended.
        (pyfastcdc's own cut_stream reads in small pieces and copies every chunk: 2x slower.)"""
        tail: memoryview | None = None
        while True:
            keep = len(tail) if tail is not None else 0
            buf = bytearray(keep + READ_BLOCK)
            if tail is not None:
                buf[:keep] = tail
            view = memoryview(buf)
            got = stream.readinto(view[keep:])  # type: ignore[attr-defined]
            end = keep + (got or 0)
            if end == 0:
                return
            data = view[:end]
            last = None
            for chunk in self._cdc.cut_buf(data):
                if last is not None:
                    yield last
                last = data[chunk.offset: chunk.offset + chunk.length]
            if not got:  # end of stream: the last chunk is final
                if last is not None:
                    yield last
                return
            tail = last


class Compressor:
    """Not thread-safe: one per worker thread."""

    def __init__(self) -> None:
        self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def encode(self, data: bytes | memoryview) -> tuple[int, bytes | memoryview]:
        """(envelope encoding, body): zstd when it shrinks the data, else the data itself."""
        if len(data) > 64:
            if len(data) > PROBE and len(self._z.compress(data[:PROBE])) >= PROBE * PROBE_RATIO:
                return ENC_NONE, data
            packed = self._z.compress(data)
            if len(packed) < len(data):
                return ENC_ZSTD, packed
        return ENC_NONE, data
