"""Content-defined chunking and chunk compression (pure functions, no I/O of their own).

FastCDC with a gear table seeded from the vault's key, so chunk boundaries (and
hence sizes) cannot be used to fingerprint known files across vaults.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO

import zstandard
from pyfastcdc import FastCDC

from .formats import ENC_NONE, ENC_ZSTD

MIN_SIZE = 512 * 1024
AVG_SIZE = 1024 * 1024
MAX_SIZE = 4 * 1024 * 1024

# Compression is skipped when a 64 KiB probe does not shrink by at least this much.
PROBE = 64 * 1024
PROBE_RATIO = 0.97
ZSTD_LEVEL = 3
# Files up to this size are read whole and cut in memory.
WHOLE_FILE = 8 * 1024 * 1024
# Larger files are read, cut and hashed in pieces of SEGMENT bytes on worker threads.
SEGMENT = 6 * 1024 * 1024
SEGMENTS_AHEAD = 2

# (offset, length) -> the bytes there; fewer only at the end of the file. Returning new bytes
# (os.pread) rather than filling a buffer spares zero-filling one first: a bytearray of the
# piece's size was 1 GiB of memset per GiB backed up.
ReadAt = Callable[[int, int], bytes]
Submit = Callable[..., "Future[Any]"]                   # an executor's submit


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
        """Chunks of a stream of any size, read and cut one segment at a time on this thread."""
        def read_at(offset: int, length: int) -> bytes:
            stream.seek(offset)
            return stream.read(length)

        for chunk, _ in self.chunks_at(read_at, _Inline().submit, lambda c: b""):
            yield chunk

    def chunks_at(self, read_at: ReadAt, submit: Submit, blob_id: Callable[[memoryview], bytes],
                  size_hint: int = 0, ahead: int = SEGMENTS_AHEAD) -> Iterator[tuple[memoryview, bytes]]:
        """(chunk, blob_id(chunk)) of a file of any size, cut exactly where ``cut`` would cut
        its whole content, with the reading, cutting and hashing spread over ``submit``'s threads.

        The file is read in SEGMENT-sized pieces and each piece is cut and hashed on its own,
        as if a chunk began at its first byte. Only the seam is wrong: it is re-cut from the true
        last cut of the previous piece (copying at most max_size bytes) until a true cut lands
        on one of the piece's own cut points. FastCDC's next cut depends only on where the
        previous one was, so from there on the piece's cuts are the true ones; that happens
        within a chunk or two. The seam of a piece is resolved on ``submit``'s threads too,
        while this thread hands out the previous piece's chunks: done here, re-cutting and
        hashing seams was a third of all cutting and hashing, and made this thread the limit of
        a large-file backup (busy 85 % of the time, the two cores 1.55 busy)."""
        jobs: collections.deque[Future[_Scanned]] = collections.deque()
        next_start = 0
        eof_seen = False

        def refill() -> None:
            nonlocal next_start
            while not eof_seen and len(jobs) < ahead and (next_start < size_hint or not jobs):
                left = size_hint - next_start
                # One byte more than the size the file had: the piece that holds its end sees it.
                # Past that size (the file grew, or no size was given), whole or 1 MiB pieces.
                length = min(SEGMENT, left + 1) if left > 0 else (SEGMENT if not size_hint else 1 << 20)
                jobs.append(submit(self._scan, read_at, next_start, length, blob_id))
                next_start += length

        resolving: Future[_Resolved] | None = None  # the previous piece's true chunks
        try:
            refill()
            while jobs:
                seg = jobs.popleft().result()
                eof_seen = seg.eof
                refill()
                done = resolving.result() if resolving is not None else None
                resolving = submit(self._resolve, done.carry if done is not None else None, seg, blob_id)
                if done is not None:
                    yield from done.chunks
            if resolving is not None:
                yield from resolving.result().chunks
        finally:
            for job in jobs:  # the caller may close the file next: no read may still be running
                job.cancel()
            for job in jobs:
                if not job.cancelled():
                    with contextlib.suppress(Exception):
                        job.result()

    def _resolve(self, carry: memoryview | None, seg: _Scanned,
                 blob_id: Callable[[memoryview], bytes]) -> _Resolved:
        """The true chunks of one piece, given ``carry``, the unfinished chunk from the true last
        cut before it (None for the file's first piece): the chunk across the seam, the chunks
        that follow until a true cut is one of the piece's own, then the piece's own chunks.
        Returns them with the piece's own unfinished chunk (None at the end of the file)."""
        max_size = self._cdc.max_size
        out: list[tuple[memoryview, bytes]] = []
        data, spec = seg.data, {o: j for j, (o, _) in enumerate(seg.cuts)}
        q = 0
        if carry is not None:
            # The chunk that crosses the seam: cut the carried bytes and the piece's start.
            # Its end is usually within min_size + avg_size of its start; else up to max_size.
            for limit in (max(self._cdc.min_size + self._cdc.avg_size - len(carry), 1), max_size):
                seam = memoryview(b"".join((carry, data[:limit])))
                first = next(iter(self._cdc.cut_buf(seam)))
                real = (first.length < len(seam) or first.length == max_size
                        or (seg.eof and limit >= len(data)))
                if real or limit >= len(data):
                    break
            if not real:
                return _Resolved(out, seam)  # still no cut: all of it goes on into the next piece
            piece = seam[: first.length]
            out.append((piece, blob_id(piece)))
            q = first.length - len(carry)
        # Follow the true cuts inside the piece until one is also one of its own cuts.
        while q not in spec and q < len(data):
            first = next(iter(self._cdc.cut_buf(data[q:])))
            if q + first.length == len(data) and first.length < max_size and not seg.eof:
                return _Resolved(out, data[q:])
            piece = data[q: q + first.length]
            out.append((piece, blob_id(piece)))
            q += first.length
        if q < len(data):
            last = len(seg.cuts) - 1
            for j in range(spec[q], last + 1):
                o, n = seg.cuts[j]
                piece = data[o: o + n]
                if j == last and not seg.eof:
                    return _Resolved(out, piece)
                bid = seg.ids[j]
                out.append((piece, bid if bid is not None else blob_id(piece)))
        return _Resolved(out, None)  # every cut in the piece was final: nothing is carried

    def _scan(self, read_at: ReadAt, start: int, length: int,
              blob_id: Callable[[memoryview], bytes]) -> _Scanned:
        """Read one piece and cut and hash it as if it began a file (run on a worker thread)."""
        got = read_at(start, length)
        if 0 < len(got) < length:  # short: the end of the file, or a reader that returns less
            parts, have = [got], len(got)
            while have < length and (more := read_at(start + have, length - have)):
                parts.append(more)
                have += len(more)
            got = b"".join(parts)
        data = memoryview(got)
        eof = len(got) < length
        cuts = [(c.offset, c.length) for c in self._cdc.cut_buf(data)] if data else []
        ids: list[bytes | None] = [None] * len(cuts)
        # The first chunk of a later piece is usually re-cut at the seam, the last one carried on.
        for j in range(0 if start == 0 else 1, len(cuts) if eof else len(cuts) - 1):
            o, n = cuts[j]
            ids[j] = blob_id(data[o: o + n])
        return _Scanned(data, eof, cuts, ids)


@dataclass
class _Scanned:
    data: memoryview                  # the bytes read
    eof: bool                         # the file ended inside this piece
    cuts: list[tuple[int, int]]       # (offset, length) of its chunks if a chunk began at byte 0
    ids: list[bytes | None]           # their ids where computed


@dataclass
class _Resolved:
    chunks: list[tuple[memoryview, bytes]]  # the piece's true chunks and their ids, in order
    carry: memoryview | None                # its unfinished last chunk, cut with the next piece


class _Inline:
    """An executor that runs the job at once, on the calling thread."""

    def submit(self, fn: Callable[..., Any], *args: object) -> Future[Any]:
        fut: Future[Any] = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)
        return fut


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

    def encode_many(self, items: list[bytes | memoryview]) -> list[tuple[int, bytes | memoryview]]:
        """``encode`` for many small inputs in one call into zstd: the GIL is released once for
        the whole batch, not once per input (per-input releases stalled the walking thread)."""
        worth = [i for i, data in enumerate(items) if len(data) > 64]  # zstd refuses empty inputs
        packed = self._z.multi_compress_to_buffer([items[i] for i in worth], threads=1) if worth else []
        out: list[tuple[int, bytes | memoryview]] = [(ENC_NONE, data) for data in items]
        for j, i in enumerate(worth):
            body = packed[j].tobytes()
            if len(body) < len(items[i]):
                out[i] = (ENC_ZSTD, body)
        return out
