"""Every structure Freehold writes, as typed msgspec structs (docs/design.md is the spec).

Metadata is msgpack maps with the short field names below; unknown fields are
ignored on read (forward compatible), missing optional fields take their default.
Binary ids are msgpack ``bin``; file names and symlink targets are raw bytes as
the operating system gave them.
"""

from __future__ import annotations

import struct
from typing import Any, TypeVar

import msgspec

from .errors import IntegrityError

FORMAT_VERSION = 1       # every structure's `v`; formats 1.1 and 1.2 add optional fields only (design.md)
FORMAT_REVISION = "1.4"  # what this code writes (1.4: format 2 part A, docs/proposed/format-2.md)

# Envelope body encodings (the envelope header's fifth byte).
ENC_NONE = 0
ENC_ZSTD = 1

# Blob kinds, as recorded in pack trailers and the index.
BLOB_DATA = 0
BLOB_TREE = 1


class PackEntry(msgspec.Struct, frozen=True):
    id: bytes          # 32-byte keyed BLAKE3 of the chunk/tree plaintext
    t: int             # BLOB_DATA or BLOB_TREE
    o: int             # offset of the blob's envelope in the pack
    l: int             # noqa: E741 - length of the envelope
    s: int             # plaintext size (before compression)


class PackTrailer(msgspec.Struct, frozen=True):
    v: int
    blobs: list[PackEntry]


class ShareRecord(msgspec.Struct, frozen=True):
    p: str             # provider id (config.providers[].id)
    h: bytes           # BLAKE3 (unkeyed) of the whole share object, header included
    z: int             # size of the share object


class PackRecord(msgspec.Struct, frozen=True):
    id: bytes          # 32-byte keyed BLAKE3 of the pack bytes; names the share objects
    len: int           # pack length (1.1: padding included, design.md §8), before erasure-code padding
    k: int
    n: int
    shares: list[ShareRecord | None]   # index i = share i; None = not written (degraded)
    blobs: list[PackEntry]


class IndexFile(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    packs: list[PackRecord]
    time: str = ""                     # 1.3: ISO 8601 UTC time written ("": unknown, counts as old)
    writer: str = ""                   # 2.0: who signed it: "" the owner, else a writer's label
    sig: bytes = b""                   # 2.0: Ed25519 over the object with ``sig`` empty (design §23)
    foreign: dict[str, list[bytes]] = {}   # 2.0, owner-signed only: packs listed for a machine, by label


class Deletion(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.3: a sealed record of what is gone (snapshots, index objects) or retired (packs)."""

    v: int
    time: str                          # ISO 8601 UTC, the writer's clock (checked against providers')
    host: str = ""
    reason: str = ""                   # "forget", "prune", "repair", ...
    snapshots: list[str] = []          # hex snapshot ids forgotten
    index: list[str] = []              # hex names of index objects replaced
    packs: list[bytes] = []            # pack ids retired (deleted by prune unless live again)


class Lock(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.3: who is working on the vault; refreshed in place, deleted when released."""

    v: int
    host: str
    pid: int
    op: str
    time: str                          # taken, ISO 8601 UTC
    refreshed: str                     # last refreshed, ISO 8601 UTC
    exclusive: bool = False


class Maintenance(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.3: the last ``maintain`` run, replaced in place on every provider."""

    v: int
    time: str
    host: str                          # the maintainer
    period_days: int = 30              # every share is read once per period
    subset: int = 0                    # the next read-data subset (of ``subsets``)
    subsets: int = 30


class Xattr(msgspec.Struct, frozen=True):
    """1.2: one extended attribute (POSIX ACLs are the ``system.posix_acl_*`` ones)."""
    n: bytes                           # name, as the OS gave it (e.g. b"user.comment")
    v: bytes                           # value


class Meta(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.2: a node's metadata beyond mode and mtime (design.md §11). Its own struct so that Node
    keeps at most 15 fields: msgspec writes a fixmap header only for structs of up to 15 fields,
    and the 1.0/1.1 node encoding (and its known-answer vector) stays byte-identical."""
    uid: int | None = None             # owner and group ids (None: not recorded)
    gid: int | None = None
    user: str = ""                     # their names where they mapped at backup time
    group: str = ""
    atime: int = 0                     # access time, ns (0: not recorded)
    nlink: int = 0                     # files: link count when > 1 (hardlinks: same dev and ino)
    rdev: int = 0                      # chardev/blockdev: device number
    sparse: bool = False               # files: had holes at backup time (restored with holes)
    torn: bool = False                 # files: still changing after a second read (content may mix)
    xattrs: list[Xattr] = []           # extended attributes (POSIX ACLs among them), sorted by name


class Node(msgspec.Struct, frozen=True, omit_defaults=True):
    name: bytes
    type: str                          # "file" | "dir" | "symlink"; 1.2: "fifo" | "chardev" | "blockdev"
    mode: int = 0
    mtime: int = 0                     # nanoseconds since the epoch
    size: int = 0
    content: list[bytes] = []          # blob ids, in order (files)
    subtree: bytes | None = None       # tree blob id (dirs)
    target: bytes | None = None        # symlink target
    ino: int = 0                       # files cache: inode, device and ctime at backup time
    dev: int = 0
    ctime: int = 0
    meta: Meta | None = None           # 1.2: what else the file is (None: not recorded)


class Tree(msgspec.Struct, frozen=True):
    v: int
    nodes: list[Node]


class Snapshot(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    time: str                          # ISO 8601, UTC
    host: str
    paths: list[str]
    tree: bytes
    size: int = 0                      # logical bytes of regular files
    files: int = 0
    dirs: int = 0
    parent: bytes | None = None
    tags: list[str] = []
    skipped: list[str] = []            # paths that could not be read ("path: reason")
    # Format 1.2:
    torn: list[str] = []               # files that changed while read (their nodes say torn)
    excluded: int = 0                  # paths left out by the selection (excludes, own state)
    writer: str = ""                   # 2.0: the write-only key that made it ("" the owner)


class ProviderEntry(msgspec.Struct, frozen=True, omit_defaults=True):
    id: str
    url: str
    jurisdiction: str = ""
    operator: str = ""
    marker: str = ""                   # 1.1: hex token of the provider's identity marker object
    price: float = 0.0                 # 1.3: the user's price per TB-month (stats)
    draining: bool = False             # 1.3: no new shares; repair moves its shares off


class Retention(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.3: the forget rules ``maintain`` applies (restic's --keep-* options)."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: str = ""
    tags: list[str] = []


class Writer(msgspec.Struct, frozen=True, omit_defaults=True):
    """2.0: a write-only key the owner made (``keys add --write-only``)."""

    label: str
    key: bytes                         # its Ed25519 public key
    created: str = ""


class Policy(msgspec.Struct, frozen=True, omit_defaults=True):
    allow: list[str] = []              # ISO 3166 alpha-2 codes; empty: anywhere
    min_jurisdictions: int = 1
    max_per_operator: int = 0          # 0: no limit
    retention: Retention = Retention()  # 1.3: what ``maintain`` forgets (Config has 15 fields: fixmap)
    writers: list[Writer] = []         # 2.0: who may write (here, not in Config, for the same reason)


class Chunker(msgspec.Struct, frozen=True):
    min: int
    avg: int
    max: int


class Config(msgspec.Struct, frozen=True, omit_defaults=True):
    v: int
    vault_id: bytes                    # 16 random bytes
    k: int
    n: int
    chunker: Chunker
    pack_size: int
    providers: list[ProviderEntry]
    created: str = ""
    policy: Policy = Policy()
    # Format 1.1 (additive; version-1 configs decode with these defaults):
    generation: int = 0                # 1 + the generation of the config this one replaces
    change: bytes = b""                # 16 random bytes naming this change
    replaces: bytes = b""              # ``change`` of the config this one replaces
    changed: str = ""                  # ISO 8601 UTC time of the change
    keys: list[str] = []               # ids of the key objects that may open the vault ([]: any, v1)
    revoked: list[str] = []            # ids of key objects revoked: refused wherever they reappear


class KeyFile(msgspec.Struct, frozen=True):
    v: int
    kdf: str                           # "argon2id"
    t: int                             # Argon2 time cost
    m: int                             # memory cost, KiB
    p: int                             # parallelism
    salt: bytes                        # 16 random bytes
    vault_id: bytes
    wrapped: bytes                     # envelope(KIND_KEY) of the 32-byte master secret
    created: str = ""


class Shared(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.4: ``shared/<name>``, what a capability's holder reads (sealed with the grant key)."""

    v: int
    vault_id: bytes
    name: bytes                        # 16 random bytes, the object's name in hex
    time: str
    snapshot: str                      # hex id of the snapshot the content is from
    path: str                          # the shared path in that snapshot's tree
    node: Node                         # the shared file or folder
    packs: list[PackRecord] = []       # packs holding shared blobs, ``blobs`` filtered to those
    keys: dict[bytes, bytes] = {}      # blob id -> blob key (format-1 vaults)
    live: bool = False
    expires: str = ""                  # ISO 8601 UTC; "" never


class Grant(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.4: ``grants/<name>``, the owner's record of a grant (sealed with the metadata key)."""

    v: int
    name: bytes
    key: bytes                         # the grant key G (32 bytes)
    to: list[str]                      # the recipients' public keys, as given
    path: str
    snapshot: str
    created: str
    label: str = ""
    live: bool = False
    expires: str = ""
    revoked: str = ""                  # when revoked ("" not revoked)


class Capability(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.4: the plaintext of a capability file (age-encrypted to its recipients; never stored)."""

    v: int
    vault_id: bytes
    name: bytes
    key: bytes
    providers: list[ProviderEntry]
    k: int
    n: int
    path: str
    live: bool = False
    expires: str = ""
    structure: int = 1                 # the vault's format (2: references are capabilities, no key list)


class Published(msgspec.Struct, frozen=True, omit_defaults=True):
    """1.4: ``published/<name>``, one record per publish (sealed with the metadata key)."""

    v: int
    time: str
    cid: bytes                         # binary CID of the published root
    profile: str                       # "unixfs-v1-2025" | "unixfs-v0-2015"
    snapshot: str                      # hex id of the snapshot holding the content
    path: str                          # the content's path in that snapshot's tree
    kind: str                          # "file" | "dir"
    size: int = 0
    name: str = ""
    description: str = ""
    nft_cid: bytes = b""               # --nft: CID of the ERC-721 metadata JSON
    nft_json: bytes = b""              # --nft: that JSON, as published


class WriterSnapshot(msgspec.Struct, frozen=True):
    """2.0: a snapshot a write-only key made: sealed with a fresh key that only the owner's age
    identity can recover, signed by the writer (design §23)."""

    v: int
    writer: str
    box: bytes                         # age file (binary) of the 32-byte snapshot key, to the owner
    body: bytes                        # envelope (KIND_SNAPSHOT, context the object's name) of the Snapshot
    sig: bytes                         # Ed25519 by the writer


class Signed(msgspec.Struct, frozen=True):
    """2.0: an envelope signed by the owner (``writer-config``)."""

    v: int
    body: bytes
    sig: bytes


class WriterKey(msgspec.Struct, frozen=True, omit_defaults=True):
    """2.0: what a write-only key holds (sealed under its passphrase in a key file)."""

    v: int
    vault_id: bytes
    label: str
    conv: bytes                        # the convergence key: references of what it writes
    index: bytes                       # the index key: index objects, trailers, locks, deletions
    object_name: bytes
    chunker_seed: int
    sign: bytes                        # its own Ed25519 private seed
    owner_pub: bytes                   # the owner's Ed25519 public key
    owner_age: str                     # the owner's age recipient (age1…)
    providers: list[ProviderEntry] = []
    created: str = ""


_encoder = msgspec.msgpack.Encoder()


def encode(obj: Any) -> bytes:
    return _encoder.encode(obj)


def encode_json(obj: Any) -> Any:
    """A struct as plain JSON-ready builtins (for --json output)."""
    return msgspec.to_builtins(obj)


T = TypeVar("T")


def decode(data: bytes | memoryview, typ: type[T], what: str) -> T:
    try:
        return msgspec.msgpack.decode(data, type=typ)
    except msgspec.DecodeError as exc:
        raise IntegrityError(f"{what} is malformed: {exc}") from None


# Share header: fixed 64 bytes, big-endian, in front of every share payload.
SHARE_MAGIC = b"FHSH"
SHARE_VERSION = 1
_SHARE = struct.Struct(">4sBBBBQQ32s8x")
SHARE_HEADER_LEN = _SHARE.size
assert SHARE_HEADER_LEN == 64


class ShareHeader(msgspec.Struct, frozen=True):
    k: int
    n: int
    index: int
    pack_len: int
    stripe: int
    pack_id: bytes

    def pack(self) -> bytes:
        return _SHARE.pack(SHARE_MAGIC, SHARE_VERSION, self.k, self.n, self.index,
                           self.pack_len, self.stripe, self.pack_id)

    @classmethod
    def unpack(cls, data: bytes, what: str = "share") -> ShareHeader:
        if len(data) < SHARE_HEADER_LEN:
            raise IntegrityError(f"{what} is truncated")
        magic, version, k, n, index, pack_len, stripe, pack_id = _SHARE.unpack_from(data)
        if magic != SHARE_MAGIC:
            raise IntegrityError(f"{what} is not a Freehold share")
        if version != SHARE_VERSION:
            raise IntegrityError(f"{what} has unsupported version {version}")
        return cls(k, n, index, pack_len, stripe, pack_id)


PACK_TRAILER_LEN = struct.Struct("<I")
