"""The local cache: sealed copies of metadata objects and tree packs, verified like provider
copies on every read, and disposable (delete it at any time).

Writes go to a unique temporary name and are renamed into place, so commands sharing one
``FREEHOLD_HOME`` never see each other's half-written files. They are not fsynced: a torn
cache entry fails verification and is fetched again. An entry that already holds the same
bytes is left alone (read-only commands change nothing in the home once the cache is filled),
and a cache that cannot be written (a read-only home, a full disk) is silent.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)


class LocalCache:
    def __init__(self, root: Path | None) -> None:
        self.root = root

    def path(self, sub: str, name: str) -> Path | None:
        return None if self.root is None else self.root / sub / name

    def get(self, sub: str, name: str) -> bytes | None:
        path = self.path(sub, name)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def put(self, sub: str, name: str, data: bytes | bytearray | memoryview) -> None:
        path = self.path(sub, name)
        if path is None:
            return
        if self._holds(path, data):
            return
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as exc:  # the cache is only a cache
            log.debug("cache write failed: %s", exc)
            try:
                tmp.unlink()
            except OSError:
                pass

    @staticmethod
    def _holds(path: Path, data: bytes | bytearray | memoryview) -> bool:
        try:
            if path.stat().st_size != memoryview(data).nbytes:
                return False
            return path.read_bytes() == data
        except OSError:
            return False

    def drop(self, sub: str, name: str) -> None:
        path = self.path(sub, name)
        if path is not None:
            try:
                path.unlink()
            except OSError:
                pass
