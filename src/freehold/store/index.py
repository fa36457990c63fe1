"""The in-memory index: blob id -> (pack, entry), pack id -> its record (docs/design.md §10).

The union of every live index object that verifies (1.3: objects a deletion record names are
not loaded). Several index objects may list one pack (a repair writes the repaired record anew
and retires the old object; a crash in between leaves both): their records are merged share by
share (``merge``), and every share is verified by its hash before use anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .. import formats
from ..formats import PackEntry, PackRecord, ShareRecord


@dataclass(frozen=True)
class BlobLoc:
    pack_id: bytes
    entry: PackEntry


def merge(old: PackRecord, old_time: str, new: PackRecord, new_time: str,
          good: Callable[[str], bool]) -> PackRecord:
    """One record of a pack from two: share by share, a recorded share beats a missing one; of
    two recorded on different providers, the one on a ``good`` provider (in the config, not
    draining), then the one from the later index object."""
    if old.shares == new.shares or len(old.shares) != len(new.shares):
        return old if old_time >= new_time else new
    shares: list[ShareRecord | None] = []
    for a, b in zip(old.shares, new.shares, strict=True):
        if a is None or b is None or a.p == b.p:
            shares.append(a if b is None else b if a is None else (a if old_time >= new_time else b))
            continue
        rank_a, rank_b = (good(a.p), old_time), (good(b.p), new_time)
        shares.append(a if rank_a >= rank_b else b)
    base = old if old_time >= new_time else new
    return formats.PackRecord(id=base.id, len=base.len, k=base.k, n=base.n, shares=shares, blobs=base.blobs)


class Index:
    def __init__(self) -> None:
        self._blobs: dict[bytes, BlobLoc] = {}
        self._packs: dict[bytes, PackRecord] = {}
        self._times: dict[bytes, str] = {}
        self._listed: dict[bytes, set[str]] = {}   # pack id -> names of the index objects listing it
        self.names: set[str] = set()        # hex names of the index objects loaded
        self.times: dict[str, str] = {}     # index object name -> its time ("" unknown)
        self.good: Callable[[str], bool] = lambda pid: True
        # A reference (what trees hold) -> its index id: the identity in format 1 (design §23).
        self.locate: Callable[[bytes], bytes] = _same
        self._author: dict[bytes, str] = {}     # 2.0: pack id -> who signed the index object listing it
        self._lock = threading.Lock()

    def __contains__(self, ref: bytes) -> bool:
        return self.locate(ref) in self._blobs

    def lookup(self, ref: bytes) -> BlobLoc | None:
        """Where the blob a tree reference names is read from."""
        return self._blobs.get(self.locate(ref))

    @property
    def refs_are_ids(self) -> bool:
        """Format 1: references are index ids (2.0: ``locate`` maps them)."""
        return self.locate is _same

    def has_id(self) -> Callable[[bytes], bool]:
        """The membership test of index ids, as a plain function (the backup's hot path: in
        format 1, where references are ids, it answers for references too)."""
        return self._blobs.__contains__

    def lookup_id(self, blob_id: bytes) -> BlobLoc | None:
        """Where the blob of an index id (a pack entry's ``id``) is read from."""
        return self._blobs.get(blob_id)

    def trusted(self, ref: bytes, writers: frozenset[str]) -> bool:
        """2.0's deduplication rule: a blob counts as stored for this writer only when a pack
        signed by one of ``writers`` (the owner is "") holds it (design §23)."""
        loc = self._blobs.get(self.locate(ref))
        return loc is not None and self._author.get(loc.pack_id, "") in writers

    def author(self, pack_id: bytes) -> str:
        return self._author.get(pack_id, "")

    def pack(self, pack_id: bytes) -> PackRecord:
        return self._packs[pack_id]

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._packs

    def packs(self) -> list[PackRecord]:
        with self._lock:
            return list(self._packs.values())

    def listed_by(self, pack_id: bytes) -> set[str]:
        """Names of the loaded index objects that list ``pack_id``."""
        with self._lock:
            return set(self._listed.get(pack_id, ()))

    def blob_count(self) -> int:
        return len(self._blobs)

    def unique_bytes(self) -> int:
        with self._lock:
            return sum(loc.entry.s for loc in self._blobs.values())

    def add_pack(self, rec: PackRecord, time: str = "", name: str = "", author: str = "") -> None:
        with self._lock:
            old = self._packs.get(rec.id)
            if old is not None:
                was = self._author.get(rec.id, "")
                if was == "" and author != "":  # 2.0: the owner's record of a pack wins whole ...
                    if name:
                        self._listed.setdefault(rec.id, set()).add(name)
                    return
                if was == author or author != "":  # ... and replaces a machine's (else: merged)
                    rec = merge(old, self._times.get(rec.id, ""), rec, time, self.good)
            self._packs[rec.id] = rec
            self._author[rec.id] = author
            self._times[rec.id] = max(time, self._times.get(rec.id, ""))
            if name:
                self._listed.setdefault(rec.id, set()).add(name)
            for e in rec.blobs:
                loc = self._blobs.get(e.id)
                # A blob stored twice is read from the owner's pack rather than a writer's.
                if loc is None or (author == "" and self._author.get(loc.pack_id, "") != ""):
                    self._blobs[e.id] = BlobLoc(rec.id, e)

    def add_file(self, name_hex: str, idx: formats.IndexFile, author: str = "") -> None:
        # 2.0: an owner-signed object re-lists machines' packs (after a prune or repair) under
        # their machine's name: they stay the machine's, so the owner never deduplicates on them.
        on_behalf = {pid: label for label, pids in idx.foreign.items() for pid in pids} if author == "" else {}
        for rec in idx.packs:
            self.add_pack(rec, idx.time, name_hex, on_behalf.get(rec.id, author))
        self.names.add(name_hex)
        self.times[name_hex] = idx.time

    def clear(self) -> None:
        """Forget everything loaded (after a prune or repair replaced index objects)."""
        with self._lock:
            self._blobs.clear()
            self._packs.clear()
            self._times.clear()
            self._listed.clear()
            self._author.clear()
            self.names.clear()
            self.times.clear()


def _same(ref: bytes) -> bytes:
    return ref
