"""Reading blobs back (docs/design.md §9): coalesced ranged reads of the data shares, raced
against every share's column range when they fail or are late, decoded from the first k that
authenticate. More than n-k bad shares is an error, never wrong output."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from .. import erasure
from ..errors import FreeholdError, IntegrityError, NotEnoughShares, ProviderError
from ..formats import SHARE_HEADER_LEN, PackEntry, PackRecord
from ..providers.base import Provider
from .blobs import BlobCodec, describe
from .index import Index
from .packs import share_name
from .session import Session

log = logging.getLogger(__name__)

COALESCE_GAP = 64 * 1024               # blobs closer than this in a stripe are fetched with one read
MAX_GROUP = 16 * 1024 * 1024


class BlobReader:
    def __init__(self, index: Index, codec: BlobCodec, providers: dict[str, Provider],
                 pool: ThreadPoolExecutor, fetch_pool: ThreadPoolExecutor, race_pool: ThreadPoolExecutor,
                 session: Session) -> None:
        self.index = index
        self.codec = codec
        self.providers = providers
        self.pool = pool                # groups (each may wait on fetch_pool)
        self.fetch_pool = fetch_pool    # single provider requests only: never waits on other jobs
        self.race_pool = race_pool
        self.session = session

    def _submit_groups(self, ids: Iterable[bytes]
                       ) -> tuple[list[tuple[PackRecord, list[PackEntry], Future[Any]]], dict[bytes, bytes] | None]:
        """The coalesced ranged reads that fetch the blobs of references ``ids``, submitted to the
        pool, in order; and index id -> reference (None in format 1, where they are equal)."""
        by_pack: dict[bytes, list[PackEntry]] = {}
        mapping: dict[bytes, bytes] | None = None if self.index.refs_are_ids else {}
        for bid in dict.fromkeys(ids):
            loc = self.index.lookup(bid)
            if loc is None:
                raise IntegrityError(f"{describe(bid)} is in no index (vault damaged?)")
            by_pack.setdefault(loc.pack_id, []).append(loc.entry)
            if mapping is not None:
                mapping[loc.entry.id] = bid
        jobs = []
        for pack_id, entries in by_pack.items():
            rec = self.index.pack(pack_id)
            for group in _coalesce(rec, sorted(entries, key=lambda e: e.o)):
                jobs.append((rec, group, self.pool.submit(self._fetch_group, rec, group, mapping)))
        return jobs, mapping

    def read_blobs(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Fetch and verify blobs, grouped into coalesced ranged reads per pack stripe. The reads
        run on the pool; blobs are opened here, in the calling thread, as each read completes
        (short CPU steps spread over many threads only add GIL hand-offs)."""
        jobs, refs = self._submit_groups(ids)
        out: dict[bytes, bytes] = {}
        for rec, group, job in jobs:
            got = job.result()
            if isinstance(got, dict):
                out.update(got)
                continue
            start = group[0].o
            try:
                out.update(self.codec.open_group(group, got, start, refs))
            except IntegrityError as exc:
                log.info("pack %s: data shares do not verify (%s); decoding from other shares",
                         rec.id.hex()[:12], exc)
                out.update(self._read_group_degraded(rec, group, start, max(e.o + e.l for e in group), refs))
        return out

    def read_sealed(self, ids: Iterable[bytes]) -> dict[bytes, tuple[bool, bytes | memoryview]]:
        """Blobs as their sealed envelopes, authenticated (AES-GCM) but not decoded: {id: (True,
        envelope)}, for copying a blob into another pack as it is (prune). A group the fast path
        cannot serve is decoded from other shares and comes back opened: {id: (False, plaintext)}.
        Keyed by reference, as asked."""
        jobs, refs = self._submit_groups(ids)
        out: dict[bytes, tuple[bool, bytes | memoryview]] = {}
        for rec, group, job in jobs:
            got = job.result()
            if not isinstance(got, dict):
                view, start = memoryview(got), group[0].o
                try:
                    for e in group:
                        env = view[e.o - start: e.o + e.l - start]
                        ref = e.id if refs is None else refs[e.id]
                        self.codec.authenticate(ref, e.t, env)
                        out[ref] = (True, env)
                    continue
                except IntegrityError:
                    got = self._read_group_degraded(rec, group, start, max(e.o + e.l for e in group), refs)
            out.update({bid: (False, plain) for bid, plain in got.items()})
        return out

    def read_blob(self, blob_id: bytes) -> bytes:
        return self.read_blobs([blob_id])[blob_id]

    def _holder(self, rec: PackRecord, i: int) -> Provider | None:
        share = rec.shares[i]
        return None if share is None else self.providers.get(share.p)

    def _fetch_group(self, rec: PackRecord, group: list[PackEntry], refs: dict[bytes, bytes] | None = None
                     ) -> bytes | dict[bytes, bytes]:
        """The group's pack bytes from the data shares (the fast path; the caller opens them), or,
        if that fails or has not answered within ``hedge_after``, the group's blobs already opened
        from the degraded path (all shares, first k that verify), whichever comes first."""
        start = group[0].o
        end = max(e.o + e.l for e in group)
        stripe = erasure.stripe_size(rec.len, rec.k)
        holders = {s.p for j, _, _ in _segments(start, end, stripe) if (s := rec.shares[j]) is not None}
        if holders & self.session.slow:  # known slow in this operation: do not wait on it again
            return self._read_group_degraded(rec, group, start, end, refs)
        fast_job = self.fetch_pool.submit(self.read_range_fast, rec, start, end)
        try:
            return fast_job.result(timeout=self.session.hedge_after)
        except FutureTimeout:
            log.info("pack %s: data shares slow; racing the other shares", rec.id.hex()[:12])
            self.session.mark_slow(holders)
        except FreeholdError as exc:
            log.info("fast read of pack %s failed (%s); decoding from other shares", rec.id.hex()[:12], exc)
            return self._read_group_degraded(rec, group, start, end, refs)
        slow_job: Future[bytes | dict[bytes, bytes]] = self.race_pool.submit(
            self._read_group_degraded, rec, group, start, end, refs)
        pending: set[Future[bytes | dict[bytes, bytes]]] = {fast_job, slow_job}
        last: BaseException | None = None
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for job in done:
                exc = job.exception()
                if exc is None:
                    return job.result()
                last = exc
        assert last is not None
        raise last

    def read_range_fast(self, rec: PackRecord, start: int, end: int) -> bytes:
        """Pack bytes [start, end) from the data shares that hold them."""
        stripe = erasure.stripe_size(rec.len, rec.k)
        parts = []
        for j, a, b in _segments(start, end, stripe):
            prov = self._holder(rec, j)
            if prov is None:
                raise NotEnoughShares(f"data share {j} of pack {rec.id.hex()[:12]} is not available")
            got = prov.get(share_name(rec.id, j), SHARE_HEADER_LEN + a, SHARE_HEADER_LEN + b)
            self.session.read(len(got))
            if len(got) != b - a:
                raise IntegrityError(f"share {j} of pack {rec.id.hex()[:12]} is truncated")
            parts.append(got)
        return b"".join(parts)

    def _read_group_degraded(self, rec: PackRecord, group: list[PackEntry], start: int,
                             end: int, refs: dict[bytes, bytes] | None = None) -> dict[bytes, bytes]:
        stripe = erasure.stripe_size(rec.len, rec.k)
        segs = _segments(start, end, stripe)
        lo = min(a for _, a, _ in segs)
        hi = max(b for _, _, b in segs)

        def fetch(i: int) -> tuple[int, bytes | None]:
            prov = self._holder(rec, i)
            if prov is None:
                return i, None
            try:
                got = prov.get(share_name(rec.id, i), SHARE_HEADER_LEN + lo, SHARE_HEADER_LEN + hi)
            except ProviderError:
                return i, None
            self.session.read(len(got), fallback=True)
            return i, (got if len(got) == hi - lo else None)

        # Ask every share at once (providers known to be slow only if the others are not enough)
        # and decode from the first k that verify.
        slow = self.session.slow
        quick = [i for i in range(rec.n) if (s := rec.shares[i]) is not None and s.p not in slow]
        skipped = [i for i in range(rec.n) if (s := rec.shares[i]) is not None and s.p in slow]
        if len(quick) < rec.k:
            quick, skipped = quick + skipped, []
        jobs = [self.fetch_pool.submit(fetch, i) for i in quick]
        avail: list[tuple[int, bytes]] = []
        last: FreeholdError | None = None
        for job in as_completed(jobs):
            i, piece = job.result()
            if piece is None:
                continue
            avail.append((i, piece))
            if len(avail) < rec.k:
                continue
            # every k-subset that includes the newest piece (older subsets were tried already)
            for others in itertools.combinations(avail[:-1], rec.k - 1):
                stripes = erasure.decode_columns([*others, avail[-1]], rec.k, rec.n)
                data = b"".join(stripes[j][a - lo: b - lo] for j, a, b in segs)
                try:
                    return self.codec.open_group(group, data, start, refs)
                except IntegrityError as exc:
                    last = exc
        if skipped:  # the quick providers were not enough: ask the slow ones too
            slow.clear()
            return self._read_group_degraded(rec, group, start, end, refs)
        if len(avail) < rec.k:
            raise NotEnoughShares(f"pack {rec.id.hex()[:12]}: only {len(avail)} of the {rec.k} "
                                  "shares needed are readable")
        raise IntegrityError(f"pack {rec.id.hex()[:12]}: no combination of shares verifies ({last})")


def _segments(start: int, end: int, stripe: int) -> list[tuple[int, int, int]]:
    """Split pack range [start, end) into (stripe index, column start, column end)."""
    out = []
    pos = start
    while pos < end:
        j = pos // stripe
        stop = min(end, (j + 1) * stripe)
        out.append((j, pos - j * stripe, stop - j * stripe))
        pos = stop
    return out


def _coalesce(rec: PackRecord, entries: list[PackEntry]) -> Iterator[list[PackEntry]]:
    """Group blobs that lie close together in the same stripe into one ranged read."""
    stripe = erasure.stripe_size(rec.len, rec.k)
    group: list[PackEntry] = []
    end = 0
    for e in entries:
        if group and (e.o - end > COALESCE_GAP or e.o // stripe != group[0].o // stripe
                      or e.o + e.l - group[0].o > MAX_GROUP):
            yield group
            group = []
        group.append(e)
        end = max(end, e.o + e.l) if len(group) > 1 else e.o + e.l
    if group:
        yield group
