"""Creating restored files, in this process or in a helper process.

Creating many small files is kernel work (inode allocation, directory insert, page cache) that
releases the GIL for each of its system calls; two Python threads doing it ping-pong the GIL on
every call and end up no faster than one (measured: docs/performance.md). A second *process* has
its own GIL, so the restore hands small files to one: the parent fetches, decrypts and verifies,
the helper creates files, and the two run on two cores.

This module is the whole helper. It imports only the standard library so that it starts in a few
milliseconds as ``python -I -S filewriter.py FD`` (no site-packages, no freehold package), and
``NewFile`` is the one implementation of "write a restored file" that both the helper and the
in-process path use.

Safety (docs/design.md §11, restore): nothing is ever opened through a path. Directories are
opened one component at a time from the target's root descriptor with ``O_DIRECTORY|O_NOFOLLOW``
(``DirCache``), so a symlink planted anywhere in the target is refused (ELOOP/ENOTDIR), never
followed. A file gets its final name only when it is complete (``NewFile``): it is created
without a name (``O_TMPFILE``) or under a new temporary name (``temp_name``: ``.NAME.fh-<16
hex>.part``, NAME cut to ``NAME_KEEP`` bytes so the whole fits in NAME_MAX) with ``O_EXCL|
O_NOFOLLOW``, given its content, owner, mode, extended attributes and times through its
descriptor, then linked in (``linkat``) where the name is free, or renamed over the final name
(``renameat``) where it is taken: whatever sat there (a file, a hardlink to a file elsewhere, a
symlink, a fifo) is replaced, never opened or written through, and no file is ever half-written
under its final name. A failure removes the new file. In a directory private to the restore
(``DIRECT``: made by it, mode 0700, below a directory still under its temporary name, see
restore.py) a file is created under its final name at once (``O_EXCL|O_NOFOLLOW``) and removed
on failure: nothing is visible under a final path before the whole staged directory is moved
into place.

Pipe protocol (parent -> helper, on the helper's stdin), records until end of file; the helper
gets the target root as an inherited descriptor, FD on its command line:

- ``b"D"``, ``DIR`` header (path length), the path: the directory, relative to the root
  (components joined by ``/``, empty for the root itself), that the files after it go into.
- ``b"F"``, ``FILE`` header (name length, mode, uid, gid (-1: leave), atime and mtime in ns,
  flags (``SPARSE``, ``CHMOD``, ``REPLACE``, ``DIRECT``), length of the extended attributes,
  data length), the name, the extended attributes (``pack_xattrs``), the data.

Integers are little-endian; the helper opens each directory itself (``DirCache``, from the root
descriptor) and checks every name. A file that cannot be written (no space, permission, a
directory in the way) is recorded and the helper goes on with the next. At end of input it
answers once on stdout with one JSON line ``{"files": N, "failed": [[path, errno, strerror,
size], ...], "warnings": [[path, message], ...]}`` (paths relative to the root) and exits 0; a
record cut short ends it with ``"errno"``, ``"strerror"`` and exit 1. It runs in its own
session and ignores SIGINT (the parent, interrupted, ends it by closing the pipe: it finishes
the records it has), and removes its new file on SIGTERM.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import struct
import sys

DIR = struct.Struct("<I")
FILE = struct.Struct("<IIqqqqBIQ")
XATTR = struct.Struct("<HI")
SPARSE = 1      # FILE flag: leave aligned all-zero blocks as holes
CHMOD = 2       # FILE flag: set the mode after creation even when creation gave it
REPLACE = 4     # FILE flag: the name is taken (the new file replaces what is there)
DIRECT = 8      # FILE flag: a directory private to this restore: created under its final name at once

NAME_KEEP = 200        # bytes of the final name kept in a temporary name (NAME_MAX is 255)
HOLE = 4096            # a sparse file's holes are whole aligned blocks of this size
_ZERO = bytes(HOLE)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC
_ANON_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | _CLOEXEC
_anonymous = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")  # off at the first refusal
_RUN = os.urandom(4).hex().encode()   # this process's part of its temporary names
_counter = 0


def _read_umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (briefly)
    os.umask(mask)
    return mask


UMASK = _read_umask()


def check_name(name: bytes) -> None:
    """A name from a snapshot is hostile until checked: one component, never '.' or '..'."""
    if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL, f"unsafe file name {name!r}")


def temp_name(name: bytes) -> bytes:
    global _counter
    _counter += 1
    return b".%s.fh-%s%08x.part" % (name[:NAME_KEEP], _RUN, _counter & 0xFFFFFFFF)


def needs_chmod(mode: int) -> bool:
    """Whether creating with ``mode & 0o777`` (under this process's umask) misses bits."""
    return bool(mode & 0o7000 or mode & 0o777 & UMASK)


class DirCache:
    """Descriptors of directories below a root descriptor, opened a component at a time with
    ``O_NOFOLLOW`` from the nearest open ancestor; the ``size`` most recently used are kept.
    A descriptor returned by ``get`` stays valid until the next ``get``."""

    def __init__(self, root: int, size: int = 16) -> None:
        self.root = root
        self.size = size
        self.fds: dict[bytes, int] = {}

    def get(self, rel: bytes) -> int:
        if not rel:
            return self.root
        fds = self.fds
        fd = fds.pop(rel, None)
        if fd is not None:
            fds[rel] = fd
            return fd
        parts = rel.split(b"/")
        base, start = self.root, 0
        for i in range(len(parts) - 1, 0, -1):
            anc = b"/".join(parts[:i])
            fd = fds.pop(anc, None)
            if fd is not None:
                fds[anc] = fd
                base, start = fd, i
                break
        for i in range(start, len(parts)):
            check_name(parts[i])
            fd = os.open(parts[i], _DIR_FLAGS, dir_fd=base)
            self._put(b"/".join(parts[: i + 1]), fd)
            base = fd
        return base

    def _put(self, rel: bytes, fd: int) -> None:
        self.fds[rel] = fd
        while len(self.fds) > self.size:
            os.close(self.fds.pop(next(iter(self.fds))))

    def forget(self, rel: bytes) -> None:
        """Closes what is cached at or below ``rel`` (it is about to be replaced or removed)."""
        for key in [k for k in self.fds if k == rel or k.startswith(rel + b"/")]:
            os.close(self.fds.pop(key))

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def pack_xattrs(xattrs: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(XATTR.pack(len(n), len(v)) + n + v for n, v in xattrs)


def unpack_xattrs(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n, v = XATTR.unpack_from(data, pos)
        pos += XATTR.size
        out.append((data[pos:pos + n], data[pos + n:pos + n + v]))
        pos += n + v
    return out


def set_xattrs(target: int | str, xattrs: list[tuple[bytes, bytes]], warn: list[str]) -> None:
    """Sets extended attributes (POSIX ACLs among them); one that cannot be set is a warning."""
    for name, value in xattrs:
        try:
            os.setxattr(target, name, value)
        except OSError as exc:
            warn.append(f"cannot set extended attribute {os.fsdecode(name)}: {exc.strerror or exc}")


def _unlink(dfd: int, name: bytes) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass


def _open_anonymous(dfd: int, mode: int) -> int:
    """A new file without a name in directory ``dfd`` (O_TMPFILE), or -1 where the file system
    has none (then named temporary files are used from here on)."""
    global _anonymous
    try:
        return os.open(b".", _ANON_FLAGS, mode & 0o777, dir_fd=dfd)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    _anonymous = False
    return -1


def link_anonymous(fd: int, dfd: int, name: bytes, replace: bool) -> None:
    """Gives a complete O_TMPFILE file its name: linked in where the name is free, else linked
    under a temporary name and renamed over what has the name."""
    where = b"/proc/self/fd/%d" % fd
    if not replace:
        try:
            os.link(where, name, dst_dir_fd=dfd, follow_symlinks=True)
            return
        except FileExistsError:
            pass
    tmp = temp_name(name)
    os.link(where, tmp, dst_dir_fd=dfd, follow_symlinks=True)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _unlink(dfd, tmp)
        raise


class NewFile:
    """A file to write in directory ``dfd`` that gets its name only when complete: ``open``
    creates it, ``commit`` gives it its metadata and its name, ``discard`` removes it (also when
    an interrupt came right after ``open`` made it). ``dfd`` must stay open.

    Where the file system has ``O_TMPFILE`` the file has no name until ``commit`` links it in
    (``linkat`` of ``/proc/self/fd/N``): a killed restore leaves nothing of it behind (the link
    costs about what a rename does: a second directory operation). Where ``REPLACE`` says the
    name is taken (or the link finds it taken), it is linked under a temporary name and renamed
    over it. Without ``O_TMPFILE`` the file is created under the temporary name and renamed.
    ``direct`` (a private directory): created under its final name, removed if not completed."""

    __slots__ = ("dfd", "direct", "fd", "name", "pos", "sparse", "tmp")

    def __init__(self, dfd: int, name: bytes, sparse: bool = False, direct: bool = False) -> None:
        check_name(name)
        self.dfd, self.name, self.pos, self.sparse, self.fd, self.tmp = dfd, name, 0, sparse, -1, b""
        self.direct = direct

    def open(self, mode: int) -> None:
        if self.direct:  # a private directory: the final name, created here and removed on failure
            self.tmp = self.name  # (so that an interrupt right after the open removes it)
            try:
                self.fd = os.open(self.name, _NEW_FLAGS, mode & 0o777, dir_fd=self.dfd)
                return
            except OSError as exc:
                self.tmp, self.direct = b"", False  # not made here: never removed
                if exc.errno != errno.EEXIST:
                    raise
        if _anonymous:
            self.fd = _open_anonymous(self.dfd, mode)
            if self.fd >= 0:
                return
        for _ in range(8):
            self.tmp = temp_name(self.name)
            try:
                self.fd = os.open(self.tmp, _NEW_FLAGS, mode & 0o777, dir_fd=self.dfd)
                return
            except FileExistsError:
                continue
        raise OSError(errno.EEXIST, "cannot create a temporary file")

    def write(self, data: bytes | memoryview) -> None:
        if not self.sparse:
            write_all(self.fd, data)
            self.pos += len(data)
            return
        # Whole aligned blocks of zeros are skipped (holes); everything else is written.
        data = bytes(data) if not isinstance(data, bytes) else data
        view, pos, n = memoryview(data), self.pos, len(data)
        run = 0
        i = -pos % HOLE
        while i + HOLE <= n:
            if data[i:i + HOLE] == _ZERO:
                if i > run:
                    _pwrite_all(self.fd, view[run:i], pos + run)
                run = i + HOLE
            i += HOLE
        if n > run:
            _pwrite_all(self.fd, view[run:], pos + run)
        self.pos = pos + n

    def commit(self, mode: int, mtime: int, atime: int = 0, uid: int = -1, gid: int = -1,
               xattrs: list[tuple[bytes, bytes]] | None = None, flags: int = 0) -> list[str]:
        """Owner, mode, attributes, times, then the name; returns warnings. On failure the file
        is removed and the error raised."""
        fd, warn, dfd = self.fd, [], self.dfd
        try:
            if self.sparse:
                os.ftruncate(fd, self.pos)
            chmod = flags & CHMOD or needs_chmod(mode)
            if uid != -1 or gid != -1:
                os.fchown(fd, uid, gid)  # before the mode: a chown clears set-id bits
                chmod = chmod or mode & 0o6000
            if chmod:
                os.fchmod(fd, mode & 0o7777)
            if xattrs:
                set_xattrs(fd, xattrs, warn)
            os.utime(fd, ns=(atime or mtime, mtime))
            if not self.tmp:  # O_TMPFILE: linked in while open
                link_anonymous(fd, dfd, self.name, bool(flags & REPLACE))
                self.fd = -1
                os.close(fd)
                return warn
            self.fd = -1
            os.close(fd)
            if not self.direct:
                os.rename(self.tmp, self.name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            self.discard()
            raise
        return warn

    def discard(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
        if self.tmp:
            try:
                os.unlink(self.tmp, dir_fd=self.dfd)
            except OSError:
                pass


def _fill(fd: int, pieces: list[bytes] | list[memoryview], mode: int, uid: int, gid: int, atime: int,
          mtime: int, flags: int) -> None:
    """The fast paths' common steps on a new file: content, owner, mode (only when the umask or
    set-id bits need it), times."""
    for piece in pieces:
        n = os.write(fd, piece)
        if n != len(piece):
            write_all(fd, memoryview(piece)[n:])
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)  # before the mode: a chown clears set-id bits
    if flags & CHMOD or mode & 0o7000 or mode & 0o777 & UMASK:
        os.fchmod(fd, mode & 0o7777)
    os.utime(fd, ns=(atime or mtime, mtime))


def create(dfd: int, name: bytes, mode: int, mtime: int, pieces: list[bytes] | list[memoryview],
           atime: int = 0, uid: int = -1, gid: int = -1, xattrs: list[tuple[bytes, bytes]] | None = None,
           flags: int = 0) -> list[str]:
    """Creates (or replaces) one file in directory ``dfd``; returns warnings, raises OSError."""
    if flags & DIRECT and not (xattrs or flags & SPARSE):
        check_name(name)
        try:
            fd = os.open(name, _NEW_FLAGS, mode & 0o777, dir_fd=dfd)
        except FileExistsError:  # (a snapshot naming two entries alike): replaced as elsewhere
            fd, flags = -1, flags & ~DIRECT | REPLACE
        except BaseException as exc:  # an interrupt may have come right after the file was made
            if not isinstance(exc, OSError):
                _unlink(dfd, name)
            raise
        if fd >= 0:
            try:
                _fill(fd, pieces, mode, uid, gid, atime, mtime, flags)
            except BaseException:
                os.close(fd)
                _unlink(dfd, name)
                raise
            os.close(fd)
            return []
    if _anonymous and not (xattrs or flags & SPARSE):
        # The common case (no holes, no attributes): the same steps without NewFile's generality.
        check_name(name)
        fd = _open_anonymous(dfd, mode)
        if fd >= 0:
            try:
                _fill(fd, pieces, mode, uid, gid, atime, mtime, flags)
                link_anonymous(fd, dfd, name, bool(flags & REPLACE))
            finally:
                os.close(fd)
            return []
    f = NewFile(dfd, name, bool(flags & SPARSE), bool(flags & DIRECT))
    try:
        f.open(mode)
        for piece in pieces:
            f.write(piece)
    except BaseException:
        f.discard()
        raise
    return f.commit(mode, mtime, atime, uid, gid, xattrs, flags)


def _path(where: bytes, name: bytes) -> str:
    return os.fsdecode(where + b"/" + name if where else name)


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def serve(root: int, stdin: int = 0, stdout: int = 1) -> int:
    """The helper's main loop: create every file described on ``stdin`` below ``root``."""
    global UMASK
    os.umask(0)  # files are created with their final permission bits
    UMASK = 0
    # An interrupt reaches the whole process group: the parent decides, by closing the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop)  # temporary files are removed on the way out
    src = os.fdopen(stdin, "rb", buffering=1 << 20)
    dirs = DirCache(root)
    dfd, where, dir_error = root, b"", None
    files = 0
    failed: list[list[object]] = []
    warnings: list[list[str]] = []
    reply: dict[str, object] = {}
    kind = b""
    while True:
        kind = src.read(1)
        if not kind:
            break
        if kind == b"D":
            head = src.read(DIR.size)
            if len(head) != DIR.size:
                break
            (n,) = DIR.unpack(head)
            where = src.read(n)
            if len(where) != n:
                break
            try:
                dfd, dir_error = dirs.get(where), None
            except OSError as exc:
                dfd, dir_error = -1, exc
            continue
        head = src.read(FILE.size) if kind == b"F" else b""
        if len(head) != FILE.size:
            break
        name_len, mode, uid, gid, atime, mtime, flags, xlen, size = FILE.unpack(head)
        name = src.read(name_len)
        xattrs = src.read(xlen)
        data = src.read(size)
        if len(name) != name_len or len(xattrs) != xlen or len(data) != size:
            break
        try:
            if dir_error is not None:
                raise dir_error
            warn = create(dfd, name, mode, mtime, [data], atime, uid, gid,
                          unpack_xattrs(xattrs) if xattrs else None, flags)
        except OSError as exc:
            failed.append([_path(where, name), exc.errno or 0, exc.strerror or str(exc), size])
            continue
        files += 1
        if warn:
            warnings += [[_path(where, name), w] for w in warn]
    if kind:  # stopped inside a record
        reply = {"errno": errno.EPIPE, "strerror": "truncated request", "path": ""}
    dirs.close()
    reply.update(files=files, failed=failed, warnings=warnings)
    try:
        write_all(stdout, (json.dumps(reply) + "\n").encode())
    except OSError:  # the parent is gone (killed): nobody to tell
        pass
    return 1 if "errno" in reply else 0


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
