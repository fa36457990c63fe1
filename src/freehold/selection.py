"""What a backup leaves out: restic's exclude patterns, tag files and sizes (pure; no I/O).

Patterns follow restic (``internal/filter``): a pattern is cleaned like Go's ``filepath.Clean``
(doubled and trailing ``/`` dropped, ``.`` and ``..`` resolved) and split into components, each
matched like Go's ``filepath.Match`` against one whole path component: ``*`` any run of
characters, ``?`` one character, ``[...]`` a class (``[^...]`` negated, ``lo-hi`` ranges, ``\\``
escapes); none of them crosses ``/``. A component that is exactly ``**`` matches any number of
components, none included. A pattern starting with ``/`` must match the path's first components
(``/bin`` matches ``/bin/bash``, not ``/usr/bin/x``); any other pattern may match any run of
consecutive components (``foo`` matches ``/a/foo`` and ``/a/foo/b``, not ``/a/foobar``). So a
pattern matches a path when it matches the path or one of its parents. In a list, a pattern
starting with ``!`` cancels the matches of the patterns before it (as in restic and gitignore).
Matching is done by one regular expression per pattern over the ``/``-joined absolute path.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .errors import UsageError

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"  # bford.info/cachedir
_SPECIAL_VARS = "*#$@!?-0123456789"
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _escape_in_class(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def component_regex(comp: str) -> str:
    """A regular expression (no anchors) for one pattern component with Go's ``filepath.Match``
    semantics, never matching ``/``. Raises UsageError for a malformed component."""
    out: list[str] = []
    i, n = 0, len(comp)
    while i < n:
        c = comp[i]
        i += 1
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\":
            if i >= n:
                raise UsageError(f"bad pattern component {comp!r}: a trailing \\")
            out.append(re.escape(comp[i]))
            i += 1
        elif c == "[":
            negated = i < n and comp[i] == "^"
            i += negated
            ranges: list[tuple[str, str]] = []
            while True:
                if i < n and comp[i] == "]" and ranges:
                    i += 1
                    break
                lo, i = _class_char(comp, i)
                hi = lo
                if i < n and comp[i] == "-":
                    hi, i = _class_char(comp, i + 1)
                ranges.append((lo, hi))
            items = "".join(_escape_in_class(lo) if lo == hi else f"{_escape_in_class(lo)}-{_escape_in_class(hi)}"
                            for lo, hi in ranges if lo <= hi)
            if negated:
                out.append(f"[^/{items}]")
            elif not items:
                out.append("(?!)")  # only empty ranges (z-a): Go matches nothing
            elif any(lo <= "/" <= hi for lo, hi in ranges):
                out.append(f"(?:(?!/)[{items}])")
            else:
                out.append(f"[{items}]")
        else:
            out.append(re.escape(c))
    return "".join(out)


def _class_char(comp: str, i: int) -> tuple[str, int]:
    if i >= len(comp) or comp[i] in "-]":
        raise UsageError(f"bad pattern component {comp!r}: malformed character class")
    if comp[i] == "\\":
        if i + 1 >= len(comp):
            raise UsageError(f"bad pattern component {comp!r}: a trailing \\")
        return comp[i + 1], i + 2
    return comp[i], i + 1


def clean(pattern: str) -> str:
    """Go's ``filepath.Clean`` for '/'-separated paths."""
    cleaned = posixpath.normpath(pattern)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("//") else cleaned


def pattern_regex(pattern: str) -> str:
    """The regular expression, for ``re.search`` over an absolute path, of one pattern (without
    its ``!``)."""
    cleaned = clean(pattern)
    anchored = cleaned.startswith("/")
    comps = [c for c in cleaned.split("/") if c] if cleaned != "/" else ["**"]
    pieces = ["(?:/[^/]+)*" if c == "**" else "/" + component_regex(c) for c in comps]
    return ("^" if anchored else "") + "".join(pieces) + "(?=/|$)"


@dataclass(frozen=True)
class Pattern:
    text: str
    negated: bool
    regex: re.Pattern[str]


def compile_pattern(text: str, fold: bool = False) -> Pattern:
    negated = text.startswith("!")
    body = text[1:] if negated else text
    if fold:
        body = body.lower()
    return Pattern(text, negated, re.compile(pattern_regex(body)))


class PatternList:
    """restic's ``filter.List``: does a path match the list (negations applied in order)?"""

    def __init__(self, patterns: Iterable[str], fold: bool = False) -> None:
        self.fold = fold
        self.patterns = [compile_pattern(p, fold) for p in patterns if p]
        self.negations = any(p.negated for p in self.patterns)
        # Without negations one expression answers for the whole list.
        self.any = (re.compile("|".join(f"(?:{p.regex.pattern})" for p in self.patterns))
                    if self.patterns and not self.negations else None)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def match(self, path: str) -> bool:
        if self.fold:
            path = path.lower()
        if self.any is not None:
            return (path != "/" and self.any.search(path) is not None) or self._root(path)
        matched = False
        for p in self.patterns:
            hit = p.regex.search(path) is not None and (path != "/" or p.regex.pattern.startswith("^"))
            matched = (matched and not hit) if p.negated else (matched or hit)
        return matched

    def _root(self, path: str) -> bool:
        """The path '/' itself: only an anchored pattern can match it (restic)."""
        return path == "/" and any(p.regex.pattern.startswith("^") and p.regex.search(path) for p in self.patterns)


def expand_env(text: str, environ: Mapping[str, str]) -> str:
    """Go's ``os.Expand`` as restic applies it to exclude files: ``$NAME`` and ``${NAME}`` become
    the variable (empty when unset), ``$$`` a dollar sign; malformed ``${`` is dropped."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        rest = text[i + 1:]
        name, width = _shell_name(rest)
        if name:
            out.append("$" if name == "$" else environ.get(name, ""))
        elif not width:
            out.append("$")
        i += 1 + width
    return "".join(out)


def _shell_name(s: str) -> tuple[str, int]:
    if s[0] == "{":
        if len(s) > 2 and s[1] in _SPECIAL_VARS and s[2] == "}":
            return s[1], 3
        end = s.find("}")
        if end == 1:
            return "", 2
        return (s[1:end], end + 1) if end > 0 else ("", 1)
    if s[0] in _SPECIAL_VARS:
        return s[0], 1
    i = 0
    while i < len(s) and (s[i].isascii() and (s[i].isalnum() or s[i] == "_")):
        i += 1
    return s[:i], i


def pattern_lines(text: str, environ: Mapping[str, str]) -> list[str]:
    """The patterns of an exclude file: lines stripped, blank and '#' lines ignored, variables
    expanded."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(expand_env(line, environ))
    return out


def path_lines(text: str) -> list[str]:
    """The entries of a --files-from file: lines stripped, blank and '#' lines ignored."""
    return [s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#")]


def has_magic(component: str) -> bool:
    return any(c in component for c in "*?[\\")


def parse_size(text: str) -> int:
    """``--exclude-larger-than``: bytes, or a number with k, m, g or t (powers of 1024, optionally
    followed by b or ib; decimals allowed: 1.5G)."""
    m = _SIZE.fullmatch(text)
    if not m:
        raise UsageError(f"{text!r} is not a size such as 2048, 10M or 1.5G")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def tag_spec(spec: str) -> tuple[str, bytes]:
    """``--exclude-if-present NAME[:HEADER]``: the file name and the header it must start with."""
    name, sep, header = spec.partition(":")
    if not name or "/" in name:
        raise UsageError(f"--exclude-if-present {spec!r}: give a file name (NAME or NAME:HEADER)")
    return name, header.encode() if sep else b""


@dataclass
class Selection:
    """The exclude options of one backup, ready to apply."""

    excludes: PatternList = field(default_factory=lambda: PatternList(()))
    iexcludes: PatternList = field(default_factory=lambda: PatternList((), fold=True))
    tags: list[tuple[str, bytes]] = field(default_factory=list)   # (file name, header or b"")
    larger_than: int | None = None
    one_file_system: bool = False

    @property
    def by_name(self) -> bool:
        return bool(self.excludes) or bool(self.iexcludes)

    def rejects(self, path: str) -> bool:
        return (bool(self.excludes) and self.excludes.match(path)) or (
            bool(self.iexcludes) and self.iexcludes.match(path))


def snapshot_layout(paths: list[str]) -> tuple[str, list[tuple[str, ...]]] | None:
    """Where each source goes in the snapshot. None when the last components are unique: every
    source is a node of the root tree named by its last component. Otherwise every source is
    stored under its path relative to the deepest directory holding them all (returned with the
    components of each path below it, in the order of ``paths``); a source inside another
    source must have been dropped first (it is stored as part of the other)."""
    names = [posixpath.basename(p) or "root" for p in paths]
    if len(set(names)) == len(names):
        return None
    base = posixpath.commonpath(paths)
    return base, [tuple(c for c in posixpath.relpath(p, base).split("/")) for p in paths]


def nested(paths: list[str]) -> set[str]:
    """The paths that lie inside another of the (distinct) paths."""
    return {p for p in paths for q in paths if q != p and p.startswith(q.rstrip("/") + "/")}


def source_names(paths: list[str]) -> dict[str, str]:
    """Where each of a snapshot's paths (Snapshot.paths) is in its tree, '/'-separated: the last
    component, or the path below the common directory when last components collide
    (``snapshot_layout``). What a reader needs to find an original absolute path in a snapshot."""
    layout = snapshot_layout(paths)
    if layout is None:
        return {p: posixpath.basename(p) or "root" for p in paths}
    return {p: "/".join(rel) for p, rel in zip(paths, layout[1], strict=True)}
