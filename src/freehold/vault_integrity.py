"""The Vault's door to the integrity jobs: check, repair, drain, remove and replace providers.

A mixin of :class:`freehold.vault.Vault` (the one door), kept in its own module so that no
module outgrows ~600 lines; it uses the Vault's own operation helpers (``_op``, ``_finish``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import CheckReport
from .checker import Checker

if TYPE_CHECKING:
    from .state import LocalState
    from .store import Operation, Store


class IntegrityDoor:
    _store: Store
    _on_disk: LocalState | None
    home: Path

    def _op(self, degraded: bool = False) -> Operation: ...  # provided by Vault
    def _finish(self, op: Operation) -> Any: ...              # provided by Vault

    def check(self, read_data: bool = False, progress: Callable[[int], None] | None = None) -> CheckReport:
        op = self._op()
        local = self._on_disk
        read = op.configs.load(seen_generation=local.config_generation if local else 0,
                               vault_id=self._store.config.vault_id)
        report = Checker(op, read, local.last_snapshot if local else "").run(read_data, progress)
        self._finish(op)
        return report
