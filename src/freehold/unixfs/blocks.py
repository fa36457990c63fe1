"""The one value the importer and the CAR writer pass around: a block and its CID."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """A block of a UnixFS DAG.

    ``offset >= 0`` marks a leaf whose payload is bytes ``[offset, offset + len(payload))`` of its
    file: for a raw leaf the payload is ``data`` itself, for a UnixFS File leaf (the v0 profile)
    it is the ``Data`` of the UnixFS message inside ``data``. Other blocks have ``offset == -1``.
    """

    cid: bytes
    data: bytes
    offset: int = -1
