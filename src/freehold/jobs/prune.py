"""``prune``: reclaim the space of forgotten snapshots and of crashed backups (design §15a).

Order (restic's, with Kopia's time floor where a lock cannot vouch for a running writer):
1. the exclusive lock; the local clock checked against the providers';
2. the live index and every live snapshot; refused when a snapshot needs a blob that is in no
   index or in a pack with fewer than k shares present (no collection while data is missing);
3. the used blobs of packs whose unused part is above ``max_unused`` copied into new packs;
4. new index objects listing every kept pack, then a deletion record retiring the old index
   objects and the dropped packs, then the old index objects deleted;
5. shares of retired packs that no live index lists deleted: at once when no backup holds a
   lock (a backup takes its lock before it reads the index, so none can have read the old
   one), else once their retirement is older than the safety window. Share objects of packs in
   no index (a crashed backup's, or a running one's not yet indexed) are retired first and
   deleted by a prune after the window.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from .. import formats
from ..api import PruneOptions, PruneReport
from ..chunking import Compressor
from ..errors import ConflictError, FreeholdError, IntegrityError
from ..formats import BLOB_DATA, BLOB_TREE, PackEntry, PackRecord
from ..store import Operation
from ..store.clock import age_seconds
from ..store.locks import clock_skew
from ..store.packs import close_pack, share_name
from . import health

MAX_SKEW = 300.0          # seconds between this machine's clock and a provider's beyond which prune refuses
ORPHANS = "prune-orphans"  # reason of the records retiring share objects that were in no index
REPACK_BATCH = 256         # blobs read at once while repacking ...
REPACK_BYTES = 32 << 20    # ... and at most this many bytes of them (peak memory)


class Prune:
    def __init__(self, op: Operation, options: PruneOptions, progress: Callable[[str, int, int], None] | None = None
                 ) -> None:
        self.op = op
        self.opt = options
        self.progress = progress or (lambda stage, done, total: None)
        self.host = options.host or socket.gethostname()
        self.report = PruneReport(dry_run=options.dry_run)
        self._refs: dict[bytes, bytes] = {}   # index id -> reference of every used blob

    def run(self) -> PruneReport:
        started = time.monotonic()
        held = None if self.opt.dry_run else self.op.locks.acquire("prune", exclusive=True)
        try:
            self._run()
        finally:
            if held is not None:
                held.release()
        self.report.seconds = time.monotonic() - started
        self.report.warnings = list(self.op.session.warnings)
        return self.report

    # ------------------------------------------------------------------ the steps

    def _run(self) -> None:
        op, r = self.op, self.report
        skew, who = clock_skew(op.replicas)
        if abs(skew) > MAX_SKEW:
            raise ConflictError(f"this machine's clock is {skew:+.0f} s off provider {who}'s; prune deletes by "
                                "age and refuses until the clock is right")
        op.load_index()
        deletions = op.load_deletions()
        snaps = op.snapshots()
        r.snapshots = len(snaps)
        used = self._used_blobs(snaps)
        listings, down = health.list_data(op)
        for pid, exc in sorted(down.items()):
            op.session.warn(f"provider {pid} unreachable: {exc}; its shares are not pruned this time")
        present = _present(listings)
        packs = op.index.packs()
        r.packs = len(packs)
        by_id = {p.id: p for p in packs}
        needed = {loc.pack_id for b in used if (loc := op.index.lookup(b)) is not None}
        short = [p for p in needed if _healthy(by_id[p], listings) < by_id[p].k]
        if short:
            raise IntegrityError(f"{len(short)} packs that snapshots need have fewer than k shares on the reachable "
                                 f"providers (e.g. {short[0].hex()[:12]}); run 'freehold repair' (or bring the "
                                 "providers back) before pruning")
        young = self._young_packs()
        drop: list[PackRecord] = []
        keep: list[PackRecord] = []
        candidates: list[tuple[float, int, PackRecord]] = []   # (unused fraction, unused bytes, pack)
        # The blobs each pack is the index's copy of (a blob stored twice counts in one pack only).
        # Trees hold references, pack entries index ids (the same bytes in format 1; design §23).
        self._refs = {op.store.keys.locate(ref): ref for ref in used}
        homes = {rec.id: [e for e in rec.blobs if e.id in self._refs and _home(op, e.id) == rec.id]
                 for rec in packs}
        # Unused: blob bytes no snapshot needs. A pack's padding and trailer are not unused: every
        # pack has them, a repacked one too (counting them made small packs be repacked forever).
        unused_of = {rec.id: max(0, sum(e.l for e in rec.blobs) - sum(e.l for e in homes[rec.id])) for rec in packs}
        for rec in packs:
            used_here = sum(e.l for e in homes[rec.id])
            r.used_bytes += sum(e.s for e in homes[rec.id])
            unused = unused_of[rec.id]
            r.unused_bytes += unused
            if rec.id in young:
                keep.append(rec)
            elif used_here == 0:
                drop.append(rec)
            elif unused / max(1, rec.len) > self.opt.max_unused:
                candidates.append((unused / max(1, rec.len), unused, rec))
            else:
                keep.append(rec)
        # As restic's --max-unused: of the packs above the threshold, the emptiest are rewritten
        # until what stays unused is at most that share of what stays stored.
        remaining = sum(p.len for p in keep) + sum(c[2].len for c in candidates)
        unused_left = sum(c[1] for c in candidates) + sum(unused_of[p.id] for p in keep)
        repack: list[PackRecord] = []
        for _, unused, rec in sorted(candidates, key=lambda c: (-c[0], c[2].id)):
            if unused_left <= self.opt.max_unused * remaining:
                keep.append(rec)
                continue
            repack.append(rec)
            unused_left -= unused
            remaining -= unused
        r.kept, r.repacked, r.dropped = len(keep), len(repack), len(drop)
        indexed = set(by_id) | set(deletions.packs)
        orphans = sorted(p for p in present if p not in indexed)
        r.orphans = len(orphans)
        if self.opt.dry_run:
            return
        new = self._repack([(e, rec.id) for rec in repack for e in homes[rec.id]]) if repack else []
        r.new_packs = len(new)
        old_names = set(op.index.names)
        if drop or repack or len(old_names) > 16:  # many small checkpoints are merged too
            r.index_objects = len(old_names)
            op.replace_index(old_names, keep + new, retire=[p.id for p in drop + repack], reason="prune",
                             host=self.host)
        if orphans:
            op.replace_index(set(), [], retire=orphans, reason=ORPHANS, host=self.host)
        self._delete_retired(listings)

    def _used_blobs(self, snaps: list[tuple[str, formats.Snapshot]]) -> set[bytes]:
        used: set[bytes] = set()
        seen: set[bytes] = set()
        for i, (sid, snap) in enumerate(snaps):
            self.progress("snapshots", i, len(snaps))
            try:
                used |= self.op.trees.blob_ids(snap.tree, seen)
            except FreeholdError as exc:
                raise IntegrityError(f"snapshot {sid[:12]} cannot be read ({exc}); run 'freehold check' and "
                                     "'freehold repair' before pruning") from None
        missing = [b for b in used if b not in self.op.index]
        if missing:
            raise IntegrityError(f"{len(missing)} blobs that snapshots need are in no index (e.g. "
                                 f"{missing[0].hex()[:12]}); run 'freehold repair' before pruning")
        return used

    def _young_packs(self) -> set[bytes]:
        """Packs of index objects written since the oldest live backup lock was taken: a running
        backup's checkpoints, which no snapshot names yet. (A backup whose lock is lost is
        protected by its own check before its snapshot: it fails rather than name deleted data.)"""
        now = datetime.now(UTC)
        backups = [i for i in self.op.locks.others(None) if not i.lock.exclusive]
        if not backups:
            return set()
        floor = max(age_seconds(i.lock.time, now) for i in backups) + self.opt.clock_slack
        fresh = {name for name, t in self.op.index.times.items() if t and age_seconds(t, now) < floor}
        if not fresh:
            return set()
        return {rec.id for rec in self.op.index.packs() if self.op.index.listed_by(rec.id) & fresh}

    # ------------------------------------------------------------------ repacking

    def _repack(self, wanted: list[tuple[PackEntry, bytes]]) -> list[PackRecord]:
        """The used blobs of the packs being rewritten (entry, pack), copied into new packs."""
        op = self.op
        out: list[PackRecord] = []
        streams = {BLOB_DATA: _Stream(self, out), BLOB_TREE: _Stream(self, out)}
        compressor = Compressor()
        for at, batch in _batches(wanted):
            self.progress("repack", at, len(wanted))
            refs = [self._refs[e.id] for e, _ in batch]
            # 2.0: what moves from a machine's pack into the owner's new one is verified first (the
            # reference of its plaintext), never copied on authentication alone: a machine knows
            # the keys of what it wrote, and the owner trusts its own packs (design §23).
            mine = [r for (_, pid), r in zip(batch, refs, strict=True) if not op.index.author(pid)]
            theirs = [r for (_, pid), r in zip(batch, refs, strict=True) if op.index.author(pid)]
            blobs = op.reader.read_sealed(mine) if mine else {}
            if theirs:
                try:
                    blobs.update({r: (False, data) for r, data in op.reader.read_blobs(theirs).items()})
                except IntegrityError as exc:
                    raise IntegrityError(f"a machine's pack holds a blob that is not what its reference names ({exc}); "
                                         "nothing was deleted: forget that machine's snapshots that use it (see "
                                         "'freehold check --read-data'), then prune again") from None
            for e, _ in batch:
                ref = self._refs[e.id]
                sealed, data = blobs[ref]
                if sealed:  # authenticated: copied as it is (same key, nonce and bytes: nothing re-encrypted)
                    streams[e.t].add(e.id, e.t, bytes(data), e.s)
                    continue
                encoding, body = compressor.encode(data) if e.t == BLOB_DATA else (formats.ENC_NONE, data)
                streams[e.t].add(e.id, e.t, op.codec.seal(ref, e.t, body, encoding), len(data))
        for s in streams.values():
            s.flush()
        return out

    # ------------------------------------------------------------------ deleting data

    def _delete_retired(self, listings: dict[str, dict[str, int]]) -> None:
        """Delete the shares of retired packs that no live index lists, when it is safe now."""
        op, r = self.op, self.report
        deletions = op.load_deletions(fresh=True)
        op.load_index()  # a backup may have revived a pack since (design §15a)
        orphan_since: dict[bytes, str] = {}
        for rec in deletions.records.values():
            if rec.reason == ORPHANS:
                for p in rec.packs:
                    orphan_since[p] = min(rec.time, orphan_since.get(p, rec.time))
        backups = [i for i in op.locks.others(None) if not i.lock.exclusive]
        now = datetime.now(UTC)
        by_pack: dict[bytes, list[tuple[str, str, int]]] = {}
        for pid, names in listings.items():
            for name, size in names.items():
                parsed = health.parse_share_name(name)
                if parsed is not None:
                    by_pack.setdefault(parsed[0], []).append((pid, name, size))
        for pack, where in by_pack.items():
            since = deletions.packs.get(pack)
            if since is None or op.index.has_pack(pack):
                continue  # not retired, or live again
            age = age_seconds(since, now)
            orphan = pack in orphan_since and age_seconds(orphan_since[pack], now) < self.opt.safety_window
            if orphan or (backups and age < self.opt.safety_window):
                r.deferred_packs += 1
                r.deferred_bytes += sum(z for _, _, z in where)
                continue
            gone = 0
            for pid, name, size in where:
                try:
                    op.store.providers[pid].delete(name)
                except FreeholdError as exc:
                    op.session.warn(f"provider {pid}: cannot delete {name}: {exc}")
                    continue
                gone += 1
                r.deleted_objects += 1
                r.freed_bytes += size
            r.deleted_packs += gone > 0


class _Stream:
    """Blobs of one type gathered into packs of the vault's pack size, written as they fill."""

    def __init__(self, job: Prune, out: list[PackRecord]) -> None:
        self.job = job
        self.out = out
        self.parts: list[bytes | bytearray] = []
        self.entries: list[PackEntry] = []
        self.size = 0

    def add(self, blob_id: bytes, t: int, env: bytes | bytearray, size: int) -> None:
        self.entries.append(PackEntry(id=blob_id, t=t, o=self.size, l=len(env), s=size))
        self.parts.append(env)
        self.size += len(env)
        if self.size >= self.job.op.config.pack_size:
            self.flush()

    def flush(self) -> None:
        if not self.entries:
            return
        op = self.job.op
        close_pack(op.store.keys, self.parts, self.entries)
        rec = op.packs.write(self.parts, self.entries)
        self.job.report.written_bytes += sum(s.z for s in rec.shares if s is not None)
        self.out.append(rec)
        self.parts, self.entries, self.size = [], [], 0


def _batches(wanted: list[tuple[PackEntry, bytes]]) -> Iterator[tuple[int, list[tuple[PackEntry, bytes]]]]:
    """(position, batch) of at most REPACK_BATCH blobs and REPACK_BYTES bytes each."""
    start, size = 0, 0
    for i, (e, _) in enumerate(wanted):
        if i > start and (i - start >= REPACK_BATCH or size + e.l > REPACK_BYTES):
            yield start, wanted[start:i]
            start, size = i, 0
        size += e.l
    if start < len(wanted):
        yield start, wanted[start:]


def _home(op: Operation, blob_id: bytes) -> bytes | None:
    """The pack the index reads a blob (of this index id) from (a blob stored twice counts in one
    pack only)."""
    loc = op.index.lookup_id(blob_id)
    return None if loc is None else loc.pack_id


def _healthy(rec: PackRecord, listings: dict[str, dict[str, int]]) -> int:
    """Recorded shares of a pack that their provider lists with the recorded size."""
    return sum(1 for i, s in enumerate(rec.shares)
               if s is not None and listings.get(s.p, {}).get(share_name(rec.id, i)) == s.z)


def _present(listings: dict[str, dict[str, int]]) -> dict[bytes, int]:
    """Pack id -> how many share objects of it the reachable providers list."""
    out: dict[bytes, int] = {}
    for names in listings.values():
        for name in names:
            parsed = health.parse_share_name(name)
            if parsed is not None:
                out[parsed[0]] = out.get(parsed[0], 0) + 1
    return out
