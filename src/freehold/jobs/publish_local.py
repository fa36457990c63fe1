"""Publishing a local regular file: its UnixFS DAG computed from the local file while the
backup runs, and used only when it provably describes what the vault stored.

``freehold publish FILE`` backs the file up, and the record must give the CID of what the vault
holds. Reading the content back from the vault costs about half as much again as the backup, so
for a local regular file :func:`start` reads the file itself, on a thread, in 1 MiB pieces into
:class:`freehold.unixfs.FileImporter` (and into a temp CAR beside ``--car``, in the same block
order :func:`freehold.jobs.publish.build` writes), while the backup reads it too (the two reads
share the page cache). :meth:`LocalPublish.take` then returns that result only when all of
these hold, and otherwise nothing, and the caller computes the DAG from the vault as it always
did (folders, symlinks and ``SNAPSHOT:PATH`` always go that way):

1. the file's ``lstat`` before the read, the ``fstat`` of what was opened (with ``O_NOFOLLOW``)
   and its ``fstat`` and ``lstat`` after the last byte was read are identical in ``st_size``,
   ``st_mtime_ns``, ``st_ctime_ns``, ``st_ino`` and ``st_dev``, it is a regular file throughout,
   and the bytes read are exactly ``st_size``;
2. the backup's snapshot node for it is a file with that same size, mtime, ctime, inode and
   device, not torn (``node.meta.torn`` false) in a snapshot with nothing torn or skipped, and
   the vault's chunks of it add up to that size;
3. the file's mtime was at least :data:`RACY_NS` older than the clock when :func:`start` was
   called, before the backup or this read looked at it.

Why that proves the bytes hashed are the bytes stored. Writing to a file sets its mtime and
ctime to the current time (the kernel's clock, which file timestamps come from, at a granularity
of at most a tick; 2 s on FAT). By 3, any write after :func:`start` gives the file an mtime
later than the one seen, so a file whose (size, mtime, ctime, inode, device) is the same at two
moments after :func:`start` was not written between them. By 1 it was not written while it was
read here; by 2 the backup read it (its own change detection compares the stat before and after
its read, reads again when they differ, and marks the node torn when they differ again) in that
same state, or took the node from its files cache on exactly that stat. Both therefore read one
and the same content. Without 3, two writes within one timestamp tick (a file still being
written when ``publish`` starts) could leave the stat unchanged; such a file takes the vault
path. This is the assumption the backup's change detection and files cache make (an mtime
forged back with ``utime`` also moves ctime, which is compared); what it cannot see (a
filesystem that does not move mtime on a write, a clock stepped back) it does not see here
either. And nothing depends on it for safety: ``freehold gateway`` computes every record's DAG
again from the vault's content and serves nothing of a record whose root differs.

:data:`TALLY` counts which way each local regular file went (for tests and benchmarks).
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..formats import Node, Snapshot
from ..store import Operation
from ..unixfs import Block, FileImporter, Profile
from . import publish as publish_job

__all__ = ["PIECE", "RACY_NS", "TALLY", "LocalFileDag", "LocalPublish", "Tally", "after_read", "start"]

log = logging.getLogger(__name__)

PIECE = 1 << 20                 # bytes per read of the local file
RACY_NS = 2_000_000_000         # a file modified this recently (before start) takes the vault path


@dataclass
class Tally:
    local: int = 0              # DAGs taken from the local file
    vault: int = 0              # local regular files whose DAG was computed from the vault instead
    why: str = ""               # why the last one went to the vault


TALLY = Tally()


class _Changed(Exception):
    """The local file changed (or is not what was stat'ed): its DAG is not used."""


class _Cancelled(Exception):
    pass


def after_read(path: Path) -> None:
    """Called after the local file's last byte was read, before the stat that checks it did not
    change: a seam for tests (a file rewritten here must send the publish to the vault path)."""


def _ident(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class LocalFileDag:
    """The DAG of one local regular file read from the file (a :class:`publish_job.Dag`);
    raises :class:`_Changed` when the file is not, throughout, the one stat'ed as ``before``."""

    kind = "file"

    def __init__(self, path: Path, profile: Profile, before: os.stat_result, cancel: threading.Event) -> None:
        self.path = path
        self.profile = profile
        self.before = before
        self.cancel = cancel
        self.root = b""
        self.size = 0               # bytes read
        self.checked = False        # the stat after the read was compared, and equal

    def blocks(self) -> Iterator[Block]:
        fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or _ident(opened) != _ident(self.before):
                raise _Changed("it was replaced before it was opened")
            imp = FileImporter(self.profile)
            while piece := os.read(fd, PIECE):
                if self.cancel.is_set():
                    raise _Cancelled
                self.size += len(piece)
                yield from imp.update(piece)
            yield from imp.finish()
            self.root = imp.root
            after_read(self.path)
            after, named = os.fstat(fd), os.lstat(self.path)
        finally:
            os.close(fd)
        if not (stat.S_ISREG(named.st_mode) and _ident(after) == _ident(self.before) == _ident(named)):
            raise _Changed("it changed while it was read")
        if self.size != self.before.st_size:
            raise _Changed(f"{self.size} bytes were read of its {self.before.st_size}")
        self.checked = True


class LocalPublish:
    """The DAG (and CAR, NFT metadata) of a local regular file, computed on a thread started
    with the backup; :meth:`take` it after the backup, or :meth:`discard` it."""

    def __init__(self, path: Path, profile: Profile, before: os.stat_result, car: Path | None,
                 nft: tuple[str, str] | None) -> None:
        self.path = path
        self.before = before
        self.car = car
        self.nft = nft
        self.cancel = threading.Event()
        self.dag = LocalFileDag(path, profile, before, self.cancel)
        self.built: publish_job.Built | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(profile,), name="freehold-publish-local",
                                        daemon=True)
        self._thread.start()

    def _run(self, profile: Profile) -> None:
        try:
            self.built = publish_job.build_dag(self.dag, profile, car=self.car, nft=self.nft, place=False)
        except BaseException as exc:   # reported by take(): the vault path is taken instead
            self.error = exc

    def wait(self) -> None:
        self._thread.join()

    def discard(self) -> None:
        """Stop the read (if it still runs) and remove its temp CAR; idempotent."""
        self.cancel.set()
        self.wait()
        if self.built is not None:
            publish_job.discard_car(self.built.car_tmp)
            self.built = None

    def take(self, op: Operation, snap: Snapshot, node: Node,
             nft: tuple[str, str] | None = None) -> publish_job.Built | None:
        """The local result if it describes what the backup stored as ``node`` (see the module's
        docstring), its CAR still in its temp file (``Built.car_tmp``); else None (counted in
        :data:`TALLY`, its temp CAR removed)."""
        self.wait()
        why = self._refusal(op, snap, node) or ("" if nft == self.nft else "the NFT metadata differs")
        if why:
            self.discard()
            TALLY.vault += 1
            TALLY.why = why
            log.debug("publish %s: the DAG is computed from the vault: %s", self.path, why)
            return None
        built, self.built = self.built, None
        assert built is not None
        built.source = "local"
        TALLY.local += 1
        log.debug("publish %s: the DAG computed from the local file is used", self.path)
        return built

    def _refusal(self, op: Operation, snap: Snapshot, node: Node) -> str:
        if self.error is not None:
            return f"the local read failed ({self.error})" if not isinstance(self.error, _Changed) else \
                f"the local file changed: {self.error}"
        if self.built is None or not self.dag.checked:
            return "the local read did not finish"
        if snap.torn or snap.skipped:
            return "the snapshot has torn or skipped files"
        if node.type != "file" or node.meta is None or node.meta.torn:
            return "the snapshot's node is not an untorn file"
        st = self.before
        if (node.size, node.mtime, node.ctime, node.ino, node.dev) != _ident(st):
            return "the snapshot's node does not have the size, times, inode and device read here"
        if publish_job.FileRef.of(op, node).size != node.size or self.dag.size != node.size:
            return "the vault's chunks do not add up to the size read here"
        return ""


def start(path: Path, profile: Profile, *, car: Path | None = None,
          nft: tuple[str, str] | None = None) -> LocalPublish | None:
    """Start computing a local regular file's DAG; None (the vault path) for anything else, or a
    file modified less than :data:`RACY_NS` ago. Call before the backup starts."""
    now = time.time_ns()
    try:
        before = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(before.st_mode):
        return None
    if before.st_mtime_ns > now - RACY_NS:
        TALLY.vault += 1
        TALLY.why = "it was modified less than 2 s ago"
        log.debug("publish %s: the DAG is computed from the vault: %s", path, TALLY.why)
        return None
    return LocalPublish(path, profile, before, car, nft)
