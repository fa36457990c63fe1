"""``repair``: rebuild what the health survey finds damaged, move shares off draining providers,
and index packs that no index lists, from their trailers (design §15b).

Order, for every damaged pack: read k shares (hash-verified against the index; from providers
that are not being drained first), decode and re-encode the pack, write each missing, damaged or
misplaced share (where it was when its provider is still fit, else on a provider the policy
ranks next), check its size by a HEAD; then, every ``COMMIT_PACKS`` packs, ``replace_index``
writes the index objects that listed the changed packs anew (every record they held, the changed
ones updated) and retires the old ones; only then are the copies that moved deleted. A crash at
any point leaves every live index record pointing at shares that exist: new shares are strays
until an index names them, and old ones are deleted only once no live index does. A rerun does
what is left.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from .. import erasure, formats, placement
from ..api import PACK_HEALTHY, PACK_LOST, PACK_UNAVAILABLE, SHARE_GOOD, SHARE_UNREACHABLE, RepairReport
from ..crypto import KIND_INDEX, KIND_PACK_TRAILER, open_sealed
from ..errors import FreeholdError, IntegrityError, ObjectNotFound, PolicyError, ProviderError
from ..formats import SHARE_HEADER_LEN, PackRecord, ProviderEntry, ShareHeader, ShareRecord
from ..progress import NullProgress, Progress
from ..store import Operation
from ..store.metadata import INDEX_PREFIX
from ..store.packs import share_name
from . import health

COMMIT_PACKS = 64                   # changed packs recorded by one index replacement
COMMIT_BYTES = 512 * 1024 * 1024    # ... or this many bytes of shares written since the last one
MAX_DECODE_TRIES = 64               # combinations of unverified shares tried for one pack


@dataclass(frozen=True)
class RepairOptions:
    dry_run: bool = False
    read_data: bool = False         # hash every share first (finds silent damage)
    subset: str | None = None       # ... or those of a subset of the packs (as check)
    host: str = ""


@dataclass
class Fix:
    """What repairing one pack did: its new record and the copies to delete once it is indexed."""

    rec: PackRecord
    changed: bool
    delete: list[tuple[str, int]] = field(default_factory=list)   # (provider, share index)
    healthy: bool = True


def open_trailer(op: Operation, pack: bytes | memoryview) -> tuple[formats.PackTrailer, bytes]:
    """The pack's trailer, authenticated, and the pack id it implies (design §8)."""
    view = memoryview(pack)
    if len(view) < 4:
        raise IntegrityError("pack is too short for a trailer")
    (tlen,) = formats.PACK_TRAILER_LEN.unpack(view[-4:])
    if tlen + 4 > len(view):
        raise IntegrityError("pack trailer length is out of range")
    tail = view[len(view) - 4 - tlen:]
    plain = open_sealed(op.store.keys.metadata, KIND_PACK_TRAILER, b"pack-trailer", tail[:-4], "pack trailer")
    return formats.decode(plain, formats.PackTrailer, "pack trailer"), op.store.keys.name_id(tail)


def share_objects(pack: bytes, pack_id: bytes, k: int, n: int) -> list[bytes]:
    """The n share objects (header and payload) of a pack: the same bytes a backup wrote."""
    size = erasure.stripe_size(len(pack), k)
    parts = erasure.encode(bytearray(pack), len(pack), k, n)
    return [ShareHeader(k, n, i, len(pack), size, pack_id).pack() + b"".join(bytes(x) for x in part)
            for i, part in enumerate(parts)]


def decode_pack(pieces: list[tuple[int, bytes]], k: int, n: int, length: int) -> bytes:
    """The pack from k share objects (index, object bytes)."""
    stripes = erasure.decode_columns([(i, obj[SHARE_HEADER_LEN:]) for i, obj in pieces[:k]], k, n)
    return b"".join(stripes)[:length]


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

    def run(self) -> RepairReport:
        if self.opt.dry_run:
            return self._run()
        with self.op.locks.acquire("repair", exclusive=True):
            return self._run()

    def _run(self) -> RepairReport:
        op, r = self.op, self.report
        if self.heal is not None:
            r.replicas_healed = self.heal()
        op.load_index()
        found = health.survey(op, health.select(self.opt.read_data, self.opt.subset), self.progress.advance)
        r.bytes_read += found.bytes_read
        self.down = set(found.unreachable) | op.session.down
        r.packs = len(found.packs)
        todo = [v for v in found.packs if v.state != PACK_HEALTHY or v.strays]
        self.progress.scanned(len(todo) + len(found.orphans), sum(v.rec.len for v in todo))
        for view in todo:
            if view.state == PACK_UNAVAILABLE:
                r.unrepaired.append(view.rec.id.hex())
                r.actions.append(f"pack {view.rec.id.hex()[:12]}: fewer than k shares reachable now; left as it is")
                continue
            if view.state == PACK_LOST and self.opt.dry_run:
                r.lost.append(view.rec.id.hex())
                continue
            try:
                fix = self._live(view)
            except FreeholdError as exc:
                (r.lost if view.state == PACK_LOST else r.unrepaired).append(view.rec.id.hex())
                r.actions.append(f"pack {view.rec.id.hex()[:12]}: not repaired: {exc}")
                continue
            finally:
                self.progress.advance(view.rec.len)
            self._queue(fix)
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
        return r

    # ------------------------------------------------------------------ one live pack

    def _live(self, view: health.PackView) -> Fix:
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
        pack, failed = self._read(rec, view)
        keep = {i: p for i, p in keep.items() if i not in failed}
        return self._rewrite(rec, pack, keep, view, self._targets(rec, keep, view))

    def _keepers(self, view: health.PackView, bad: set[int]) -> dict[int, str]:
        """Good shares on providers fit to keep them: in the config, not draining, allowed."""
        keep = {}
        for s in view.shares:
            e = self.entries.get(s.provider)
            if s.index not in bad and e is not None and not e.draining and placement.allowed(e, self.cfg.policy):
                keep[s.index] = s.provider
        return keep

    def _read(self, rec: PackRecord, view: health.PackView) -> tuple[bytes, set[int]]:
        """The pack, from k shares whose hash matches the index, read from providers not being
        drained first, then drained ones, then stray copies; failing that, any k present copies
        whose decoding authenticates (trailer and every blob). Also returns the shares whose
        recorded copy turned out unreadable or damaged."""
        failed: set[int] = set()
        order: list[tuple[int, str]] = []
        good = [s for s in view.shares if s.state == SHARE_GOOD]
        order += [(s.index, s.provider) for s in good if not self.entries[s.provider].draining]
        order += [(s.index, s.provider) for s in good if self.entries[s.provider].draining]
        order += [(i, pid) for pid, i in view.strays if pid not in self.down]
        verified: dict[int, bytes] = {}
        unverified: list[tuple[int, bytes]] = []
        for i, pid in order:
            if len(verified) >= rec.k:
                break
            if i in verified or pid in self.down:
                continue
            obj = self._get(pid, share_name(rec.id, i))
            want = rec.shares[i]
            recorded = want is not None and want.p == pid
            if obj is not None and want is not None and len(obj) == want.z and blake3.blake3(obj).digest() == want.h:
                verified[i] = obj
                continue
            if recorded and pid not in self.down:  # gone or damaged (a provider gone down: kept as it is)
                failed.add(i)
            if obj is not None:
                unverified.append((i, obj))
        if len(verified) >= rec.k:
            return decode_pack(sorted(verified.items()), rec.k, rec.n, rec.len), failed
        return self._authentic(rec, list(verified.items()) + unverified), failed

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
                if entries:
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
        """Providers for every share not kept, such that the pack's n providers meet the policy:
        where the share was recorded (when fit), else where a stray copy is, else by rank. Kept
        shares are given up (and moved) only when no choice that keeps them all meets the policy."""
        policy = self.cfg.policy
        for drop in range(len(keep) + 1):
            for kept_ids in itertools.combinations(sorted(keep), len(keep) - drop):
                kept = {i: keep[i] for i in kept_ids}
                redo = [i for i in range(rec.n) if i not in kept]
                got = self._fill(rec, kept, redo, view, policy)
                if got is not None:
                    return got
        raise PolicyError(f"pack {rec.id.hex()[:12]}: " + placement.explain(
            self.cfg.providers, rec.n, policy, sorted(self.down)))

    def _fill(self, rec: PackRecord, kept: dict[int, str], redo: list[int], view: health.PackView,
              policy: formats.Policy) -> dict[int, str] | None:
        taken = set(kept.values())
        pool = [e for e in placement.eligible(self.cfg.providers, policy, self.down) if e.id not in taken]
        recorded = {i: s.p for i, s in enumerate(rec.shares) if s is not None}
        strays = {pid: i for pid, i in view.strays}
        ranked = placement.rank(rec.id, pool)
        preferred = [e for e in ranked if e.id in {recorded.get(i) for i in redo}]
        preferred += [e for e in ranked if e.id in strays and e not in preferred]
        order = preferred + [e for e in ranked if e not in preferred]
        if len(order) < len(redo):
            return None
        base = [self.entries[p] for p in kept.values()]
        for combo in itertools.islice(itertools.combinations(order, len(redo)), placement.MAX_COMBINATIONS):
            if placement.satisfies(base + list(combo), policy):
                return self._assign(redo, [e.id for e in combo], recorded, strays)
        return None

    @staticmethod
    def _assign(redo: list[int], pids: list[str], recorded: dict[int, str], strays: dict[str, int]) -> dict[int, str]:
        out: dict[int, str] = {}
        free = list(pids)
        for i in redo:  # back where it was recorded, then where a copy already is
            for pid in (recorded.get(i), *[p for p, j in strays.items() if j == i]):
                if pid in free:
                    out[i] = pid
                    free.remove(pid)
                    break
        for i in redo:
            if i not in out:
                out[i] = free.pop(0)
        return out

    # ------------------------------------------------------------------ writing

    def _rewrite(self, rec: PackRecord, pack: bytes, keep: dict[int, str], view: health.PackView,
                 targets: dict[int, str]) -> Fix:
        objs = share_objects(pack, rec.id, rec.k, rec.n)
        for i, s in enumerate(rec.shares):
            if s is not None and (blake3.blake3(objs[i]).digest() != s.h or len(objs[i]) != s.z):
                raise IntegrityError(f"share {i} rebuilt does not match its record in the index")
        shares: list[ShareRecord | None] = list(rec.shares) + [None] * (rec.n - len(rec.shares))
        healthy = True
        for attempt in range(2):
            failed = []
            for i, pid in sorted(targets.items()):
                if self._put(pid, share_name(rec.id, i), objs[i]):
                    old = shares[i]
                    if old is not None and old.p != pid:
                        self.report.shares_moved += 1
                    else:
                        self.report.shares_rebuilt += 1
                    shares[i] = ShareRecord(p=pid, h=blake3.blake3(objs[i]).digest(), z=len(objs[i]))
                    keep[i] = pid
                else:
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

    def _put(self, pid: str, name: str, obj: bytes) -> bool:
        prov = self.op.store.providers[pid]
        try:
            prov.put(name, obj)
            ok = prov.head(name) == len(obj)
        except ProviderError as exc:
            self.op.session.warn(f"provider {pid}: cannot write {name}: {exc}")
            ok = False
        if not ok:
            self.down.add(pid)
            return False
        self.report.bytes_written += len(obj)
        self.pending_bytes += len(obj)
        return True

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
        fix = self._rewrite(rec, pack, keep, view, self._targets(rec, keep, view))
        fix.changed = True
        return fix

