"""Creating restored files, in this process or in a helper process.

Creating many small files is kernel work (inode allocation, directory insert, page cache) that
releases the GIL for each of its five system calls; two Python threads doing it ping-pong the GIL
on every call and end up no faster than one (measured: docs/performance.md). A second *process*
has its own GIL, so the restore hands small files to one: the parent fetches, decrypts and
verifies, the helper creates files, and the two run on two cores.

This module is the whole helper. It imports only the standard library so that it starts in a few
milliseconds as ``python -I -S filewriter.py`` (no site-packages, no freehold package), and
``create`` is the one implementation of "write a restored file" that both the helper and the
in-process path use.

Pipe protocol (parent -> helper, on the helper's stdin), repeated until end of file:
``RECORD`` header (path length, mode, mtime in ns, data length; little-endian), the path's
bytes, the data. The helper answers once on stdout with one JSON line: ``{"files": N}`` when
all records were written, or ``{"errno": E, "strerror": S, "path": P, "files": N}`` at the
first failure, after which it exits 1 without reading further.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import struct
import sys

RECORD = struct.Struct("<IIqQ")
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def open_file(path: str | bytes, mode: int) -> int:
    """A new file created with its final permission bits, or an existing one truncated; a
    symlink where the file goes is replaced, never written through."""
    try:
        return os.open(path, _FLAGS | os.O_EXCL, mode & 0o777)
    except FileExistsError:
        pass
    try:
        return os.open(path, _FLAGS | os.O_TRUNC, 0o600)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        os.unlink(path)
        return os.open(path, _FLAGS | os.O_EXCL, 0o600)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def finish(fd: int, mode: int, mtime_ns: int) -> None:
    """Sets mode (unless the file already has it, as most new ones do) and times, and closes."""
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode & 0o7777:
            os.fchmod(fd, mode)
        os.utime(fd, ns=(mtime_ns, mtime_ns))
    finally:
        os.close(fd)


def create(path: str | bytes, mode: int, mtime_ns: int, pieces: list[bytes] | list[memoryview]) -> None:
    """Creates (or replaces) one file with the given content, mode and modification time."""
    fd = open_file(path, mode)
    try:
        for piece in pieces:
            write_all(fd, piece)
    except BaseException:
        os.close(fd)
        raise
    finish(fd, mode, mtime_ns)


def serve(stdin: int = 0, stdout: int = 1) -> int:
    """The helper's main loop: create every file described on ``stdin``."""
    src = os.fdopen(stdin, "rb", buffering=1 << 20)
    files = 0
    failure: dict[str, object] | None = None
    while True:
        header = src.read(RECORD.size)
        if not header:
            break
        if len(header) != RECORD.size:
            failure = {"errno": errno.EPIPE, "strerror": "truncated request", "path": ""}
            break
        path_len, mode, mtime_ns, size = RECORD.unpack(header)
        path = src.read(path_len)
        data = src.read(size)
        if len(path) != path_len or len(data) != size:
            failure = {"errno": errno.EPIPE, "strerror": "truncated request", "path": ""}
            break
        try:
            create(path, mode, mtime_ns, [data])
        except OSError as exc:
            failure = {"errno": exc.errno or 0, "strerror": exc.strerror or str(exc),
                       "path": os.fsdecode(path)}
            break
        files += 1
    # On a failure this exits without reading further: the parent's next write fails (broken
    # pipe) and it reads this reply.
    reply = dict(failure or {}, files=files)
    try:
        os.write(stdout, (json.dumps(reply) + "\n").encode())
    except OSError:  # the parent is gone (killed): nobody to tell
        pass
    return 1 if failure else 0


if __name__ == "__main__":
    try:
        sys.exit(serve())
    except KeyboardInterrupt:  # the parent was interrupted too; it reports
        sys.exit(130)
