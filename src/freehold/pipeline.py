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
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, BinaryIO

from . import formats
from .chunking import Chunker, Compressor
from .errors import ConflictError, FreeholdError, QuorumError
from .formats import BLOB_DATA, BLOB_TREE, Meta, Node, PackEntry, PackRecord
from .progress import NullProgress, Progress
from .selection import snapshot_layout
from .sources import Plan, Source
from .store import Operation
from .store.clock import age_seconds
from .store.deletions import SAFETY_WINDOW
from .store.packs import close_pack
from .walker import BackupStats, Walker

__all__ = ["Backup", "BackupStats", "check_writable", "run_locked"]

INDEX_EVERY = 4            # packs per index checkpoint: bounds the work a crash can lose ...
INDEX_SECONDS = 30.0       # ... and so does time: a checkpoint at least this often while packs land
SMALL_BLOB = 256 * 1024    # blobs below this are compressed in batches, larger ones one by one
SMALL_BATCH_BYTES = 1024 * 1024
SMALL_BATCH_COUNT = 128
MAX_SMALL_BATCHES_IN_FLIGHT = 2
MAX_SEALS_IN_FLIGHT = 2    # large chunks (<= 4 MiB each) waiting for compression and sealing
MAX_PACKS_IN_FLIGHT = 2    # packs (~16 MiB each) being erasure-coded and written
STDIN_MODE = 0o644

log = logging.getLogger("freehold")


def check_writable(op: Operation, plan: Plan, degraded: bool) -> None:
    """Before a backup writes anything: every provider must take writes, unless ``degraded``;
    then at least k+1 must, and the others are marked down for the operation (their shares are
    recorded as missing). A dry run asks nothing."""
    if plan.dry_run:
        return
    total = len(op.store.providers)
    failures = {pid: r for pid, r in op.replicas.gather(lambda p: p.check_writable(), enough=total).items()
                if isinstance(r, FreeholdError)}
    if failures and not degraded:
        pid, exc = sorted(failures.items())[0]
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise type(exc)(f"provider {pid} cannot take writes: {exc}{more}; nothing was written "
                        "(use --degraded to back up to the others)")
    op.session.down.update(failures)
    up = total - len(failures)
    if failures and up < op.config.k + 1:
        raise QuorumError(f"only {up} providers take writes; even a degraded backup needs k+1 = {op.config.k + 1}")


def run_locked(op: Operation, plan: Plan, progress: Progress | None, own: dict[tuple[int, int], str],
               parent: tuple[str, formats.Snapshot] | None, tags: list[str] | None
               ) -> tuple[str, formats.Snapshot, BackupStats]:
    """The backup itself, under the shared lock taken before the index is read again: a prune
    that sees no backup lock knows no backup loaded the index it replaces (design §15a)."""
    held = None if plan.dry_run else op.locks.acquire("backup", exclusive=False)
    try:
        op.load_index()
        job = Backup(op, plan, progress, own)
        sid, snap = job.run(parent, tags)
    finally:
        if held is not None:
            held.release()
    return sid, snap, job.stats


class _PackStream:
    """Accumulates sealed blobs of one type into packs and hands full packs to the writer."""

    def __init__(self, owner: Backup, blob_type: int) -> None:
        self.owner = owner
        self.blob_type = blob_type
        self.parts: list[bytes | bytearray] = []
        self.size = 0
        self.entries: list[PackEntry] = []

    def add(self, blob_id: bytes, env: bytes | bytearray, size: int) -> None:
        locate = self.owner.locate
        self.entries.append(PackEntry(id=blob_id if locate is None else locate(blob_id), t=self.blob_type,
                                      o=self.size, l=len(env), s=size))
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


class Backup(Walker):
    """One backup job: ``run`` walks the plan's sources (walker.Walker), stores new blobs in packs
    and writes the snapshot. A dry run (``plan.dry_run``) walks, reads and chunks the same way and
    counts what would be new, but seals, packs and writes nothing."""

    def __init__(self, op: Operation, plan: Plan, progress: Progress | None = None,
                 own: dict[tuple[int, int], str] | None = None, workers: int = 2) -> None:
        super().__init__(plan.selection, own or {})
        self.op = op
        self.plan = plan
        self.dry_run = plan.dry_run
        self.config = op.config
        self.keys = op.store.keys
        self.tree_version = self.keys.version
        self.index = op.index
        self.progress = progress or NullProgress()
        cfg = op.config.chunker
        self.chunker = Chunker(self.keys.chunker_seed, cfg.min, cfg.avg, cfg.max)
        self.stats = BackupStats()
        self._pending: set[bytes] = set()
        self._local = threading.local()
        # 2.0: deduplicate only against packs the owner or this key signed (design §23).
        trust = frozenset({"", self.keys.label})
        self._stored: Callable[[bytes], bool] = (
            self.index.has_id() if self.keys.version < 2 else lambda ref: self.index.trusted(ref, trust))
        self.locate = None if self.keys.version < 2 else self.keys.locate   # format 1: ids are references
        self._seal_pool = ThreadPoolExecutor(workers, thread_name_prefix="freehold-seal")
        self._pack_pool = ThreadPoolExecutor(MAX_PACKS_IN_FLIGHT, thread_name_prefix="freehold-pack")
        self._pack_slots = threading.BoundedSemaphore(MAX_PACKS_IN_FLIGHT)
        self._seals: collections.deque[tuple[bytes, int, Future[bytearray]]] = collections.deque()
        self._small: list[tuple[bytes, bytes | memoryview]] = []  # small blobs waiting for a batch
        self._small_bytes = 0
        self._compressing: collections.deque[
            tuple[list[tuple[bytes, bytes | memoryview]], Future[list[tuple[int, bytes | memoryview]]]]
        ] = collections.deque()
        self._packs: collections.deque[Future[PackRecord]] = collections.deque()
        self._done: list[PackRecord] = []
        self._checkpoint_at = time.monotonic() + INDEX_SECONDS
        self._deletions_seen = set(op.store.deletions.records)   # to notice a prune that runs meanwhile
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
        if not self._stored(blob_id) and blob_id not in self._pending:
            self._pending.add(blob_id)
            self.stats.new_blobs += 1
            self.stats.new_bytes += len(data)
            if self.dry_run:
                pass  # counted; nothing is compressed, sealed or written
            elif len(data) < SMALL_BLOB:
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
        if not self._stored(blob_id) and blob_id not in self._pending:
            self._pending.add(blob_id)
            if not self.dry_run:
                self._trees.add(blob_id, self.op.codec.seal(blob_id, BLOB_TREE, plain), len(plain))
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
        if len(self._done) >= INDEX_EVERY or time.monotonic() >= self._checkpoint_at:
            self._write_index()

    def _write_index(self) -> None:
        if self._done:
            self.op.write_index(self._done)
            self._done = []
        self._checkpoint_at = time.monotonic() + INDEX_SECONDS

    def _keep_work(self) -> None:
        """After a failure or an interruption: index the packs already durable, so the next run
        does not upload them again (and prune can reclaim them if it never comes)."""
        try:
            while self._packs and self._packs[0].done():
                try:
                    self._collect_pack()
                except Exception:  # that pack failed; the others still count
                    continue
            self._write_index()
        except (FreeholdError, OSError) as exc:
            log.warning("could not index the packs written before the interruption: %s", exc)

    def _revive(self, root: bytes) -> None:
        """A prune that ran during this backup may have retired packs whose blobs this snapshot
        reuses (they were in the index it loaded). List those packs again in an index object
        (a revival: prune deletes no pack a live index object lists), then make sure each
        still has k shares; too late (the retirement is older than half the safety window) or
        gone, fail without writing a snapshot (design §15a)."""
        deletions = self.op.load_deletions(fresh=True)
        new = [r for name, r in deletions.records.items() if name not in self._deletions_seen]
        retired = {p for r in new for p in r.packs}
        if not retired:
            return
        needed: dict[bytes, PackRecord] = {}
        for blob in self.op.trees.blob_ids(root):
            loc = self.index.lookup(blob)
            if loc is not None and loc.pack_id in retired and loc.pack_id not in needed:
                needed[loc.pack_id] = self.index.pack(loc.pack_id)
        if not needed:
            return
        oldest = min(r.time for r in new if set(r.packs) & set(needed))
        age = age_seconds(oldest)
        again = "data this backup deduplicated against was pruned meanwhile; run the backup again"
        if age > SAFETY_WINDOW / 2:
            raise ConflictError(again)
        revival = self.op.write_index(list(needed.values()))
        lost = [rec.id for rec in needed.values() if self.op.shares_present(rec) < rec.k]
        if lost:  # too late: the prune deleted them. Retire the revival again, so nothing trusts it.
            self.op.replace_index({revival}, [], retire=lost, reason="backup-revival-failed",
                                  host=socket.gethostname())
            raise ConflictError(again)

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
        self.close_walk()
        self._seal_pool.shutdown(wait=True, cancel_futures=True)
        self._pack_pool.shutdown(wait=True, cancel_futures=True)

    def _old_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        if tree_id is None:
            return {}
        try:
            return {n.name: n for n in self.op.trees.load(tree_id).nodes}
        except FreeholdError:
            return {}  # the files cache is an optimisation; read everything instead

    # ------------------------------------------------------------------ entry point

    def run(self, parent: tuple[str, formats.Snapshot] | None = None,
            tags: list[str] | None = None) -> tuple[str, formats.Snapshot]:
        """Back up the plan; returns the snapshot and its id ("" for a dry run: nothing written)."""
        plan = self.plan
        # Counting the input first costs a second walk of every directory: only for a live display.
        wants_total = getattr(self.progress, "wants_total", False) and plan.stdin is None
        self.progress.scanned(*(_scan(s.path for s in plan.sources) if wants_total else (0, 0)))
        old_root = self._old_nodes(parent[1].tree if parent else None)
        try:
            if plan.stdin is not None:
                nodes = [self._stdin_node(plan.stdin, os.fsencode(plan.stdin_name))]
            else:
                nodes = self._roots(plan.sources, old_root)
            root = self._add_tree(formats.Tree(v=self.tree_version, nodes=sorted(nodes, key=_name)))
            if self.own_met:
                self.progress.warn(f"left out Freehold's own state: {', '.join(self.own_met)}")
            self._finish_data()
        except BaseException:
            if not self.dry_run:
                self._keep_work()
            raise
        finally:
            self.close()
        snap = formats.Snapshot(
            v=formats.FORMAT_VERSION, time=datetime.now(UTC).isoformat(timespec="microseconds"),
            host=socket.gethostname(), paths=plan.paths, tree=root,
            size=self.stats.size, files=self.stats.files, dirs=self.stats.dirs,
            parent=bytes.fromhex(parent[0]) if parent else None, tags=tags or [],
            skipped=self.stats.skipped, torn=self.stats.torn, excluded=self.stats.excluded)
        if self.dry_run:
            return "", snap
        self._revive(root)
        return self.op.write_snapshot(snap), snap

    def _roots(self, sources: list[Source], old_root: dict[bytes, Node]) -> list[Node]:
        """The root tree's nodes: one per source named by its last component; when two sources
        share that name, every source under its path below the deepest directory holding them all,
        through directory nodes made from the real directories (selection.snapshot_layout)."""
        layout = snapshot_layout([s.path for s in sources])
        if layout is None:
            nodes = [self.source(s.path, s.follow, old_root.get(os.fsencode(os.path.basename(s.path) or "root")))
                     for s in sources]
            return [n for n in nodes if n is not None]
        base, rels = layout
        trie: dict[str, Any] = {}
        for src, rel in zip(sources, rels, strict=True):
            here = trie
            for comp in rel[:-1]:
                here = here.setdefault(comp, {})
            here[rel[-1]] = src
        return self._layout_nodes(base, trie, old_root)

    def _layout_nodes(self, base: str, trie: dict[str, Any], old: dict[bytes, Node]) -> list[Node]:
        nodes = []
        for comp, item in trie.items():
            name = os.fsencode(comp)
            prev = old.get(name)
            if isinstance(item, Source):
                node = self.source(item.path, item.follow, prev)
            else:
                path = os.path.join(base, comp)
                below = self._old_nodes(prev.subtree if prev is not None and prev.type == "dir" else None)
                try:
                    node = self.dir_of(path, name, self._layout_nodes(path, item, below))
                except OSError as exc:
                    self._skip(path, exc)
                    node = None
            if node is not None:
                nodes.append(node)
        return nodes

    def _stdin_node(self, stream: BinaryIO, name: bytes) -> Node:
        """--stdin: the stream as one file, read and cut in order on this thread."""
        offset = 0

        def read_at(at: int, length: int) -> bytes:
            nonlocal offset
            assert at == offset, "the stream is read in order"
            parts, want = [], length
            while want and (block := stream.read(want)):
                parts.append(block)
                want -= len(block)
            offset += length - want
            return b"".join(parts)

        content, size = [], 0
        for chunk, blob_id in self.chunker.chunks_at(read_at, _inline, self.keys.blob_id):
            content.append(self._add_data(chunk, blob_id))
            size += len(chunk)
            self.progress.advance(len(chunk))
        self.stats.files += 1
        self.stats.size += size
        user, group = self._owner(os.getuid(), os.getgid())
        return Node(name=name, type="file", mode=STDIN_MODE, mtime=time.time_ns(), size=size, content=content,
                    meta=Meta(uid=os.getuid(), gid=os.getgid(), user=user, group=group))


def _name(node: Node) -> bytes:
    return node.name


def _inline(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """A submit that runs the call at once (a stream is read in order, on one thread)."""
    fut: Future[Any] = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as exc:  # handed to whoever asks for the result, as a pool would
        fut.set_exception(exc)
    return fut


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

