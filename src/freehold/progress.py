"""How long-running work reports progress to whichever interface started it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def scanned(self, files: int, size: int) -> None: ...
    def advance(self, size: int) -> None: ...
    def warn(self, message: str) -> None: ...
    # A restore calls it as files become complete under their final names: an interrupted
    # restore says how many are.
    def file_done(self, files: int = 1) -> None: ...


class NullProgress:
    def scanned(self, files: int, size: int) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass

    def file_done(self, files: int = 1) -> None:
        pass
