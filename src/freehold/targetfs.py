"""A restore's target directory, walked and changed without following a link it did not create.

Everything here works on directory descriptors from ``filewriter.DirCache`` (each component
opened with ``O_NOFOLLOW``): opening the target, listing a directory (and removing what a killed
restore left under temporary names: files and staged directories), removing entries and trees,
and creating the entries that are not regular files (symlinks, fifos, device nodes, hardlinks)
under a temporary name, renamed over the final name once they are complete, as ``filewriter``
does for files. Existing entries are never opened except as directories (``O_DIRECTORY`` fails
on a fifo without blocking on it). The standard library, ``filewriter``, ``formats`` and
``errors`` only.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import UsageError
from .filewriter import check_name, set_xattrs, temp_name
from .formats import Node

# What ``filewriter.temp_name`` makes: ".NAME.fh-<16 hex>.part".
LEFTOVER = re.compile(rb"\..*\.fh-[0-9a-f]{16}\.part", re.DOTALL)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
_PATH_FLAGS = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | _CLOEXEC
_PROC_FD = os.path.isdir("/proc/self/fd")
SPECIAL_TYPES = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}

DIRECTORY, REGULAR, SYMLINK, OTHER = "d", "f", "l", "o"


def scan(fd: int) -> dict[bytes, str]:
    """The entries of an open directory, name -> DIRECTORY/REGULAR/SYMLINK/OTHER (from the
    directory itself: nothing is opened or followed). What an earlier restore that was killed
    left under temporary names (files, staged directories) is removed on the way."""
    out: dict[bytes, str] = {}
    with os.scandir(fd) as it:
        entries = [(os.fsencode(e.name), e.is_dir(follow_symlinks=False), e.is_symlink(),
                    e.is_file(follow_symlinks=False)) for e in it]
    for name, is_dir, is_link, is_file in entries:
        if LEFTOVER.fullmatch(name):
            try:
                remove(fd, name)
                continue
            except FileNotFoundError:
                continue
            except OSError:
                pass
        out[name] = DIRECTORY if is_dir else SYMLINK if is_link else REGULAR if is_file else OTHER
    return out


def remove(dfd: int, name: bytes) -> None:
    """Removes an entry of any type; a directory with all it holds (links are removed, never
    followed)."""
    try:
        os.unlink(name, dir_fd=dfd)
        return
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.EPERM):
            raise
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # changed under us: not a directory now
            os.unlink(name, dir_fd=dfd)
            return
        raise
    try:
        with os.scandir(fd) as it:
            names = [os.fsencode(e.name) for e in it]
        for child in names:
            remove(fd, child)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dfd)


def default_acl(fd: int) -> bool:
    """Whether a directory has a default ACL (then new files' modes ignore the umask)."""
    try:
        os.getxattr(fd, "system.posix_acl_default")
        return True
    except OSError:
        return False


class Owners:
    """Owner and group ids to restore: the id of the recorded name where that name exists
    here, else the recorded id (tar's default); -1 (leave) when nothing was recorded."""

    def __init__(self) -> None:
        self._users: dict[tuple[str, int | None], int] = {}
        self._groups: dict[tuple[str, int | None], int] = {}

    def uid(self, name: str, recorded: int | None) -> int:
        return _mapped(self._users, lambda n: pwd.getpwnam(n).pw_uid, name, recorded)

    def gid(self, name: str, recorded: int | None) -> int:
        return _mapped(self._groups, lambda n: grp.getgrnam(n).gr_gid, name, recorded)


def _mapped(cache: dict[tuple[str, int | None], int], lookup: Callable[[str], int], name: str,
            recorded: int | None) -> int:
    """The id of ``name`` on this machine where it exists, else the recorded id (-1: leave)."""
    key = (name, recorded)
    found = cache.get(key)
    if found is None:
        found = -1 if recorded is None else recorded
        if name:
            try:
                found = lookup(name)
            except KeyError:
                pass
        cache[key] = found
    return found


def _create_temp(make: object, name: bytes) -> bytes:
    """Runs ``make(tmp)`` with fresh temporary names until one is free; returns the name."""
    for _ in range(8):
        tmp = temp_name(name)
        try:
            make(tmp)  # type: ignore[operator]
            return tmp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "cannot create a temporary name")


def _discard(dfd: int, tmp: bytes) -> None:
    try:
        os.unlink(tmp, dir_fd=dfd)
    except OSError:
        pass


def make_symlink(dfd: int, name: bytes, target: bytes, mtime: int, atime: int = 0, uid: int = -1,
                 gid: int = -1, xattrs: list[tuple[bytes, bytes]] | None = None) -> list[str]:
    check_name(name)
    tmp = _create_temp(lambda t: os.symlink(target, t, dir_fd=dfd), name)
    warn: list[str] = []
    try:
        if uid != -1 or gid != -1:
            os.chown(tmp, uid, gid, dir_fd=dfd, follow_symlinks=False)
        if xattrs:
            if _PROC_FD:
                for n, v in xattrs:
                    try:
                        os.setxattr(b"/proc/self/fd/%d/%s" % (dfd, tmp), n, v, follow_symlinks=False)
                    except OSError as exc:
                        warn.append(f"cannot set extended attribute {os.fsdecode(n)}: {exc.strerror}")
            else:
                warn.append("cannot set extended attributes on symlinks here (no /proc)")
        try:
            os.utime(tmp, ns=(atime or mtime, mtime), dir_fd=dfd, follow_symlinks=False)
        except NotImplementedError:
            pass
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _discard(dfd, tmp)
        raise
    return warn


def make_special(dfd: int, name: bytes, kind: str, mode: int, rdev: int, mtime: int, atime: int = 0,
                 uid: int = -1, gid: int = -1, xattrs: list[tuple[bytes, bytes]] | None = None) -> list[str]:
    """A fifo or device node; its metadata is set through an ``O_PATH`` descriptor (devices are
    never opened)."""
    check_name(name)
    ifmt = SPECIAL_TYPES[kind]
    if kind == "fifo":
        tmp = _create_temp(lambda t: os.mkfifo(t, 0o600, dir_fd=dfd), name)
    else:
        tmp = _create_temp(lambda t: os.mknod(t, ifmt | 0o600, rdev, dir_fd=dfd), name)
    warn: list[str] = []
    try:
        if _PROC_FD and _PATH_FLAGS & getattr(os, "O_PATH", 0):
            fd = os.open(tmp, _PATH_FLAGS, dir_fd=dfd)
            try:
                if stat.S_IFMT(os.fstat(fd).st_mode) != ifmt:
                    raise OSError(errno.EEXIST, "the new node was replaced")
                where = f"/proc/self/fd/{fd}"
                if uid != -1 or gid != -1:
                    os.chown(where, uid, gid)
                os.chmod(where, mode & 0o7777)
                if xattrs:
                    set_xattrs(where, xattrs, warn)
                os.utime(where, ns=(atime or mtime, mtime))
            finally:
                os.close(fd)
        else:
            if uid != -1 or gid != -1:
                os.chown(tmp, uid, gid, dir_fd=dfd, follow_symlinks=False)
            os.chmod(tmp, mode & 0o7777, dir_fd=dfd)
            os.utime(tmp, ns=(atime or mtime, mtime), dir_fd=dfd, follow_symlinks=False)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        _discard(dfd, tmp)
        raise
    return warn


def make_link(src_dfd: int, src: bytes, dfd: int, name: bytes) -> None:
    """A hardlink to the entry ``src`` (a file this restore wrote), at ``name``."""
    check_name(src)
    check_name(name)
    tmp = _create_temp(lambda t: os.link(src, t, src_dir_fd=src_dfd, dst_dir_fd=dfd,
                                         follow_symlinks=False), name)
    try:
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        # A rename onto a link of the same file does nothing and leaves the temporary name.
        _discard(dfd, tmp)


def finish_dir(fd: int, mode: int, mtime: int, atime: int = 0, uid: int = -1, gid: int = -1,
               xattrs: list[tuple[bytes, bytes]] | None = None) -> list[str]:
    """A restored directory's owner, mode, extended attributes (default ACLs among them) and
    times, set last, when everything in it is done."""
    warn: list[str] = []
    if uid != -1 or gid != -1:
        os.fchown(fd, uid, gid)
    os.fchmod(fd, mode & 0o7777)
    if xattrs:
        set_xattrs(fd, xattrs, warn)
    os.utime(fd, ns=(atime or mtime, mtime))
    return warn


def unchanged(fd: int, name: bytes, node: Node, st: os.stat_result) -> bool:
    """--overwrite if-changed: the same type, and for files size and mtime (a metadata check, as
    restic's: content is not read); symlinks the same target."""
    if node.type == "file":
        return stat.S_ISREG(st.st_mode) and st.st_size == node.size and st.st_mtime_ns == node.mtime
    if node.type == "symlink":
        return stat.S_ISLNK(st.st_mode) and os.readlink(name, dir_fd=fd) == (node.target or b"")
    ifmt = SPECIAL_TYPES[node.type]
    rdev = node.meta.rdev if node.meta else 0
    return (stat.S_IFMT(st.st_mode) == ifmt and st.st_mtime_ns == node.mtime
            and (node.type == "fifo" or st.st_rdev == rdev))


def open_target(target: Path) -> tuple[int, bool]:
    """The target's descriptor (the target itself is the user's path: links in it are
    followed) and whether this restore created it."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"restore target {target} exists and is not a directory")
    fresh = not os.path.lexists(target)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create restore target {target}: {exc.strerror}") from None
    fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    if (not fresh and os.access in os.supports_effective_ids
            and not os.access(target, os.W_OK | os.X_OK, effective_ids=True)):
        os.close(fd)
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    return fd, fresh
