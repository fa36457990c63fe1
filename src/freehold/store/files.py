"""Files' content read back from the vault: a file's chunks with their offsets (``FileRef``), and
their bytes in order, read in batches of coalesced reads that run one batch ahead of the caller
(``chunk_stream``). Used wherever whole files are read without a restore target: publishing's
DAGs and the gateway's leaves, and ``open … cat``."""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from ..formats import Node

if TYPE_CHECKING:
    from . import Operation

READ_BATCH_BYTES = 32 * 1024 * 1024     # plaintext bytes per batch of chunk reads
READ_BATCH_BLOBS = 256


@dataclass(eq=False)
class FileRef:
    """One file of published content: its chunks' blob ids, in order, and where each starts."""

    content: list[bytes]
    starts: list[int]
    size: int

    @classmethod
    def of(cls, op: Operation, node: Node) -> FileRef:
        starts, pos = [], 0
        for bid in node.content:
            loc = op.index.lookup(bid)
            if loc is None:
                raise IntegrityError(f"blob {bid.hex()[:12]} of {os.fsdecode(node.name)!r} is in no index: "
                                     "run 'freehold check'")
            starts.append(pos)
            pos += loc.entry.s
        return cls(list(node.content), starts, pos)

    def span(self, offset: int, length: int) -> range:
        """Indexes of the chunks holding bytes [offset, offset + length)."""
        first = max(0, bisect.bisect_right(self.starts, offset) - 1)
        last = max(first, bisect.bisect_left(self.starts, offset + length) - 1) if length else first
        return range(first, min(last + 1, len(self.content)))

    def sizes(self) -> Iterator[int]:
        ends = [*self.starts[1:], self.size][:len(self.starts)]
        return (b - a for a, b in zip(self.starts, ends, strict=True))


def chunk_stream(op: Operation, refs: Iterable[FileRef]) -> Iterator[bytes | memoryview]:
    """The chunks of these files, in order, from the vault (each authenticated and checked
    against its id by the reader), read in batches of coalesced reads across file boundaries
    (up to READ_BATCH_BYTES or READ_BATCH_BLOBS), the next batch read while this one is used."""
    batches: list[list[bytes]] = []
    batch: list[bytes] = []
    size = 0
    for ref in refs:
        for bid, n in zip(ref.content, ref.sizes(), strict=True):
            batch.append(bid)
            size += n
            if size >= READ_BATCH_BYTES or len(batch) >= READ_BATCH_BLOBS:
                batches.append(batch)
                batch, size = [], 0
    if batch:
        batches.append(batch)
    if not batches:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="freehold-publish-read") as pre:
        job = pre.submit(op.reader.read_blobs, batches[0])
        try:
            for i, ids in enumerate(batches):
                got = job.result()
                if i + 1 < len(batches):
                    job = pre.submit(op.reader.read_blobs, batches[i + 1])
                for bid in ids:
                    yield got[bid]
                del got
        finally:
            job.cancel()


def file_pieces(op: Operation, ref: FileRef) -> Iterator[bytes | memoryview]:
    """One file's bytes from the vault, chunk by chunk (:func:`chunk_stream`)."""
    return chunk_stream(op, [ref])
