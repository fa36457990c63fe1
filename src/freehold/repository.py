"""The repository: what is written to providers and how it is read back.

Knows the formats (docs/design.md) and the providers; knows nothing of files
and directories. Everything read from a provider, or from the local cache, is
verified before use: metadata by AEAD and by its content-derived name, blobs by
AEAD and keyed id, shares by the hash recorded in the index.
"""

from __future__ import annotations

import collections
import itertools
import logging
import mmap
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, as_completed, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from . import erasure, formats, placement
from .crypto import (
    KIND_CONFIG,
    KIND_DATA,
    KIND_INDEX,
    KIND_PACK_TRAILER,
    KIND_SNAPSHOT,
    KIND_TREE,
    VaultKeys,
    decode,
    decode_many,
    open_sealed,
    seal,
    unseal,
)
from .errors import (
    FreeholdError,
    IntegrityError,
    NotEnoughShares,
    ObjectNotFound,
    PolicyError,
    ProviderError,
    SnapshotNotFound,
)
from .formats import (
    BLOB_TREE,
    ENC_ZSTD,
    SHARE_HEADER_LEN,
    PackEntry,
    PackRecord,
    ShareHeader,
    ShareRecord,
)
from .providers.base import Provider

log = logging.getLogger(__name__)

CONFIG_NAME = "config"
KEYS_PREFIX = "keys/"
INDEX_PREFIX = "index/"
SNAPSHOT_PREFIX = "snapshots/"
DATA_PREFIX = "data/"
TREE_PACKS_IN_MEMORY = 64 * 1024 * 1024
# Blobs closer than this in a stripe are fetched with one ranged read.
COALESCE_GAP = 64 * 1024
DECODE_BATCH_MIN = 16  # coalesced reads of at least this many blobs decode their zstd bodies in one call
SHARE_BUFFER_STEP = 64 * 1024  # share buffer sizes are whole multiples of this
MAX_PACKS_BUFFERED = 2           # share buffers kept for reuse: enough for the packs a backup has in flight


def _what(blob_id: bytes) -> str:
    """How errors name a blob."""
    return f"blob {blob_id.hex()[:12]}"


def share_name(pack_id: bytes, index: int) -> str:
    h = pack_id.hex()
    return f"{DATA_PREFIX}{h[:2]}/{h}.{index}"


def kind_for(blob_type: int) -> int:
    return KIND_TREE if blob_type == BLOB_TREE else KIND_DATA


@dataclass
class BlobLoc:
    pack: PackRecord
    entry: PackEntry


@dataclass
class Problem:
    """One finding of ``check``."""

    kind: str          # "missing-share" | "damaged-share" | "missing-blob" | "unreadable" ...
    detail: str
    provider: str = ""
    object: str = ""


@dataclass
class ReadStats:
    fallback_reads: int = 0
    bytes_fetched: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, n: int, fallback: bool = False) -> None:
        with self.lock:
            self.bytes_fetched += n
            self.fallback_reads += int(fallback)


class Repository:
    def __init__(self, config: formats.Config, keys: VaultKeys, providers: dict[str, Provider],
                 cache_dir: Path | None = None, workers: int = 8) -> None:
        self.config = config
        self.keys = keys
        self.providers = providers
        self.cache_dir = cache_dir
        self.k = config.k
        self.n = config.n
        self.blobs: dict[bytes, BlobLoc] = {}
        self.packs: dict[bytes, PackRecord] = {}
        self.index_names: set[str] = set()
        self.read_stats = ReadStats()
        self._tree_packs: collections.OrderedDict[bytes, bytes] = collections.OrderedDict()  # LRU
        self._tree_lock = threading.Lock()
        self.degraded = False           # accept writes that reach k+1 providers but not all
        self.down: set[str] = set()     # providers found unavailable during this session
        self._pool = ThreadPoolExecutor(max(workers, self.n * 2), thread_name_prefix="freehold-io")
        # Single provider requests only; jobs here never wait on other jobs (no nested-pool deadlock).
        self._fetch_pool = ThreadPoolExecutor(max(16, self.n * 4), thread_name_prefix="freehold-fetch")
        self._race_pool = ThreadPoolExecutor(8, thread_name_prefix="freehold-race")
        self.hedge_after = 2.0          # seconds a fast read may take before the other shares are raced
        self.slow: set[str] = set()     # providers whose reads missed that deadline this session
        # A full pack: pack_size, plus the largest blob that can top it up, plus its trailer.
        full_pack = config.pack_size + config.chunker.max + 256 * 1024
        self._buffers = _ShareBuffers(MAX_PACKS_BUFFERED * self.n,
                                      SHARE_HEADER_LEN + erasure.stripe_size(full_pack, self.k))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._buffers.clear()
        # Reads abandoned to a slow provider are not waited for.
        self._race_pool.shutdown(wait=False, cancel_futures=True)
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ replicated metadata

    def _put_everywhere(self, name: str, data: bytes | bytearray) -> None:
        """Write a metadata object to every provider. Fails unless all of them took it, or, in
        degraded mode, at least k+1 did (the others are then marked down)."""
        futures = {pid: self._pool.submit(p.put, name, data) for pid, p in self.providers.items()
                   if pid not in self.down}
        errors: list[tuple[str, ProviderError]] = []
        for pid, fut in futures.items():
            try:
                fut.result()
            except ProviderError as exc:
                errors.append((pid, exc))
        self._settle(errors, len(futures) - len(errors), f"{name}")

    def _settle(self, errors: list[tuple[str, ProviderError]], written: int, what: str) -> None:
        if not errors and (not self.degraded or written >= self.k + 1):
            return
        if self.degraded and written >= self.k + 1:
            for pid, exc in errors:
                log.warning("provider %s unreachable: %s", pid, exc)
                self.down.add(pid)
            return
        if not errors:
            raise NotEnoughShares(f"{what}: only {written} providers are reachable; even a degraded "
                                  f"backup needs k+1 = {self.k + 1}")
        pid, first = errors[0]
        others = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = "" if self.degraded else "; nothing was lost (use --degraded to back up anyway)"
        raise type(first)(f"provider {pid}: {first}{others}{hint}")

    def _get_any(self, name: str, verify: Callable[[bytes], bytes]) -> bytes:
        """Read a replicated object from the first provider whose copy verifies."""
        last: FreeholdError | None = None
        for pid, p in self.providers.items():
            try:
                return verify(p.get(name))
            except ObjectNotFound as exc:
                last = exc
            except FreeholdError as exc:
                log.warning("provider %s: %s: %s", pid, name, exc)
                last = exc
        if isinstance(last, ObjectNotFound) or last is None:
            raise ObjectNotFound(f"{name} is on no provider")
        raise IntegrityError(f"no provider holds a valid copy of {name}: {last}")

    def _list_union(self, prefix: str) -> set[str]:
        names: set[str] = set()
        ok = 0
        last: ProviderError | None = None
        for pid, p in self.providers.items():
            try:
                names.update(name for name, _ in p.list(prefix))
                ok += 1
            except ProviderError as exc:
                log.warning("provider %s unreachable: %s", pid, exc)
                last = exc
        if ok == 0 and last is not None:
            raise last
        return names

    def _cached(self, sub: str, name: str) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / sub / name

    def _cache_put(self, path: Path | None, data: bytes) -> None:
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as exc:  # the cache is only a cache
            log.debug("cache write failed: %s", exc)

    def _cache_get(self, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _read_content_addressed(self, prefix: str, name_hex: str, kind: int, what: str) -> bytes:
        """Fetch (cache first) and verify a sealed object named by the keyed hash of its plaintext."""
        return self._fetch_verified(prefix, name_hex, kind, what)[1]

    def _fetch_verified(self, prefix: str, name_hex: str, kind: int, what: str) -> tuple[bytes, bytes]:
        """(envelope, plaintext) of a content-addressed object, verified."""
        name = prefix + name_hex
        context = name.encode()

        def verify(env: bytes) -> bytes:
            plain = open_sealed(self.keys.metadata, kind, context, env, what)
            if self.keys.name_id(plain).hex() != name_hex:
                raise IntegrityError(f"{what} does not match its name")
            return plain

        cpath = self._cached(prefix.rstrip("/"), name_hex)
        env = self._cache_get(cpath)
        if env is not None:
            try:
                return env, verify(env)
            except IntegrityError:
                pass  # a damaged cache entry: fetch it again
        holder: list[bytes] = []

        def verify_keep(env: bytes) -> bytes:
            plain = verify(env)
            holder.append(env)
            return plain

        plain = self._get_any(name, verify_keep)
        self._cache_put(cpath, holder[0])
        return holder[0], plain

    def replicate_metadata_to(self, target: Provider, key_check: Callable[[bytes], object]) -> int:
        """Copy every replicated object (keys, index, snapshots) to a new provider, each from a
        copy that verifies (``key_check`` parses key objects). Returns the number copied."""
        copied = 0
        for name in sorted(self._list_union(KEYS_PREFIX)):
            target.put(name, self._get_any(name, lambda data: (key_check(data), data)[1]))
            copied += 1
        for prefix, kind in ((INDEX_PREFIX, KIND_INDEX), (SNAPSHOT_PREFIX, KIND_SNAPSHOT)):
            for name in sorted(self._list_union(prefix)):
                env, _ = self._fetch_verified(prefix, name[len(prefix):], kind, name)
                target.put(name, env)
                copied += 1
        return copied

    def replica_listings(self, prefix: str) -> dict[str, set[str]]:
        """Names under ``prefix`` held by each reachable provider (unreachable ones are left out)."""
        listings: dict[str, set[str]] = {}
        for pid, p in self.providers.items():
            try:
                listings[pid] = {name for name, _ in p.list(prefix)}
            except ProviderError:
                continue
        return listings

    def heal_replicas(self) -> int:
        """Copy index and snapshot objects to reachable providers that lack them.

        An interrupted write can leave a metadata object on some providers only; it is
        complete and valid (everything it points to was written first), so finishing
        its replication is always safe. Returns the number of copies made."""
        copies = 0
        kinds = {INDEX_PREFIX: KIND_INDEX, SNAPSHOT_PREFIX: KIND_SNAPSHOT}
        for prefix, kind in kinds.items():
            listings = self.replica_listings(prefix)
            union = set().union(*listings.values()) if listings else set()
            for name in sorted(union):
                missing = [pid for pid, names in listings.items() if name not in names]
                if not missing:
                    continue
                try:
                    env, _ = self._fetch_verified(prefix, name[len(prefix):], kind, name)
                except FreeholdError as exc:
                    log.warning("cannot heal %s: %s", name, exc)
                    continue
                for pid in missing:
                    if pid in self.down:
                        continue
                    try:
                        self.providers[pid].put(name, env)
                        copies += 1
                    except ProviderError as exc:  # healing is best effort; `check` still reports it
                        log.warning("provider %s: cannot restore a copy of %s: %s", pid, name, exc)
        return copies

    def _write_content_addressed(self, prefix: str, kind: int, plain: bytes) -> str:
        name_hex = self.keys.name_id(plain).hex()
        name = prefix + name_hex
        env = seal(self.keys.metadata, kind, name.encode(), plain)
        self._put_everywhere(name, env)
        self._cache_put(self._cached(prefix.rstrip("/"), name_hex), env)
        return name_hex

    # ------------------------------------------------------------------ config

    @staticmethod
    def seal_config(keys: VaultKeys, config: formats.Config) -> bytes:
        return seal(keys.metadata, KIND_CONFIG, CONFIG_NAME.encode(), formats.encode(config))

    @staticmethod
    def open_config(keys: VaultKeys, env: bytes) -> formats.Config:
        plain = open_sealed(keys.metadata, KIND_CONFIG, CONFIG_NAME.encode(), env, "config")
        return formats.decode(plain, formats.Config, "config")

    # ------------------------------------------------------------------ index

    def load_index(self) -> None:
        """Load every index object (from the cache when it has them)."""
        names = {n[len(INDEX_PREFIX):] for n in self._list_union(INDEX_PREFIX)}
        todo = sorted(names - self.index_names)
        futures = [self._pool.submit(self._read_content_addressed, INDEX_PREFIX, h, KIND_INDEX, "index")
                   for h in todo]
        for h, fut in zip(todo, futures, strict=True):
            try:
                plain = fut.result()
            except IntegrityError as exc:
                log.warning("skipping index %s: %s", h[:12], exc)
                continue
            self._add_index(formats.decode(plain, formats.IndexFile, "index"))
            self.index_names.add(h)

    def _add_index(self, idx: formats.IndexFile) -> None:
        for rec in idx.packs:
            self.add_pack(rec)

    def add_pack(self, rec: PackRecord) -> None:
        self.packs[rec.id] = rec
        for e in rec.blobs:
            self.blobs.setdefault(e.id, BlobLoc(rec, e))

    def write_index(self, records: list[PackRecord]) -> str:
        plain = formats.encode(formats.IndexFile(v=formats.FORMAT_VERSION, packs=records))
        h = self._write_content_addressed(INDEX_PREFIX, KIND_INDEX, plain)
        self.index_names.add(h)
        return h

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, snap: formats.Snapshot) -> str:
        return self._write_content_addressed(SNAPSHOT_PREFIX, KIND_SNAPSHOT, formats.encode(snap))

    def snapshot_ids(self) -> list[str]:
        return sorted(n[len(SNAPSHOT_PREFIX):] for n in self._list_union(SNAPSHOT_PREFIX))

    def load_snapshot(self, sid: str) -> formats.Snapshot:
        try:
            plain = self._read_content_addressed(SNAPSHOT_PREFIX, sid, KIND_SNAPSHOT, "snapshot")
        except ObjectNotFound:
            raise SnapshotNotFound(f"snapshot {sid[:12]} not found") from None
        return formats.decode(plain, formats.Snapshot, "snapshot")

    def snapshots(self) -> list[tuple[str, formats.Snapshot]]:
        ids = self.snapshot_ids()
        futures = [self._pool.submit(self.load_snapshot, sid) for sid in ids]
        out = []
        for sid, fut in zip(ids, futures, strict=True):
            try:
                out.append((sid, fut.result()))
            except IntegrityError as exc:
                log.warning("skipping snapshot %s: %s", sid[:12], exc)
        out.sort(key=lambda x: (x[1].time, x[0]))
        return out

    def resolve_snapshot(self, ref: str) -> str:
        if ref == "latest":
            snaps = self.snapshots()
            if not snaps:
                raise SnapshotNotFound("the vault has no snapshots yet")
            return snaps[-1][0]
        ids = self.snapshot_ids()
        ref_l = ref.lower()
        matches = [s for s in ids if s.startswith(ref_l)] if len(ref_l) >= 4 else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise SnapshotNotFound(f"snapshot id {ref!r} is ambiguous; give more characters")
        raise SnapshotNotFound(f"no snapshot {ref!r} (see 'freehold snapshots')")

    # ------------------------------------------------------------------ packs: write

    def placement(self, pack_id: bytes) -> list[str]:
        """Provider id for each share index, under the vault's policy (placement.place): shares on
        providers known to be down are skipped in degraded mode when no other placement exists."""
        try:
            return placement.place(pack_id, self.config.providers, self.n, self.config.policy, self.down)
        except PolicyError:
            if not (self.degraded and self.down):
                raise
            return placement.place(pack_id, self.config.providers, self.n, self.config.policy)

    def check_placement(self) -> None:
        """Refuse, before any byte is written, a policy the reachable providers cannot satisfy."""
        placement.check(self.config.providers, self.n, self.config.policy,
                        () if self.degraded else self.down)

    def probe(self) -> dict[str, ProviderError]:
        """Ask every provider whether it takes writes now; returns the failures by provider id."""
        def one(item: tuple[str, Provider]) -> tuple[str, ProviderError | None]:
            try:
                item[1].check_writable()
                return item[0], None
            except ProviderError as exc:
                return item[0], exc

        return {pid: exc for pid, exc in self._pool.map(one, self.providers.items()) if exc is not None}

    def write_pack(self, parts: list[bytes | bytearray], entries: list[PackEntry]) -> PackRecord:
        """Lay the pack (``parts`` concatenated, the sealed trailer last; consumed) out as its n
        shares, each header and payload in one page-aligned buffer, and write them in parallel.
        Returns when all are durable. The blobs are copied once, straight into the stripes,
        parity is computed in place, and a local provider writes each share from its buffer
        with one O_DIRECT call: no pack-sized copy, no bounce copy, no zero-filled allocations."""
        pack_len = sum(len(p) for p in parts)
        # The pack id is the keyed hash of its trailer (the last part: envelope and length field).
        # The trailer is unique (random nonce) and authenticates every blob id and offset in the
        # pack, so it names the pack as well as hashing all 16 MiB would, at 1/1000th of the cost.
        pack_id = self.keys.name_id(parts[-1])
        size = erasure.stripe_size(pack_len, self.k)
        bufs = [self._buffers.take(SHARE_HEADER_LEN + size) for _ in range(self.n)]
        views = [memoryview(b)[: SHARE_HEADER_LEN + size] for b in bufs]
        try:
            stripes = [v[SHARE_HEADER_LEN:] for v in views]
            _scatter(parts, stripes[: self.k], pack_len)
            erasure.parity_into(stripes[: self.k], stripes[self.k:], self.k, self.n)
            return self._put_shares(pack_id, pack_len, size, views, entries)
        finally:
            for v in views:
                v.release()
            for b in bufs:
                self._buffers.give(b)

    def _put_shares(self, pack_id: bytes, pack_len: int, size: int, views: list[memoryview],
                    entries: list[PackEntry]) -> PackRecord:
        where = self.placement(pack_id)
        records: list[ShareRecord | None] = []
        futures: dict[int, Future[None]] = {}
        for i, view in enumerate(views):
            if where[i] in self.down:
                records.append(None)  # degraded: recorded as missing, `check` reports it
                continue
            view[:SHARE_HEADER_LEN] = ShareHeader(self.k, self.n, i, pack_len, size, pack_id).pack()
            records.append(ShareRecord(p=where[i], h=blake3.blake3(view).digest(), z=len(view)))
            try:
                futures[i] = self._pool.submit(self.providers[where[i]].put, share_name(pack_id, i), view)
            except BaseException:
                wait(futures.values())  # no put may still read a buffer when it is reused
                raise
        wait(futures.values())  # every put has ended, whatever happens next
        errors: list[tuple[str, ProviderError]] = []
        for i, fut in futures.items():
            try:
                fut.result()
            except ProviderError as exc:
                errors.append((where[i], exc))
                records[i] = None
        self._settle(errors, sum(r is not None for r in records), f"pack {pack_id.hex()[:12]}")
        return PackRecord(id=pack_id, len=pack_len, k=self.k, n=self.n, shares=records, blobs=entries)

    @staticmethod
    def pack_trailer(keys: VaultKeys, entries: list[PackEntry]) -> bytes:
        trailer = seal(keys.metadata, KIND_PACK_TRAILER, b"pack-trailer",
                       formats.encode(formats.PackTrailer(v=formats.FORMAT_VERSION, blobs=entries)))
        return trailer + formats.PACK_TRAILER_LEN.pack(len(trailer))

    # ------------------------------------------------------------------ blobs: read

    def open_blob(self, blob_id: bytes, blob_type: int, env: bytes | bytearray | memoryview,
                  size: int | None = None) -> bytes:
        """Authenticate, decrypt, decode and verify one blob envelope."""
        data = open_sealed(self.keys.blob_key(blob_id), kind_for(blob_type), blob_id, env, _what(blob_id))
        self._check_blob(blob_id, data, size)
        return data

    def _check_blob(self, blob_id: bytes, data: bytes | memoryview, size: int | None) -> None:
        """A blob's plaintext must have its recorded size and hash to its id."""
        if (size is not None and len(data) != size) or self.keys.blob_id(data) != blob_id:
            raise IntegrityError(f"{_what(blob_id)} does not match its id")

    def read_blobs(self, ids: Iterable[bytes]) -> dict[bytes, bytes]:
        """Fetch and verify blobs, grouping them into coalesced ranged reads per pack stripe.

        The reads run on the I/O pool; the blobs are opened (decrypted, decompressed, verified)
        here, in the calling thread, as each read completes. Opening is short CPU work between
        GIL releases: spread over many threads it only adds GIL hand-offs (20,000 small blobs:
        1.0 s on the pool, 0.8 s in one thread)."""
        by_pack: dict[bytes, list[PackEntry]] = {}
        for bid in dict.fromkeys(ids):
            loc = self.blobs.get(bid)
            if loc is None:
                raise IntegrityError(f"{_what(bid)} is in no index (vault damaged?)")
            by_pack.setdefault(loc.pack.id, []).append(loc.entry)
        jobs = []
        for pack_id, entries in by_pack.items():
            rec = self.packs[pack_id]
            for group in _coalesce(rec, sorted(entries, key=lambda e: e.o)):
                jobs.append((rec, group, self._pool.submit(self._fetch_group, rec, group)))
        out: dict[bytes, bytes] = {}
        for rec, group, job in jobs:
            got = job.result()
            if isinstance(got, dict):
                out.update(got)
                continue
            start = group[0].o
            try:
                out.update(self._open_group(group, got, start))
            except IntegrityError as exc:
                log.info("pack %s: data shares do not verify (%s); decoding from other shares",
                         rec.id.hex()[:12], exc)
                out.update(self._read_group_degraded(rec, group, start, max(e.o + e.l for e in group)))
        return out

    def read_blob(self, blob_id: bytes) -> bytes:
        return self.read_blobs([blob_id])[blob_id]

    def _fetch_group(self, rec: PackRecord, group: list[PackEntry]) -> bytes | dict[bytes, bytes]:
        """The group's pack bytes, read from the data shares (the fast path; the caller opens
        them), or, if that read fails or has not answered within ``hedge_after`` seconds, the
        group's blobs already opened from the degraded path (all shares, first k that verify),
        whichever comes first."""
        start = group[0].o
        end = max(e.o + e.l for e in group)

        def fast() -> bytes:
            return self._read_pack_range_fast(rec, start, end)

        stripe = erasure.stripe_size(rec.len, rec.k)
        holders = {s.p for j, _, _ in _segments(start, end, stripe) if (s := rec.shares[j]) is not None}
        if holders & self.slow:  # known slow this session: do not tie up another thread waiting on it
            return self._read_group_degraded(rec, group, start, end)
        fast_job = self._fetch_pool.submit(fast)
        try:
            return fast_job.result(timeout=self.hedge_after)
        except FutureTimeout:
            log.info("pack %s: data shares slow; racing the other shares", rec.id.hex()[:12])
            self.slow |= holders
        except FreeholdError as exc:
            log.info("fast read of pack %s failed (%s); decoding from other shares", rec.id.hex()[:12], exc)
            return self._read_group_degraded(rec, group, start, end)
        slow_job: Future[bytes | dict[bytes, bytes]] = self._race_pool.submit(
            self._read_group_degraded, rec, group, start, end)
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

    def _open_group(self, group: list[PackEntry], data: bytes, start: int) -> dict[bytes, bytes]:
        """``open_blob`` for every blob of a coalesced read, with the zstd bodies decoded in one
        batch (values are bytes or read-only memoryviews)."""
        view = memoryview(data)
        if len(group) < DECODE_BATCH_MIN:
            return {e.id: self.open_blob(e.id, e.t, view[e.o - start: e.o + e.l - start], e.s)
                    for e in group}
        out: dict[bytes, bytes] = {}
        packed: list[tuple[PackEntry, bytes]] = []
        for e in group:
            encoding, body = unseal(self.keys.blob_key(e.id), kind_for(e.t), e.id,
                                    view[e.o - start: e.o + e.l - start], _what(e.id))
            if encoding == ENC_ZSTD:
                packed.append((e, body))
            else:
                out[e.id] = body
        plains = decode_many([b for _, b in packed], [e.s for e, _ in packed]) if packed else []
        if plains is None:  # some body is bad: decode one by one to name it
            plains = [decode(ENC_ZSTD, b, _what(e.id)) for e, b in packed]
        for (e, _), plain in zip(packed, plains, strict=True):
            out[e.id] = plain  # type: ignore[assignment]
        for e in group:
            self._check_blob(e.id, out[e.id], e.s)
        return out

    # ------------------------------------------------------------------ trees

    def cache_pack(self, pack_id: bytes, pack: bytes | bytearray | memoryview) -> None:
        """Keep a sealed copy of a tree pack: one file per pack, not one per directory (a file
        per tree cost more than the backup itself next to fsyncing share writes)."""
        self._cache_put(self._cached("packs", pack_id.hex()), bytes(pack))

    def _cached_pack(self, rec: PackRecord) -> bytes | None:
        data = self._cache_get(self._cached("packs", rec.id.hex()))
        if data is None and rec.blobs and rec.blobs[0].t == BLOB_TREE:
            try:  # a tree pack not cached yet (new machine, deleted cache): fetch it whole, once
                data = self._read_pack_range_fast(rec, 0, rec.len)
            except FreeholdError:
                return None
            self.cache_pack(rec.id, data)
        return data if data is not None and len(data) == rec.len else None

    def load_tree(self, tree_id: bytes) -> formats.Tree:
        loc = self.blobs.get(tree_id)
        plain = None
        if loc is not None:
            with self._tree_lock:
                pack = self._tree_packs.get(loc.pack.id)
                if pack is None:
                    pack = self._cached_pack(loc.pack)
                    if pack is not None:
                        self._tree_packs[loc.pack.id] = pack
                        while sum(map(len, self._tree_packs.values())) > TREE_PACKS_IN_MEMORY:
                            self._tree_packs.popitem(last=False)
                else:
                    self._tree_packs.move_to_end(loc.pack.id)
            if pack is not None:
                try:
                    plain = self.open_blob(tree_id, BLOB_TREE, memoryview(pack)[loc.entry.o: loc.entry.o + loc.entry.l],
                                           loc.entry.s)
                except IntegrityError:
                    self._tree_packs.pop(loc.pack.id, None)  # a damaged cached copy: read from providers
        if plain is None:
            plain = self.read_blob(tree_id)
        return formats.decode(plain, formats.Tree, f"tree {tree_id.hex()[:12]}")

    def _read_pack_range_fast(self, rec: PackRecord, start: int, end: int) -> bytes:
        """Read pack bytes [start, end) from the data shares that hold them."""
        stripe = erasure.stripe_size(rec.len, rec.k)
        parts = []
        for j, a, b in _segments(start, end, stripe):
            share = rec.shares[j]
            if share is None:
                raise NotEnoughShares(f"data share {j} was never written")
            got = self.providers[share.p].get(share_name(rec.id, j), SHARE_HEADER_LEN + a,
                                              SHARE_HEADER_LEN + b)
            self.read_stats.add(len(got))
            if len(got) != b - a:
                raise IntegrityError(f"share {j} of pack {rec.id.hex()[:12]} is truncated")
            parts.append(got)
        return b"".join(parts)

    def _read_group_degraded(self, rec: PackRecord, group: list[PackEntry], start: int,
                             end: int) -> dict[bytes, bytes]:
        stripe = erasure.stripe_size(rec.len, rec.k)
        segs = _segments(start, end, stripe)
        lo = min(a for _, a, _ in segs)
        hi = max(b for _, _, b in segs)

        def fetch(i: int) -> tuple[int, bytes | None]:
            share = rec.shares[i]
            if share is None or share.p not in self.providers:
                return i, None
            try:
                got = self.providers[share.p].get(share_name(rec.id, i), SHARE_HEADER_LEN + lo,
                                                  SHARE_HEADER_LEN + hi)
            except ProviderError:
                return i, None
            self.read_stats.add(len(got), fallback=True)
            return i, (got if len(got) == hi - lo else None)

        # Ask every share at once (providers known to be slow only if the others are not enough)
        # and decode from the first k that verify: a slow or dead provider costs nothing as long
        # as k others answer.
        quick = [i for i in range(rec.n) if (s := rec.shares[i]) is not None and s.p not in self.slow]
        skipped = [i for i in range(rec.n) if (s := rec.shares[i]) is not None and s.p in self.slow]
        if len(quick) < rec.k:
            quick, skipped = quick + skipped, []
        order = quick
        jobs = [self._fetch_pool.submit(fetch, i) for i in order]
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
                    return self._open_group(group, data, start)
                except IntegrityError as exc:
                    last = exc
        if skipped:  # the quick providers were not enough: ask the slow ones too
            self.slow.clear()
            return self._read_group_degraded(rec, group, start, end)
        if len(avail) < rec.k:
            raise NotEnoughShares(f"pack {rec.id.hex()[:12]}: only {len(avail)} of the {rec.k} "
                                  "shares needed are readable")
        raise IntegrityError(f"pack {rec.id.hex()[:12]}: no combination of shares verifies ({last})")

    # ------------------------------------------------------------------ check

    def check_shares(self, read_data: bool,
                     progress: Callable[[int], None] | None = None) -> list[Problem]:
        problems: list[Problem] = []
        listings: dict[str, dict[str, int]] = {}
        for pid, p in self.providers.items():
            try:
                listings[pid] = dict(p.list(DATA_PREFIX))
            except ProviderError as exc:
                problems.append(Problem("unreachable-provider", str(exc), provider=pid))
        jobs = []
        for rec in self.packs.values():
            for i, share in enumerate(rec.shares):
                name = share_name(rec.id, i)
                if share is None:
                    problems.append(Problem("missing-share", f"share {i} was never written",
                                            object=name))
                    continue
                if share.p not in listings:
                    continue
                size = listings[share.p].get(name)
                if size is None:
                    problems.append(Problem("missing-share", "share is missing", share.p, name))
                elif size != share.z:
                    problems.append(Problem("damaged-share", f"size {size}, expected {share.z}",
                                            share.p, name))
                elif read_data:
                    jobs.append(self._pool.submit(self._verify_share, rec, i, share))
        for job in jobs:
            problem = job.result()
            if progress:
                progress(1)
            if problem:
                problems.append(problem)
        return problems

    def _verify_share(self, rec: PackRecord, i: int, share: ShareRecord) -> Problem | None:
        name = share_name(rec.id, i)
        try:
            obj = self.providers[share.p].get(name)
        except ProviderError as exc:
            return Problem("unreadable-share", str(exc), share.p, name)
        if blake3.blake3(obj).digest() != share.h:
            return Problem("damaged-share", "content does not match its hash in the index", share.p, name)
        return None


def _scatter(parts: list[bytes | bytearray], stripes: list[memoryview], pack_len: int) -> None:
    """Copy the pack's parts into its k stripes and zero the padding after ``pack_len``
    (the buffers are reused). Parts are dropped as they are copied."""
    size = len(stripes[0])
    pos = 0
    parts.reverse()
    while parts:
        part = memoryview(parts.pop())
        off = 0
        while off < len(part):
            i, at = divmod(pos, size)
            n = min(size - at, len(part) - off)
            stripes[i][at: at + n] = part[off: off + n]
            off += n
            pos += n
    while pos < size * len(stripes):
        i, at = divmod(pos, size)
        stripes[i][at:] = bytes(size - at)
        pos += size - at


class _ShareBuffers:
    """Page-aligned buffers for shares, reused from pack to pack: O_DIRECT needs aligned memory,
    and fresh memory for every pack cost a page fault per 4 KiB. Buffers are made at least
    ``typical`` bytes (a full pack's share), so nearly every pack fits the ones kept; at most
    ``keep`` are kept, and kept ones too small for a rare larger pack are dropped, not hoarded."""

    def __init__(self, keep: int, typical: int) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self._keep = keep
        self._typical = typical

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            for j, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(j)
            self._free = []  # all too small: let them go rather than hold them and a new one
        size = max(size, self._typical)
        return mmap.mmap(-1, -(-size // SHARE_BUFFER_STEP) * SHARE_BUFFER_STEP)

    def give(self, buf: mmap.mmap) -> None:
        # Never closed explicitly: a view may outlive its write in an error's traceback, and
        # a mapping is unmapped when its last view and reference are gone.
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)

    def clear(self) -> None:
        with self._lock:
            self._free = []


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
                      or e.o + e.l - group[0].o > 16 * 1024 * 1024):
            yield group
            group = []
        group.append(e)
        end = max(end, e.o + e.l) if len(group) > 1 else e.o + e.l
    if group:
        yield group


