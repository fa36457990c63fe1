"""Which snapshot paths a restore takes (``RestoreOptions.includes`` and ``excludes``).

Each include or exclude is a snapshot path as ``ls`` prints it (root entries are named by the
last component of the backed-up path), the original absolute path (``/home/u/docs/x`` is
``docs/x`` when ``/home/u/docs`` was backed up), or a glob pattern (it holds ``*``, ``?`` or
``[``) matched with ``fnmatch`` against the snapshot path, and against the original path, of an
entry and of each of its parents. The union of the includes is taken (everything when there is
none); excludes win. A plain include that names nothing in the snapshot is an error.
"""

from __future__ import annotations

import fnmatch
import re

from . import formats
from .errors import UsageError
from .formats import Node

_GLOB = re.compile(r"[*?\[]")


class Selection:
    """Which snapshot paths a restore takes (``RestoreOptions.includes``/``excludes``): a path
    as ``ls`` prints it, the original absolute path, or a glob matched against either."""

    def __init__(self, snap: formats.Snapshot, includes: tuple[str, ...], excludes: tuple[str, ...]) -> None:
        self.paths = [p.rstrip("/") for p in snap.paths if p.strip("/")]
        self.origins: dict[str, str] = {}
        for p in self.paths:
            self.origins.setdefault(p.rsplit("/", 1)[-1], p)
        self.inc, self.inc_glob = self._split(includes)
        self.exc, self.exc_glob = self._split(excludes)
        self.everything = not includes or "" in self.inc   # '' or '/': the whole snapshot
        self.inc.discard("")
        self.active = bool(includes or excludes)
        self.within = {"/".join(p.split("/")[:i]) for p in self.inc for i in range(1, p.count("/") + 1)}
        self.seen: set[str] = set()

    def _split(self, items: tuple[str, ...]) -> tuple[set[str], list[re.Pattern[str]]]:
        plain, globs = set(), []
        for item in items:
            if _GLOB.search(item):
                globs.append(re.compile(fnmatch.translate(item)))
            else:
                plain.add(self._snapshot_path(item))
        return plain, globs

    def _snapshot_path(self, item: str) -> str:
        norm = "/".join(p for p in item.split("/") if p and p != ".")
        if item.startswith("/"):
            for p in self.paths:
                orig = p.strip("/")
                if norm == orig or norm.startswith(orig + "/"):
                    return orig.rsplit("/", 1)[-1] + norm[len(orig):]
        return norm

    def _globbed(self, globs: list[re.Pattern[str]], path: str) -> bool:
        if not globs:
            return False
        head, sep, rest = path.partition("/")
        base = self.origins.get(head)
        orig = None if base is None else base + sep + rest
        return any(g.match(path) or (orig is not None and g.match(orig)) for g in globs)

    def take(self, path: str, node: Node, selected: bool) -> tuple[bool, bool]:
        """(planned at all, selected itself): a directory that is not selected may still be
        planned, as the way to a selected path below it."""
        if path in self.inc:
            self.seen.add(path)
            selected = True
        if path in self.exc or self._globbed(self.exc_glob, path):
            return False, False
        selected = selected or self._globbed(self.inc_glob, path)
        if selected:
            return True, True
        return node.type == "dir" and (path in self.within or bool(self.inc_glob)), False

    def check(self) -> None:
        missing = sorted(self.inc - self.seen)
        if missing:
            raise UsageError(f"{missing[0]!r} is not in this snapshot")
