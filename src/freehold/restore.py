"""The read path: snapshot trees -> blobs (fetched in coalesced, prefetched batches) -> files.

A restore plans what the selection takes from the snapshot, then prepares the target's
directories in order (each created, or, when it exists, listed: what is in the way, what is kept,
what ``--delete`` removes), writes the files (small ones in a helper process: ``filewriter``),
then symlinks, fifos, device nodes and hardlinks, and last the directories' metadata, deepest
first. Nothing in the target is followed or written through (``targetfs``, ``filewriter``). What
cannot be done for one entry (its data unreadable, the disk full, a permission) is that entry's
failure: everything else is restored, and ``RestoreStats.failed`` lists each failure.

A new directory whose parent exists is made under a temporary name (``filewriter.temp_name``)
and moved to its name when everything below it is done, or when the restore is interrupted
(unless a writer died mid-file: then the next restore removes it). Below it, files are created
under their final names at once: one directory operation a file, as before any of this, where a
file given its name only when complete costs two (20,000 small files: 12-20 % more time).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import logging
import os
import stat
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import filewriter, formats, restore_files, targetfs
from .api import OVERWRITE_MODES, RestoreOptions
from .errors import IntegrityError, ProviderError, UsageError
from .formats import Node
from .progress import NullProgress, Progress
from .restore_files import Attrs, reason
from .restore_select import Selection
from .store import Operation

log = logging.getLogger(__name__)

BATCH_BYTES = 32 * 1024 * 1024
# Plaintext bytes fetched ahead of the batch being written (at least one batch).
PREFETCH_BYTES = 32 * 1024 * 1024
# Small blobs per fetched batch. Smaller batches reach the helper sooner and leave it less to do
# after the last fetch: 20,000 files, files phase 1.27 s with 4096, 1.07 s with 1024 (4 pairs).
BATCH_BLOBS = 1024
# Restores of at least HELPER_MIN_FILES files of at most HELPER_MAX_FILE bytes create those
# files in a helper process (see filewriter, restore_files).
HELPER_MIN_FILES = 256
HELPER_MAX_FILE = 1024 * 1024
DIR_CACHE = 32              # directory descriptors kept open
# What a blob read raises when the vault cannot give that blob (NotEnoughShares among them).
READ_ERRORS = (IntegrityError, ProviderError)
BAD_PACK_MISSES = 8         # blobs of one pack that failed in a row: the rest of it is not tried
ENTRY_TYPES = ("file", "symlink", *targetfs.SPECIAL_TYPES)
_Entry = tuple[int, bytes, Node]  # (directory index, name, node)


@dataclass
class RestoreStats:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    size: int = 0
    hardlinks: int = 0         # entries restored as links to a file restored before
    specials: int = 0          # fifos and device nodes
    kept: int = 0              # existing entries left as they were (--overwrite)
    deleted: int = 0           # entries removed (--delete)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (snapshot path, reason)


class _Dir:
    """A directory of the plan: ``rel`` is its path below the target, as in the snapshot;
    ``phys`` where it is while the restore runs (below a staged directory's temporary name)."""

    __slots__ = ("chmod", "end", "failed", "first", "fresh", "gid", "listing", "name", "names", "node",
                 "parent", "phys", "private", "rel", "selected", "staged")

    def __init__(self, rel: bytes, node: Node | None, parent: int, selected: bool) -> None:
        self.rel, self.node, self.parent, self.selected = rel, node, parent, selected
        self.phys = rel
        self.name = node.name if node is not None else b""
        self.staged = b""                         # its temporary name, until it is moved into place
        self.private = False                      # made by this restore below a staged directory
        self.names: set[bytes] | None = None      # every name the snapshot holds here (--delete)
        self.first = self.end = 0                 # its entries: _entries[first:end]
        self.fresh = False                        # created by this restore: nothing else in it
        self.failed: str | None = None
        self.listing: dict[bytes, str] | None = None
        self.gid = -1                             # the group new entries get here
        self.chmod = False                        # a default ACL: modes are set, never assumed


class Restore:
    """Writes a snapshot's entries below a target directory.

    When a restore has many small files, those that lie wholly inside one fetched batch are
    created by a helper process (``filewriter``) while this one fetches and decrypts the next;
    files that span batches, and larger ones, are written here in order as their blobs arrive.
    """

    def __init__(self, op: Operation, progress: Progress | None = None) -> None:
        self.op = op
        self.progress = progress or NullProgress()
        self._file_done = getattr(self.progress, "file_done", lambda files=1: None)
        self.stats = RestoreStats()
        self.dirs: list[_Dir] = []
        self._entries: list[_Entry] = []
        self.files: list[_Entry] = []
        self._symlinks: list[_Entry] = []
        self._specials: list[_Entry] = []
        self._links: list[tuple[_Entry, int]] = []      # (entry, index in _files of its source)
        self._failed_paths: set[str] = set()
        self._replace: set[tuple[int, bytes]] = set()    # entries whose name is taken in the target
        self._staged: list[_Dir] = []                    # directories made under temporary names
        self.tainted = False                             # a writer died: a half file may exist
        self._by_phys: dict[bytes, int] | None = None
        self._warnings: dict[str, tuple[int, str]] = {}
        self._bad_packs: dict[bytes, str] = {}
        self._read_ok = False                          # some file data was read
        self._read_error: Exception | None = None       # the first read that failed
        self._root = os.geteuid() == 0
        self._euid, self._egid = os.geteuid(), os.getegid()
        self._owners = targetfs.Owners()
        self._ids: dict[tuple[str, int | None, str, int | None, int], tuple[int, int]] = {}
        self.cache: filewriter.DirCache  # the target's directories, while run() runs
        self.overwrite, self.delete = "always", False

    def run(self, snap: formats.Snapshot, target: Path, options: RestoreOptions | None = None,
            include: str | None = None) -> RestoreStats:
        opts = options or RestoreOptions()
        if include:
            opts = dataclasses.replace(opts, includes=(include, *opts.includes))
        if opts.overwrite not in OVERWRITE_MODES:
            raise UsageError(f"--overwrite must be one of {', '.join(OVERWRITE_MODES)}")
        if opts.dry_run:
            raise UsageError("restore has no dry run yet")
        self.overwrite, self.delete = opts.overwrite, opts.delete
        sel = Selection(snap, opts.includes, opts.excludes)
        self.dirs = [_Dir(b"", None, -1, sel.everything)]
        self._plan_tree(snap.tree, 0, "", sel.everything, sel)
        sel.check()
        root, self.dirs[0].fresh = targetfs.open_target(target)
        self.cache = cache = filewriter.DirCache(root, DIR_CACHE)
        try:
            self._prepare()
            self._group_links()
            self.progress.scanned(len(self.files), sum(n.size for _, _, n in self.files))
            self._restore_files()
            self._others()
            self._finish_dirs()
        except BaseException:
            # Interrupted (or failed): what is complete is moved to its names, unless a writer
            # died mid-file; then it stays staged and the next restore removes it.
            if not self.tainted:
                for d in reversed(self._staged):
                    if d.staged:
                        with contextlib.suppress(OSError):
                            self._unstage(d)
            raise
        finally:
            cache.close()
            os.close(root)
        for message, (count, path) in self._warnings.items():
            more = f" (and {count - 1} more)" if count > 1 else ""
            self.progress.warn(f"{path}{more}: {message}")
        if self._read_error is not None and not self._read_ok:
            raise self._read_error  # no data at all: the vault is unreadable, not some files
        return self.stats

    # -- the plan ----------------------------------------------------------------------------

    def _plan_tree(self, tree_id: bytes, di: int, prefix: str, selected: bool, sel: Selection) -> bool:
        """Plans a tree's entries (before its subdirectories', so a directory's files are
        consecutive); returns whether anything below was planned."""
        nodes = self.op.trees.load(tree_id).nodes
        d, entries = self.dirs[di], self._entries
        if self.delete and selected:
            d.names = {n.name for n in nodes}
        d.first = len(entries)
        subdirs: list[tuple[Node, bool, str]] = []
        for node in nodes:
            name = node.name
            if name in (b"", b".", b"..") or b"/" in name or b"\0" in name:
                raise UsageError(f"snapshot holds an unsafe file name {os.fsdecode(name)!r}; "
                                 "refusing to restore it")
            here, path = selected, ""
            if sel.active:
                path = prefix + os.fsdecode(name)
                planned, here = sel.take(path, node, selected)
                if not planned:
                    continue
            if node.type == "dir":
                subdirs.append((node, here, path))
            elif here and node.type in ENTRY_TYPES:
                entries.append((di, name, node))
        d.end = len(entries)
        found = d.end > d.first
        for node, here, path in subdirs:
            mark_d, mark_e = len(self.dirs), len(entries)
            self.dirs.append(_Dir(d.rel + b"/" + node.name if d.rel else node.name, node, di, here))
            below = node.subtree is not None and self._plan_tree(node.subtree, mark_d, path + "/", here, sel)
            if here or below:
                found = True
            else:  # only a way to paths that turned out not to be there
                del self.dirs[mark_d:], entries[mark_e:]
        return found

    def path(self, di: int, name: bytes = b"") -> str:
        rel = self.dirs[di].rel
        return os.fsdecode(rel + b"/" + name if rel and name else rel or name)

    def fail(self, path: str, reason: str) -> None:
        self.stats.failed.append((path, reason))
        self._failed_paths.add(path)

    def warn(self, path: str, messages: list[str]) -> None:
        for m in messages:
            count, first = self._warnings.get(m, (0, path))
            self._warnings[m] = (count + 1, first)

    # -- directories, and what is in the way ------------------------------------------------

    def _prepare(self) -> None:
        for di, d in enumerate(self.dirs):
            parent = self.dirs[d.parent] if di else None
            if parent is not None and parent.failed is not None:
                d.failed = ""  # reported at the parent
                continue
            try:
                if parent is not None:
                    self._make_dir(d, parent)
                fd = self.cache.get(d.phys)
                st = os.fstat(fd)
                d.gid = st.st_gid if st.st_mode & stat.S_ISGID else self._egid
                if d.fresh:
                    d.chmod = parent is not None and parent.chmod  # mkdir inherits a default ACL
                else:
                    d.chmod = targetfs.default_acl(fd)
                    d.listing = targetfs.scan(fd)
            except OSError as exc:
                d.failed = reason(exc)
                self.fail(self.path(di), f"{d.failed} (nothing in it was restored)")
                continue
            self._decide(di, d, fd)
        for d in self.dirs:
            d.listing = None

    def _make_dir(self, d: _Dir, parent: _Dir) -> None:
        """An existing directory is used as it is; a new one is made inside a private one as
        it is, else staged: made under a temporary name (the top of a new subtree), which only
        this restore writes into (files there get their final names at once: no link or
        rename a file), and moved to its name when the subtree is done (``_finish_dirs``)."""
        pfd = self.cache.get(parent.phys)
        kind = parent.listing.get(d.name) if parent.listing else None
        if kind == targetfs.DIRECTORY:
            d.phys = parent.phys + b"/" + d.name if parent.phys else d.name
            return
        if kind is not None:
            if self.overwrite == "never":
                raise OSError(errno.EEXIST, "a non-directory is in the way (kept: --overwrite never)")
            os.unlink(d.name, dir_fd=pfd)  # a symlink, file or fifo: removed, never followed
        name = d.name if parent.private else filewriter.temp_name(d.name)
        os.mkdir(name, 0o700, dir_fd=pfd)
        if name != d.name:
            d.staged = name
            self._staged.append(d)
        d.phys = parent.phys + b"/" + name if parent.phys else name
        d.fresh = d.private = True

    def _decide(self, di: int, d: _Dir, fd: int) -> None:
        """Routes the directory's entries: written, kept, or failed because of what is there."""
        listing = d.listing
        for k in range(d.first, d.end):
            entry = self._entries[k]
            node = entry[2]
            if listing and entry[1] in listing:
                try:
                    keep = self._keep(fd, entry[1], node, listing[entry[1]])
                except OSError as exc:
                    self.fail(self.path(di, entry[1]), reason(exc))
                    continue
                if keep:
                    self.stats.kept += 1
                    continue
                self._replace.add((di, entry[1]))
            kind = node.type
            (self.files if kind == "file" else self._symlinks if kind == "symlink" else self._specials).append(entry)
        if self.delete and d.selected and listing:
            for name in listing:
                if d.names is not None and name not in d.names:
                    try:
                        targetfs.remove(fd, name)
                        self.stats.deleted += 1
                    except OSError as exc:
                        self.fail(self.path(di, name), f"cannot delete it: {reason(exc)}")

    def _keep(self, fd: int, name: bytes, node: Node, kind: str) -> bool:
        """Whether the existing entry stays (--overwrite); a directory in the way of one that
        does not stay is removed when empty or with --delete, else an error."""
        mode = self.overwrite
        if mode == "never":
            return True
        if mode != "always":
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if mode == "if-newer" and node.mtime <= st.st_mtime_ns:
                return True
            if mode == "if-changed" and targetfs.unchanged(fd, name, node, st):
                return True
        if kind == targetfs.DIRECTORY:
            try:
                os.rmdir(name, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                if not self.delete:
                    raise OSError(exc.errno, "a directory is in the way (--delete replaces it)") from None
                targetfs.remove(fd, name)
                self.stats.deleted += 1
        return False

    def _group_links(self) -> None:
        """Files that were one file (hardlinks: nlink > 1, same dev and ino) are written once;
        the others become links to it."""
        first: dict[tuple[int, int], int] = {}
        files: list[_Entry] = []
        for entry in self.files:
            node = entry[2]
            if node.meta is not None and node.meta.nlink > 1 and node.ino:
                key = (node.dev, node.ino)
                if key in first:
                    self._links.append((entry, first[key]))
                    continue
                first[key] = len(files)
            files.append(entry)
        self.files = files

    # -- metadata ----------------------------------------------------------------------------

    def attrs(self, di: int, node: Node, name: bytes = b"") -> Attrs:
        """(atime, uid, gid, xattrs, filewriter flags) to give a new entry in directory di."""
        d = self.dirs[di]
        flags = filewriter.CHMOD if d.chmod else 0
        if d.private:
            flags |= filewriter.DIRECT
        elif self._replace and (di, name) in self._replace:
            flags |= filewriter.REPLACE
        m = node.meta
        if m is None:
            return 0, -1, -1, None, flags
        if m.sparse:
            flags |= filewriter.SPARSE
        if not self._root:  # not root: entries keep the restoring user's ids, without an error
            return m.atime, -1, -1, [(x.n, x.v) for x in m.xattrs] if m.xattrs else None, flags
        key = (m.user, m.uid, m.group, m.gid, d.gid)
        ids = self._ids.get(key)
        if ids is None:
            uid, gid = self._owners.uid(m.user, m.uid), self._owners.gid(m.group, m.gid)
            ids = self._ids[key] = (-1 if uid == self._euid else uid, -1 if gid == d.gid else gid)
        return m.atime, ids[0], ids[1], [(x.n, x.v) for x in m.xattrs] if m.xattrs else None, flags

    # -- files -------------------------------------------------------------------------------

    def _fetch(self, ids: list[bytes]) -> tuple[dict[bytes, bytes], dict[bytes, str]]:
        """The blobs that can be read, and why each other one cannot: after a failed batch, each
        pack is read on its own, and a failed pack blob by blob."""
        bad: dict[bytes, str] = {}
        index, reader = self.op.index, self.op.reader
        if self._bad_packs:
            wanted = []
            for b in ids:
                loc = index.lookup(b)
                if loc is not None and loc.pack_id in self._bad_packs:
                    bad[b] = self._bad_packs[loc.pack_id]
                else:
                    wanted.append(b)
            ids = wanted
            if not ids:  # all in packs already found unreadable: nothing was read, nothing is ok
                return {}, bad
        try:
            blobs = reader.read_blobs(ids)
            self._read_ok = True
            return blobs, bad
        except READ_ERRORS as exc:
            log.info("a batch of %d blobs failed (%s); reading its packs one by one", len(ids), exc)
            self._read_error = self._read_error or exc
        by_pack: dict[bytes, list[bytes]] = {}
        for b in dict.fromkeys(ids):
            loc = index.lookup(b)
            if loc is None:
                bad[b] = "its data is in no index"
            else:
                by_pack.setdefault(loc.pack_id, []).append(b)
        blobs: dict[bytes, bytes] = {}
        for pack_id, group in by_pack.items():
            try:
                blobs.update(reader.read_blobs(group))
                self._read_ok = True
                continue
            except READ_ERRORS as exc:
                why = str(exc)
            misses = 0
            for b in group:
                if misses >= BAD_PACK_MISSES:
                    bad[b] = why
                    continue
                try:
                    blobs[b] = reader.read_blob(b)
                    self._read_ok = True
                    misses = 0
                except READ_ERRORS as exc:
                    bad[b] = why = str(exc)
                    misses += 1
            if misses >= BAD_PACK_MISSES:
                self._bad_packs[pack_id] = why
        return blobs, bad

    def _batches(self) -> Iterator[tuple[list[tuple[int, bytes]], int]]:
        """(file index, blob id) entries in restore order, in batches of at most BATCH_BYTES
        (plaintext) or BATCH_BLOBS blobs, each with its plaintext size."""
        batch: list[tuple[int, bytes]] = []
        size = 0
        for i, (_, _, node) in enumerate(self.files):
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
        small = sum(1 for _, _, n in self.files if n.size <= HELPER_MAX_FILE)
        sink = restore_files.helper_sink(self, self.cache.root) if small >= HELPER_MIN_FILES else None
        try:
            self._write_files(sink or restore_files.InlineSink(self))
        except BaseException:
            if sink is not None:
                sink.abort()
            raise

    def _write_files(self, sink: restore_files.Sink) -> None:
        """Small files that lie wholly in one fetched batch go to ``sink``; files that span
        batches (and larger ones) are written here, in order, as their blobs arrive."""
        files = self.files
        for di, name, node in files:
            if not node.content:
                sink.create(di, name, node, self.attrs(di, node, name), [])
        span = restore_files.Spanning(self)
        failed: set[int] = set()
        with ThreadPoolExecutor(1, thread_name_prefix="freehold-prefetch") as pre:
            batches = self._batches()
            ahead: collections.deque[tuple[list[tuple[int, bytes]], int,
                                           Future[tuple[dict[bytes, bytes], dict[bytes, str]]]]]
            ahead = collections.deque()
            upcoming = next(batches, None)

            def top_up() -> None:
                """Fetch ahead up to PREFETCH_BYTES (at least one batch): with only the next
                batch fetched, a wait on the helper's pipe left the fetching thread idle."""
                nonlocal upcoming
                while upcoming is not None and (
                        not ahead or sum(n for _, n, _ in ahead) + upcoming[1] <= PREFETCH_BYTES):
                    batch, n = upcoming
                    ahead.append((batch, n, pre.submit(self._fetch, [b for _, b in batch])))
                    upcoming = next(batches, None)

            try:
                top_up()
                while ahead:
                    batch, _, fetching = ahead.popleft()
                    blobs, bad = fetching.result()
                    top_up()
                    for i, ids in _by_file(batch):
                        if i in failed:
                            continue
                        di, name, node = files[i]
                        lost = next((b for b in ids if b in bad), None) if bad else None
                        if lost is not None:
                            if span.index == i:
                                span.discard()
                            failed.add(i)
                            self.fail(self.path(di, name), f"cannot read its data: {bad[lost]}")
                            continue
                        if span.index != i and len(ids) == len(node.content) and node.size <= HELPER_MAX_FILE:
                            sink.create(di, name, node, self.attrs(di, node, name), [blobs[b] for b in ids])
                            self.progress.advance(node.size)
                            continue
                        if not span.write(i, [blobs[b] for b in ids]):
                            failed.add(i)
                sink.close()
            finally:
                span.discard()

    def count(self, node: Node) -> None:
        self.stats.files += 1
        self.stats.size += node.size

    def done(self, files: int) -> None:
        if files:
            self._file_done(files)

    # -- the rest ------------------------------------------------------------------------------

    def _others(self) -> None:
        """Symlinks, fifos and device nodes, then hardlinks (their files are all written)."""
        cache = self.cache
        for di, name, node in self._symlinks:
            try:
                atime, uid, gid, xattrs, _ = self.attrs(di, node)
                self.warn(self.path(di, name), targetfs.make_symlink(
                    cache.get(self.dirs[di].phys), name, node.target or b"", node.mtime, atime, uid, gid, xattrs))
                self.stats.symlinks += 1
            except OSError as exc:
                self.fail(self.path(di, name), reason(exc))
        for di, name, node in self._specials:
            try:
                if node.type != "fifo" and not self._root:
                    raise OSError(errno.EPERM, "device nodes need root")
                atime, uid, gid, xattrs, _ = self.attrs(di, node)
                self.warn(self.path(di, name), targetfs.make_special(
                    cache.get(self.dirs[di].phys), name, node.type, node.mode, node.meta.rdev if node.meta else 0,
                    node.mtime, atime, uid, gid, xattrs))
                self.stats.specials += 1
            except OSError as exc:
                self.fail(self.path(di, name), reason(exc))
        for (di, name, _), src in self._links:
            sdi, sname, _ = self.files[src]
            source = self.path(sdi, sname)
            if source in self._failed_paths:
                self.fail(self.path(di, name), f"a hardlink of {source}, which was not restored")
                continue
            try:
                sfd = os.dup(cache.get(self.dirs[sdi].phys))
                try:
                    targetfs.make_link(sfd, sname, cache.get(self.dirs[di].phys), name)
                finally:
                    os.close(sfd)
                self.stats.hardlinks += 1
            except OSError as exc:
                self.fail(self.path(di, name), reason(exc))

    def _finish_dirs(self) -> None:
        """Directory metadata last, deepest first, so read-only directories could be filled;
        a staged directory is moved to its name once it is done (its parent comes later)."""
        for d in reversed(self.dirs):
            if d.failed is not None or d.node is None:
                continue
            path = os.fsdecode(d.rel)
            try:
                atime, uid, gid, xattrs, _ = self.attrs(d.parent, d.node)
                self.warn(path, targetfs.finish_dir(self.cache.get(d.phys), d.node.mode, d.node.mtime,
                                                     atime, uid, gid, xattrs))
                self.stats.dirs += 1
            except OSError as exc:
                self.fail(path, reason(exc))
            if d.staged:
                self._unstage(d)

    def _unstage(self, d: _Dir) -> None:
        """Moves a staged directory to its name (what appeared there since is replaced only if
        it is an empty directory, as rename does)."""
        try:
            pfd = self.cache.get(self.dirs[d.parent].phys)
            os.rename(d.staged, d.name, src_dir_fd=pfd, dst_dir_fd=pfd)
        except OSError as exc:
            self.fail(os.fsdecode(d.rel), f"cannot move it to its name ({reason(exc)}); it is restored as "
                                          f"{self.path(d.parent, d.staged)}")
        self.cache.forget(d.phys)
        d.staged = b""

    def shown(self, phys: str) -> str:
        """The snapshot path of an entry given by where it is while the restore runs."""
        if not self._staged:
            return phys
        if self._by_phys is None:
            self._by_phys = {d.phys: di for di, d in enumerate(self.dirs)}
        where, _, name = os.fsencode(phys).rpartition(b"/")
        di = self._by_phys.get(where)
        return phys if di is None else self.path(di, name)


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
