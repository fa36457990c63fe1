"""The in-memory index: blob id -> (pack, entry), pack id -> its record (docs/design.md §10).

The union of every index object that verifies. Records hold no references to each other, so a
later record for the same pack (after a repair) replaces the earlier one for every blob in it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from .. import formats
from ..formats import PackEntry, PackRecord


@dataclass(frozen=True)
class BlobLoc:
    pack_id: bytes
    entry: PackEntry


class Index:
    def __init__(self) -> None:
        self._blobs: dict[bytes, BlobLoc] = {}
        self._packs: dict[bytes, PackRecord] = {}
        self.names: set[str] = set()        # hex names of the index objects loaded
        self._lock = threading.Lock()

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def lookup(self, blob_id: bytes) -> BlobLoc | None:
        return self._blobs.get(blob_id)

    def pack(self, pack_id: bytes) -> PackRecord:
        return self._packs[pack_id]

    def packs(self) -> list[PackRecord]:
        with self._lock:
            return list(self._packs.values())

    def blob_count(self) -> int:
        return len(self._blobs)

    def unique_bytes(self) -> int:
        with self._lock:
            return sum(loc.entry.s for loc in self._blobs.values())

    def add_pack(self, rec: PackRecord) -> None:
        with self._lock:
            self._packs[rec.id] = rec
            for e in rec.blobs:
                self._blobs.setdefault(e.id, BlobLoc(rec.id, e))

    def add_file(self, name_hex: str, idx: formats.IndexFile) -> None:
        for rec in idx.packs:
            self.add_pack(rec)
        self.names.add(name_hex)
