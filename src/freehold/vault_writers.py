"""The Vault's door to write-only keys (design §23): ``keys add --write-only --label nas``.

A mixin of :class:`freehold.vault.Vault`. The key file holds the convergence and index keys, the
chunker seed, a fresh Ed25519 signing key and the owner's public keys: enough to back up,
deduplicating against what the owner stored, and nothing that opens a snapshot, a tree or a
file (they are sealed under keys derived from references only trees hold)."""

from __future__ import annotations

import os
import re

import msgspec
from pyrage import x25519

from . import formats, keys
from .crypto import ed25519_public
from .door import DoorParts
from .errors import UsageError
from .store import utc_stamp

_LABEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


class WritersDoor(DoorParts):

    def add_writer(self, label: str, passphrase: str, kdf: keys.KdfParams | None = None) -> bytes:
        """A write-only key for a machine, as a key file sealed under ``passphrase``; the config
        lists its public key (so its index objects and snapshots verify) from now on."""
        cfg = self._store.config
        if cfg.v < 2:
            raise UsageError("write-only keys need a vault of format 2: this one is format 1 (make one with "
                             "'freehold init --format 2'; design §23 says why format 1 cannot have them)")
        if not _LABEL.fullmatch(label):
            raise UsageError(f"--label {label!r}: use 1-32 lowercase letters, digits, '.', '_' or '-'")
        if any(w.label == label for w in cfg.policy.writers):
            raise UsageError(f"a write-only key labelled {label!r} exists already")
        vk = self._store.keys
        seed = os.urandom(32)
        created = utc_stamp()
        wk = formats.WriterKey(
            v=1, vault_id=cfg.vault_id, label=label, conv=vk.conv, index=vk.index, object_name=vk.object_name,
            chunker_seed=vk.chunker_seed, sign=seed, owner_pub=vk.owner_pub,
            owner_age=str(x25519.Identity.from_str(vk.age).to_public()),
            providers=[formats.ProviderEntry(id=p.id, url=p.url, jurisdiction=p.jurisdiction, operator=p.operator)
                       for p in cfg.providers],
            created=created)
        form = keys.passphrase_forms(passphrase)[0]
        blob = keys.wrap(formats.encode(wk), form, cfg.vault_id, kdf or keys.KdfParams(), created, context=b"writer")
        op = self._op()
        writer = formats.Writer(label=label, key=ed25519_public(seed), created=created)
        self._change_config(op, lambda c: msgspec.structs.replace(
            c, policy=msgspec.structs.replace(c.policy, writers=[*c.policy.writers, writer])))
        self._finish(op)
        return blob

    def writers(self) -> list[formats.Writer]:
        return list(self._store.config.policy.writers)
