"""Publishing (format 1.4, Part A.2; docs/design.md, publishing): UnixFS DAGs computed from what
the vault stores, CAR files, ERC-721 metadata, and the block source ``freehold gateway`` serves.

The DAG is never stored. It is a pure function of the content and the profile, so it is
computed from the vault's own copy of the content: a file's chunks are read back from the vault
in order (batched coalesced reads, the next batch fetched while this one is hashed), a folder's
entries come from its tree, in the order :func:`freehold.unixfs.importer.walk_entries` gives a
local folder's (depth first, each folder's entries by name bytes, folders as entries only when
empty). The CID recorded is therefore the CID of what the vault holds, and the gateway computes
it again, and compares it with the record, before it serves a byte of a record's blocks.

A local regular file given to ``freehold publish`` is the exception: its DAG is computed from
the file itself while it is backed up (:mod:`freehold.jobs.publish_local`, through
:func:`build_dag`, the same blocks in the same order), and used only when the file's stat shows
that the bytes hashed are the bytes the backup stored; otherwise it is computed here, from the
vault's copy. Either way the record is the CID of what the vault holds.

:class:`PublishedBlocks` keeps interior blocks (parents, folders, HAMT shards, NFT metadata) in
memory and, for each leaf, only where its bytes are (file, offset, length); a leaf is read from
the vault when it is asked for and rebuilt with the importer itself (a lone chunk imports to
exactly its leaf), so its bytes are those the DAG was computed from.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import logging
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from .. import formats
from ..errors import FreeholdError, IntegrityError, UsageError
from ..formats import Node
from ..store import Operation
from ..store.files import FileRef, chunk_stream, file_pieces
from ..unixfs import PROFILES, Block, Entry, Profile, cid_str, import_file, import_tree, write_car
from ..unixfs.cids import DAG_PB, make_cid, other_version
from ..unixfs.importer import walk_entries
from .share import find

__all__ = ["Built", "ContentDag", "Dag", "FileRef", "PublishedBlocks", "build", "build_dag", "check_car_target",
           "check_local", "cid_text", "discard_car", "find", "nft_metadata", "place_car", "profile_of"]

log = logging.getLogger(__name__)

LEAF_CACHE_BYTES = 32 * 1024 * 1024     # chunks kept for the gateway's next leaf (they straddle leaves)


def profile_of(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise UsageError(f"unknown profile {name!r}: use one of {', '.join(PROFILES)}") from None


# ---------------------------------------------------------------------------------- content


class ContentDag:
    """The UnixFS DAG of one node of a snapshot (a file, or a folder and everything below it).
    While :meth:`blocks` runs, :attr:`current` is the file whose leaves it is yielding.

    A folder's entries are listed first (so what cannot be published is refused before any
    read), then its files' chunks are read as one stream, batched across files, each file
    taking its own chunks from it in turn (the importer reads the files in entry order)."""

    def __init__(self, op: Operation, node: Node, profile: Profile) -> None:
        if node.type not in ("file", "dir"):
            raise UsageError(f"cannot publish {os.fsdecode(node.name)!r}: a {node.type} (only files and folders)")
        self.op = op
        self.node = node
        self.profile = profile
        self.kind = node.type
        self.current: FileRef | None = None
        self.size = 0              # file bytes imported
        self.files = 0
        self.root = b""

    def _pieces(self, ref: FileRef, stream: Iterator[bytes | memoryview]) -> Iterable[bytes | memoryview]:
        self.current = ref
        self.files += 1
        self.size += ref.size
        return itertools.islice(stream, len(ref.content))

    def _walk(self, tree_id: bytes, prefix: bytes, out: list[tuple[bytes, FileRef | None]]) -> None:
        for node in sorted(self.op.trees.load(tree_id).nodes, key=lambda n: n.name):
            path = prefix + b"/" + node.name if prefix else node.name
            if node.type == "dir":
                if node.subtree is not None and self.op.trees.load(node.subtree).nodes:
                    self._walk(node.subtree, path, out)
                else:
                    out.append((path, None))
            elif node.type == "file":
                out.append((path, FileRef.of(self.op, node)))
            else:
                raise UsageError(f"cannot publish {os.fsdecode(path)!r}: a {node.type} (only regular files and "
                                 "folders are published; symlinks are refused)")

    def _entries(self, listed: list[tuple[bytes, FileRef | None]]) -> Iterator[Entry]:
        stream = chunk_stream(self.op, [ref for _, ref in listed if ref is not None])
        try:
            for path, ref in listed:
                if ref is None:
                    yield Entry(path, "dir")
                else:
                    yield Entry(path, "file", lambda ref=ref: self._pieces(ref, stream))  # type: ignore[misc]
        finally:
            stream.close()

    def blocks(self) -> Iterator[Block]:
        """Every block, in the order the reference importer writes them, the root last."""
        if self.kind == "file":
            ref = FileRef.of(self.op, self.node)
            it: Iterable[Block] = import_file(self._pieces(ref, file_pieces(self.op, ref)), self.profile)
        else:
            if self.node.subtree is None:
                raise IntegrityError(f"folder {os.fsdecode(self.node.name)!r} has no tree")
            listed: list[tuple[bytes, FileRef | None]] = []
            self._walk(self.node.subtree, b"", listed)
            it = import_tree(self._entries(listed), self.profile)
        for block in it:
            self.root = block.cid
            yield block


# ---------------------------------------------------------------------------------- publish


def check_local(path: Path) -> None:
    """Refuse before any backup what the importer would refuse: symlinks, special files, names
    that are not UTF-8 (the same walk as ``freehold.unixfs.import_path``, without reading)."""
    try:
        mode = path.lstat().st_mode
    except OSError as exc:
        raise UsageError(f"cannot publish {str(path)!r}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        for _ in walk_entries(path):
            pass
    elif not stat.S_ISREG(mode):
        raise UsageError(f"cannot publish {str(path)!r}: not a regular file or folder (symlinks are refused)")


def check_car_target(car: Path) -> None:
    if car.exists() or car.is_symlink():
        raise UsageError(f"{car} exists: choose another --car (a CAR file is never overwritten)")
    if not car.parent.is_dir():
        raise UsageError(f"cannot write {car}: {car.parent} is not a folder")


def nft_metadata(name: str, description: str, asset: bytes) -> bytes:
    """The ERC-721 metadata JSON: ``{"name":…,"description":…,"image":"ipfs://<asset CID>"}`` in
    that key order, as JavaScript's ``JSON.stringify`` writes it (no spaces, non-ASCII as is,
    UTF-8, control characters as ``\\u00XX`` or their short escapes), with no trailing newline."""
    obj = {"name": name, "description": description, "image": "ipfs://" + cid_str(asset)}
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("--name and --description must be valid Unicode text") from None


@dataclass
class Built:
    root: bytes
    kind: str
    size: int
    blocks: int
    nft_cid: bytes = b""
    nft_json: bytes = b""
    car_bytes: int = 0
    source: str = "vault"          # where the content was read: "vault", or "local" (jobs.publish_local)
    car_tmp: Path | None = None    # with place=False: the CAR written, fsynced, not yet in place


class Dag(Protocol):
    """What :func:`build_dag` takes: :class:`ContentDag` (the vault's copy) or
    :class:`freehold.jobs.publish_local.LocalFileDag` (the local file)."""

    kind: str
    size: int
    root: bytes

    def blocks(self) -> Iterator[Block]: ...


def _car_placeholder(profile: Profile, count: int) -> list[bytes]:
    """Roots of the right lengths (a profile's CIDs are all of one length: v0 34 bytes, v1 36)."""
    return [make_cid(profile.cid_version, DAG_PB, bytes(32))] * count


def _header(roots: list[bytes]) -> bytes:
    buf = io.BytesIO()
    write_car(roots, [], buf)
    return buf.getvalue()


def _write_car_tmp(target: Path, profile: Profile, roots_count: int, blocks: Iterable[Block],
                   roots: Callable[[], list[bytes]]) -> tuple[Path, int]:
    """Write a CAR whose roots are known only after its blocks, into a temp file beside
    ``target``: a header of the same length is written first and replaced at the end (or, should
    its length differ, the file is written again behind the real one), then fsync. Returns the
    temp file and the CAR's length (the temp file is removed if this fails)."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            placeholder = _header(_car_placeholder(profile, roots_count))
            total = write_car(_car_placeholder(profile, roots_count), blocks, f)
            header = _header(roots())
            f.flush()
            if len(header) == len(placeholder):
                f.seek(0)
                f.write(header)
            else:
                total = _rewrite(f, tmp, header, len(placeholder))
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        discard_car(tmp)
        raise
    return tmp, total


def place_car(tmp: Path, target: Path) -> None:
    """Link a CAR written by :func:`_write_car_tmp` into place (never over a file), fsync the
    folder; the temp file is removed in any case."""
    try:
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise UsageError(f"{target} appeared while the CAR was written: nothing was replaced") from None
        dirfd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    finally:
        discard_car(tmp)


def discard_car(tmp: Path | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _rewrite(f: BinaryIO, tmp: Path, header: bytes, skip: int) -> int:
    body = tmp.with_name(tmp.name + ".body")
    os.replace(tmp, body)
    with open(body, "rb") as src, open(tmp, "xb") as dst:
        src.seek(skip)
        dst.write(header)
        while piece := src.read(1 << 20):
            dst.write(piece)
        dst.flush()
        os.fsync(dst.fileno())
        total = dst.tell()
    os.unlink(body)
    return total


def build(op: Operation, node: Node, profile: Profile, *, car: Path | None = None,
          nft: tuple[str, str] | None = None) -> Built:
    """The DAG of ``node`` from the vault's content (and with ``nft`` = (name, description), the
    metadata JSON's); with ``car``, written there: the asset's blocks in the importer's order,
    then the metadata's, each CID once; roots [asset] or, with ``nft``, [asset, metadata]."""
    return build_dag(ContentDag(op, node, profile), profile, car=car, nft=nft)


def build_dag(dag: Dag, profile: Profile, *, car: Path | None = None, nft: tuple[str, str] | None = None,
              place: bool = True) -> Built:
    """:func:`build` of any :class:`Dag`. With ``place=False`` the CAR is left in a temp file
    beside ``car`` (``Built.car_tmp``: :func:`place_car` or :func:`discard_car` it)."""
    count = 0
    meta = {"cid": b"", "json": b""}

    def blocks() -> Iterator[Block]:
        nonlocal count
        for block in dag.blocks():
            count += 1
            yield block
        if nft is not None:
            meta["json"] = nft_metadata(nft[0], nft[1], dag.root)
            for block in import_file([meta["json"]], profile):
                meta["cid"] = block.cid
                yield block

    car_bytes, tmp = 0, None
    if car is not None:
        tmp, car_bytes = _write_car_tmp(car, profile, 1 if nft is None else 2, blocks(),
                                        lambda: [dag.root] + ([meta["cid"]] if nft is not None else []))
        if place:
            place_car(tmp, car)
            tmp = None
    else:
        for _ in blocks():
            pass
    return Built(dag.root, dag.kind, dag.size, count, meta["cid"], meta["json"], car_bytes, car_tmp=tmp)


# ---------------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class _Leaf:
    file: FileRef
    offset: int
    length: int
    profile: Profile


@dataclass
class _Computed:
    inner: dict[bytes, bytes] = field(default_factory=dict)
    leaves: dict[bytes, _Leaf] = field(default_factory=dict)


class PublishedBlocks:
    """The gateway's :class:`freehold.gateway.BlockSource`: the blocks of every published record
    whose DAG, computed again from the vault's content, has the recorded root CID (and, for an
    NFT, whose metadata JSON has the recorded metadata CID). A record that does not is refused
    with a warning and nothing of it is served.

    Records are computed lazily: the first request for a record's root (or metadata) CID
    computes that record; a request for any other CID not yet known computes the records not
    yet computed (:meth:`verify_all` computes them all at once). ``new_op`` gives a fresh
    operation over the open vault for each computation and each leaf read."""

    def __init__(self, new_op: Callable[[], Operation], records: list[tuple[str, formats.Published]],
                 warn: Callable[[str], None] | None = None) -> None:
        self.new_op = new_op
        self.records = records
        self.warnings: list[str] = []
        self.served: list[str] = []            # ids of the records verified and served
        self.refused: list[str] = []           # ids of the records refused
        self._warn = warn
        self._pending = list(range(len(records)))
        self._inner: dict[bytes, bytes] = {}
        self._leaves: dict[bytes, _Leaf] = {}
        self._compute_lock = threading.Lock()
        self._cache: OrderedDict[bytes, bytes | memoryview] = OrderedDict()
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        if self._warn is not None:
            self._warn(message)
        else:
            log.warning("%s", message)

    # -- the BlockSource protocol
    def get(self, cid: bytes) -> bytes | None:
        cid = bytes(cid)
        self._ensure(cid)
        data = self._inner.get(cid)
        if data is not None:
            return data
        leaf = self._leaves.get(cid)
        return None if leaf is None else self._read_leaf(cid, leaf)

    def has(self, cid: bytes) -> bool:
        cid = bytes(cid)
        self._ensure(cid)
        return cid in self._inner or cid in self._leaves

    # -- computing records
    def verify_all(self) -> None:
        with self._compute_lock:
            while self._pending:
                self._compute(self._pending.pop(0))

    def _ensure(self, cid: bytes) -> None:
        if cid in self._inner or cid in self._leaves or not self._pending:
            return
        with self._compute_lock:
            roots = [i for i in self._pending
                     if _same(cid, self.records[i][1].cid) or _same(cid, self.records[i][1].nft_cid)]
            order = roots + [i for i in self._pending if i not in roots]
            for i in order:
                if cid in self._inner or cid in self._leaves:
                    return
                self._pending.remove(i)
                self._compute(i)

    def _compute(self, i: int) -> None:
        rid, rec = self.records[i]
        what = f"published record {rid[:12]} ({rec.path or '/'} of snapshot {rec.snapshot[:12]})"
        try:
            got = self._dag(rec)
        except FreeholdError as exc:
            self.refused.append(rid)
            self.warn(f"{what} is not served: its content cannot be read from the vault ({exc})")
            return
        if isinstance(got, str):
            self.refused.append(rid)
            self.warn(f"{what} is not served: {got}")
            return
        self._inner.update((c, d) for c, d in got.inner.items() if c not in self._inner)
        self._leaves.update((c, leaf) for c, leaf in got.leaves.items() if c not in self._leaves)
        self.served.append(rid)

    def _dag(self, rec: formats.Published) -> _Computed | str:
        """The record's blocks computed from the vault, or why they cannot be served."""
        if rec.profile not in PROFILES:
            return f"unknown profile {rec.profile!r}"
        profile = PROFILES[rec.profile]
        op = self.new_op()
        op.load_index()
        snap = op.load_snapshot(rec.snapshot)
        _, node = find(op, snap, rec.snapshot, rec.path)
        if node.type != rec.kind:
            return f"the vault holds a {node.type} there, the record says {rec.kind}"
        dag = ContentDag(op, node, profile)
        out = _Computed()
        for block in dag.blocks():
            if block.offset >= 0:
                ref = dag.current
                assert ref is not None
                length = min(profile.chunk_size, ref.size - block.offset)
                out.leaves.setdefault(block.cid, _Leaf(ref, block.offset, length, profile))
            else:
                out.inner.setdefault(block.cid, block.data)
        if dag.root != rec.cid:
            return (f"the vault's content has CID {cid_str(dag.root)}, not the recorded {cid_text(rec.cid)} "
                    "(a damaged or forged record)")
        if rec.nft_cid or rec.nft_json:
            meta = list(import_file([rec.nft_json], profile))
            if meta[-1].cid != rec.nft_cid:
                return f"its NFT metadata does not have the recorded CID {cid_text(rec.nft_cid)}"
            try:
                image = json.loads(rec.nft_json.decode("utf-8")).get("image")
            except (ValueError, AttributeError):
                image = None
            if image != "ipfs://" + cid_str(rec.cid):
                return "its NFT metadata does not name the published content as its image"
            for block in meta:
                out.inner.setdefault(block.cid, block.data)
        return out

    # -- leaves, read from the vault on request
    def _chunks(self, ref: FileRef, indexes: range) -> list[bytes | memoryview]:
        ids = [ref.content[j] for j in indexes]
        with self._cache_lock:
            have = {bid: self._cache[bid] for bid in ids if bid in self._cache}
            for bid in have:
                self._cache.move_to_end(bid)
        missing = [bid for bid in dict.fromkeys(ids) if bid not in have]
        if missing:
            got = self.new_op().reader.read_blobs(missing)
            have.update(got)
            with self._cache_lock:
                for bid, data in got.items():
                    if bid not in self._cache:
                        self._cache[bid] = bytes(data)   # not a view holding a whole read's buffer
                        self._cache_bytes += len(data)
                while self._cache_bytes > LEAF_CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= len(old)
        return [have[bid] for bid in ids]

    def _read_leaf(self, cid: bytes, leaf: _Leaf) -> bytes:
        ref = leaf.file
        indexes = ref.span(leaf.offset, leaf.length)
        pieces = self._chunks(ref, indexes)
        start = ref.starts[indexes.start] if len(indexes) else 0
        data = b"".join(pieces)[leaf.offset - start: leaf.offset - start + leaf.length]
        if len(data) != leaf.length:
            raise IntegrityError(f"leaf {cid_str(cid)}: the vault's file is shorter than its DAG")
        # A lone chunk imports to exactly its leaf (reduceSingleLeafToSelf): the importer's own bytes.
        blocks = list(import_file([data], leaf.profile))
        if len(blocks) != 1 or blocks[0].cid != cid:
            raise IntegrityError(f"leaf {cid_str(cid)} read from the vault does not have its CID")
        return blocks[0].data


def _same(a: bytes, b: bytes) -> bool:
    """One block's CID: equal, or the CIDv0 and CIDv1 of the same dag-pb block."""
    if a == b:
        return True
    try:
        return other_version(a) == b
    except IntegrityError:
        return False


def cid_text(cid: bytes) -> str:
    try:
        return cid_str(cid)
    except UsageError:
        return f"(malformed CID {cid.hex()[:16]})"
