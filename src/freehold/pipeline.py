"""The write path: files -> chunks -> ids -> compressed, sealed blobs -> packs -> shares.

The main thread walks, reads, chunks and hashes (hashing there keeps content ids
in order without waiting on workers); worker threads compress and seal new
blobs; a second pool erasure-codes packs and writes shares. Bounded queues keep
memory flat whatever the input size. Write order: shares, then index, then the
snapshot; a crash anywhere leaves earlier snapshots untouched.
"""

from __future__ import annotations

import collections
import os
import socket
import stat
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import formats
from .chunking import Chunker, Compressor
from .crypto import KIND_DATA, KIND_TREE, seal
from .errors import FreeholdError, UsageError
from .formats import BLOB_DATA, BLOB_TREE, Node, PackEntry, PackRecord
from .progress import NullProgress, Progress
from .repository import Repository

INDEX_EVERY = 32           # packs per index object: bounds the work a crash can lose
MAX_SEALS_IN_FLIGHT = 4    # chunks (<= 4 MiB each) waiting for compression and sealing
MAX_PACKS_IN_FLIGHT = 2    # packs (~16 MiB each) being erasure-coded and written


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
        self.buf = bytearray()
        self.entries: list[PackEntry] = []

    def add(self, blob_id: bytes, env: bytes, size: int) -> None:
        self.entries.append(PackEntry(id=blob_id, t=self.blob_type, o=len(self.buf), l=len(env), s=size))
        self.buf += env
        if len(self.buf) >= self.owner.repo.config.pack_size:
            self.flush()

    def flush(self) -> None:
        if not self.entries:
            return
        self.buf += Repository.pack_trailer(self.owner.repo.keys, self.entries)
        self.owner.submit_pack(self.buf, self.entries)
        self.buf = bytearray()
        self.entries = []


class Backup:
    def __init__(self, repo: Repository, progress: Progress | None = None, workers: int = 2) -> None:
        self.repo = repo
        self.keys = repo.keys
        self.progress = progress or NullProgress()
        cfg = repo.config.chunker
        self.chunker = Chunker(self.keys.chunker_seed, cfg.min, cfg.avg, cfg.max)
        self.stats = BackupStats()
        self._pending: set[bytes] = set()
        self._local = threading.local()
        self._seal_pool = ThreadPoolExecutor(workers, thread_name_prefix="freehold-seal")
        self._pack_pool = ThreadPoolExecutor(MAX_PACKS_IN_FLIGHT, thread_name_prefix="freehold-pack")
        self._pack_slots = threading.BoundedSemaphore(MAX_PACKS_IN_FLIGHT)
        self._seals: collections.deque[tuple[bytes, int, Future[bytes]]] = collections.deque()
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

    def _seal_data(self, blob_id: bytes, data: bytes) -> bytes:
        return seal(self.keys.blob_key(blob_id), KIND_DATA, blob_id, self._compressor().encode(data))

    def _add_data(self, data: bytes) -> bytes:
        blob_id = self.keys.blob_id(data)
        if blob_id not in self.repo.blobs and blob_id not in self._pending:
            self._pending.add(blob_id)
            self.stats.new_blobs += 1
            self.stats.new_bytes += len(data)
            self._seals.append((blob_id, len(data), self._seal_pool.submit(self._seal_data, blob_id, data)))
            while len(self._seals) > MAX_SEALS_IN_FLIGHT:
                self._drain_one_seal()
        return blob_id

    def _drain_one_seal(self) -> None:
        blob_id, size, fut = self._seals.popleft()
        self._data.add(blob_id, fut.result(), size)

    def _add_tree(self, tree: formats.Tree) -> bytes:
        plain = formats.encode(tree)
        blob_id = self.keys.blob_id(plain)
        if blob_id not in self.repo.blobs and blob_id not in self._pending:
            self._pending.add(blob_id)
            env = seal(self.keys.blob_key(blob_id), KIND_TREE, blob_id, b"\x00" + plain)
            self._trees.add(blob_id, env, len(plain))
            self.repo.cache_tree(blob_id, env)
        return blob_id

    def submit_pack(self, pack: bytearray, entries: list[PackEntry]) -> None:
        self._pack_slots.acquire()
        self.stats.packed_bytes += len(pack)
        fut = self._pack_pool.submit(self._write_pack, pack, entries)
        self._packs.append(fut)
        while self._packs and self._packs[0].done():
            self._collect_pack()

    def _write_pack(self, pack: bytearray, entries: list[PackEntry]) -> PackRecord:
        try:
            return self.repo.write_pack(pack, entries)
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
            self.repo.write_index(self._done)
            for rec in self._done:
                self.repo.add_pack(rec)
            self._done = []

    def _finish_data(self) -> None:
        while self._seals:
            self._drain_one_seal()
        self._data.flush()
        self._trees.flush()
        while self._packs:
            self._collect_pack()
        self._write_index()

    def close(self) -> None:
        self._seal_pool.shutdown(wait=True, cancel_futures=True)
        self._pack_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ files and trees

    def _file_node(self, path: Path, name: bytes, st: os.stat_result, old: Node | None) -> Node | None:
        attrs = dict(name=name, type="file", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                     size=st.st_size, ino=st.st_ino, dev=st.st_dev, ctime=st.st_ctime_ns)
        if (old is not None and old.type == "file" and old.size == st.st_size
                and old.mtime == st.st_mtime_ns and old.ctime == st.st_ctime_ns
                and old.ino == st.st_ino and old.dev == st.st_dev
                and all(c in self.repo.blobs for c in old.content)):
            self.stats.unchanged_files += 1
            self.progress.advance(st.st_size)
            return Node(content=old.content, **attrs)  # type: ignore[arg-type]
        content: list[bytes] = []
        size = 0
        try:
            with open(path, "rb") as f:
                for chunk in self.chunker.chunks(f):
                    content.append(self._add_data(chunk))
                    size += len(chunk)
                    self.progress.advance(len(chunk))
        except OSError as exc:
            self._skip(path, exc)
            return None
        attrs["size"] = size
        return Node(content=content, **attrs)  # type: ignore[arg-type]

    def _skip(self, path: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        self.stats.skipped.append(f"{path}: {reason}")
        self.progress.warn(f"skipped {path}: {reason}")

    def _node(self, path: Path, name: bytes, old: Node | None) -> Node | None:
        try:
            st = path.lstat()
        except OSError as exc:
            self._skip(path, exc)
            return None
        if stat.S_ISREG(st.st_mode):
            node = self._file_node(path, name, st, old)
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

    def _dir(self, path: Path, old_tree: bytes | None) -> bytes:
        old_nodes = self._old_nodes(old_tree)
        names = sorted(os.listdir(os.fsencode(path)))
        nodes = []
        for name in names:
            node = self._node(path / os.fsdecode(name), name, old_nodes.get(name))
            if node is not None:
                nodes.append(node)
        return self._add_tree(formats.Tree(v=formats.FORMAT_VERSION, nodes=nodes))

    def _old_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        if tree_id is None:
            return {}
        try:
            return {n.name: n for n in self.repo.load_tree(tree_id).nodes}
        except FreeholdError:
            return {}  # the files cache is an optimisation; read everything instead

    # ------------------------------------------------------------------ entry point

    def run(self, paths: list[str], parent: tuple[str, formats.Snapshot] | None = None,
            tags: list[str] | None = None) -> tuple[str, formats.Snapshot]:
        roots: dict[bytes, Path] = {}
        for p in paths:
            path = Path(os.path.abspath(p))
            if not os.path.lexists(path):
                raise UsageError(f"no such file or directory: {p}")
            name = os.fsencode(path.name or "root")
            if name in roots:
                raise UsageError(f"two paths to back up share the name {path.name!r}; back them up "
                                 "separately or from a common parent")
            roots[name] = path
        self.progress.scanned(*_scan(roots.values()))
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
        return self.repo.write_snapshot(snap), snap


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

