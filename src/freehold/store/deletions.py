"""Deletion records (format 1.3, docs/design.md §10a): what is gone and what is retired.

A deletion record is a sealed, content-addressed object replicated like an index object. The
snapshots and index objects it names are gone: not loaded, not healed back, deleted wherever a
healing command finds them. The packs it names are retired: live again only while a live index
object lists them (a backup's revival), otherwise deleted by ``prune``. Records are never
deleted; a provider can withhold one (the object then looks alive there) but not forge one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import formats
from ..crypto import KIND_DELETION
from ..errors import FreeholdError
from .metadata import SealedObjects

DELETIONS_PREFIX = "deletions/"
SAFETY_WINDOW = 3600.0   # seconds: retired data a backup may still revive is kept at least this long


@dataclass
class Deletions:
    """Every deletion record loaded so far, and what they say together."""

    records: dict[str, formats.Deletion] = field(default_factory=dict)   # hex name -> record
    snapshots: set[str] = field(default_factory=set)
    index: set[str] = field(default_factory=set)
    packs: dict[bytes, str] = field(default_factory=dict)                # retired pack -> earliest time
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name_hex: str, rec: formats.Deletion) -> None:
        with self._lock:
            self.records[name_hex] = rec
            self.snapshots.update(rec.snapshots)
            self.index.update(rec.index)
            for pid in rec.packs:
                if pid not in self.packs or rec.time < self.packs[pid]:
                    self.packs[pid] = rec.time

    def gone(self, name: str) -> bool:
        """Whether a replicated object name (``snapshots/<id>``, ``index/<name>``) is deleted."""
        prefix, _, rest = name.partition("/")
        if prefix == "snapshots":
            return rest in self.snapshots
        if prefix == "index":
            return rest in self.index
        return False


def load(objects: SealedObjects, into: Deletions, warn: Callable[[str], None]) -> Deletions:
    """Read every deletion record not yet in ``into`` (from the cache when it has them)."""
    listing = objects.listing(DELETIONS_PREFIX)
    for name in listing.names:
        hexname = name[len(DELETIONS_PREFIX):]
        if hexname in into.records:
            continue
        try:
            _, plain = objects.read(DELETIONS_PREFIX, hexname, KIND_DELETION, "deletion record")
            into.add(hexname, formats.decode(plain, formats.Deletion, "deletion record"))
        except FreeholdError as exc:
            warn(f"ignored {name} (listed by {', '.join(sorted(listing.held[name]))}): {exc}")
    return into


def write(objects: SealedObjects, rec: formats.Deletion, into: Deletions, quorum: int) -> str:
    name_hex = objects.write(DELETIONS_PREFIX, KIND_DELETION, formats.encode(rec), quorum=quorum)
    into.add(name_hex, rec)
    return name_hex
