"""``repair``: rebuild what the health survey finds damaged, move shares off draining providers,
and index packs that no index lists, from their trailers (design §15b).

Order, for every damaged pack: read k shares (hash-verified against the index; from providers
that are not being drained first), compute only the shares to be written (ISA-L, from the k read:
the pack is never decoded whole nor encoded again), write each missing, damaged or misplaced share
(where it was when its provider is still fit, else on a provider the policy ranks next), check its
size by a HEAD; then, every ``COMMIT_PACKS`` packs, ``replace_index`` writes the index objects
that listed the changed packs anew (every record they held, the changed ones updated) and retires
the old ones; only then are the copies that moved deleted. A crash at any point leaves every live
index record pointing at shares that exist: new shares are strays until an index names them, and
old ones are deleted only once no live index does. A rerun does what is left.

Packs go through a short pipeline: the k shares of up to ``READ_AHEAD`` packs are read at once
(in parallel, each hashed in the reading thread), and the rebuilt shares of up to
``WRITE_BEHIND`` packs are written while the next ones are read. Every decision (which shares,
where, what the index records, the report) is taken in the calling thread, pack after pack in
survey order; a pack is queued for the index only once all its writes have ended.
"""

from __future__ import annotations

import itertools
import socket
from collections import deque
from collections.abc import Callable
from concurrent.futures import wait
from dataclasses import dataclass

import blake3

from .. import erasure, formats, placement
from ..api import PACK_HEALTHY, PACK_LOST, PACK_UNAVAILABLE, SHARE_GOOD, SHARE_UNREACHABLE, RepairReport
from ..crypto import KIND_INDEX
from ..errors import FreeholdError, IntegrityError, ObjectNotFound, ProviderError
from ..formats import SHARE_HEADER_LEN, PackRecord, ProviderEntry, ShareHeader, ShareRecord
from ..progress import NullProgress, Progress
from ..store import Operation
from ..store.metadata import INDEX_PREFIX, MARKER_PREFIX
from ..store.packs import ShareBuffers, share_name
from . import health
from .rebuild import (
    Fix,
    Job,
    choose_targets,
    decode_pack,
    fetch_share,
    open_trailer,
    recorded_share,
    share_objects,
    store_share,
)

COMMIT_PACKS = 64                   # changed packs recorded by one index replacement
COMMIT_BYTES = 512 * 1024 * 1024    # ... or this many bytes of shares written since the last one
MAX_DECODE_TRIES = 64               # combinations of unverified shares tried for one pack
READ_AHEAD = 3                      # packs whose k shares are being read at once
WRITE_BEHIND = 2                    # packs whose rebuilt shares are still being written


@dataclass(frozen=True)
class RepairOptions:
    dry_run: bool = False
    read_data: bool = False         # hash every share first (finds silent damage)
    subset: str | None = None       # ... or those of a subset of the packs (as check)
    host: str = ""


class Repair:
    def __init__(self, op: Operation, options: RepairOptions, progress: Progress | None = None,
                 heal: Callable[[], int] | None = None) -> None:
        self.op = op
        self.heal = heal                  # heals metadata replicas (check's healing), under the lock
        self.opt = options
        self.progress = progress or NullProgress()
        self.report = RepairReport(dry_run=options.dry_run)
        self.host = options.host or socket.gethostname()
        self.cfg = op.store.config
        self.entries: dict[str, ProviderEntry] = {p.id: p for p in self.cfg.providers}
        self.down: set[str] = set()
        self.pending: list[Fix] = []
        self.pending_bytes = 0
        self.buffers = ShareBuffers(0, 0)

    def run(self) -> RepairReport:
        if self.opt.dry_run:
            return self._run()
        with self.op.locks.acquire("repair", exclusive=True):
            return self._run()

    def _run(self) -> RepairReport:
        op, r = self.op, self.report
        if self.heal is not None:
            r.replicas_healed = self.heal()
        r.replicas_healed += self._markers()
        op.load_index()
        found = health.survey(op, health.select(self.opt.read_data, self.opt.subset), self.progress.advance)
        r.bytes_read += found.bytes_read
        self.down = set(found.unreachable) | op.session.down
        r.packs = len(found.packs)
        todo = [v for v in found.packs if v.state != PACK_HEALTHY or v.strays]
        self.progress.scanned(len(todo) + len(found.orphans), sum(v.rec.len for v in todo))
        biggest = max((erasure.stripe_size(v.rec.len, v.rec.k) for v in todo), default=0)
        self.buffers = ShareBuffers((WRITE_BEHIND + 1) * max(1, self.cfg.n - self.cfg.k), SHARE_HEADER_LEN + biggest)
        self._live_packs(todo)
        self._commit()
        for pack_id, held in sorted(found.orphans.items()):
            try:
                fix = self._orphan(pack_id, held)
            except FreeholdError as exc:
                r.actions.append(f"pack {pack_id.hex()[:12]} (in no index): not indexed: {exc}")
                continue
            if fix is not None:
                r.packs_indexed += 1
                self._queue(fix)
        self._commit()
        self.buffers.clear()
        return r

    # ------------------------------------------------------------------ identity markers

    def _markers(self) -> int:
        """Write back each provider's identity marker that is missing on it (an emptied provider:
        design §13d), an empty object on that provider only, as ``assembly.place_markers`` does;
        not when another provider holds it (the same storage twice: ``check`` reports that)."""
        op, written = self.op, 0
        for e in self.cfg.providers:
            if not e.marker or e.id not in op.store.providers or e.id in op.session.down:
                continue
            name = MARKER_PREFIX + e.marker
            got = op.replicas.gather(lambda p, name=name: p.head(name), enough=len(op.store.providers))
            if e.id not in got or got[e.id] is not None:  # present, or not known to be missing
                continue
            if any(pid != e.id and size is not None and not isinstance(size, FreeholdError)
                   for pid, size in got.items()):
                continue
            if self.opt.dry_run:
                self.report.actions.append(f"would write the identity marker {name} on {e.id}")
                continue
            try:
                op.store.providers[e.id].put(name, b"")
            except ProviderError as exc:
                op.session.warn(f"provider {e.id}: cannot write its identity marker {name}: {exc}")
                continue
            self.report.actions.append(f"wrote the identity marker {name} on {e.id}")
            written += 1
        return written

    # ------------------------------------------------------------------ live packs

    def _live_packs(self, todo: list[health.PackView]) -> None:
        """Every pack of ``todo``, in order, through the read / rebuild / write pipeline."""
        r = self.report
        reading: deque[Job] = deque()
        writing: deque[Job] = deque()
        try:
            for view in todo:
                if view.state == PACK_UNAVAILABLE:
                    r.unrepaired.append(view.rec.id.hex())
                    r.actions.append(f"pack {view.rec.id.hex()[:12]}: fewer than k shares reachable now; left as it is")
                    continue
                if view.state == PACK_LOST and self.opt.dry_run:
                    r.lost.append(view.rec.id.hex())
                    continue
                while len(reading) >= READ_AHEAD:
                    self._advance(reading, writing)
                try:
                    got = self._plan(view)
                except FreeholdError as exc:
                    self._not_repaired(view, exc)
                    self.progress.advance(view.rec.len)
                    continue
                if isinstance(got, Fix):
                    self.progress.advance(view.rec.len)
                    self._queue(got)
                else:
                    reading.append(got)
            while reading:
                self._advance(reading, writing)
            while writing:
                self._finish(writing.popleft())
        finally:  # on an unexpected error: no read or write of this repair outlives it
            wait([f for job in (*reading, *writing) for f in job.futures()])

    def _advance(self, reading: deque[Job], writing: deque[Job]) -> None:
        """The oldest pack being read: rebuild its shares and start writing them."""
        job = reading.popleft()
        try:
            self._build(job)
        except FreeholdError as exc:
            wait(job.futures())
            self._release(job)
            self._not_repaired(job.view, exc)
            self.progress.advance(job.view.rec.len)
            return
        except BaseException:
            wait(job.futures())
            raise
        writing.append(job)
        while len(writing) > WRITE_BEHIND:
            self._finish(writing.popleft())

    def _finish(self, job: Job) -> None:
        try:
            fix = self._settle(job)
        except FreeholdError as exc:
            self._not_repaired(job.view, exc)
            return
        finally:
            wait(job.futures())
            self._release(job)
            self.progress.advance(job.view.rec.len)
        self._queue(fix)

    def _not_repaired(self, view: health.PackView, exc: FreeholdError) -> None:
        (self.report.lost if view.state == PACK_LOST else self.report.unrepaired).append(view.rec.id.hex())
        self.report.actions.append(f"pack {view.rec.id.hex()[:12]}: not repaired: {exc}")

    def _plan(self, view: health.PackView) -> Fix | Job:
        """What to do with one pack: a Fix when nothing needs to be read, else a Job whose first
        k reads are under way."""
        rec = view.rec
        # A share on a provider that did not answer is kept where it is (a provider down for a
        # while is not drained); the pack is repaired as far as it can be and stays at risk.
        bad = {s.index for s in view.shares if s.state not in (SHARE_GOOD, SHARE_UNREACHABLE)}
        keep = self._keepers(view, bad)
        if len(keep) == rec.n and not view.misplaced and not bad:
            if view.unreachable:  # nothing to do until its provider answers again
                self.report.unrepaired.append(rec.id.hex())
                return Fix(rec, False, healthy=False)
            if self.opt.dry_run:
                self.report.actions += [f"pack {rec.id.hex()[:12]}: would delete the stray copy of share {i} on {pid}"
                                        for pid, i in view.strays]
            return Fix(rec, False, delete=list(view.strays))   # only stray copies to delete
        if self.opt.dry_run:
            targets = self._targets(rec, keep, view)
            for i, pid in sorted(targets.items()):
                old = rec.shares[i].p if rec.shares[i] is not None else ""  # type: ignore[union-attr]
                what = f"move share {i} from {old} to {pid}" if old and old != pid else f"rebuild share {i} on {pid}"
                self.report.actions.append(f"pack {rec.id.hex()[:12]}: would {what}")
            self.report.packs_repaired += 1
            return Fix(rec, False, healthy=False)
        # Copies to read: good shares on providers not being drained, then drained ones, then strays.
        good = [s for s in view.shares if s.state == SHARE_GOOD]
        job = Job(view, keep)
        job.left += [(s.index, s.provider) for s in good if not self.entries[s.provider].draining]
        job.left += [(s.index, s.provider) for s in good if self.entries[s.provider].draining]
        job.left += [(i, pid) for pid, i in view.strays if pid not in self.down]
        self._read_more(job)
        return job

    def _keepers(self, view: health.PackView, bad: set[int]) -> dict[int, str]:
        """Good shares on providers fit to keep them: in the config, not draining, allowed."""
        keep = {}
        for s in view.shares:
            e = self.entries.get(s.provider)
            if s.index not in bad and e is not None and not e.draining and placement.allowed(e, self.cfg.policy):
                keep[s.index] = s.provider
        return keep

    # ------------------------------------------------------------------ reading

    def _read_more(self, job: Job) -> None:
        """Start reading, in parallel, as many copies (best first, distinct share indices, none
        verified yet, none on a provider that is down) as k verified shares still need."""
        rec = job.view.rec
        need = rec.k - len(job.verified) - len(job.reads)
        busy = {i for i, _, _ in job.reads}
        left: list[tuple[int, str]] = []
        for i, pid in job.left:
            if i in job.verified or pid in self.down:
                continue
            if need > 0 and i not in busy:
                fut = self.op.store.pool.submit(fetch_share, self.op.store.providers[pid], share_name(rec.id, i),
                                                recorded_share(rec, i))
                job.reads.append((i, pid, fut))
                busy.add(i)
                need -= 1
            else:
                left.append((i, pid))
        job.left = left

    def _collect(self, job: Job) -> None:
        """Wait for the reads of a pack, reading further copies until k are verified by their
        recorded hash or none is left; note the recorded copies found unreadable or damaged."""
        rec = job.view.rec
        while job.reads:
            reads, job.reads = job.reads, []
            for i, pid, fut in reads:
                obj, ok, exc = fut.result()
                if exc is not None:
                    self.op.session.warn(f"provider {pid}: cannot read {share_name(rec.id, i)}: {exc}")
                    if not isinstance(exc, ObjectNotFound):
                        self.down.add(pid)  # gone mid-repair: the other shares are used, nothing is put there
                if obj is not None:
                    self.report.bytes_read += len(obj)
                if ok and obj is not None and i not in job.verified:
                    job.verified[i] = obj
                    continue
                want = recorded_share(rec, i)
                if want is not None and want.p == pid and pid not in self.down:  # gone or damaged
                    job.failed.add(i)
                if obj is not None:
                    job.unverified.append((i, obj))
            if len(job.verified) >= rec.k:
                return
            self._read_more(job)

    def _build(self, job: Job) -> None:
        """The share objects to write, each checked against its record in the index, and their
        writes started."""
        self._collect(job)
        rec, view = job.view.rec, job.view
        job.keep = {i: p for i, p in job.keep.items() if i not in job.failed}
        if len(job.verified) >= rec.k:
            job.targets = self._targets(rec, job.keep, view)
            self._rebuild(job)
        else:
            pack = self._authentic(rec, list(job.verified.items()) + job.unverified)
            job.targets = self._targets(rec, job.keep, view)
            objs = self._pack_objects(rec, pack)
            job.objs = {i: objs[i] for i in job.targets}
            job.hashes = {i: blake3.blake3(objs[i]).digest() for i in job.targets}
        job.verified, job.unverified = {}, []
        self._submit(job, job.targets)

    def _rebuild(self, job: Job) -> None:
        """Only the shares to be written, from k verified ones: a copy read and verified is
        written as it is, the others computed into page-aligned buffers (header, then payload)
        from the k shares with the lowest indices (all data shares when they are good: parity
        is then a plain encoding)."""
        rec = job.view.rec
        size = erasure.stripe_size(rec.len, rec.k)
        made: list[tuple[int, memoryview]] = []
        for i in sorted(job.targets):
            if i in job.verified:
                job.objs[i] = job.verified[i]
                job.hashes[i] = recorded_share(rec, i).h  # type: ignore[union-attr]  (verified against it)
                continue
            buf = self.buffers.take(SHARE_HEADER_LEN + size)
            job.bufs.append(buf)
            obj = memoryview(buf)[: SHARE_HEADER_LEN + size]
            obj[:SHARE_HEADER_LEN] = ShareHeader(rec.k, rec.n, i, rec.len, size, rec.id).pack()
            job.objs[i] = obj
            made.append((i, obj[SHARE_HEADER_LEN:]))
        if not made:
            return
        have = sorted(job.verified.items())[: rec.k]
        try:
            erasure.rebuild_into(have, made, rec.k, rec.n, SHARE_HEADER_LEN)
        except ValueError as exc:  # shares of sizes the record's length does not imply
            raise IntegrityError(f"cannot rebuild from the shares read: {exc}") from None
        for i, _ in made:
            digest = blake3.blake3(job.objs[i]).digest()
            want = recorded_share(rec, i)
            if want is not None and (digest != want.h or len(job.objs[i]) != want.z):
                raise IntegrityError(f"share {i} rebuilt does not match its record in the index")
            job.hashes[i] = digest

    def _pack_objects(self, rec: PackRecord, pack: bytes) -> list[bytes]:
        """All n share objects of a decoded pack, each checked against its record in the index."""
        objs = share_objects(pack, rec.id, rec.k, rec.n)
        for i, s in enumerate(rec.shares):
            if s is not None and (blake3.blake3(objs[i]).digest() != s.h or len(objs[i]) != s.z):
                raise IntegrityError(f"share {i} rebuilt does not match its record in the index")
        return objs

    def _release(self, job: Job) -> None:
        """Give the share buffers back (every write that read them has ended)."""
        job.objs, job.verified, job.unverified = {}, {}, []
        for buf in job.bufs:
            self.buffers.give(buf)
        job.bufs = []

    def _authentic(self, rec: PackRecord, pieces: list[tuple[int, bytes]]) -> bytes:
        distinct: dict[int, list[bytes]] = {}
        for i, obj in pieces:
            distinct.setdefault(i, []).append(obj)
        if len(distinct) < rec.k:
            raise IntegrityError(f"only {len(distinct)} of the {rec.k} shares needed can be read")
        options = [(i, obj) for i, objs in distinct.items() for obj in objs]
        for combo in itertools.islice(itertools.combinations(options, rec.k), MAX_DECODE_TRIES):
            if len({i for i, _ in combo}) < rec.k:
                continue
            try:
                pack = decode_pack(sorted(combo), rec.k, rec.n, rec.len)
                trailer, pack_id = open_trailer(self.op, pack)
                if pack_id != rec.id:
                    continue
                entries = sorted(trailer.blobs, key=lambda e: e.o)
                # 2.0: blob keys come from references, which only trees hold: the pack is checked by
                # its authentic trailer here, and each blob when it is read (design §23).
                if entries and self.op.store.keys.version < 2:
                    self.op.codec.open_group(entries, pack, 0)
                return pack
            except (IntegrityError, ValueError):
                continue
        raise IntegrityError("no combination of the shares present decodes to an authentic pack")

    def _get(self, pid: str, name: str) -> bytes | None:
        try:
            obj = self.op.store.providers[pid].get(name)
        except ProviderError as exc:
            self.op.session.warn(f"provider {pid}: cannot read {name}: {exc}")
            if not isinstance(exc, ObjectNotFound):
                self.down.add(pid)  # gone mid-repair: the other shares are used, nothing is put there
            return None
        self.report.bytes_read += len(obj)
        return obj

    # ------------------------------------------------------------------ where shares go

    def _targets(self, rec: PackRecord, keep: dict[int, str], view: health.PackView) -> dict[int, str]:
        return choose_targets(self.cfg, self.entries, self.down, rec, keep, view)

    # ------------------------------------------------------------------ writing

    def _submit(self, job: Job, targets: dict[int, str]) -> None:
        """Start writing share objects where ``targets`` says, in parallel."""
        rec = job.view.rec
        job.puts = {}
        for i, pid in sorted(targets.items()):
            job.puts[i] = (pid, self.op.store.pool.submit(store_share, self.op.store.providers[pid],
                                                          share_name(rec.id, i), job.objs[i]))

    def _settle(self, job: Job) -> Fix:
        """Wait for a pack's writes (a failed one is tried once more on another provider the
        policy allows) and make its new record."""
        rec, view, keep = job.view.rec, job.view, job.keep
        shares: list[ShareRecord | None] = list(rec.shares) + [None] * (rec.n - len(rec.shares))
        healthy = True
        for attempt in range(2):
            failed = []
            for i, (pid, fut) in sorted(job.puts.items()):
                got = fut.result()
                if got is True:
                    old = shares[i]
                    if old is not None and old.p != pid:
                        self.report.shares_moved += 1
                    else:
                        self.report.shares_rebuilt += 1
                    size = len(job.objs[i])
                    shares[i] = ShareRecord(p=pid, h=job.hashes[i], z=size)
                    keep[i] = pid
                    self.report.bytes_written += size
                    self.pending_bytes += size
                    continue
                if isinstance(got, ProviderError):
                    self.op.session.warn(f"provider {pid}: cannot write {share_name(rec.id, i)}: {got}")
                self.down.add(pid)
                failed.append(i)
            if not failed:
                break
            healthy = False
            if attempt == 0:
                try:
                    targets = self._fill(rec, keep, failed, view, self.cfg.policy) or {}
                except FreeholdError:
                    targets = {}
                healthy = bool(targets)
                self._submit(job, targets)
        if any((s.state == SHARE_UNREACHABLE or s.provider in self.down) and keep.get(s.index) == s.provider
               for s in view.shares):
            healthy = False  # its share there is unknown until the provider answers again
        new = formats.PackRecord(id=rec.id, len=rec.len, k=rec.k, n=rec.n, shares=shares, blobs=rec.blobs)
        final = {i: s.p for i, s in enumerate(shares) if s is not None}
        delete = [(pid, i) for pid, i in view.strays if final.get(i) != pid]
        delete += [(s.p, i) for i, s in enumerate(rec.shares) if s is not None and final.get(i) != s.p]
        self.report.packs_repaired += 1
        if not healthy:
            self.report.unrepaired.append(rec.id.hex())
        return Fix(new, new != rec, delete=sorted(set(delete)), healthy=healthy)

    def _rewrite(self, rec: PackRecord, objs: list[bytes], keep: dict[int, str], view: health.PackView,
                 targets: dict[int, str]) -> Fix:
        """Write the share objects ``targets`` names (of a pack decoded whole), then its record."""
        job = Job(view, keep, objs={i: objs[i] for i in targets},
                  hashes={i: blake3.blake3(objs[i]).digest() for i in targets})
        try:
            self._submit(job, targets)
            return self._settle(job)
        finally:
            wait(job.futures())

    # ------------------------------------------------------------------ recording

    def _queue(self, fix: Fix) -> None:
        self.pending.append(fix)
        changed = sum(f.changed for f in self.pending)
        if changed >= COMMIT_PACKS or self.pending_bytes >= COMMIT_BYTES:
            self._commit()

    def _commit(self) -> None:
        """Index the changed packs (rewriting the index objects that listed them), then delete
        the copies no live index names any more."""
        fixes, self.pending, self.pending_bytes = self.pending, [], 0
        changed = {f.rec.id: f.rec for f in fixes if f.changed}
        if changed and not self.opt.dry_run:
            op = self.op
            old: set[str] = set()
            for pack_id in changed:
                old |= op.index.listed_by(pack_id)
            records: dict[bytes, PackRecord] = {}
            for name in sorted(old):
                _, plain = op.objects.read(INDEX_PREFIX, name, KIND_INDEX, "index object")
                for rec in formats.decode(plain, formats.IndexFile, "index object").packs:
                    records.setdefault(rec.id, op.index.pack(rec.id) if op.index.has_pack(rec.id) else rec)
            records.update(changed)
            names = op.replace_index(old, list(records.values()), reason="repair", host=self.host)
            self.report.index_objects_written += len(names)
            op.load_index()
        if self.opt.dry_run:
            return
        for fix in fixes:
            if not fix.healthy:
                continue  # copies of a pack still damaged may be what a later repair reads
            for pid, i in fix.delete:
                name = share_name(fix.rec.id, i)
                try:
                    self.op.store.providers[pid].delete(name)
                    self.report.shares_deleted += 1
                except (ProviderError, KeyError) as exc:
                    self.op.session.warn(f"provider {pid}: cannot delete {name} (a later repair will): {exc}")

    # ------------------------------------------------------------------ packs in no index

    def _orphan(self, pack_id: bytes, held: dict[int, list[tuple[str, int]]]) -> Fix | None:
        """Index a pack from its share objects: headers that agree, k of them decoded, the
        trailer authenticated and naming the pack, every blob authenticated."""
        headers: dict[tuple[int, int, int, int], dict[int, list[str]]] = {}
        for i, copies in held.items():
            for pid, size in copies:
                if pid in self.down or pid not in self.op.store.providers:
                    continue
                try:
                    h = ShareHeader.unpack(self.op.store.providers[pid].get(share_name(pack_id, i), 0,
                                                                             SHARE_HEADER_LEN))
                except FreeholdError:
                    continue
                if (h.pack_id != pack_id or h.index != i or not 1 <= h.k <= h.n or i >= h.n
                        or h.stripe != erasure.stripe_size(h.pack_len, h.k) or size != SHARE_HEADER_LEN + h.stripe):
                    continue
                headers.setdefault((h.k, h.n, h.pack_len, h.stripe), {}).setdefault(i, []).append(pid)
        if not headers:
            return None
        (k, n, length, _), where = max(headers.items(), key=lambda kv: len(kv[1]))
        if len(where) < k:
            return None
        if self.opt.dry_run:
            self.report.actions.append(f"pack {pack_id.hex()[:12]} (in no index): would index it from its trailer")
            return None
        pieces: list[tuple[int, bytes]] = []
        origin: dict[int, list[tuple[str, bytes]]] = {}
        for i, pids in sorted(where.items()):
            for pid in pids:
                obj = self._get(pid, share_name(pack_id, i))
                if obj is not None:
                    pieces.append((i, obj))
                    origin.setdefault(i, []).append((pid, obj))
        stub = formats.PackRecord(id=pack_id, len=length, k=k, n=n, shares=[None] * n, blobs=[])
        pack = self._authentic(stub, pieces)
        trailer, _ = open_trailer(self.op, pack)
        objs = share_objects(pack, pack_id, k, n)
        shares: list[ShareRecord | None] = [None] * n
        strays: list[tuple[str, int]] = []
        for i, copies in origin.items():
            for pid, obj in copies:
                e = self.entries.get(pid)
                fit = e is not None and not e.draining and placement.allowed(e, self.cfg.policy)
                if obj == objs[i] and fit and shares[i] is None and pid not in {s.p for s in shares if s}:
                    shares[i] = ShareRecord(p=pid, h=blake3.blake3(obj).digest(), z=len(obj))
                else:
                    strays.append((pid, i))
        rec = formats.PackRecord(id=pack_id, len=length, k=k, n=n, shares=shares, blobs=trailer.blobs)
        view = health.PackView(rec, [health.SharePlace(i, s.p if s else "", SHARE_GOOD if s else "never-written")
                                     for i, s in enumerate(shares)], strays=strays)
        keep = {i: s.p for i, s in enumerate(shares) if s is not None}
        self.report.actions.append(f"pack {pack_id.hex()[:12]} (in no index): indexed from its trailer")
        if len(keep) == n:
            fix = Fix(rec, True, delete=strays)
            return fix
        fix = self._rewrite(rec, objs, keep, view, self._targets(rec, keep, view))
        fix.changed = True
        return fix

