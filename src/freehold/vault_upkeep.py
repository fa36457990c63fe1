"""The Vault's door to the upkeep jobs: forget, prune, locks, maintain, stats.

A mixin of :class:`freehold.vault.Vault` (the one door), kept in its own module so that no
module outgrows ~600 lines; it uses the Vault's own operation helpers (``_op``, ``_finish``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import reports

if TYPE_CHECKING:
    from .state import LocalState
    from .store import Operation, Store


class UpkeepDoor:
    _store: Store
    _on_disk: LocalState | None
    home: Path

    def _op(self, degraded: bool = False) -> Operation: ...  # provided by Vault
    def _finish(self, op: Operation) -> Any: ...              # provided by Vault

    def stats(self) -> dict[str, Any]:
        op = self._op()
        out = reports.stats(op)
        self._finish(op)
        return out
