"""The Vault's door to sharing (design §20): grants of one file or folder to people's public
keys, their list, revocation, and the refresh of live grants after each backup.

A mixin of :class:`freehold.vault.Vault`, like ``vault_upkeep``."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import msgspec

from . import caps, formats, retention
from .api import GrantInfo, ShareResult
from .door import DoorParts
from .errors import FreeholdError, UsageError
from .jobs import share as share_job
from .store import Operation, grants, utc_stamp


def expiry(text: str | None, now: datetime | None = None) -> str:
    """``--expires 30d`` (restic's 1y2m3d4h durations) as an ISO 8601 UTC time; "" for never."""
    if not text:
        return ""
    y, m, d, h = retention.parse_duration(text)
    span = timedelta(days=365 * y + 30 * m + d, hours=h)
    if span <= timedelta(0):
        raise UsageError(f"--expires {text!r} must be a positive duration such as 30d or 12h")
    return ((now or datetime.now(UTC)) + span).isoformat(timespec="seconds")


def _info(g: formats.Grant) -> GrantInfo:
    return GrantInfo(id=g.name.hex(), path=g.path, snapshot=g.snapshot, to=tuple(g.to), created=g.created,
                     live=g.live, expires=g.expires, revoked=g.revoked, label=g.label)


class SharingDoor(DoorParts):

    def share(self, path: str, to: list[str], *, snapshot: str = "latest", live: bool = False,
              expires: str | None = None, label: str = "", degraded: bool = False) -> ShareResult:
        """Grant read access to one file or folder of a snapshot (``live``: of every later
        snapshot holding it, until revoked) to the holders of the given public keys.
        ``degraded``: the grant's objects need only k+1 providers to take them (as a backup's)."""
        recipients, names = caps.recipients(to)
        until = expiry(expires)
        op = self._op(degraded)
        sid, snap = op.resolve_snapshot(snapshot)
        op.load_index()
        name, key = grants.new_name(), secrets.token_bytes(32)
        obj = share_job.build(op, sid, snap, path, name, live=live, expires=until)
        quorum = op.packs.metadata_quorum()
        # The grant object first, then the owner's record of it: a crash between leaves an object
        # nobody holds the key to (the capability file is written by the caller only after this).
        grants.write_shared(op.replicas, key, obj, quorum)
        grant = formats.Grant(v=1, name=name, key=key, to=names, path=obj.path, snapshot=sid,
                              created=utc_stamp(), label=label, live=live, expires=until)
        grants.write_grant(op.replicas, self._store.keys.metadata, grant, quorum)
        cfg = self._store.config
        cap = formats.Capability(v=1, vault_id=cfg.vault_id, name=name, key=key,
                                 providers=[formats.ProviderEntry(id=p.id, url=p.url) for p in cfg.providers],
                                 k=cfg.k, n=cfg.n, path=obj.path, live=live, expires=until, structure=cfg.v)
        text = caps.write(cap, recipients)
        size = sum(e.s for rec in obj.packs for e in rec.blobs)
        self._finish(op)
        return ShareResult(id=name.hex(), path=obj.path or "/", snapshot=sid, capability=text,
                           blobs=sum(len(rec.blobs) for rec in obj.packs), bytes=size, to=tuple(names), live=live,
                           expires=until)

    def shares(self) -> list[GrantInfo]:
        op = self._op()
        out = [_info(g) for g in grants.grants(op.replicas, self._store.keys.metadata, op.session.warn)]
        self._finish(op)
        return out

    def revoke_share(self, ref: str) -> GrantInfo:
        """Delete a grant's object from every provider and mark it revoked: nothing written
        afterwards is ever listed for it (content shared before cannot be unshared)."""
        op = self._op()
        found = [g for g in grants.grants(op.replicas, self._store.keys.metadata, op.session.warn)
                 if ref and g.name.hex().startswith(ref.lower())]
        if len(found) != 1:
            raise UsageError(f"no grant {ref!r} (see 'freehold shares list')" if not found else
                             f"grant id prefix {ref!r} is ambiguous: give more characters")
        g = found[0]
        if not g.revoked:
            g = msgspec.structs.replace(g, revoked=utc_stamp())
            grants.write_grant(op.replicas, self._store.keys.metadata, g, op.maintenance_quorum())
        failed = {pid: e for pid, e in grants.delete_shared(op.replicas, g.name).items() if e is not None}
        for pid, exc in sorted(failed.items()):
            op.session.warn(f"provider {pid}: cannot delete the grant object yet ({exc}); "
                            "the next backup or 'maintain' deletes it")
        self._finish(op)
        return _info(g)

    def _expire_grants(self, op: Operation) -> list[formats.Grant]:
        """Delete the objects of revoked and expired grants wherever they are listed (again, should
        a provider have kept or restored one); the grants still in force. Run by every backup and
        every ``maintain``; a failure is a warning."""
        try:
            if not op.replicas.listing(grants.GRANTS_PREFIX).names:
                return []
            present = set(op.replicas.listing(grants.SHARED_PREFIX).names)
            now = utc_stamp()
            live = []
            for g in grants.grants(op.replicas, self._store.keys.metadata, op.session.warn):
                if g.revoked or grants.expired(g.expires, now):
                    if grants.SHARED_PREFIX + g.name.hex() in present:
                        grants.delete_shared(op.replicas, g.name)
                else:
                    live.append(g)
            return live
        except FreeholdError as exc:
            op.session.warn(f"grants were not checked for expiry: {exc}")
            return []

    def _refresh_grants(self, op: Operation, sid: str, snap: formats.Snapshot) -> None:
        """After a backup: live grants whose path the new snapshot holds see it; expired and
        revoked grants' objects are deleted. A failure here is a warning: the backup itself is
        complete."""
        try:
            for g in self._expire_grants(op):
                if not g.live:
                    continue
                try:
                    obj = share_job.build(op, sid, snap, g.path, g.name, live=True, expires=g.expires)
                except UsageError:
                    continue  # this snapshot does not hold the path (another machine's, say)
                grants.write_shared(op.replicas, g.key, obj, op.packs.metadata_quorum())
        except FreeholdError as exc:
            op.session.warn(f"live shares were not refreshed: {exc}")
