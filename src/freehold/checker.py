"""``check``: shares, replicated metadata, trees, each finding naming its provider and object.

Shares and packs are surveyed by ``jobs.health`` (the door passes its findings in). Every
replicated object kind is surveyed copy by copy: config (stale or bad copies), key objects
(missing, damaged, unknown, revoked), index and snapshot objects (missing, bad, stray), and
each provider's identity marker. Metadata replicas are healed as they are found (copying a
verified replica, or deleting a revoked key object, is always safe); damaged shares wait for
``repair``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable

from . import formats, keys
from .api import (
    ALIASED_PROVIDER,
    DAMAGED_REPLICA,
    GONE_OBJECT,
    MISSING_BLOB,
    MISSING_REPLICA,
    MISSING_SNAPSHOT,
    REVOKED_KEY,
    STALE_REPLICA,
    STRAY_OBJECT,
    UNKNOWN_KEY,
    UNREADABLE_SNAPSHOT,
    CheckReport,
    Problem,
)
from .errors import FreeholdError
from .store import HEALED, Operation
from .store.configs import CONFIG_NAME, ConfigRead, admits
from .store.keystore import KEYS_PREFIX
from .store.metadata import MARKER_PREFIX, SNAPSHOT_PREFIX, ReplicaFinding
from .store.replicas import Verified


class Checker:
    def __init__(self, op: Operation, config_read: ConfigRead, last_snapshot: str = "") -> None:
        self.op = op
        self.config_read = config_read
        self.last_snapshot = last_snapshot
        self.report = CheckReport()

    def run(self, shares: Callable[[CheckReport], None]) -> CheckReport:
        """``shares`` fills in the findings about shares and packs (the door runs the health
        survey of ``jobs.health``, which this layer may not import)."""
        r = self.report
        packs = self.op.index.packs()
        r.packs = len(packs)
        r.shares = sum(len(p.shares) for p in packs)
        shares(r)
        self._config()
        self._markers()
        self._keys()
        snaps = self._content_addressed()
        seen: set[bytes] = set()
        for sid, snap in snaps:
            try:
                self._tree(snap.tree, seen)
            except FreeholdError as exc:
                r.problems.append(Problem(UNREADABLE_SNAPSHOT, f"{sid[:12]}: {exc}"))
        r.snapshots = len(snaps)
        forgotten = self.op.load_deletions().snapshots  # forgetting one's own newest is no rollback
        if self.last_snapshot and self.last_snapshot not in {sid for sid, _ in snaps} | forgotten:
            r.problems.append(Problem(MISSING_SNAPSHOT, f"snapshot {self.last_snapshot[:12]}, the newest this "
                                      "machine wrote, is on no reachable provider (deleted or rolled back)",
                                      object=SNAPSHOT_PREFIX + self.last_snapshot))
        return r

    def heal_metadata(self) -> int:
        """The replicated-metadata part of ``run`` alone (``repair`` heals replicas with it):
        returns the copies written or deleted."""
        self._config()
        self._markers()
        self._keys()
        self._content_addressed()
        return self.report.healed

    # ------------------------------------------------------------------ replicated metadata

    def _config(self) -> None:
        read = self.config_read
        self.report.replicas += 1
        healed = set(self.op.configs.heal(read))
        for pid in sorted(read.stale):
            kind, why = (DAMAGED_REPLICA, read.bad[pid]) if pid in read.bad else (
                STALE_REPLICA, "missing or older than the newest config")
            self.report.problems.append(Problem(kind, why, pid, CONFIG_NAME, healed=pid in healed))
        self.report.healed += len(healed)

    def _markers(self) -> None:
        entries = [p for p in self.op.config.providers if p.marker and p.id in self.op.store.providers]
        if not entries:
            return
        for e in entries:
            name = MARKER_PREFIX + e.marker
            got = self.op.replicas.gather(lambda p, name=name: p.head(name))
            for pid, size in got.items():
                if isinstance(size, FreeholdError):
                    continue
                if pid == e.id and size is None:
                    self.report.problems.append(Problem(MISSING_REPLICA, "identity marker missing", pid, name))
                elif pid != e.id and size is not None:
                    self.report.problems.append(Problem(
                        ALIASED_PROVIDER, f"holds the identity marker of provider {e.id}: the same storage "
                        "counted twice", pid, name))

    def _keys(self) -> None:
        cfg = self.op.config
        listing = self.op.replicas.listing(KEYS_PREFIX)
        purged = self.op.keystore.purge_revoked(set(cfg.revoked), listing)
        for name in listing.names:
            self.report.replicas += 1
            if name in purged:
                for pid, ok in purged[name].items():
                    self.report.healed += ok
                    self.report.problems.append(Problem(REVOKED_KEY, "a revoked key object is back; deleted"
                                                        if ok else "a revoked key object is back", pid, name,
                                                        healed=ok))
                continue
            if not admits(cfg, name[len(KEYS_PREFIX):]):
                for pid in sorted(listing.held[name]):
                    self.report.problems.append(Problem(UNKNOWN_KEY, "a key object the config does not name "
                                                        "(planted, or another machine's change in progress)",
                                                        pid, name))
                continue
            self._key_replicas(name, listing.held[name], listing.reachable)
        for kid in cfg.keys:
            name = KEYS_PREFIX + kid
            if name not in listing.held:
                self.report.problems.append(Problem(MISSING_REPLICA, "key object the config names is on no "
                                                    "reachable provider", object=name))

    def _key_replicas(self, name: str, holders: set[str], reachable: set[str]) -> None:
        """Key objects cannot be verified without their passphrase: the copy held by most
        providers that parses, and whose vault id is ours, is taken as the right one."""
        copies = self.op.replicas.read_each(name, keys.read_keyfile)
        good = Counter(v.raw for v in copies.values()
                       if isinstance(v, Verified) and v.value.vault_id == self.op.config.vault_id)
        if not good:
            for pid in sorted(holders):
                self.report.problems.append(Problem(DAMAGED_REPLICA, "no copy of this key object is valid", pid, name))
            return
        right, _ = good.most_common(1)[0]
        bad = {pid for pid, v in copies.items() if pid in holders
               and not (isinstance(v, Verified) and v.raw == right)}
        missing = (reachable - holders) - self.op.session.down
        targets = sorted(bad | missing)
        if not targets:
            return
        got = self.op.replicas.gather(lambda p: p.put(name, right), pids=targets, enough=len(targets))
        for pid in targets:
            ok = not isinstance(got.get(pid), FreeholdError)
            self.report.healed += ok
            kind = DAMAGED_REPLICA if pid in bad else MISSING_REPLICA
            self.report.problems.append(Problem(kind, "key object copy differs from the others" if pid in bad
                                                else "key object missing", pid, name, healed=ok))

    def _content_addressed(self) -> list[tuple[str, formats.Snapshot]]:
        snaps: list[tuple[str, formats.Snapshot]] = []
        raw = {prefix: self.op.objects.listing(prefix) for prefix, _, _ in HEALED}
        gone = self.op.purge_gone(raw)
        if gone:
            self.report.problems.append(Problem(GONE_OBJECT, f"{gone} copies of forgotten or replaced objects were "
                                                "back (a provider missed a deletion); deleted", healed=True))
            self.report.healed += gone
        for prefix, kind, what in HEALED:
            listing = self.op.live_listing(prefix, raw[prefix])
            self.report.replicas += len(listing.held)
            findings = self.op.objects.survey(prefix, kind, what, listing, deep=True)
            self.report.healed += self.op.objects.heal(findings, kind, what)
            for f in findings:
                self._report_finding(f)
            if prefix == SNAPSHOT_PREFIX:
                valid = [n for n in listing.names if not any(f.name == n and not f.valid for f in findings)]
                for name in valid:
                    sid = name[len(prefix):]
                    try:
                        snaps.append((sid, self.op.load_snapshot(sid)))
                    except FreeholdError as exc:
                        self.report.problems.append(Problem(UNREADABLE_SNAPSHOT, f"{sid[:12]}: {exc}"))
        return snaps

    def _report_finding(self, f: ReplicaFinding) -> None:
        if not f.valid:
            for pid, why in sorted(f.bad.items()):
                self.report.problems.append(Problem(STRAY_OBJECT, f"verifies nowhere ({why})", pid, f.name))
            return
        for pid, why in sorted(f.bad.items()):
            self.report.problems.append(Problem(DAMAGED_REPLICA, why, pid, f.name, healed=pid in f.healed))
        for pid in sorted(f.missing):
            self.report.problems.append(Problem(MISSING_REPLICA, "replica missing", pid, f.name,
                                                healed=pid in f.healed))

    # ------------------------------------------------------------------ trees

    def _tree(self, tree_id: bytes, seen: set[bytes]) -> None:
        if tree_id in seen:
            return
        seen.add(tree_id)
        index = self.op.index
        if tree_id not in index:
            self.report.problems.append(Problem(MISSING_BLOB, f"tree {tree_id.hex()[:12]} is in no index"))
            return
        for node in self.op.trees.load(tree_id).nodes:
            for c in node.content:
                if c not in index and c not in seen:
                    seen.add(c)
                    self.report.problems.append(Problem(MISSING_BLOB, f"data blob {c.hex()[:12]} of "
                                                        f"{os.fsdecode(node.name)!r} is in no index"))
            if node.subtree is not None:
                self._tree(node.subtree, seen)

