"""The write path: files -> chunks -> ids -> compressed, sealed blobs -> packs -> shares.

The main thread walks, reads and hashes small files and seals their blobs once a
pool has compressed them in batches; large files are read, cut and hashed in pieces
on two threads, their blobs compressed and sealed on the pool; another pool lays
packs out as shares, computes parity and writes them. Bounded queues keep memory
flat whatever the input size. Write order: shares, then index, then the
snapshot; a crash anywhere leaves earlier snapshots untouched.
"""

from __future__ import annotations

import collections
import os
import socket
import stat
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import formats
from .chunking import WHOLE_FILE, Chunker, Compressor
from .errors import FreeholdError, UsageError
from .formats import BLOB_DATA, BLOB_TREE, Node, PackEntry, PackRecord
from .progress import NullProgress, Progress
from .store import Operation
from .store.packs import close_pack

INDEX_EVERY = 32           # packs per index object: bounds the work a crash can lose
SMALL_BLOB = 256 * 1024    # blobs below this are compressed in batches, larger ones one by one
SMALL_BATCH_BYTES = 1024 * 1024
SMALL_BATCH_COUNT = 128
MAX_SMALL_BATCHES_IN_FLIGHT = 2
MAX_SEALS_IN_FLIGHT = 2    # large chunks (<= 4 MiB each) waiting for compression and sealing
MAX_PACKS_IN_FLIGHT = 2    # packs (~16 MiB each) being erasure-coded and written
READ_THREADS = 8           # small files read ahead in parallel (disk latency, not CPU)
# Small files are read on the main thread while reads come from the page cache (~30 us a file
# here; handing them to the pool cost more in GIL hand-offs than it saved); once most reads of
# a sample take longer than this (a cold cache, a slow disk), the rest of the backup reads ahead.
COLD_READ_S = 150e-6
COLD_READ_SAMPLES = 32
PREFETCH_FILES = 64
PREFETCH_BYTES = 16 * 1024 * 1024
CHUNK_THREADS = 2          # large files: pieces read, cut and hashed in parallel (chunking.chunks_at)


@dataclass
class BackupStats:
    files: int = 0
    dirs: int = 0
    size: int = 0               # logical bytes of regular files
    new_blobs: int = 0
    new_bytes: int = 0          # plaintext bytes of new blobs
    packed_bytes: int = 0       # pack bytes written (before erasure coding)
    stored_bytes: int = 0       # share bytes written over all providers
    unchanged_files: int = 0    # taken from the files cache without reading
    skipped: list[str] = field(default_factory=list)


class _PackStream:
    """Accumulates sealed blobs of one type into packs and hands full packs to the writer."""

    def __init__(self, owner: Backup, blob_type: int) -> None:
        self.owner = owner
        self.blob_type = blob_type
        self.parts: list[bytes | bytearray] = []
        self.size = 0
        self.entries: list[PackEntry] = []

    def add(self, blob_id: bytes, env: bytes | bytearray, size: int) -> None:
        self.entries.append(PackEntry(id=blob_id, t=self.blob_type, o=self.size, l=len(env), s=size))
        self.parts.append(env)
        self.size += len(env)
        if self.size >= self.owner.config.pack_size:
            self.flush()

    def flush(self) -> None:
        if not self.entries:
            return
        close_pack(self.owner.keys, self.parts, self.entries)
        self.owner.submit_pack(self.parts, self.entries)
        self.parts = []
        self.size = 0
        self.entries = []


class Backup:
    def __init__(self, op: Operation, progress: Progress | None = None, workers: int = 2) -> None:
        self.op = op
        self.config = op.config
        self.keys = op.store.keys
        self.index = op.index
        self.progress = progress or NullProgress()
        cfg = op.config.chunker
        self.chunker = Chunker(self.keys.chunker_seed, cfg.min, cfg.avg, cfg.max)
        self.stats = BackupStats()
        self._pending: set[bytes] = set()
        self._local = threading.local()
        self._seal_pool = ThreadPoolExecutor(workers, thread_name_prefix="freehold-seal")
        self._pack_pool = ThreadPoolExecutor(MAX_PACKS_IN_FLIGHT, thread_name_prefix="freehold-pack")
        self._pack_slots = threading.BoundedSemaphore(MAX_PACKS_IN_FLIGHT)
        self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="freehold-read")
        self._read_ahead = False    # set once inline reads are seen to wait on the disk
        self._reads = 0             # inline reads in the current sample, and how many were slow
        self._slow_reads = 0
        self._chunk_pool = ThreadPoolExecutor(CHUNK_THREADS, thread_name_prefix="freehold-chunk")
        self._seals: collections.deque[tuple[bytes, int, Future[bytearray]]] = collections.deque()
        self._small: list[tuple[bytes, bytes | memoryview]] = []  # small blobs waiting for a batch
        self._small_bytes = 0
        self._compressing: collections.deque[
            tuple[list[tuple[bytes, bytes | memoryview]], Future[list[tuple[int, bytes | memoryview]]]]
        ] = collections.deque()
        self._packs: collections.deque[Future[PackRecord]] = collections.deque()
        self._done: list[PackRecord] = []
        self._data = _PackStream(self, BLOB_DATA)
        self._trees = _PackStream(self, BLOB_TREE)

    # ------------------------------------------------------------------ blobs and packs

    def _compressor(self) -> Compressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = Compressor()
        return c

    def _seal_one(self, blob_id: bytes, data: bytes | memoryview) -> bytearray:
        return self._seal_data(blob_id, *self._compressor().encode(data))

    def _seal_data(self, blob_id: bytes, encoding: int, body: bytes | memoryview) -> bytearray:
        return self.op.codec.seal(blob_id, BLOB_DATA, body, encoding)

    def _add_data(self, data: bytes | memoryview, blob_id: bytes | None = None) -> bytes:
        if blob_id is None:
            blob_id = self.keys.blob_id(data)
        if blob_id not in self.index and blob_id not in self._pending:
            self._pending.add(blob_id)
            self.stats.new_blobs += 1
            self.stats.new_bytes += len(data)
            if len(data) < SMALL_BLOB:
                # Small blobs are compressed in batches on the pool, one call into zstd per batch,
                # and sealed here. Per-blob hand-offs made it slower than doing everything on this
                # thread (20,000 files: 2.6-2.7 s against 2.1-2.5 s): each blob's GIL release and
                # reacquisition stalled the walk after every open, read and stat.
                self._small.append((blob_id, data))
                self._small_bytes += len(data)
                if self._small_bytes >= SMALL_BATCH_BYTES or len(self._small) >= SMALL_BATCH_COUNT:
                    self._flush_small()
            else:
                self._seals.append((blob_id, len(data), self._seal_pool.submit(self._seal_one, blob_id, data)))
                while len(self._seals) > MAX_SEALS_IN_FLIGHT:
                    self._drain_one_seal()
        return blob_id

    def _compress_many(self, items: list[bytes | memoryview]) -> list[tuple[int, bytes | memoryview]]:
        return self._compressor().encode_many(items)

    def _flush_small(self) -> None:
        if self._small:
            batch, self._small, self._small_bytes = self._small, [], 0
            self._compressing.append((batch, self._seal_pool.submit(self._compress_many, [d for _, d in batch])))
            while len(self._compressing) > MAX_SMALL_BATCHES_IN_FLIGHT:
                self._seal_small_batch()

    def _seal_small_batch(self) -> None:
        batch, fut = self._compressing.popleft()
        for (blob_id, data), (encoding, body) in zip(batch, fut.result(), strict=True):
            self._data.add(blob_id, self._seal_data(blob_id, encoding, body), len(data))

    def _drain_one_seal(self) -> None:
        blob_id, size, fut = self._seals.popleft()
        self._data.add(blob_id, fut.result(), size)

    def _add_tree(self, tree: formats.Tree) -> bytes:
        plain = formats.encode(tree)
        blob_id = self.keys.blob_id(plain)
        if blob_id not in self.index and blob_id not in self._pending:
            self._pending.add(blob_id)
            env = self.op.codec.seal(blob_id, BLOB_TREE, plain)
            self._trees.add(blob_id, env, len(plain))
        return blob_id

    def submit_pack(self, parts: list[bytes | bytearray], entries: list[PackEntry]) -> None:
        self._pack_slots.acquire()
        self.stats.packed_bytes += sum(len(p) for p in parts)
        fut = self._pack_pool.submit(self._write_pack, parts, entries)
        self._packs.append(fut)
        while self._packs and self._packs[0].done():
            self._collect_pack()

    def _write_pack(self, parts: list[bytes | bytearray], entries: list[PackEntry]) -> PackRecord:
        try:
            whole = b"".join(parts) if entries[0].t == BLOB_TREE else None  # tree packs are cached
            rec = self.op.packs.write(parts, entries)
            if whole is not None:
                self.op.trees.cache_pack(rec.id, whole)
            return rec
        finally:
            self._pack_slots.release()

    def _collect_pack(self) -> None:
        rec = self._packs.popleft().result()
        self.stats.stored_bytes += sum(s.z for s in rec.shares if s is not None)
        self._done.append(rec)
        if len(self._done) >= INDEX_EVERY:
            self._write_index()

    def _write_index(self) -> None:
        if self._done:
            self.op.write_index(self._done)
            self._done = []

    def _finish_data(self) -> None:
        self._flush_small()
        while self._compressing:
            self._seal_small_batch()
        while self._seals:
            self._drain_one_seal()
        self._data.flush()
        self._trees.flush()
        while self._packs:
            self._collect_pack()
        self._write_index()

    def close(self) -> None:
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._chunk_pool.shutdown(wait=True, cancel_futures=True)
        self._seal_pool.shutdown(wait=True, cancel_futures=True)
        self._pack_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ files and trees

    def _file_node(self, path: str, name: bytes, st: os.stat_result, old: Node | None,
                   prefetched: Future[bytes] | None = None) -> Node | None:
        mode = stat.S_IMODE(st.st_mode)
        if (old is not None and _unchanged(old, st) and old.mode == mode
                and all(c in self.index for c in old.content)):
            self.stats.unchanged_files += 1
            self.progress.advance(st.st_size)
            return old  # every field it records is as it was: the same node serves the new tree
        attrs = dict(name=name, type="file", mode=mode, mtime=st.st_mtime_ns,
                     size=st.st_size, ino=st.st_ino, dev=st.st_dev, ctime=st.st_ctime_ns)
        content: list[bytes] = []
        size = 0
        try:
            if st.st_size <= WHOLE_FILE:
                if prefetched is not None:
                    data = prefetched.result()
                else:
                    started = time.perf_counter()
                    data = _read_small(path, st.st_size)
                    self._note_read(time.perf_counter() - started)
                chunks: Iterable[bytes | memoryview] = self.chunker.cut(data)
                for chunk in chunks:
                    content.append(self._add_data(chunk))
                    size += len(chunk)
                self.progress.advance(size)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
                pieces = self.chunker.chunks_at(lambda offset, length: os.pread(fd, length, offset),
                                                self._chunk_pool.submit, self.keys.blob_id, st.st_size)
                try:
                    for chunk, blob_id in pieces:
                        content.append(self._add_data(chunk, blob_id))
                        size += len(chunk)
                        self.progress.advance(len(chunk))
                finally:
                    pieces.close()  # waits for reads still running: only then may fd be closed
                    os.close(fd)
        except OSError as exc:
            self._skip(path, exc)
            return None
        attrs["size"] = size
        return Node(content=content, **attrs)  # type: ignore[arg-type]

    def _note_read(self, seconds: float) -> None:
        """Switch to reading ahead on the pool when most inline reads wait on the disk (a few slow
        ones, from a page fault or a busy moment, are normal on a warm cache)."""
        self._reads += 1
        self._slow_reads += seconds > COLD_READ_S
        if self._reads >= COLD_READ_SAMPLES:
            if self._slow_reads * 2 > self._reads:
                self._read_ahead = True
            self._reads = self._slow_reads = 0

    def _skip(self, path: str, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        self.stats.skipped.append(f"{path}: {reason}")
        self.progress.warn(f"skipped {path}: {reason}")

    def _node(self, path: str, name: bytes, old: Node | None, st: os.stat_result | None = None,
              prefetched: Future[bytes] | None = None) -> Node | None:
        if st is None:
            try:
                st = os.lstat(path)
            except OSError as exc:
                self._skip(path, exc)
                return None
        if stat.S_ISREG(st.st_mode):
            node = self._file_node(path, name, st, old, prefetched)
            if node is not None:
                self.stats.files += 1
                self.stats.size += node.size
            return node
        if stat.S_ISDIR(st.st_mode):
            try:
                subtree = self._dir(path, old.subtree if old is not None and old.type == "dir" else None)
            except OSError as exc:
                self._skip(path, exc)
                return None
            self.stats.dirs += 1
            return Node(name=name, type="dir", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                        subtree=subtree)
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(os.fsencode(path))
            except OSError as exc:
                self._skip(path, exc)
                return None
            return Node(name=name, type="symlink", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                        target=target)
        self.progress.warn(f"skipped {path}: not a regular file, directory or symlink")
        self.stats.skipped.append(f"{path}: special file")
        return None

    def _dir(self, path: str, old_tree: bytes | None) -> bytes:
        old_nodes = self._old_nodes(old_tree)
        entries: list[tuple[bytes, str, os.stat_result]] = []
        for name in sorted(os.listdir(os.fsencode(path))):
            child = os.path.join(path, os.fsdecode(name))  # str paths: pathlib cost 15 us a file
            try:
                entries.append((name, child, os.lstat(child)))
            except OSError as exc:
                self._skip(child, exc)
        # Once reads are seen to wait on the disk, small files are read ahead by a pool of threads:
        # one thread reading small files one after another waits for each (126 us a file, cold).
        todo = collections.deque(
            i for i, (name, _, st) in enumerate(entries)
            if stat.S_ISREG(st.st_mode) and st.st_size <= WHOLE_FILE and not _unchanged(old_nodes.get(name), st))
        ahead: dict[int, Future[bytes]] = {}
        ahead_bytes = 0
        nodes = []
        for i, (name, child, st) in enumerate(entries):
            while self._read_ahead and todo and len(ahead) < PREFETCH_FILES and ahead_bytes < PREFETCH_BYTES:
                j = todo.popleft()
                if j >= i:
                    ahead[j] = self._read_pool.submit(_read_small, entries[j][1], entries[j][2].st_size)
                    ahead_bytes += entries[j][2].st_size
            fut = ahead.pop(i, None)
            if fut is not None:
                ahead_bytes -= st.st_size
            node = self._node(child, name, old_nodes.get(name), st, fut)
            if node is not None:
                nodes.append(node)
        return self._add_tree(formats.Tree(v=formats.FORMAT_VERSION, nodes=nodes))

    def _old_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        if tree_id is None:
            return {}
        try:
            return {n.name: n for n in self.op.trees.load(tree_id).nodes}
        except FreeholdError:
            return {}  # the files cache is an optimisation; read everything instead

    # ------------------------------------------------------------------ entry point

    def run(self, paths: list[str], parent: tuple[str, formats.Snapshot] | None = None,
            tags: list[str] | None = None) -> tuple[str, formats.Snapshot]:
        roots: dict[bytes, str] = {}
        for p in paths:
            path = os.path.abspath(p)
            if not os.path.lexists(path):
                raise UsageError(f"no such file or directory: {p}")
            base = os.path.basename(path)
            name = os.fsencode(base or "root")
            if name in roots:
                raise UsageError(f"two paths to back up share the name {base!r}; back them up "
                                 "separately or from a common parent")
            roots[name] = path
        # Counting the input first costs a second walk of every directory: only for a live display.
        self.progress.scanned(*(_scan(roots.values()) if getattr(self.progress, "wants_total", False) else (0, 0)))
        old_root = self._old_nodes(parent[1].tree if parent else None)
        try:
            nodes = []
            for name in sorted(roots):
                node = self._node(roots[name], name, old_root.get(name))
                if node is not None:
                    nodes.append(node)
            root = self._add_tree(formats.Tree(v=formats.FORMAT_VERSION, nodes=nodes))
            self._finish_data()
        finally:
            self.close()
        snap = formats.Snapshot(
            v=formats.FORMAT_VERSION, time=datetime.now(UTC).isoformat(timespec="microseconds"),
            host=socket.gethostname(), paths=[str(roots[n]) for n in sorted(roots)], tree=root,
            size=self.stats.size, files=self.stats.files, dirs=self.stats.dirs,
            parent=bytes.fromhex(parent[0]) if parent else None, tags=tags or [],
            skipped=self.stats.skipped)
        return self.op.write_snapshot(snap), snap


def _unchanged(old: Node | None, st: os.stat_result) -> bool:
    """The files cache: same size, mtime, ctime, inode and device as in the parent snapshot."""
    return (old is not None and old.type == "file" and old.size == st.st_size and old.mtime == st.st_mtime_ns
            and old.ctime == st.st_ctime_ns and old.ino == st.st_ino and old.dev == st.st_dev)


def _read_small(path: str, size: int) -> bytes:
    """Read a whole (small) file with one or two system calls; reads past a grown size too."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        data = os.read(fd, size + 1)
        if len(data) <= size:
            return data
        parts = [data]
        while block := os.read(fd, 1 << 20):
            parts.append(block)
        return b"".join(parts)
    finally:
        os.close(fd)


def _scan(roots: object) -> tuple[int, int]:
    files = size = 0
    stack = [os.fspath(p) for p in roots]  # type: ignore[attr-defined]
    while stack:
        top = stack.pop()
        try:
            st = os.lstat(top)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(top) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            files += 1
                            try:
                                size += e.stat(follow_symlinks=False).st_size
                            except OSError:
                                pass
            except OSError:
                continue
    return files, size

