"""What a backup is asked to read: from the paths and options (api.BackupOptions) to a plan of
sources and a selection, checked before anything is read or written."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .api import BackupOptions
from .errors import UsageError
from .progress import Progress
from .selection import (
    CACHEDIR_SIGNATURE,
    CACHEDIR_TAG,
    PatternList,
    Selection,
    component_regex,
    has_magic,
    nested,
    path_lines,
    pattern_lines,
    tag_spec,
)


@dataclass(frozen=True)
class Source:
    path: str      # absolute, without a trailing '/'
    follow: bool   # named with a trailing '/': a symbolic link is followed


@dataclass
class Plan:
    sources: list[Source]
    selection: Selection
    dry_run: bool = False
    stdin: Any = None              # a binary stream stored as one file named stdin_name
    stdin_name: str = ""

    @property
    def paths(self) -> list[str]:
        """Snapshot.paths: the absolute paths given (for --stdin, '/' and the file name)."""
        if self.stdin is not None:
            return ["/" + self.stdin_name]
        return sorted(s.path for s in self.sources)


def plan_backup(paths: Iterable[str], opts: BackupOptions, environ: Mapping[str, str],
                progress: Progress) -> Plan:
    """Check the options and name the sources; UsageError for anything wrong, before any work."""
    selection = Selection(
        excludes=PatternList([*opts.excludes, *_pattern_files(opts.exclude_files, environ, "--exclude-file")]),
        iexcludes=PatternList([*opts.iexcludes, *_pattern_files(opts.iexclude_files, environ, "--iexclude-file")],
                              fold=True),
        tags=[tag_spec(s) for s in opts.exclude_if_present]
        + ([(CACHEDIR_TAG, CACHEDIR_SIGNATURE)] if opts.exclude_caches else []),
        larger_than=opts.exclude_larger_than, one_file_system=opts.one_file_system)
    if opts.exclude_larger_than is not None and opts.exclude_larger_than < 0:
        raise UsageError("--exclude-larger-than must not be negative")
    given = list(paths)
    if opts.stdin is not None:
        name = opts.stdin_filename
        if given or opts.files_from:
            raise UsageError("--stdin stores the stream alone: name no paths and no --files-from")
        if not name or "/" in name or name in (".", ".."):
            raise UsageError(f"--stdin-filename {name!r}: give a file name (no '/')")
        return Plan([], selection, opts.dry_run, opts.stdin, name)
    for p in given:
        if not os.path.lexists(p):
            raise UsageError(f"no such file or directory: {p}")
    for listing in opts.files_from:
        for line in path_lines(_read(listing, "--files-from")):
            found = _glob(line)
            if not found:
                progress.warn(f"{line} (from {listing}) matches no file; left out")
            given += found
    if not given:
        raise UsageError("name at least one path to back up")
    sources: dict[str, Source] = {}
    for p in given:
        path = os.path.abspath(p)
        sources.setdefault(path, Source(path, p.endswith("/") and path != "/"))
    inner = nested(list(sources))
    names = [os.path.basename(s) or "root" for s in sources]
    if inner and len(set(names)) < len(names):  # stored with the source holding them
        sources = {p: s for p, s in sources.items() if p not in inner}
    return Plan(list(sources.values()), selection, opts.dry_run)


def own_state(paths: Iterable[str], sources: list[Source]) -> dict[tuple[int, int], str]:
    """(dev, ino) of Freehold's own directories (FREEHOLD_HOME, local providers), to leave out of
    every walk; a source that is one of them, or lies inside one, is refused."""
    own: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            own[(st.st_dev, st.st_ino)] = str(p)
    for src in sources:
        here = src.path
        while True:
            try:  # a link named without a trailing '/' is stored as a link: judged by itself
                st = os.lstat(here) if here == src.path and not src.follow else os.stat(here)
            except OSError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) in own:
                raise UsageError(f"{src.path} is Freehold's own state ({own[(st.st_dev, st.st_ino)]}: the "
                                 "local configuration or a provider directory of this vault); it is never backed up")
            up = os.path.dirname(here)
            if up == here:
                break
            here = up
    return own


def _read(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8-sig", errors="surrogateescape") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None


def _pattern_files(files: Iterable[str], environ: Mapping[str, str], option: str) -> list[str]:
    return [p for f in files for p in pattern_lines(_read(f, option), environ)]


def _glob(pattern: str) -> list[str]:
    """Go's ``filepath.Glob`` (as restic expands --files-from lines): components with ``*``,
    ``?``, ``[`` or ``\\`` matched like exclude pattern components (dot files included), the
    others taken as they are; only what exists, sorted."""
    absolute = pattern.startswith("/")
    comps = [c for c in pattern.split("/") if c]
    if not any(has_magic(c) for c in comps):
        return [pattern] if os.path.lexists(pattern) else []
    found = ["/" if absolute else ""]
    for comp in comps:
        nxt = []
        for base in found:
            if not has_magic(comp):
                cand = os.path.join(base, comp) if base else comp
                if os.path.lexists(cand):
                    nxt.append(cand)
                continue
            rx = re.compile(component_regex(comp))
            try:
                names = sorted(os.listdir(base or "."))
            except OSError:
                continue
            nxt += [os.path.join(base, n) if base else n for n in names if rx.fullmatch(n)]
        found = nxt
    return found
