"""The read path: snapshot trees -> blobs (fetched in coalesced, prefetched batches) -> files."""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from . import filewriter, formats
from .errors import FreeholdError, UsageError
from .formats import Node
from .progress import NullProgress, Progress
from .store import Operation

log = logging.getLogger(__name__)

BATCH_BYTES = 32 * 1024 * 1024
# Plaintext bytes fetched ahead of the batch being written (at least one batch).
PREFETCH_BYTES = 32 * 1024 * 1024
# Small blobs per fetched batch. Smaller batches reach the helper sooner and leave it less to do
# after the last fetch: 20,000 files, files phase 1.27 s with 4096, 1.07 s with 1024 (4 pairs).
BATCH_BLOBS = 1024
# Restores of at least HELPER_MIN_FILES files of at most HELPER_MAX_FILE bytes create those
# files in a helper process (see filewriter); HELPER_FLUSH_BYTES is the pipe write size.
HELPER_MIN_FILES = 256
HELPER_MAX_FILE = 1024 * 1024
HELPER_FLUSH_BYTES = 1024 * 1024
HELPER_FLUSH_PARTS = 1024   # buffers per writev (IOV_MAX on Linux)


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    size: int = 0


class Restore:
    """Writes a snapshot's files below a target directory.

    When a restore has many small files, those that lie wholly inside one fetched batch are
    created by a helper process (``filewriter``) while this one fetches and decrypts the next;
    files that span batches, and larger ones, are written here in order as their blobs arrive.
    """

    def __init__(self, op: Operation, progress: Progress | None = None) -> None:
        self.op = op
        self.progress = progress or NullProgress()
        self.stats = RestoreStats()
        self._files: list[tuple[str, Node]] = []
        self._dirs: list[tuple[str, Node]] = []
        self._links: list[tuple[str, Node]] = []

    def run(self, snap: formats.Snapshot, target: Path, include: str | None = None) -> RestoreStats:
        if target.exists() and not target.is_dir():
            raise UsageError(f"restore target {target} exists and is not a directory")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create restore target {target}: {exc.strerror}") from None
        node = self.op.trees.find(snap.tree, include) if include else None
        if node is None:
            self._plan_tree(snap.tree, os.fspath(target))
        else:
            dest = target / include.strip("/")  # type: ignore[union-attr]
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._plan_node(node, os.fspath(dest))
        self.progress.scanned(len(self._files), sum(n.size for _, n in self._files))
        for path, _ in self._dirs:
            os.makedirs(path, exist_ok=True)
        self._restore_files()
        for path, n in self._links:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
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

    def _plan_node(self, node: Node, dest: str) -> None:
        if node.type == "dir":
            self._dirs.append((dest, node))
            if node.subtree is not None:
                self._plan_tree(node.subtree, dest)
        elif node.type == "file":
            self._files.append((dest, node))
        elif node.type == "symlink":
            self._links.append((dest, node))

    def _plan_tree(self, tree_id: bytes, dest: str) -> None:
        for node in self.op.trees.load(tree_id).nodes:
            name = os.fsdecode(node.name)
            if name in ("", ".", "..") or "/" in name:
                raise UsageError(f"snapshot holds an unsafe file name {name!r}; refusing to restore it")
            self._plan_node(node, f"{dest}/{name}")

    def _batches(self) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
        """(file index, blob id) entries in restore order, in batches of at most BATCH_BYTES
        (plaintext) or BATCH_BLOBS blobs, each with its plaintext size."""
        batch: list[tuple[int, bytes]] = []
        size = 0
        for i, (_, node) in enumerate(self._files):
            for blob_id in node.content:
                batch.append((i, blob_id))
                loc = self.op.index.lookup(blob_id)
                size += loc.entry.s if loc else 0
                if size >= BATCH_BYTES or len(batch) >= BATCH_BLOBS:
                    yield batch, size
                    batch, size = [], 0
        if batch:
            yield batch, size

    def _restore_files(self) -> None:
        small = sum(1 for _, n in self._files if n.size <= HELPER_MAX_FILE)
        sink = _helper_sink() if small >= HELPER_MIN_FILES else None
        try:
            self._write_files(sink or _InlineSink())
        except BaseException:
            if sink is not None:
                sink.abort()
            raise

    def _write_files(self, sink: _Sink) -> None:
        """Small files that lie wholly in one fetched batch go to ``sink``; files that span
        batches (and larger ones) are written here, in order, as their blobs arrive."""
        for path, node in self._files:
            if not node.content:
                sink.create(path, node, [])
                self._count(node)
        current, fd, pieces = -1, -1, 0  # the spanning file being written, blobs of it written
        with ThreadPoolExecutor(1, thread_name_prefix="freehold-prefetch") as pre:
            batches = self._batches()
            ahead: collections.deque[tuple[list[tuple[int, bytes]], int, Future[dict[bytes, bytes]]]]
            ahead = collections.deque()
            upcoming = next(batches, None)

            def top_up() -> None:
                """Fetch ahead up to PREFETCH_BYTES (at least one batch): with only the next
                batch fetched, a wait on the helper's pipe left the fetching thread idle."""
                nonlocal upcoming
                while upcoming is not None and (
                        not ahead or sum(n for _, n, _ in ahead) + upcoming[1] <= PREFETCH_BYTES):
                    batch, n = upcoming
                    ahead.append((batch, n, pre.submit(self.op.reader.read_blobs, [b for _, b in batch])))
                    upcoming = next(batches, None)

            try:
                top_up()
                while ahead:
                    batch, _, fetching = ahead.popleft()
                    blobs = fetching.result()
                    top_up()
                    for i, ids in _by_file(batch):
                        path, node = self._files[i]
                        if i != current and len(ids) == len(node.content) and node.size <= HELPER_MAX_FILE:
                            sink.create(path, node, [blobs[b] for b in ids])
                            self._count(node)
                            self.progress.advance(node.size)
                            continue
                        if i != current:
                            current, pieces = i, 0
                            fd = filewriter.open_file(path, node.mode)
                        for blob_id in ids:
                            filewriter.write_all(fd, blobs[blob_id])
                            self.progress.advance(len(blobs[blob_id]))
                        pieces += len(ids)
                        if pieces == len(node.content):
                            done, fd, current = fd, -1, -1
                            filewriter.finish(done, node.mode, node.mtime)
                            self._count(node)
                sink.close()
            finally:
                if fd >= 0:
                    os.close(fd)

    def _count(self, node: Node) -> None:
        self.stats.files += 1
        self.stats.size += node.size


def _by_file(batch: list[tuple[int, bytes]]) -> list[tuple[int, list[bytes]]]:
    """A batch's (file, blob) entries grouped into runs of one file, in order."""
    groups: list[tuple[int, list[bytes]]] = []
    last = -1
    for i, blob_id in batch:
        if i != last:
            groups.append((i, []))
            last = i
        groups[-1][1].append(blob_id)
    return groups


class _Sink(Protocol):
    def create(self, path: str, node: Node, pieces: list[bytes]) -> None: ...
    def close(self) -> None: ...


class _InlineSink:
    def create(self, path: str, node: Node, pieces: list[bytes]) -> None:
        filewriter.create(path, node.mode, node.mtime, pieces)

    def close(self) -> None:
        pass


class _HelperSink:
    """Hands files to a ``filewriter`` helper process through a pipe (protocol: filewriter).

    Records are sent with ``writev`` straight from the blobs' buffers: copying 1 MiB runs into
    one buffer first had been a quarter of this process's GIL time in a restore of 20,000
    files, and the kernel's copy into the pipe runs without the GIL."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._out = proc.stdin.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux: fewer, larger pipe writes
            fcntl.fcntl(self._out, fcntl.F_SETPIPE_SZ, HELPER_FLUSH_BYTES)  # type: ignore[attr-defined]
        self._parts: list[bytes | memoryview] = []
        self._size = 0

    def create(self, path: str, node: Node, pieces: list[bytes]) -> None:
        name = os.fsencode(path)
        parts = self._parts
        parts.append(filewriter.RECORD.pack(len(name), node.mode, node.mtime, sum(map(len, pieces))) + name)
        parts += pieces
        self._size += node.size
        if self._size >= HELPER_FLUSH_BYTES or len(parts) >= HELPER_FLUSH_PARTS:
            self._flush()

    def _flush(self) -> None:
        parts = self._parts
        try:
            while parts:
                sent = os.writev(self._out, parts[:HELPER_FLUSH_PARTS])
                # Drop what was sent (a write to a pipe may stop short of the whole request).
                i = 0
                while i < len(parts) and sent >= len(parts[i]):
                    sent -= len(parts[i])
                    i += 1
                del parts[:i]
                if sent:
                    parts[0] = memoryview(parts[0])[sent:]
        except BrokenPipeError:
            self._reply()
            # The helper stopped reading yet reported no failure: files would be lost silently.
            raise FreeholdError("the restore's file-writing helper process stopped reading its "
                                "input") from None
        self._size = 0

    def close(self) -> None:
        self._flush()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self._reply()

    def _reply(self) -> None:
        """Waits for the helper and reads its reply; raises what it reports, or that it died."""
        assert self.proc.stdout is not None
        reply = self.proc.stdout.read()
        code = self.proc.wait()
        try:
            answer = json.loads(reply)
        except ValueError:
            raise FreeholdError(f"the restore's file-writing helper process ended unexpectedly "
                                f"(exit status {code})") from None
        if "errno" in answer:
            raise OSError(answer["errno"], answer["strerror"], answer["path"])
        if code != 0:
            raise FreeholdError(f"the restore's file-writing helper process failed (exit status {code})")

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _helper_sink() -> _HelperSink | None:
    """A helper process, or None where one cannot be started (then files are written here)."""
    if not sys.executable or getattr(sys, "frozen", False):
        return None
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", filewriter.__file__],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    except OSError as exc:
        log.info("restore writes files in-process: cannot start a helper (%s)", exc)
        return None
    return _HelperSink(proc)
