"""Content-defined chunking and chunk compression (pure functions, no I/O of their own).

FastCDC with a gear table seeded from the vault's key, so chunk boundaries (and
hence sizes) cannot be used to fingerprint known files across vaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

import zstandard
from pyfastcdc import FastCDC

from .formats import COMP_NONE, COMP_ZSTD

MIN_SIZE = 256 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024

# Compression is skipped when a 64 KiB probe does not shrink by at least this much.
PROBE = 64 * 1024
PROBE_RATIO = 0.97
ZSTD_LEVEL = 3
# Files up to this size are read whole and cut in memory.
WHOLE_FILE = 8 * 1024 * 1024


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

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Chunks of a stream of any size; memory stays about max_size."""
        for chunk in self._cdc.cut_stream(stream):
            yield bytes(chunk.data)


class Compressor:
    """Not thread-safe: one per worker thread."""

    def __init__(self) -> None:
        self._z = zstandard.ZstdCompressor(level=ZSTD_LEVEL)

    def encode(self, data: bytes) -> bytes:
        """Return a blob plaintext: one encoding byte, then the (maybe compressed) data."""
        if len(data) > 64:
            if len(data) > PROBE and len(self._z.compress(data[:PROBE])) >= PROBE * PROBE_RATIO:
                return bytes((COMP_NONE,)) + data
            packed = self._z.compress(data)
            if len(packed) < len(data):
                return bytes((COMP_ZSTD,)) + packed
        return bytes((COMP_NONE,)) + data
