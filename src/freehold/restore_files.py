"""Where a restore's file contents are written: ``Spanning`` writes one file here piece by piece
as its blobs arrive (files that span fetched batches, and large ones); ``InlineSink`` writes
small files here, ``HelperSink`` hands them to a ``filewriter`` helper process. All of them go
through ``filewriter`` (temporary name, then rename); a file that cannot be written is reported
to the job as that file's failure, never raised.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
from typing import Any, Protocol

from . import filewriter
from .errors import FreeholdError
from .formats import Node
from .progress import Progress

log = logging.getLogger(__name__)

HELPER_FLUSH_BYTES = 1024 * 1024
HELPER_FLUSH_PARTS = 1024   # buffers per writev (IOV_MAX on Linux)
Attrs = tuple[int, int, int, "list[tuple[bytes, bytes]] | None", int]  # atime, uid, gid, xattrs, flags


class Job(Protocol):
    """What the writers need of the restore (``restore.Restore``)."""

    cache: filewriter.DirCache
    dirs: list[Any]                            # each with .phys: where it is below the target
    files: list[tuple[int, bytes, Node]]       # (directory index, name, node)
    progress: Progress
    stats: Any
    tainted: bool                              # set when a writer died (a half file may exist)

    def path(self, di: int, name: bytes = b"") -> str: ...
    def shown(self, phys: str) -> str: ...      # the snapshot path of a path below the target
    def fail(self, path: str, reason: str) -> None: ...
    def warn(self, path: str, messages: list[str]) -> None: ...
    def count(self, node: Node) -> None: ...
    def done(self, files: int) -> None: ...     # that many files are complete under their names
    def attrs(self, di: int, node: Node, name: bytes = b"") -> Attrs: ...


def reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class Spanning:
    """The one file written here piece by piece (it spans batches, or is large)."""

    def __init__(self, restore: Job) -> None:
        self.r = restore
        self.index = -1
        self.file: filewriter.NewFile | None = None
        self.pieces = 0

    def write(self, i: int, pieces: list[bytes]) -> bool:
        r = self.r
        di, name, node = r.files[i]
        try:
            if i != self.index:
                self.discard()
                self.index, self.pieces = i, 0
                dfd = os.dup(r.cache.get(r.dirs[di].phys))  # kept open across other files
                try:
                    self.file = filewriter.NewFile(dfd, name, bool(node.meta and node.meta.sparse),
                                                   r.dirs[di].private)
                except BaseException:
                    os.close(dfd)
                    raise
                self.file.open(node.mode)
            f = self.file
            assert f is not None
            for piece in pieces:
                f.write(piece)
                r.progress.advance(len(piece))
            self.pieces += len(pieces)
            if self.pieces == len(node.content):
                atime, uid, gid, xattrs, flags = r.attrs(di, node, name)
                warn = f.commit(node.mode, node.mtime, atime, uid, gid, xattrs, flags)
                self.file, self.index = None, -1
                os.close(f.dfd)
                r.warn(r.path(di, name), warn)
                r.count(node)
                r.done(1)
            return True
        except OSError as exc:
            self.discard()
            r.fail(r.path(di, name), reason(exc))
            return False

    def discard(self) -> None:
        f, self.file, self.index = self.file, None, -1
        if f is not None:
            f.discard()
            os.close(f.dfd)


class Sink(Protocol):
    def create(self, di: int, name: bytes, node: Node, attrs: Attrs, pieces: list[bytes]) -> None: ...
    def close(self) -> None: ...


class InlineSink:
    def __init__(self, restore: Job) -> None:
        self.r = restore

    def create(self, di: int, name: bytes, node: Node, attrs: Attrs, pieces: list[bytes]) -> None:
        r = self.r
        try:
            warn = filewriter.create(r.cache.get(r.dirs[di].phys), name, node.mode, node.mtime, pieces, *attrs)
        except OSError as exc:
            r.fail(r.path(di, name), reason(exc))
            return
        r.count(node)
        r.done(1)
        if warn:
            r.warn(r.path(di, name), warn)

    def close(self) -> None:
        pass


class HelperSink:
    """Hands files to a ``filewriter`` helper process through a pipe (protocol: filewriter).

    Records are sent with ``writev`` straight from the blobs' buffers: copying 1 MiB runs into
    one buffer first had been a quarter of this process's GIL time in a restore of 20,000
    files, and the kernel's copy into the pipe runs without the GIL."""

    def __init__(self, restore: Job, proc: subprocess.Popen[bytes]) -> None:
        self.r = restore
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self._out = proc.stdin.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux: fewer, larger pipe writes
            fcntl.fcntl(self._out, fcntl.F_SETPIPE_SZ, HELPER_FLUSH_BYTES)  # type: ignore[attr-defined]
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self._dir = -1

    def create(self, di: int, name: bytes, node: Node, attrs: Attrs, pieces: list[bytes]) -> None:
        parts = self._parts
        if di != self._dir:
            self._dir = di
            rel = self.r.dirs[di].phys
            parts.append(b"D" + filewriter.DIR.pack(len(rel)) + rel)
        atime, uid, gid, xattrs, flags = attrs
        x = filewriter.pack_xattrs(xattrs) if xattrs else b""
        parts.append(b"F" + filewriter.FILE.pack(len(name), node.mode, uid, gid, atime, node.mtime, flags, len(x),
                                                 sum(map(len, pieces))) + name + x)
        parts += pieces
        stats = self.r.stats
        stats.files += 1
        stats.size += node.size
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
        """Waits for the helper and reads its reply: the files it could not write become
        failures; raises what it reports, or that it died."""
        assert self.proc.stdout is not None
        reply = self.proc.stdout.read()
        code = self.proc.wait()
        r = self.r
        try:
            answer = json.loads(reply)
        except ValueError:
            r.tainted = True
            raise FreeholdError(f"the restore's file-writing helper process ended unexpectedly "
                                f"(exit status {code})") from None
        r.done(answer.get("files", 0))
        for path, _, why, size in answer.get("failed", ()):
            r.stats.files -= 1
            r.stats.size -= size
            r.fail(r.shown(path), why)
        for path, message in answer.get("warnings", ()):
            r.warn(r.shown(path), [message])
        if "errno" in answer:
            raise OSError(answer["errno"], answer["strerror"], answer["path"])
        if code != 0:
            raise FreeholdError(f"the restore's file-writing helper process failed (exit status {code})")

    def abort(self) -> None:
        """Ends the helper: at the end of its input it finishes the records it has (it ignores
        SIGINT; killed another way, it removes its temporary file) and says how many it wrote."""
        proc = self.proc
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.stdin = None
        try:
            reply, _ = proc.communicate(timeout=10)
            self.r.done(json.loads(reply).get("files", 0))
        except (subprocess.TimeoutExpired, ValueError, OSError, AttributeError):
            self.r.tainted = True
            proc.kill()
            proc.wait()


def helper_sink(restore: Job, root: int) -> HelperSink | None:
    """A helper process, or None where one cannot be started (then files are written here)."""
    if not sys.executable or getattr(sys, "frozen", False):
        return None
    try:
        # Its own session: a Ctrl-C at the terminal reaches this process, which ends the helper
        # by closing its input (it finishes what it has), never the helper mid-file.
        proc = subprocess.Popen([sys.executable, "-I", "-S", filewriter.__file__, str(root)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, pass_fds=(root,),
                                start_new_session=True)
    except OSError as exc:
        log.info("restore writes files in-process: cannot start a helper (%s)", exc)
        return None
    return HelperSink(restore, proc)
