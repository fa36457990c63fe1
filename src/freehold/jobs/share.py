"""Grant objects (design §20): what one file or folder of one snapshot needs, and nothing else.

``build`` collects the shared node's blobs (its trees and their files' chunks), the records of
the packs that hold them with every other blob's entry left out, and each shared blob's key.
"""

from __future__ import annotations

import os

from .. import formats
from ..errors import IntegrityError, UsageError
from ..formats import Node, PackRecord
from ..store import Operation, snapshot_path
from ..store.clock import utc_stamp


def find(op: Operation, snap: formats.Snapshot, sid: str, path: str) -> tuple[str, Node]:
    """The node a user's path names in a snapshot (an original absolute path or a tree path);
    the snapshot's root as a folder named after the snapshot when the path is the root."""
    base = snapshot_path(snap, path)
    if not base:
        return "", Node(name=os.fsencode(f"snapshot-{sid[:12]}"), type="dir", mode=0o40700, subtree=snap.tree)
    try:
        node = op.trees.find(snap.tree, base)
    except UsageError:
        node = None
    if node is None:
        raise UsageError(f"{path!r} is not in snapshot {sid[:12]} (it holds {', '.join(snap.paths)})")
    return base, node


def blob_ids(op: Operation, node: Node) -> set[bytes]:
    if node.type == "dir" and node.subtree is not None:
        return op.trees.blob_ids(node.subtree)
    return set(node.content)


def build(op: Operation, sid: str, snap: formats.Snapshot, path: str, name: bytes, *, live: bool,
          expires: str) -> formats.Shared:
    base, node = find(op, snap, sid, path)
    ids = blob_ids(op, node)
    by_pack: dict[bytes, list[formats.PackEntry]] = {}
    for bid in ids:
        loc = op.index.lookup(bid)
        if loc is None:
            raise IntegrityError(f"blob {bid.hex()[:12]} of {path!r} is in no index: run 'freehold check'")
        by_pack.setdefault(loc.pack_id, []).append(loc.entry)
    packs: list[PackRecord] = []
    for pid, entries in sorted(by_pack.items()):  # entries carry index ids, never references
        rec = op.index.pack(pid)
        packs.append(PackRecord(id=rec.id, len=rec.len, k=rec.k, n=rec.n, shares=rec.shares,
                                blobs=sorted(entries, key=lambda e: e.o)))
    keys = op.store.keys
    # Format 1: each shared blob's key is listed; 2.0: the references in the node and its trees are
    # the keys already, and the list stays empty (design §23).
    listed = {} if keys.version >= 2 else {b: keys.blob_key(b) for b in sorted(ids)}
    return formats.Shared(v=1, vault_id=op.config.vault_id, name=name, time=utc_stamp(), snapshot=sid,
                          path=base, node=node, packs=packs, keys=listed, live=live, expires=expires)
