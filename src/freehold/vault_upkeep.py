"""The Vault's door to the upkeep jobs: forget, prune, locks, stats, prices and retention.

A mixin of :class:`freehold.vault.Vault` (the one door), kept in its own module so that no
module outgrows ~600 lines; it uses the Vault's own operation helpers (``_op``, ``_finish``,
``_change_config``)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from . import formats, reports, retention
from .api import CHECK_DATA_LOST, CHECK_REPAIRABLE, ForgetReport, MaintainReport, PruneOptions, PruneReport
from .door import DoorParts
from .errors import UsageError
from .jobs.forget import forget
from .jobs.prune import Prune
from .store import maintenance, utc_stamp

if TYPE_CHECKING:
    from .store.locks import LockInfo


class UpkeepDoor(DoorParts):

    def stats(self) -> dict[str, Any]:
        op = self._op()
        out = reports.stats(op)
        self._finish(op)
        return out

    def forget(self, rules: retention.KeepRules | None = None, ids: list[str] | None = None, *,
               group_by: str = "host,paths", hosts: list[str] | None = None, tags: list[str] | None = None,
               dry_run: bool = False) -> ForgetReport:
        """Forget snapshots by id or by retention rules (restic's). No data is deleted: ``prune``
        reclaims what no remaining snapshot needs."""
        op = self._op()
        report = forget(op, rules, ids or [], group_by=group_by, hosts=hosts, tags=tags, dry_run=dry_run)
        self._finish(op)
        return report

    def prune(self, options: PruneOptions | None = None,
              progress: Callable[[str, int, int], None] | None = None) -> PruneReport:
        op = self._op()
        report = Prune(op, options or PruneOptions(), progress).run()
        self._finish(op)
        return report

    def locks(self) -> list[LockInfo]:
        op = self._op()
        out = op.locks.list()
        self._finish(op)
        return out

    def unlock(self, all_locks: bool = False) -> list[LockInfo]:
        """Remove stale locks (``all_locks``: every lock, for when the user knows none is live)."""
        op = self._op()
        out = op.locks.remove(all_locks=all_locks)
        self._finish(op)
        return out

    def set_price(self, provider: str, price: float) -> None:
        """Record the user's price per TB-month of a provider (a config change), for ``stats``."""
        if price < 0:
            raise UsageError("a price cannot be negative")
        ids = [p.id for p in self._store.config.providers]
        if provider not in ids:
            raise UsageError(f"no provider {provider!r} (providers: {', '.join(ids)})")
        op = self._op()
        self._change_config(op, lambda c: msgspec.structs.replace(c, providers=[
            msgspec.structs.replace(p, price=float(price)) if p.id == provider else p for p in c.providers]))
        self._finish(op)

    def maintain(self, *, take_over: bool = False, period_days: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> MaintainReport:
        """What a timer runs: check, read the next subset of the data (all of it over
        ``period_days``, one subset a run), repair when needed, forget by the vault's retention
        policy and prune, then record the run. One host is the maintainer; another refuses
        unless ``take_over``."""
        op = self._op()
        key = self._store.keys.index
        last = maintenance.newest(op.replicas, key)
        host = socket.gethostname()
        self._finish(op)
        if last is not None and last.host != host and not take_over:
            raise UsageError(f"{last.host} is this vault's maintainer (last run {last.time}); run maintain there, "
                             "or here with --take-over to make this host the maintainer")
        subsets = period_days or (last.subsets if last else 30)
        subset = (last.subset % subsets) if last and last.subsets == subsets else 0
        rep = MaintainReport(host=host, subset=f"{subset + 1}/{subsets}")
        rep.check = self.check(subset=rep.subset)  # type: ignore[attr-defined]
        codes = [rep.check.exit_code]
        if rep.check.exit_code == CHECK_REPAIRABLE or rep.check.pack_health:
            rep.repair = self.repair(read_data=True, subset=rep.subset)  # type: ignore[attr-defined]
            codes = [rep.repair.exit_code]
        rules = self.retention_policy()
        if rules != formats.Retention():
            rep.forget = self.forget(retention.KeepRules.of(rules))
        orphans = rep.check.orphans
        if CHECK_DATA_LOST not in codes and ((rep.forget and rep.forget.removed) or orphans.packs
                                             or orphans.retired_packs):
            rep.prune = self.prune(PruneOptions(), progress)
        op = self._op()
        self._expire_grants(op)  # the sharing mixin's: expired grants end here too
        record = formats.Maintenance(v=formats.FORMAT_VERSION, time=utc_stamp(), host=host, period_days=subsets,
                                     subset=(subset + 1) % subsets, subsets=subsets)
        maintenance.write(op.replicas, key, record, op.maintenance_quorum())
        self._finish(op)
        rep.exit_code = max(codes, key=lambda c: (c == CHECK_DATA_LOST, c))
        return rep

    def retention_policy(self) -> formats.Retention:
        return self._store.config.policy.retention

    def set_retention(self, rules: formats.Retention) -> None:
        """Make ``rules`` the vault's retention policy (what ``maintain`` forgets by)."""
        retention.KeepRules.of(rules)  # validates
        op = self._op()
        self._change_config(op, lambda c: msgspec.structs.replace(
            c, policy=msgspec.structs.replace(c.policy, retention=rules)))
        self._finish(op)
