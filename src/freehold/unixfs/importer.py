"""Import files and folders into UnixFS DAGs whose CIDs match the IPFS reference importer.

The reference is npm's ``ipfs-unixfs-importer`` 17.1.1 run with its ``profile`` option, which
for the two IPIP-499 profiles sets (everything else at the importer's defaults):

==========================  ==========================  ==========================
option                      ``unixfs-v1-2025``          ``unixfs-v0-2015``
==========================  ==========================  ==========================
cidVersion                  1                           0
rawLeaves                   true                        false (UnixFS File leaves)
chunker                     fixedSize 1048576           fixedSize 262144
layout                      balanced, 1024 children     balanced, 174 children
shardSplitStrategy          ``block-bytes``             ``links-bytes``
shardSplitThresholdBytes    262144 (default)            262144 (default)
shardFanoutBits             8 (default; 256 buckets)    8 (default)
reduceSingleLeafToSelf      true (default)              true (default)
fieldOrder                  links-first                 links-first
mtime / mode                none                        none
==========================  ==========================  ==========================

Sharding is decided as :mod:`freehold.unixfs.tree` describes; files are built as
:mod:`freehold.unixfs.files` describes; blocks come out in the order the reference puts them
into its blockstore (with ``fileImportConcurrency: 1`` for folders, so files are not
interleaved), each CID possibly more than once (a file of repeated chunks repeats its leaf);
:func:`freehold.unixfs.car.write_car` keeps the first of each.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from freehold.errors import UsageError

from .blocks import Block
from .cids import cid_str, parse_cid
from .files import DEFAULT_PROFILE, PROFILES, FileImporter, Profile, import_file
from .tree import Entry, import_tree

__all__ = [
    "DEFAULT_PROFILE", "PROFILES", "READ_SIZE", "Block", "Entry", "FileImporter", "Profile", "cid_str",
    "import_file", "import_path", "import_tree", "parse_cid", "walk_entries",
]

READ_SIZE = 1 << 20


def _reader(path: Path) -> Callable[[], Iterable[bytes]]:
    def content() -> Iterator[bytes]:
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(READ_SIZE):
                yield piece
    return content


def walk_entries(folder: Path) -> Iterator[Entry]:
    """The entries of a local folder as the reference harness passes them: depth first, each
    folder's entries in the byte order of their names, files, and folders only when empty.
    Symlinks and special files are refused (UsageError), as are names that are not UTF-8."""

    def walk(directory: Path, rel: bytes) -> Iterator[Entry]:
        with os.scandir(directory) as it:
            items = sorted(it, key=lambda e: os.fsencode(e.name))
        for item in items:
            name = os.fsencode(item.name)
            try:
                name.decode("utf-8")
            except UnicodeDecodeError:
                raise UsageError(f"cannot publish {item.path!r}: its name is not UTF-8") from None
            path = rel + b"/" + name if rel else name
            mode = item.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                if any(os.scandir(item.path)):
                    yield from walk(Path(item.path), path)
                else:
                    yield Entry(path, "dir")
            elif stat.S_ISREG(mode):
                yield Entry(path, "file", _reader(Path(item.path)))
            else:
                raise UsageError(f"cannot publish {item.path!r}: not a regular file or folder (symlinks are refused)")

    return walk(folder, b"")


def import_path(path: Path, profile: Profile) -> Iterator[Block]:
    """Import a local file or folder; yields its blocks, the root last (see :func:`walk_entries`)."""
    path = Path(path)
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot publish {str(path)!r}: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return import_file(_reader(path)(), profile)
    if stat.S_ISDIR(mode):
        return import_tree(walk_entries(path), profile)
    raise UsageError(f"cannot publish {str(path)!r}: not a regular file or folder (symlinks are refused)")
