"""What the Vault's door mixins (``vault_integrity``, ``vault_upkeep``) use of the Vault itself:
declared once here, provided by :class:`freehold.vault.Vault`, which inherits both; and what every
door does with the one Store it holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from . import formats

if TYPE_CHECKING:
    from .state import LocalState
    from .store import Operation, Store


class StoreDoor:
    """Closing the door closes its Store (the owner's Vault, a capability holder's SharedVault, a
    machine's WriterVault); each is also a context manager that does so."""

    _store: Store

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DoorParts:
    _store: Store
    _on_disk: LocalState | None
    home: Path

    def _op(self, degraded: bool = False) -> Operation: ...  # provided by Vault
    def _finish(self, op: Operation) -> Any: ...              # provided by Vault
    def _change_config(self, op: Operation, mutate: Callable[[formats.Config], formats.Config]) -> list[str]: ...
    def _expire_grants(self, op: Operation) -> list[formats.Grant]: ...      # provided by SharingDoor
