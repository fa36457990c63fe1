"""2.0 vaults (design §23): what writers (write-only keys) and the owner sign, the writers'
config, writers' snapshots, and the keys a write-only key file holds.

- Index objects carry their signer (``writer``, "" for the owner) and an Ed25519 signature over
  ``"freehold/v2/index" || vault id || the object encoded with an empty signature``; an index
  object whose signature does not verify under the owner's key or a listed writer's is ignored.
- ``writer-config`` is the owner's config sealed with the index key (writers read it) inside a
  ``Signed`` wrapper signed by the owner: writers cannot change it.
- A writer's snapshot is sealed with a fresh key that is age-encrypted to the owner's recipient,
  and signed by the writer: the writer cannot read it back, and nobody can pass it off as the
  owner's (the owner's own snapshots are sealed with the metadata key, which writers lack).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import msgspec
import pyrage
from pyrage import x25519

from .. import formats
from ..crypto import KIND_CONFIG, KIND_SNAPSHOT, VaultKeys, open_sealed, seal, sign, verify_signature
from ..errors import IntegrityError, ObjectNotFound
from .replicas import ReplicaSet

WRITER_CONFIG = "writer-config"
_INDEX = b"freehold/v2/index"
_SNAPSHOT = b"freehold/v2/snapshot"
_CONFIG = b"freehold/v2/writer-config"


def writer_keys(wk: formats.WriterKey) -> VaultKeys:
    """The keys of a write-only key file: none that opens the owner's snapshots, the config's
    owner copy, grants or any stored blob (format-1 subkeys are random bytes)."""
    r = os.urandom
    return VaultKeys(chunk_id=r(32), data_root=r(32), metadata=r(32), object_name=wk.object_name,
                     chunker_seed=wk.chunker_seed, version=2, conv=wk.conv, index=wk.index, role="writer",
                     label=wk.label, sign=wk.sign, owner_pub=wk.owner_pub, age=wk.owner_age)


def writer_pubs(config: formats.Config) -> dict[str, bytes]:
    return {w.label: w.key for w in config.policy.writers}


# -- index objects -----------------------------------------------------------------------------

def sign_index(keys: VaultKeys, vault_id: bytes, idx: formats.IndexFile) -> formats.IndexFile:
    unsigned = msgspec.structs.replace(idx, writer=keys.label, sig=b"")
    return msgspec.structs.replace(unsigned, sig=sign(keys.sign, _INDEX + vault_id + formats.encode(unsigned)))


def index_author(keys: VaultKeys, config: formats.Config, idx: formats.IndexFile) -> str:
    """Who signed an index object of a 2.0 vault ("" the owner); IntegrityError if nobody did."""
    pub = keys.owner_pub if idx.writer == "" else writer_pubs(config).get(idx.writer)
    unsigned = msgspec.structs.replace(idx, sig=b"")
    if pub is None or not verify_signature(pub, idx.sig, _INDEX + config.vault_id + formats.encode(unsigned)):
        raise IntegrityError("index object is not signed by the owner or a writer of this vault")
    return idx.writer


# -- the writers' config -------------------------------------------------------------------------

def write_writer_config(replicas: ReplicaSet, keys: VaultKeys, config: formats.Config, quorum: int) -> list[str]:
    body = bytes(seal(keys.index, KIND_CONFIG, WRITER_CONFIG.encode(), formats.encode(config)))
    signed = formats.Signed(v=2, body=body, sig=sign(keys.sign, _CONFIG + config.vault_id + body))
    return replicas.put_all(WRITER_CONFIG, formats.encode(signed), quorum=quorum)


def read_writer_config(replicas: ReplicaSet, keys: VaultKeys, vault_id: bytes) -> formats.Config:
    """The newest writers' config that the owner signed, among the providers that answer."""
    def verify(env: bytes) -> formats.Config:
        signed = formats.decode(env, formats.Signed, "writers' config")
        if not verify_signature(keys.owner_pub, signed.sig, _CONFIG + vault_id + signed.body):
            raise IntegrityError("writers' config is not signed by the vault's owner")
        plain = open_sealed(keys.index, KIND_CONFIG, WRITER_CONFIG.encode(), signed.body, "writers' config")
        config = formats.decode(plain, formats.Config, "writers' config")
        if config.vault_id != vault_id:
            raise IntegrityError("writers' config belongs to another vault")
        return config
    try:
        return replicas.newest(WRITER_CONFIG, verify, lambda c: (c.generation, c.change))
    except ObjectNotFound:
        raise ObjectNotFound("the vault's providers hold no writers' config (is this a 2.0 vault?)") from None


# -- writers' snapshots ----------------------------------------------------------------------------

def seal_writer_snapshot(keys: VaultKeys, vault_id: bytes, name: str, plain: bytes) -> bytes:
    key = os.urandom(32)
    body = bytes(seal(key, KIND_SNAPSHOT, name.encode(), plain))
    box = pyrage.encrypt(key, [x25519.Recipient.from_str(keys.age)])
    sig = sign(keys.sign, _SNAPSHOT + vault_id + name.encode() + box + body)
    return formats.encode(formats.WriterSnapshot(v=2, writer=keys.label, box=box, body=body, sig=sig))


def open_writer_snapshot(keys: VaultKeys, vault_id: bytes, writers: Mapping[str, bytes], name: str,
                         env: bytes) -> bytes:
    """The plaintext of a writer's snapshot object: signed by the writer it names, for this name
    in this vault, and opened with the owner's age identity."""
    ws = formats.decode(env, formats.WriterSnapshot, "snapshot")
    pub = writers.get(ws.writer)
    if pub is None or not verify_signature(pub, ws.sig, _SNAPSHOT + vault_id + name.encode() + ws.box + ws.body):
        raise IntegrityError("snapshot is not signed by a writer of this vault")
    if keys.role != "owner" or not keys.age:
        raise IntegrityError("only the owner can read a writer's snapshot")
    try:
        key = pyrage.decrypt(ws.box, [x25519.Identity.from_str(keys.age)])
    except pyrage.DecryptError:
        raise IntegrityError("snapshot's key is not sealed to this vault's owner") from None
    plain = open_sealed(key, KIND_SNAPSHOT, name.encode(), ws.body, "snapshot")
    snap = formats.decode(plain, formats.Snapshot, "snapshot")
    if snap.writer != ws.writer:
        raise IntegrityError("snapshot names another writer than the one who signed it")
    return plain


def snapshot_opener(keys: VaultKeys, vault_id: Callable[[], bytes],
                    writers: Callable[[], Mapping[str, bytes]]) -> Callable[[str, bytes], bytes] | None:
    """For SealedObjects: how a 2.0 owner opens snapshot objects that are not its own envelopes."""
    if keys.version < 2:
        return None
    return lambda name, env: open_writer_snapshot(keys, vault_id(), writers(), name, env)
