"""The Vault's door to publishing (format 1.4 Part A.2; docs/design.md, publishing): content
made public on IPFS as UnixFS DAGs computed from what the vault stores, the records of what was
published, and the blocks ``freehold gateway`` serves (a local regular file's DAG is computed
from the file while it is backed up, when that provably is the vault's copy: jobs.publish_local).

A mixin of :class:`freehold.vault.Vault`, like ``vault_sharing``."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from . import formats
from .api import NftInfo, PublishedInfo, PublishResult
from .door import DoorParts
from .errors import Incomplete, UsageError
from .jobs import publish as publish_job
from .jobs import publish_local
from .progress import Progress
from .store import grants, snapshot_path, utc_stamp
from .unixfs import DEFAULT_PROFILE, cid_str

if TYPE_CHECKING:
    from .api import BackupOptions, BackupResult

PUBLISHED_TAG = "published"


def _info(rid: str, rec: formats.Published) -> PublishedInfo:
    return PublishedInfo(id=rid, time=rec.time, cid=publish_job.cid_text(rec.cid), profile=rec.profile,
                         snapshot=rec.snapshot, path=rec.path, kind=rec.kind, size=rec.size, name=rec.name,
                         description=rec.description,
                         nft_cid=publish_job.cid_text(rec.nft_cid) if rec.nft_cid else "")


class PublishingDoor(DoorParts):

    if TYPE_CHECKING:
        def backup(self, paths: list[str], progress: Progress | None = None, tags: list[str] | None = None,
                   degraded: bool = False, options: BackupOptions | None = None) -> BackupResult: ...

    def publish(self, path: str, *, profile: str = DEFAULT_PROFILE, car: Path | None = None,
                nft: NftInfo | None = None, progress: Progress | None = None, degraded: bool = False
                ) -> PublishResult:
        """Publish a local file or folder (backed up first, into a snapshot tagged ``published``)
        or content the vault holds (``SNAPSHOT:PATH``, e.g. ``latest:records/x.pdf``): its UnixFS
        DAG is computed from the vault's stored copy, written as a CAR to ``car`` if given, and
        recorded. With ``nft``, ERC-721 metadata naming it as its image is published too.

        A local regular file's DAG (and CAR) is computed from the file itself while the backup
        runs (:mod:`freehold.jobs.publish_local`), and used only if the file's stat did not move
        during that read and is the stat of the backup's untorn node for it: the same assumption
        the backup's change detection makes, so both read the same bytes and the record is the
        CID of what the vault holds. Otherwise the DAG is computed from the vault as above. The
        gateway computes every record again from the vault before it serves it, whichever way
        the record was made."""
        prof = publish_job.profile_of(profile)
        if car is not None:
            publish_job.check_car_target(car)
        backed_up = os.path.lexists(path)
        local_dag: publish_local.LocalPublish | None = None
        try:
            if backed_up:
                local = Path(os.path.abspath(path))
                publish_job.check_local(local)
                default_name = local.name
                if default_name:   # the NFT name is then known before the node is
                    local_dag = publish_local.start(local, prof, car=car, nft=None if nft is None else (
                        nft.name or default_name, nft.description))
                res = self.backup([str(local)], progress=progress, tags=[PUBLISHED_TAG], degraded=degraded)
                sid, snap = res.id, res.snapshot
                if snap.skipped:
                    raise Incomplete(f"snapshot {sid[:12]} was saved, but {len(snap.skipped)} path(s) could not "
                                     f"be read ({snap.skipped[0]}); nothing was published")
                inner = snapshot_path(snap, snap.paths[0])
            elif ":" in path:
                ref, _, inner = path.partition(":")
                default_name = ""
            else:
                raise UsageError(f"{path!r}: no such file or folder (to publish what the vault holds, name it as "
                                 "SNAPSHOT:PATH, e.g. latest:records/x.pdf)")
            op = self._op(degraded)  # degraded: the record needs k+1 providers, as a backup's objects
            if not backed_up:
                sid, snap = op.resolve_snapshot(ref or "latest")
            for torn in snap.torn:
                op.session.warn(f"{torn} changed while it was backed up: what is published is what the vault holds")
            op.load_index()
            base, node = publish_job.find(op, snap, sid, inner)
            name = (nft.name if nft is not None else "") or default_name or os.fsdecode(node.name)
            description = nft.description if nft is not None else ""
            nft_pair = (name, description) if nft is not None else None
            built = local_dag.take(op, snap, node, nft_pair) if local_dag is not None else None
            if built is None:
                built = publish_job.build(op, node, prof, car=car, nft=nft_pair)
            elif car is not None and built.car_tmp is not None:
                publish_job.place_car(built.car_tmp, car)
        finally:
            if local_dag is not None:
                local_dag.discard()
        rec = formats.Published(v=1, time=utc_stamp(), cid=built.root, profile=prof.name, snapshot=sid, path=base,
                                kind=built.kind, size=built.size, name=name, description=description,
                                nft_cid=built.nft_cid, nft_json=built.nft_json)
        try:
            rid = grants.write_published(op.replicas, self._store.keys.metadata, rec, op.packs.metadata_quorum())
        except BaseException:
            if car is not None:  # ours, written moments ago: no CAR of content that was not published
                with contextlib.suppress(OSError):
                    car.unlink()
            raise
        self._finish(op)
        cid = cid_str(built.root)
        nft_cid = cid_str(built.nft_cid) if built.nft_cid else ""
        return PublishResult(id=rid, cid=cid, uri=f"ipfs://{cid}", profile=prof.name, snapshot=sid, path=base,
                             kind=built.kind, size=built.size, blocks=built.blocks, backed_up=backed_up,
                             car=str(car) if car is not None else "", car_bytes=built.car_bytes, nft_cid=nft_cid,
                             nft_uri=f"ipfs://{nft_cid}" if nft_cid else "",
                             nft_json=built.nft_json.decode("utf-8"))

    def published(self) -> list[PublishedInfo]:
        """Every publishing record that verifies, oldest first."""
        op = self._op()
        out = [_info(rid, rec) for rid, rec in grants.published(op.replicas, self._store.keys.metadata,
                                                                 op.session.warn)]
        self._finish(op)
        return out

    def published_blocks(self) -> publish_job.PublishedBlocks:
        """The blocks of everything published, for :mod:`freehold.gateway`: each record's DAG is
        computed again from the vault's content (lazily, or all at once with ``verify_all()``)
        and served only if its root is the recorded CID. Valid while the vault is open."""
        op = self._op()
        records = grants.published(op.replicas, self._store.keys.metadata, op.session.warn)
        self._finish(op)
        return publish_job.PublishedBlocks(self._op, records)
