"""The Vault's door to the integrity jobs: check, repair, drain, remove and replace providers.

A mixin of :class:`freehold.vault.Vault` (the one door), kept in its own module so that no
module outgrows ~600 lines; it uses the Vault's own operation helpers (``_op``, ``_finish``,
``_change_config``, ``add_provider``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from . import formats, placement
from .api import CheckReport, ProviderChange, RepairReport
from .assembly import ProviderSpec, Wrap, location, open_one
from .checker import Checker
from .door import DoorParts
from .errors import PolicyError, UsageError
from .jobs import health
from .jobs.repair import Repair, RepairOptions
from .progress import Progress

if TYPE_CHECKING:
    from .store import Operation
    from .store.configs import ConfigRead


class IntegrityDoor(DoorParts):
    def add_provider(self, spec: ProviderSpec, wrap: Wrap | None = None) -> formats.ProviderEntry: ...

    def _config_read(self, op: Operation) -> ConfigRead:
        local = self._on_disk
        return op.configs.load(seen_generation=local.config_generation if local else 0,
                               vault_id=self._store.config.vault_id)

    def check(self, read_data: bool = False, progress: Callable[[int], None] | None = None, *,
              subset: str | None = None) -> CheckReport:
        """Survey shares (``read_data``: read and hash every share; ``subset``: ``N%`` or ``n/t``
        of the packs) and every replicated object; heal metadata replicas. ``exit_code`` of the
        report: 0 healthy, 1 repairable, 13 data lost."""
        selector = health.select(read_data, subset)  # a bad subset is refused before any work
        op = self._op()
        local = self._on_disk
        cfg = self._store.config

        def shares(r: CheckReport) -> None:
            health.report_into(health.survey(op, selector, progress), r, cfg)

        report = Checker(op, self._config_read(op), local.last_snapshot if local else "").run(shares)
        self._finish(op)
        return report

    def repair(self, dry_run: bool = False, read_data: bool = False, subset: str | None = None,
               progress: Progress | None = None) -> RepairReport:
        """Rebuild missing and damaged shares, move shares off draining providers and off
        providers the policy forbids, index packs that no index lists, heal metadata replicas;
        under the exclusive lock. ``dry_run``: say what would be done, write nothing."""
        health.select(read_data, subset)
        op = self._op()
        local = self._on_disk

        def heal() -> int:
            return Checker(op, self._config_read(op), local.last_snapshot if local else "").heal_metadata()

        report = Repair(op, RepairOptions(dry_run, read_data, subset), progress, heal=None if dry_run else heal).run()
        report.outcome = self._finish(op)
        return report

    # ------------------------------------------------------------------ providers

    def _entry(self, name: str) -> formats.ProviderEntry:
        for p in self._store.config.providers:
            if p.id == name:
                return p
        names = ", ".join(p.id for p in self._store.config.providers)
        raise UsageError(f"no provider named {name!r} (the vault's providers: {names})")

    def _refresh_good(self) -> None:
        """The index merges records preferring providers that are not draining (store.index)."""
        good = {p.id for p in self._store.config.providers if not p.draining}
        self._store.index.good = good.__contains__

    def holding(self, name: str) -> int:
        """How many packs of the live index record a share on provider ``name``."""
        return sum(any(s is not None and s.p == name for s in rec.shares) for rec in self._store.index.packs())

    def drain_provider(self, name: str, progress: Progress | None = None) -> RepairReport:
        """Mark the provider as draining (a config change: no new shares go there), then repair,
        which moves every share it holds to other providers, reading from the others where it
        can. Rerunning finishes an interrupted drain."""
        entry = self._entry(name)
        cfg = self._store.config
        if not entry.draining:
            rest = [p for p in cfg.providers if p.id != name]
            try:
                placement.check(rest, cfg.n, cfg.policy)
            except PolicyError as exc:
                raise PolicyError(f"cannot drain {name}: without it, {exc}; add a provider first (or use "
                                  f"'freehold provider replace {name} NEW_URL')") from None
            op = self._op()
            self._change_config(op, lambda c: msgspec.structs.replace(c, providers=[
                msgspec.structs.replace(p, draining=True) if p.id == name else p for p in c.providers]))
            self._finish(op)
            self._refresh_good()
        return self.repair(progress=progress)

    def remove_provider(self, name: str) -> ProviderChange:
        """Remove a provider from the config. Refused while the live index records a share on
        it (drain it first); its remaining objects are left where they are."""
        self._entry(name)
        op = self._op()
        op.load_index()
        held = self.holding(name)
        if held:
            raise UsageError(f"provider {name} still holds shares of {held} pack(s) that the index lists; run "
                             f"'freehold provider drain {name}' first (it moves them to the other providers)")
        cfg = self._store.config
        placement.check([p for p in cfg.providers if p.id != name], cfg.n, cfg.policy)
        self._change_config(op, lambda c: msgspec.structs.replace(
            c, providers=[p for p in c.providers if p.id != name]))
        prov = self._store.providers.pop(name, None)
        if prov is not None:
            prov.close()
        self._refresh_good()
        return ProviderChange(removed=name, outcome=self._finish(op))

    def replace_provider(self, old: str, spec: ProviderSpec, progress: Progress | None = None,
                         wrap: Wrap | None = None) -> ProviderChange:
        """Add the new provider, drain the old one, remove it: one command, resumable by running
        it again (a new provider already added, or an old one already draining, is taken as is)."""
        new = open_one(spec.name or "new", spec.url, spec.jurisdiction, spec.operator, wrap)
        try:
            where = location(new)
        finally:
            new.close()
        added = next((pid for pid, p in self._store.providers.items() if location(p) == where), "")
        if not any(p.id == old for p in self._store.config.providers):
            if added:
                return ProviderChange(removed=old, added=added)  # done by an earlier run
            self._entry(old)
        if added == old:
            raise UsageError(f"{spec.url} is provider {old} itself")
        if not added:
            added = self.add_provider(spec, wrap).id
        rep = self.drain_provider(old, progress)
        if self.holding(old):
            return ProviderChange(added=added, repair=rep, outcome=rep.outcome)
        change = self.remove_provider(old)
        return ProviderChange(removed=old, added=added, repair=rep, outcome=change.outcome)
