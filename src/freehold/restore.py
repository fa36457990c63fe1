"""The read path: snapshot trees -> blobs (fetched in coalesced, prefetched batches) -> files."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import formats
from .errors import UsageError
from .formats import Node
from .progress import NullProgress, Progress
from .repository import Repository

BATCH_BYTES = 32 * 1024 * 1024
BATCH_BLOBS = 4096


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    size: int = 0


def find_node(repo: Repository, snap: formats.Snapshot, path: str) -> Node | None:
    """The node at a '/'-separated path below the snapshot root; None for the root itself."""
    parts = [p for p in path.strip("/").split("/") if p and p != "."]
    if not parts:
        return None
    tree = repo.load_tree(snap.tree)
    node: Node | None = None
    for i, part in enumerate(parts):
        found = [n for n in tree.nodes if n.name == os.fsencode(part)]
        if not found:
            raise UsageError(f"{path!r} is not in this snapshot")
        node = found[0]
        if i < len(parts) - 1:
            if node.type != "dir" or node.subtree is None:
                raise UsageError(f"{path!r} is not in this snapshot")
            tree = repo.load_tree(node.subtree)
    return node


def walk(repo: Repository, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, Node]]:
    """Every node below a tree, depth first, with its '/'-joined path."""
    for node in repo.load_tree(tree_id).nodes:
        path = f"{prefix}{os.fsdecode(node.name)}"
        yield path, node
        if node.type == "dir" and node.subtree is not None:
            yield from walk(repo, node.subtree, path + "/")


class Restore:
    def __init__(self, repo: Repository, progress: Progress | None = None) -> None:
        self.repo = repo
        self.progress = progress or NullProgress()
        self.stats = RestoreStats()
        self._files: list[tuple[Path, Node]] = []
        self._dirs: list[tuple[Path, Node]] = []
        self._links: list[tuple[Path, Node]] = []

    def run(self, snap: formats.Snapshot, target: Path, include: str | None = None) -> RestoreStats:
        if target.exists() and not target.is_dir():
            raise UsageError(f"restore target {target} exists and is not a directory")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create restore target {target}: {exc.strerror}") from None
        node = find_node(self.repo, snap, include) if include else None
        if node is None:
            self._plan_tree(snap.tree, target)
        else:
            dest = target / include.strip("/")  # type: ignore[union-attr]
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._plan_node(node, dest)
        self.progress.scanned(len(self._files), sum(n.size for _, n in self._files))
        for path, _ in self._dirs:
            path.mkdir(parents=True, exist_ok=True)
        self._restore_files()
        for path, n in self._links:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.symlink(n.target or b"", os.fsencode(path))
            with contextlib.suppress(OSError, NotImplementedError):
                os.utime(path, ns=(n.mtime, n.mtime), follow_symlinks=False)
            self.stats.symlinks += 1
        # Directory modes and times last, deepest first, so read-only dirs can be filled first.
        for path, n in reversed(self._dirs):
            os.chmod(path, n.mode)
            os.utime(path, ns=(n.mtime, n.mtime))
            self.stats.dirs += 1
        return self.stats

    def _plan_node(self, node: Node, dest: Path) -> None:
        if node.type == "dir":
            self._dirs.append((dest, node))
            if node.subtree is not None:
                self._plan_tree(node.subtree, dest)
        elif node.type == "file":
            self._files.append((dest, node))
        elif node.type == "symlink":
            self._links.append((dest, node))

    def _plan_tree(self, tree_id: bytes, dest: Path) -> None:
        for node in self.repo.load_tree(tree_id).nodes:
            name = os.fsdecode(node.name)
            if name in ("", ".", "..") or "/" in name:
                raise UsageError(f"snapshot holds an unsafe file name {name!r}; refusing to restore it")
            self._plan_node(node, dest / name)

    def _batches(self) -> Iterator[list[tuple[int, bytes]]]:
        batch: list[tuple[int, bytes]] = []
        size = 0
        for i, (_, node) in enumerate(self._files):
            for blob_id in node.content:
                batch.append((i, blob_id))
                loc = self.repo.blobs.get(blob_id)
                size += loc.entry.s if loc else 0
                if size >= BATCH_BYTES or len(batch) >= BATCH_BLOBS:
                    yield batch
                    batch, size = [], 0
        if batch:
            yield batch

    def _restore_files(self) -> None:
        for path, node in self._files:
            if not node.content:
                self._write_whole(path, node, [])
        current = -1
        fd = -1
        with ThreadPoolExecutor(1, thread_name_prefix="freehold-prefetch") as pre:
            batches = self._batches()
            nxt: Future[dict[bytes, bytes]] | None = None
            first = next(batches, None)
            pending = [first] if first else []
            if first:
                nxt = pre.submit(self.repo.read_blobs, [b for _, b in first])
            while pending:
                batch = pending.pop()
                assert nxt is not None
                blobs = nxt.result()
                following = next(batches, None)
                if following:
                    pending.append(following)
                    nxt = pre.submit(self.repo.read_blobs, [b for _, b in following])
                for i, blob_id in batch:
                    if i != current:
                        if fd >= 0:
                            self._finish(fd, *self._files[current])
                        current = i
                        fd = self._open(self._files[i][0])
                    data = blobs[blob_id]
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    self.progress.advance(len(data))
        if fd >= 0:
            self._finish(fd, *self._files[current])

    @staticmethod
    def _open(path: Path) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink()  # a symlink where the file goes: replace it, never write through it
            return os.open(path, flags, 0o600)

    def _finish(self, fd: int, path: Path, node: Node) -> None:
        os.fchmod(fd, node.mode)
        os.utime(fd, ns=(node.mtime, node.mtime))
        os.close(fd)
        self.stats.files += 1
        self.stats.size += node.size

    def _write_whole(self, path: Path, node: Node, chunks: list[bytes]) -> None:
        fd = self._open(path)
        for c in chunks:
            os.write(fd, c)
        self._finish(fd, path, node)
