"""IPFS publishing blocks: dag-pb, UnixFS DAGs as the reference importer builds them, CIDs, CARs.

Pure building blocks (they import nothing of Freehold but :mod:`freehold.errors`):

- :mod:`.dagpb`: dag-pb nodes and the UnixFS Data message;
- :mod:`.importer`: files and folders to blocks (profiles ``unixfs-v1-2025``, ``unixfs-v0-2015``);
- :mod:`.car`: CARv1 write and verified read;
- :mod:`.cids`: binary CIDs, their text forms.
"""

from __future__ import annotations

from .blocks import Block
from .car import read_car, verify_block, write_car
from .cids import cid_str, parse_cid
from .dagpb import Link, decode_node, encode_node
from .importer import (
    DEFAULT_PROFILE,
    PROFILES,
    Entry,
    FileImporter,
    Profile,
    import_file,
    import_path,
    import_tree,
)

__all__ = [
    "DEFAULT_PROFILE", "PROFILES", "Block", "Entry", "FileImporter", "Link", "Profile", "cid_str",
    "decode_node", "encode_node", "import_file", "import_path", "import_tree", "parse_cid", "read_car",
    "verify_block", "write_car",
]
