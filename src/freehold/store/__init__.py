"""The storage layer: everything written to providers, one component per job.

``Store`` holds what lives as long as an open vault (keys, config, providers, index, caches,
thread pools); ``Store.operation()`` makes the per-operation components over a fresh
``Session``, so nothing one call learns about providers leaks into the next.

    replicas   ReplicaSet     quorum writes, verified reads, union listings of replicated objects
    metadata   SealedObjects  content-addressed index and snapshot objects, healing
    configs    ConfigStore    the config, by generations that only move forward
    keystore   KeyStore       key objects: bounded unlock, quorum add and delete
    index      Index          blob -> pack entry, pack -> share records
    blobs      BlobCodec      blob envelopes
    packs      PackWriter     pack layout, padding, shares, placement
    reader     BlobReader     ranged, hedged and degraded reads
    trees      TreeStore      trees, their cache, the one walker
"""

from __future__ import annotations

import itertools
import posixpath
from collections.abc import Mapping, Sequence, Set
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from .. import erasure, formats
from ..crypto import KIND_DELETION, KIND_INDEX, KIND_SNAPSHOT, VaultKeys
from ..errors import FreeholdError, IntegrityError, ObjectNotFound, SnapshotNotFound
from ..formats import SHARE_HEADER_LEN, PackRecord
from ..providers.base import Provider
from ..selection import source_names
from . import writers
from .blobs import BlobCodec
from .cache import LocalCache
from .clock import utc_stamp
from .configs import ConfigStore
from .deletions import DELETIONS_PREFIX, Deletions
from .deletions import load as load_deletions
from .deletions import write as write_deletion
from .index import Index
from .keystore import KeyStore
from .locks import Locks
from .metadata import INDEX_PREFIX, SNAPSHOT_PREFIX, SealedObjects
from .packs import MAX_PACKS_BUFFERED, PackWriter, ShareBuffers, padded_length, share_name
from .reader import BlobReader
from .replicas import Listing, ReplicaSet
from .session import Session
from .trees import TreePacks, TreeStore

__all__ = ["DELETIONS_PREFIX", "HEALED", "Operation", "Session", "Store", "snapshot_path", "utc_stamp"]

# The content-addressed replicated objects that healing copies where they are missing.
HEALED = ((DELETIONS_PREFIX, KIND_DELETION, "deletion record"), (INDEX_PREFIX, KIND_INDEX, "index object"),
          (SNAPSHOT_PREFIX, KIND_SNAPSHOT, "snapshot"))


class Store:
    """Made over the providers first (unlocking needs their key objects and config), then
    ``attach``ed to the config and keys they yield."""

    def __init__(self, providers: dict[str, Provider], cache_dir: Path | None = None, workers: int = 8) -> None:
        self.providers = providers
        self.cache = LocalCache(cache_dir)
        self.index = Index()
        self.deletions = Deletions()
        self.tree_packs = TreePacks()
        n = max(5, len(providers))
        self.pool = ThreadPoolExecutor(max(workers, n * 2), thread_name_prefix="freehold-io")
        self.fetch_pool = ThreadPoolExecutor(max(16, n * 4), thread_name_prefix="freehold-fetch")
        self.race_pool = ThreadPoolExecutor(8, thread_name_prefix="freehold-race")
        self.meta_pool = ThreadPoolExecutor(max(16, n * 4), thread_name_prefix="freehold-meta")
        self._config: formats.Config | None = None
        self._keys: VaultKeys | None = None
        self.codec: BlobCodec | None = None
        self.buffers: ShareBuffers | None = None

    def attach(self, config: formats.Config, keys: VaultKeys) -> None:
        self._config = config
        self._keys = keys
        self.codec = BlobCodec(keys)
        self.index.locate = keys.locate
        good = {p.id for p in config.providers if not p.draining}
        self.index.good = good.__contains__
        # A full pack: pack_size, plus the largest blob that can top it up, plus its trailer, padded.
        full_pack = padded_length(config.pack_size + config.chunker.max + 256 * 1024)
        self.buffers = ShareBuffers(MAX_PACKS_BUFFERED * config.n,
                                    SHARE_HEADER_LEN + erasure.stripe_size(full_pack, config.k))

    @property
    def config(self) -> formats.Config:
        assert self._config is not None, "store not attached"
        return self._config

    @config.setter
    def config(self, config: formats.Config) -> None:
        self._config = config
        good = {p.id for p in config.providers if not p.draining}
        self.index.good = good.__contains__

    @property
    def keys(self) -> VaultKeys:
        assert self._keys is not None, "store not attached"
        return self._keys

    def replicas(self, session: Session) -> ReplicaSet:
        return ReplicaSet(self.providers, self.meta_pool, session)

    def operation(self, session: Session | None = None) -> Operation:
        return Operation(self, session or Session())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        if self.buffers is not None:
            self.buffers.clear()
        # Reads abandoned to a slow provider are not waited for.
        for pool in (self.race_pool, self.fetch_pool, self.meta_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        for prov in self.providers.values():
            close = getattr(prov, "close", None)
            if close is not None:
                close()


class Operation:
    """The components of one operation, over its own Session."""

    def __init__(self, store: Store, session: Session) -> None:
        self.store = store
        self.session = session
        self.config = store.config
        assert store.codec is not None and store.buffers is not None, "store not attached"
        self.replicas = store.replicas(session)
        self.objects = SealedObjects(self.replicas, store.keys, store.cache, writers.snapshot_opener(
            store.keys, lambda: self.config.vault_id, lambda: writers.writer_pubs(self.config)))
        self.configs = ConfigStore(self.replicas, store.keys, store.cache)
        self.keystore = KeyStore(self.replicas)
        self.locks = Locks(self.replicas, store.keys.index, self.maintenance_quorum())
        self._deletions_listed = False
        self.index = store.index
        self.codec = store.codec
        self.reader = BlobReader(store.index, store.codec, store.providers, store.pool, store.fetch_pool,
                                 store.race_pool, session)
        self.trees = TreeStore(store.index, store.codec, self.reader, store.cache, store.tree_packs)
        self.packs = PackWriter(store.keys, store.config, store.providers, store.pool, store.buffers, session)

    # ------------------------------------------------------------------ index

    def load_deletions(self, fresh: bool = False) -> Deletions:
        """Every deletion record that verifies (1.3), added to the store's: listed once per
        operation, again when ``fresh`` (to see what another machine retired meanwhile)."""
        if fresh or not self._deletions_listed:
            load_deletions(self.objects, self.store.deletions, self.session.warn)
            self._deletions_listed = True
        return self.store.deletions

    def load_index(self) -> None:
        """Load every live index object that verifies (from the cache when it has them): not
        those a deletion record names; names that verify nowhere are skipped with a warning
        naming who holds them."""
        gone = self.load_deletions().index
        if self.index.names & gone:  # a prune or repair replaced some since they were loaded
            self.index.clear()
        listing = self.objects.listing(INDEX_PREFIX)
        todo = [n for n in listing.names if n[len(INDEX_PREFIX):] not in self.index.names
                and n[len(INDEX_PREFIX):] not in gone]
        jobs = [self.store.pool.submit(self.objects.read, INDEX_PREFIX, n[len(INDEX_PREFIX):], KIND_INDEX,
                                       "index object") for n in todo]
        for name, job in zip(todo, jobs, strict=True):
            try:
                _, plain = job.result()
                idx = formats.decode(plain, formats.IndexFile, "index object")
                # 2.0: who signed it decides whose deduplication may use it (design §23)
                author = writers.index_author(self.store.keys, self.config, idx) if self.store.keys.version >= 2 else ""
            except FreeholdError as exc:
                self._stray(name, listing.held[name], exc)
                continue
            self.index.add_file(name[len(INDEX_PREFIX):], idx, author)

    def _stray(self, name: str, holders: set[str], exc: FreeholdError) -> None:
        if isinstance(exc, IntegrityError):  # names the providers and why each copy was refused
            self.session.warn(f"ignored: {exc}")
        else:
            self.session.warn(f"ignored {name} (listed by {', '.join(sorted(holders))}): {exc}")

    def write_index(self, records: list[PackRecord], quorum: int | None = None, avoid: Set[str] = frozenset()
                    ) -> str:
        """A new index object of ``records``. Its name must not be one that a deletion record (or
        the replacement under way, ``avoid``) retires: the same records written in the same instant
        would hash to the same name, and be deleted as the old one. The time tells them apart."""
        gone = self.load_deletions().index
        keys = self.store.keys
        foreign: dict[str, list[bytes]] = {}   # 2.0, the owner's: machines' packs stay theirs (design §23)
        if keys.version >= 2 and keys.label == "":
            for rec in records:
                if who := self.index.author(rec.id):
                    foreign.setdefault(who, []).append(rec.id)
        now = datetime.now(UTC)
        for step in itertools.count():
            idx = formats.IndexFile(v=formats.FORMAT_VERSION, packs=records,
                                    time=(now + timedelta(microseconds=step)).isoformat(timespec="microseconds"),
                                    foreign=foreign)
            if keys.version >= 2:
                idx = writers.sign_index(keys, self.config.vault_id, idx)
            plain = formats.encode(idx)
            name = keys.name_id(plain).hex()
            if name not in gone and name not in avoid:
                break
        h = self.objects.write(INDEX_PREFIX, KIND_INDEX, plain,
                               quorum=self.packs.metadata_quorum() if quorum is None else quorum)
        self.index.add_file(h, idx, idx.writer)
        return h

    def maintenance_quorum(self) -> int:
        """Providers that must take what a repair, prune or forget writes: every reachable one,
        and at least a majority (and k) of the vault's providers."""
        n = len(self.store.providers)
        return max(self.config.k, n // 2 + 1)

    def replace_index(self, old: set[str], records: list[PackRecord], *, retire: Sequence[bytes] = (),
                      snapshots: Sequence[str] = (), reason: str, host: str,
                      per_object: int = 2048) -> list[str]:
        """Write ``records`` as new index objects, then a deletion record retiring the index
        objects ``old`` (and the packs ``retire``, the snapshots ``snapshots``), then delete the
        old objects where they are (design §15a). A crash between any two steps leaves every
        pack that a live snapshot needs listed by a live index object."""
        quorum = self.maintenance_quorum()
        names = [self.write_index(records[i: i + per_object], quorum, avoid=old)
                 for i in range(0, len(records), per_object)]
        if old or retire or snapshots:
            rec = formats.Deletion(v=formats.FORMAT_VERSION, time=utc_stamp(), host=host, reason=reason,
                                   snapshots=sorted(snapshots), index=sorted(old), packs=sorted(retire))
            write_deletion(self.objects, rec, self.store.deletions, quorum)
        self.purge_gone()
        return names

    def shares_present(self, rec: PackRecord) -> int:
        """How many of a pack's recorded shares exist with their recorded size (HEAD requests)."""
        count = 0
        for i, share in enumerate(rec.shares):
            prov = self.store.providers.get(share.p) if share is not None else None
            if prov is None or share is None:
                continue
            try:
                count += prov.head(share_name(rec.id, i)) == share.z
            except FreeholdError:
                continue
        return count

    def live_listing(self, prefix: str, raw: Listing | None = None) -> Listing:
        """A listing of ``prefix`` (``raw``, when the caller has one) without the names deletion
        records say are gone."""
        raw = raw or self.objects.listing(prefix)
        gone = self.load_deletions()
        return Listing(held={n: h for n, h in raw.held.items() if not gone.gone(n)}, reachable=raw.reachable,
                       errors=raw.errors)

    def purge_gone(self, raw: Mapping[str, Listing] | None = None) -> int:
        """Delete copies of gone index and snapshot objects wherever they still are; drop them
        from the cache. ``raw``: listings by prefix the caller already has (else listed here).
        Returns how many copies were deleted."""
        gone = self.load_deletions()
        deleted = 0
        if not gone.index and not gone.snapshots:
            return 0
        for prefix, names in ((INDEX_PREFIX, gone.index), (SNAPSHOT_PREFIX, gone.snapshots)):
            listing = (raw or {}).get(prefix) or self.objects.listing(prefix)
            for name in listing.names:
                hexname = name[len(prefix):]
                if hexname not in names:
                    continue
                self.store.cache.drop(prefix.rstrip("/"), hexname)
                for pid, err in self.replicas.delete_each(name, sorted(listing.held[name])).items():
                    if err is None:
                        deleted += 1
                    else:
                        self.session.warn(f"provider {pid}: cannot delete {name}: {err}")
        if self.index.names & gone.index:
            self.index.clear()
            self.load_index()
        return deleted

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, snap: formats.Snapshot) -> str:
        keys = self.store.keys
        if keys.role == "writer":  # 2.0: sealed to the owner, signed by this writer (design §23)
            plain = formats.encode(msgspec.structs.replace(snap, writer=keys.label))
            name_hex = keys.name_id(plain).hex()
            env = writers.seal_writer_snapshot(keys, self.config.vault_id, SNAPSHOT_PREFIX + name_hex, plain)
            self.replicas.put_all(SNAPSHOT_PREFIX + name_hex, env, quorum=self.packs.metadata_quorum())
            return name_hex
        return self.objects.write(SNAPSHOT_PREFIX, KIND_SNAPSHOT, formats.encode(snap),
                                  quorum=self.packs.metadata_quorum())

    def load_snapshot(self, sid: str) -> formats.Snapshot:
        try:
            _, plain = self.objects.read(SNAPSHOT_PREFIX, sid, KIND_SNAPSHOT, "snapshot")
        except ObjectNotFound:
            raise SnapshotNotFound(f"snapshot {sid[:12]} not found") from None
        return formats.decode(plain, formats.Snapshot, "snapshot")

    def snapshots(self, listing: Listing | None = None) -> list[tuple[str, formats.Snapshot]]:
        """Every snapshot that verifies, oldest first; the others are skipped with a warning."""
        listing = listing or self.objects.listing(SNAPSHOT_PREFIX)
        gone = self.load_deletions().snapshots
        ids = [n[len(SNAPSHOT_PREFIX):] for n in listing.names if n[len(SNAPSHOT_PREFIX):] not in gone]
        jobs = [self.store.pool.submit(self.load_snapshot, sid) for sid in ids]
        out = []
        for sid, job in zip(ids, jobs, strict=True):
            try:
                out.append((sid, job.result()))
            except FreeholdError as exc:
                self._stray(SNAPSHOT_PREFIX + sid, listing.held[SNAPSHOT_PREFIX + sid], exc)
        out.sort(key=lambda x: (x[1].time, x[0]))
        return out

    def resolve_snapshot(self, ref: str) -> tuple[str, formats.Snapshot]:
        """(id, snapshot) for ``latest`` or any unique prefix of an id (of any length), among
        the snapshots that verify."""
        snaps = self.snapshots()
        if ref == "latest":
            if not snaps:
                raise SnapshotNotFound("the vault has no snapshots yet")
            return snaps[-1]
        ref_l = ref.strip().lower()
        matches = [(s, snap) for s, snap in snaps if s.startswith(ref_l)] if ref_l else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise SnapshotNotFound(f"snapshot id prefix {ref!r} is ambiguous: {len(matches)} snapshots start "
                                   "with it; give more characters (see 'freehold snapshots')")
        raise SnapshotNotFound(f"no snapshot {ref!r} (see 'freehold snapshots')")


def snapshot_path(snap: formats.Snapshot, path: str) -> str:
    """A path as the user names it, as a path in the snapshot's tree ('' for the root): an
    original absolute path the snapshot holds (``/home/me/Documents/taxes``, under the backed
    up path ``/home/me/Documents``), or a path below the tree's roots (``Documents/taxes``),
    normalised (``./p``, ``p//q``, ``p/`` are ``p``, ``p/q``, ``p``)."""
    norm = posixpath.normpath(path) if path.strip() else ""
    if norm.startswith("/"):
        names = source_names(snap.paths)  # where each backed-up path is in the tree
        for root in sorted(snap.paths, key=len, reverse=True):  # the innermost backed-up path
            top = posixpath.normpath(root)
            name = names[root]
            if norm == top:
                return name
            if norm.startswith(top.rstrip("/") + "/"):
                return f"{name}/{norm[len(top.rstrip('/')) + 1:]}"
    return "" if norm in (".", "/", "//") else norm.strip("/")
