"""UnixFS directory DAGs from a stream of entries, as ``ipfs-unixfs-importer`` 17.1.1's tree
builder (``tree-builder.js``, ``dir-flat.js``, ``flat-to-shard.js``) makes them.

The rules reproduced (wrapWithDirectory: the entries' paths are relative to the root):

- entries are taken in order; a file's blocks come out as it is imported, an empty-folder
  entry's block (``UnixFS{Type: Directory}``) at once; folders are written at the end, each
  after everything under it (children in the order they first appeared), the root last;
- after each entry, every folder on its path, deepest first, is checked: a flat folder whose
  estimated size is over ``shard_split_threshold`` (262144) becomes a HAMT shard (for good).
  The estimate counts only the children already written (files and empty-folder entries;
  sub-folders count 0 until the end): ``links-bytes`` (v0 profile) adds name bytes plus CID
  bytes per child, ``block-bytes`` (v1 profile) the exact encoded size of the node (4 bytes of
  Data plus each link's encoded size);
- a flat folder is ``UnixFS{Type: Directory}`` with one link per child, named by its name,
  Tsize its cumulative size, links sorted by name bytes.

Where the reference would silently lose data (a folder entry after its contents, a file and a
folder of one name, the same path twice) this refuses with UsageError instead, as it does for
``..`` and for paths the reference would split differently (``\\/``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from freehold.errors import UsageError

from .blocks import Block
from .cids import DAG_PB, block_cid
from .dagpb import DIRECTORY, Link, UnixFSData, encode_node, encode_unixfs, link_size
from .files import FileImporter, Profile
from .hamt import Bucket

__all__ = ["EMPTY_DIR_NODE", "Entry", "import_tree"]

EMPTY_DIR_NODE = encode_node(encode_unixfs(UnixFSData(DIRECTORY)), [])   # 0a 02 08 01


@dataclass(frozen=True)
class Entry:
    """One entry of a folder tree: its path relative to the root (``b"/"``-separated, UTF-8),
    its kind, and for a file a callable giving its content as byte pieces."""

    path: bytes
    kind: Literal["file", "dir"]
    content: Callable[[], Iterable[bytes]] | None = None


@dataclass
class _Plain:
    """A written child: a file, or a folder given as an (empty) entry."""

    cid: bytes
    tsize: int
    is_file: bool


class _Dir:
    def __init__(self, profile: Profile, parent: _Dir | None) -> None:
        self.profile = profile
        self.parent = parent
        self.flat: dict[bytes, _Plain | _Dir] | None = {}
        self.bucket: Bucket | None = None
        self.estimate = 4 if profile.shard_split_strategy == "block-bytes" else 0

    def _estimate(self, name: bytes, child: _Plain | _Dir | None) -> int:
        if not isinstance(child, _Plain):
            return 0
        if self.profile.shard_split_strategy == "links-bytes":
            return len(name) + len(child.cid)
        return link_size(len(name), len(child.cid), child.tsize)

    def get(self, name: bytes) -> _Plain | _Dir | None:
        if self.flat is not None:
            return self.flat.get(name)
        assert self.bucket is not None
        found = self.bucket.get(name)
        assert found is None or isinstance(found, _Plain | _Dir)
        return found

    def put(self, name: bytes, child: _Plain | _Dir) -> None:
        if self.flat is not None:
            self.estimate += self._estimate(name, child) - self._estimate(name, self.flat.get(name))
            self.flat[name] = child
        else:
            assert self.bucket is not None
            self.bucket.put(name, child)

    def maybe_shard(self) -> None:
        if self.flat is not None and self.estimate > self.profile.shard_split_threshold:
            self.bucket = Bucket(self.profile.shard_fanout_bits)
            for name, child in self.flat.items():
                self.bucket.put(name, child)
            self.flat = None


def _components(path: bytes) -> list[bytes]:
    if not isinstance(path, bytes):
        raise UsageError(f"entry path must be bytes, not {type(path).__name__}")
    if b"\\/" in path:
        raise UsageError(f"cannot import {path!r}: a name ending in a backslash")
    parts = [p for p in path.split(b"/") if p and p != b"."]
    if not parts:
        raise UsageError(f"cannot import {path!r}: empty path")
    for part in parts:
        if part == b"..":
            raise UsageError(f"cannot import {path!r}: '..' in the path")
        try:
            part.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"cannot import {path!r}: a name that is not UTF-8") from None
    return parts


def _locate(root: _Dir, parts: list[bytes], path: bytes) -> _Dir:
    """The folder an entry goes in (made as needed), after checking the entry fits there."""
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, _Dir):
            if child is not None and child.is_file:
                raise UsageError(f"cannot import {path!r}: {part!r} is a file")
            child = _Dir(root.profile, node)
            node.put(part, child)
        node = child
    existing = node.get(parts[-1])
    if isinstance(existing, _Dir):
        raise UsageError(f"cannot import {path!r}: a folder entry after its contents, or a file named as a folder")
    if existing is not None:
        raise UsageError(f"cannot import {path!r}: the same path twice")
    return node


def _add(node: _Dir, name: bytes, value: _Plain) -> None:
    node.put(name, value)
    here: _Dir | None = node
    while here is not None:
        here.maybe_shard()
        here = here.parent


def _flush(d: _Dir) -> Iterator[Block | tuple[bytes, int]]:
    version = d.profile.cid_version
    if d.bucket is not None:
        yield from d.bucket.flush(_child_link, version)
        return
    assert d.flat is not None
    links: list[Link] = []
    for name, child in d.flat.items():
        cid, size = b"", 0
        for item in _child_link(child):
            if isinstance(item, Block):
                yield item
            else:
                cid, size = item
        links.append(Link(cid, name, size))
    block = encode_node(encode_unixfs(UnixFSData(DIRECTORY)), links)
    cid = block_cid(block, version, DAG_PB)
    yield Block(cid, block)
    yield cid, len(block) + sum(link.tsize for link in links)


def _child_link(child: object) -> Iterator[Block | tuple[bytes, int]]:
    if isinstance(child, _Dir):
        yield from _flush(child)
    else:
        assert isinstance(child, _Plain)
        yield child.cid, child.tsize


def import_tree(entries: Iterable[Entry], profile: Profile) -> Iterator[Block]:
    """Import a folder tree; yields every block in the reference's order, the root folder last.

    Give files as ``Entry(path, "file", content)`` and folders only when they are empty
    (``Entry(path, "dir")``): as in the reference, a folder entry is written as an empty folder
    at once, and a later entry under it makes that block unreferenced."""
    root = _Dir(profile, None)
    for entry in entries:
        parts = _components(entry.path)
        if entry.kind not in ("file", "dir"):
            raise UsageError(f"unknown entry kind {entry.kind!r}")
        node = _locate(root, parts, entry.path)
        if entry.kind == "file":
            if entry.content is None:
                raise UsageError(f"file entry {entry.path!r} has no content")
            imp = FileImporter(profile)
            for piece in entry.content():
                yield from imp.update(piece)
            yield from imp.finish()
            value = _Plain(imp.root, imp.tsize, True)
        else:
            cid = block_cid(EMPTY_DIR_NODE, profile.cid_version, DAG_PB)
            yield Block(cid, EMPTY_DIR_NODE)
            value = _Plain(cid, len(EMPTY_DIR_NODE), False)
        _add(node, parts[-1], value)
    for item in _flush(root):
        if isinstance(item, Block):
            yield item
