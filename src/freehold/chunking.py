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


def _compiled() -> bool:
    import pyfastcdc.cy.fastcdc  # noqa: F401 - the compiled module, ~200x faster than the fallback

    return True


class Chunker:
    def __init__(self, seed: int, min_size: int = MIN_SIZE, avg_size: int = AVG_SIZE,
                 max_size: int = MAX_SIZE) -> None:
        _compiled()
        self._cdc = FastCDC(avg_size, min_size=min_size, max_size=max_size, seed=seed)

    def chunks(self, stream: BinaryIO) -> Iterator[bytes]:
        """Yield the chunks of a stream as independent bytes (memory stays ~max_size)."""
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
