"""The file-system half of a backup: sources walked through directory file descriptors, every
node's metadata (design.md §11, format 1.2) and files read twice when they change while read.

Every directory is opened relative to its parent (``openat`` with ``O_DIRECTORY|O_NOFOLLOW``),
listed with ``scandir`` on its descriptor, its entries ``fstatat``-ed and its files opened
relative to it (``O_NOFOLLOW|O_NONBLOCK``, only what ``lstat`` said is a regular file): paths of
any length work, a link swapped in during the walk is never followed, a FIFO never blocks. Path
strings are kept only to name things in messages and for the exclude patterns. Where the
process may, files and directories are opened with ``O_NOATIME``: a backup does not change the
access times it records. ``Backup`` (pipeline) supplies the blob side: ``_add_data``,
``_add_tree``, ``_old_nodes`` and the index.
"""

from __future__ import annotations

import collections
import errno
import grp
import os
import pwd
import stat
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import msgspec

from . import formats
from .chunking import WHOLE_FILE, Chunker
from .formats import Meta, Node, Xattr
from .progress import Progress
from .selection import Selection

O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NOATIME = getattr(os, "O_NOATIME", 0)
O_PATH = getattr(os, "O_PATH", 0) or os.O_RDONLY  # a directory to look things up in, unread
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | O_CLOEXEC
PROC_FD = "/proc/self/fd"  # /proc/self/fd/<dir fd>/<name>: a short path to anything in an open directory
FS_ENCODING = sys.getfilesystemencoding()  # names as bytes: what os.fsencode does, without its call
SPECIAL = {stat.S_IFIFO: "fifo", stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}
READ_THREADS = 8           # small files read ahead in parallel (disk latency, not CPU)
# Small files are read on the main thread while reads come from the page cache (~30 us a file
# here; handing them to the pool cost more in GIL hand-offs than it saved); once most reads of
# a sample take longer than this (a cold cache, a slow disk), the rest of the backup reads ahead.
COLD_READ_S = 150e-6
COLD_READ_SAMPLES = 32
PREFETCH_FILES = 64
PREFETCH_BYTES = 16 * 1024 * 1024
CHUNK_THREADS = 2          # large files: pieces read, cut and hashed in parallel (chunking.chunks_at)

Small = tuple[bytes, "os.stat_result | None", os.stat_result, list[Xattr]]  # data, stat before, after, xattrs


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
    skipped: list[str] = field(default_factory=list)   # could not be read: "path: reason"
    torn: list[str] = field(default_factory=list)      # changed during both reads
    excluded: int = 0           # left out by the selection or as Freehold's own state


class Walker:
    index: Any
    keys: Any
    chunker: Chunker
    progress: Progress
    stats: BackupStats

    def __init__(self, selection: Selection, own: dict[tuple[int, int], str]) -> None:
        self.selection = selection
        self.own = own                 # (dev, ino) of Freehold's own directories
        self.own_met: list[str] = []   # where the walk met them
        self.tree_version = formats.FORMAT_VERSION   # 2 in a 2.0 vault: its trees hold references
        self.root_dev = 0              # --one-file-system: the device of the source being walked
        self._users: dict[int, str] = {}
        self._groups: dict[int, str] = {}
        self._no_xattrs: set[int] = set()              # devices whose file system has none
        self._links: dict[tuple[int, int], Node] = {}  # hardlinked files read in this backup
        self._euid = os.geteuid()
        self._noatime = bool(O_NOATIME)
        self._proc = os.path.isdir(PROC_FD)
        self._read_pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="freehold-read")
        self._read_ahead = False    # set once inline reads are seen to wait on the disk
        self._reads = 0             # inline reads in the current sample, and how many were slow
        self._slow_reads = 0
        self._chunk_pool = ThreadPoolExecutor(CHUNK_THREADS, thread_name_prefix="freehold-chunk")

    # Supplied by the backup (pipeline.Backup).
    def _add_data(self, data: bytes | memoryview, blob_id: bytes | None = None) -> bytes:
        raise NotImplementedError

    def _add_tree(self, tree: formats.Tree) -> bytes:
        raise NotImplementedError

    def _old_nodes(self, tree_id: bytes | None) -> dict[bytes, Node]:
        raise NotImplementedError

    def close_walk(self) -> None:
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._chunk_pool.shutdown(wait=True, cancel_futures=True)

    # ------------------------------------------------------------------ sources

    def source(self, path: str, follow: bool, old: Node | None) -> Node | None:
        """The node of one source path (absolute). ``follow``: it was named with a trailing '/',
        so a symbolic link is followed to the directory it points to (stored under its name)."""
        parent, base = os.path.split(path)
        name_b = os.fsencode(base or "root")
        if self.selection.by_name and self.selection.rejects(path):  # restic applies them to sources too
            self.stats.excluded += 1
            return None
        try:
            if not base or follow:
                st = os.stat(path)
                self.root_dev = st.st_dev
                if stat.S_ISDIR(st.st_mode):
                    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC)
                    return self._dir_node(fd, name_b, path, st, old)
            pfd = os.open(parent, O_PATH | os.O_DIRECTORY | O_CLOEXEC)
        except OSError as exc:
            self._skip(path, exc)
            return None
        try:
            st = os.lstat(base, dir_fd=pfd)
            self.root_dev = st.st_dev
            if stat.S_ISLNK(st.st_mode) and not follow:
                self.progress.warn(f"{path} is a symbolic link; stored as a link; name its target or add a "
                                   "trailing / to back up what it points to")
            return self._node(pfd, base, name_b, path, st, old)
        except OSError as exc:
            self._skip(path, exc)
            return None
        finally:
            os.close(pfd)

    def dir_of(self, path: str, name: bytes, nodes: list[Node]) -> Node:
        """A directory on the way to sources (same-name sources, design.md §12): its own
        metadata, holding only the given nodes."""
        st = os.stat(path)
        subtree = self._add_tree(formats.Tree(v=self.tree_version, nodes=sorted(nodes, key=_name)))
        self.stats.dirs += 1
        return Node(name=name, type="dir", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime_ns, subtree=subtree,
                    meta=self._meta(st, self._xattrs(path, st.st_dev)))

    # ------------------------------------------------------------------ nodes

    def _node(self, dfd: int, name: str, name_b: bytes, path: str, st: os.stat_result, old: Node | None,
              prefetched: Future[Small] | None = None) -> Node | None:
        fmt = stat.S_IFMT(st.st_mode)
        if fmt == stat.S_IFREG:
            node = self._file_node(dfd, name, name_b, path, st, old, prefetched)
            if node is not None:
                self.stats.files += 1
                self.stats.size += node.size
            return node
        if fmt == stat.S_IFDIR:
            try:
                fd = self._open(name, DIR_FLAGS, dfd, st)
            except OSError as exc:
                self._skip(path, exc)
                return None
            return self._dir_node(fd, name_b, path, st, old)
        mode, mtime = stat.S_IMODE(st.st_mode), st.st_mtime_ns
        if fmt == stat.S_IFLNK:
            try:
                target = os.readlink(name_b, dir_fd=dfd)
            except OSError as exc:
                self._skip(path, exc)
                return None
            return Node(name=name_b, type="symlink", mode=mode, mtime=mtime, target=target,
                        meta=self._meta(st, self._xattrs_at(dfd, name, path, st.st_dev)))
        kind = SPECIAL.get(fmt)
        if kind is not None:
            return Node(name=name_b, type=kind, mode=mode, mtime=mtime,
                        meta=self._meta(st, self._xattrs_at(dfd, name, path, st.st_dev), atime=st.st_atime_ns,
                                        rdev=st.st_rdev if kind != "fifo" else 0))
        if fmt == stat.S_IFSOCK:
            self.progress.warn(f"left out {path}: a socket holds no data")
            return None
        self.stats.skipped.append(f"{path}: unknown file type")
        self.progress.warn(f"skipped {path}: unknown file type")
        return None

    def _dir_node(self, fd: int, name_b: bytes, path: str, st: os.stat_result, old: Node | None) -> Node | None:
        """A directory, from its open descriptor (closed here)."""
        try:
            xattrs = self._xattrs(fd, st.st_dev)
            if self.selection.one_file_system and st.st_dev != self.root_dev:
                self.stats.excluded += 1  # a mount point: kept, empty (restic)
                subtree = self._add_tree(formats.Tree(v=self.tree_version, nodes=[]))
            else:
                subtree = self._dir(fd, path, old.subtree if old is not None and old.type == "dir" else None)
        except OSError as exc:
            self._skip(path, exc)
            return None
        finally:
            os.close(fd)
        self.stats.dirs += 1
        return Node(name=name_b, type="dir", mode=stat.S_IMODE(st.st_mode), mtime=st.st_mtime_ns,
                    subtree=subtree, meta=self._meta(st, xattrs))

    def _dir(self, fd: int, path: str, old_tree: bytes | None) -> bytes:
        old_nodes = self._old_nodes(old_tree)
        entries = self._entries(fd, path)
        # Once reads are seen to wait on the disk, small files are read ahead by a pool of threads:
        # one thread reading small files one after another waits for each (126 us a file, cold).
        todo = collections.deque(
            i for i, (name_b, _, _, st) in enumerate(entries)
            if stat.S_ISREG(st.st_mode) and st.st_size <= WHOLE_FILE and not _cached(old_nodes.get(name_b), st))
        ahead: dict[int, Future[Small]] = {}
        ahead_bytes = 0
        nodes = []
        try:
            for i, (name_b, name, child, st) in enumerate(entries):
                while self._read_ahead and todo and len(ahead) < PREFETCH_FILES and ahead_bytes < PREFETCH_BYTES:
                    j = todo.popleft()
                    if j >= i:
                        _, jname, _, jst = entries[j]
                        ahead[j] = self._read_pool.submit(self._read_small, fd, jname, jst.st_size,
                                                          self._flags(FILE_FLAGS, jst))
                        ahead_bytes += jst.st_size
                fut = ahead.pop(i, None)
                if fut is not None:
                    ahead_bytes -= st.st_size
                node = self._node(fd, name, name_b, child, st, old_nodes.get(name_b), fut)
                if node is not None:
                    nodes.append(node)
        finally:
            for fut in ahead.values():  # fd is closed next: no read of it may still be running
                if not fut.cancel():
                    fut.exception()
        return self._add_tree(formats.Tree(v=self.tree_version, nodes=nodes))

    def _entries(self, fd: int, path: str) -> list[tuple[bytes, str, str, os.stat_result]]:
        """A directory's entries that the selection keeps, sorted by name bytes, with their lstat."""
        prefix = path if path.endswith("/") else path + "/"
        with os.scandir(fd) as it:
            listed = sorted(((e.name.encode(FS_ENCODING, "surrogateescape"), e) for e in it), key=_first)
        sel = self.selection
        keep = self._tagged(fd, path, {e.name for _, e in listed}) if sel.tags else None
        by_name, own = sel.by_name, self.own
        out = []
        for name_b, e in listed:
            name = e.name
            child = prefix + name
            if (keep is not None and name not in keep) or (by_name and sel.rejects(child)):
                self.stats.excluded += 1
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except OSError as exc:
                self._skip(child, exc)
                continue
            if stat.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in own:
                    self.own_met.append(child)
                    self.stats.excluded += 1
                    continue
            elif (sel.larger_than is not None and st.st_size > sel.larger_than) or (
                    sel.one_file_system and st.st_dev != self.root_dev):
                self.stats.excluded += 1
                continue
            out.append((name_b, name, child, st))
        return out

    def _tagged(self, fd: int, path: str, names: set[str]) -> set[str] | None:
        """--exclude-if-present, --exclude-caches: None when the directory holds no (valid) tag
        file; else the names to keep (the tag file, as restic keeps it)."""
        hits = set()
        for tag, header in self.selection.tags:
            if tag not in names:
                continue
            if header:
                try:
                    tfd = os.open(tag, FILE_FLAGS, dir_fd=fd)
                    try:
                        head = os.read(tfd, len(header))
                    finally:
                        os.close(tfd)
                except OSError as exc:
                    self.progress.warn(f"could not read tag file {path}/{tag}: {exc.strerror or exc}")
                    continue
                if head != header:
                    self.progress.warn(f"{path}/{tag} does not start with the expected signature; not excluded")
                    continue
            hits.add(tag)
        if not hits:
            return None
        return hits if len(hits) == 1 else set()

    # ------------------------------------------------------------------ files

    def _file_node(self, dfd: int, name: str, name_b: bytes, path: str, st: os.stat_result, old: Node | None,
                   prefetched: Future[Small] | None = None) -> Node | None:
        mode = stat.S_IMODE(st.st_mode)
        if _cached(old, st) and old.mode == mode and all(c in self.index for c in old.content):  # type: ignore[union-attr]
            self.stats.unchanged_files += 1
            self.progress.advance(st.st_size)
            return old  # every field it records is as it was: the same node serves the new tree
        if st.st_nlink > 1:  # another name of a file read in this backup: the same node, renamed
            first = self._links.get((st.st_dev, st.st_ino))
            if first is not None and _unchanged(first, st) and first.mode == mode and not first.meta.torn:  # type: ignore[union-attr]
                self.progress.advance(st.st_size)
                return msgspec.structs.replace(first, name=name_b)
        try:
            if st.st_size <= WHOLE_FILE:
                content, size, before, torn, xattrs = self._small_content(dfd, name, st, prefetched)
            else:
                content, size, before, torn, xattrs = self._large_content(dfd, name, st)
        except OSError as exc:
            self._skip(path, exc)
            return None
        if torn:
            self.stats.torn.append(path)
            self.progress.warn(f"{path} changed while it was read, and again when read once more: stored as "
                               "read the second time, marked torn")
        user, group = self._owner(before.st_uid, before.st_gid)
        meta = Meta(uid=before.st_uid, gid=before.st_gid, user=user, group=group, atime=st.st_atime_ns,
                    nlink=before.st_nlink if before.st_nlink > 1 else 0,
                    sparse=before.st_blocks * 512 < before.st_size, torn=torn, xattrs=xattrs)
        node = Node(name=name_b, type="file", mode=stat.S_IMODE(before.st_mode), mtime=before.st_mtime_ns,
                    size=size, content=content, ino=before.st_ino, dev=before.st_dev, ctime=before.st_ctime_ns,
                    meta=meta)
        if before.st_nlink > 1:
            self._links[(before.st_dev, before.st_ino)] = node
        return node

    def _small_content(self, dfd: int, name: str, st: os.stat_result, prefetched: Future[Small] | None
                       ) -> tuple[list[bytes], int, os.stat_result, bool, list[Xattr]]:
        """A small file read whole; once more if it changed while read (``st``, its lstat, is the
        state before). Returns its chunks' ids, size, the stat its content belongs to, whether it
        changed during the second read too (torn) and its xattrs."""
        flags = self._flags(FILE_FLAGS, st)
        if prefetched is not None:
            data, _, after, xattrs = prefetched.result()
        else:
            started = time.perf_counter()
            data, _, after, xattrs = self._read_small(dfd, name, st.st_size, flags)
            self._note_read(time.perf_counter() - started)
        before, torn = st, False
        if not _same(st, after):
            data, again, after, xattrs = self._read_small(dfd, name, after.st_size, flags, stat_first=True)
            before = again or after
            torn = not _same(before, after)
        content = [self._add_data(chunk) for chunk in self.chunker.cut(data)]
        self.progress.advance(len(data))
        return content, len(data), before, torn, xattrs

    def _large_content(self, dfd: int, name: str, st: os.stat_result
                       ) -> tuple[list[bytes], int, os.stat_result, bool, list[Xattr]]:
        fd = self._open(name, FILE_FLAGS, dfd, st)
        try:
            before, torn = st, True
            for _ in range(2):
                content: list[bytes] = []
                size = 0
                pieces = self.chunker.chunks_at(lambda offset, length: os.pread(fd, length, offset),
                                                self._chunk_pool.submit, self.keys.blob_id, before.st_size)
                try:
                    for chunk, blob_id in pieces:
                        content.append(self._add_data(chunk, blob_id))
                        size += len(chunk)
                        self.progress.advance(len(chunk))
                finally:
                    pieces.close()  # waits for reads still running: only then may fd be closed
                after = os.fstat(fd)
                if _same(before, after):
                    torn = False
                    break
                before = after  # read once more, from the state it has now
            return content, size, before, torn, self._xattrs(fd, after.st_dev)
        finally:
            os.close(fd)

    def _read_small(self, dfd: int, name: str, size: int, flags: int, stat_first: bool = False) -> Small:
        """Read a whole (small) file with one or two system calls (more if it grew), its stat
        after (and before, if asked) and its xattrs. Runs on the read-ahead pool too."""
        fd = os.open(name, flags, dir_fd=dfd)
        try:
            before = os.fstat(fd) if stat_first else None
            data = os.read(fd, size + 1)
            if len(data) > size:
                if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced by a device since its lstat
                    raise OSError(errno.EINVAL, "no longer a regular file")
                parts = [data]
                while block := os.read(fd, 1 << 20):
                    parts.append(block)
                data = b"".join(parts)
            after = os.fstat(fd)
            return data, before, after, self._xattrs(fd, after.st_dev)
        finally:
            os.close(fd)

    def _note_read(self, seconds: float) -> None:
        """Switch to reading ahead on the pool when most inline reads wait on the disk (a few slow
        ones, from a page fault or a busy moment, are normal on a warm cache)."""
        self._reads += 1
        self._slow_reads += seconds > COLD_READ_S
        if self._reads >= COLD_READ_SAMPLES:
            if self._slow_reads * 2 > self._reads:
                self._read_ahead = True
            self._reads = self._slow_reads = 0

    # ------------------------------------------------------------------ metadata

    def _flags(self, flags: int, st: os.stat_result) -> int:
        """O_NOATIME where the kernel allows it (the owner, or root)."""
        if self._noatime and (self._euid == 0 or st.st_uid == self._euid):
            return flags | O_NOATIME
        return flags

    def _open(self, name: str, flags: int, dfd: int, st: os.stat_result) -> int:
        with_noatime = self._flags(flags, st)
        if with_noatime != flags:
            try:
                return os.open(name, with_noatime, dir_fd=dfd)
            except PermissionError as exc:
                if exc.errno != errno.EPERM:
                    raise
                self._noatime = False  # refused here (e.g. a user namespace): not asked again
        return os.open(name, flags, dir_fd=dfd)

    def _owner(self, uid: int, gid: int) -> tuple[str, str]:
        """The user and group names of ids (looked up once per id; "" where none maps)."""
        user = self._users.get(uid)
        if user is None:
            try:
                user = pwd.getpwuid(uid).pw_name
            except KeyError:
                user = ""
            self._users[uid] = user
        group = self._groups.get(gid)
        if group is None:
            try:
                group = grp.getgrgid(gid).gr_name
            except KeyError:
                group = ""
            self._groups[gid] = group
        return user, group

    def _meta(self, st: os.stat_result, xattrs: list[Xattr], atime: int = 0, rdev: int = 0) -> Meta:
        user, group = self._owner(st.st_uid, st.st_gid)
        return Meta(uid=st.st_uid, gid=st.st_gid, user=user, group=group, atime=atime, rdev=rdev, xattrs=xattrs)

    def _xattrs(self, target: int | str, dev: int, follow: bool = True) -> list[Xattr]:
        """Extended attributes (POSIX ACLs among them), sorted by name; one system call when
        there are none."""
        if dev in self._no_xattrs:
            return []
        try:
            names = os.listxattr(target, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                self._no_xattrs.add(dev)
            return []
        if not names:
            return []
        out = []
        for n in names:
            try:
                out.append(Xattr(n=os.fsencode(n), v=os.getxattr(target, n, follow_symlinks=follow)))
            except OSError:
                continue  # removed since listed
        out.sort(key=_xattr_name)
        return out

    def _xattrs_at(self, dfd: int, name: str, path: str, dev: int) -> list[Xattr]:
        """Of something not opened (a link, a fifo, a device), by a short path through /proc."""
        return self._xattrs(f"{PROC_FD}/{dfd}/{name}" if self._proc else path, dev, follow=False)

    def _skip(self, path: str, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        self.stats.skipped.append(f"{path}: {reason}")
        self.progress.warn(f"skipped {path}: {reason}")


def _first(item: tuple[bytes, Any]) -> bytes:
    return item[0]


def _name(node: Node) -> bytes:
    return node.name


def _xattr_name(x: Xattr) -> bytes:
    return x.n


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    """Nothing was written between two stats of one file (the kernel moves ctime on any change)."""
    return (a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns and a.st_ctime_ns == b.st_ctime_ns
            and a.st_ino == b.st_ino)


def _unchanged(old: Node | None, st: os.stat_result) -> bool:
    """The files cache: same size, mtime, ctime, inode and device as in the parent snapshot."""
    return (old is not None and old.type == "file" and old.size == st.st_size and old.mtime == st.st_mtime_ns
            and old.ctime == st.st_ctime_ns and old.ino == st.st_ino and old.dev == st.st_dev)


def _cached(old: Node | None, st: os.stat_result) -> bool:
    """The files cache serves only nodes that recorded metadata (1.2): a 1.1 parent's file is read
    again so the new snapshot records what it is."""
    return _unchanged(old, st) and old.meta is not None  # type: ignore[union-attr]
