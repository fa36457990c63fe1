"""Grant objects, grant records and publishing records (format 1.4, design §20–§21).

``shared/<name>`` (sealed with the grant key) and ``grants/<name>`` (sealed with the metadata
key) are replaced in place; readers take the newest copy that verifies among the providers that
answer, so a provider replaying an old copy can only show older content (a live grant's earlier
snapshot, a grant not yet revoked in the owner's list), which the newest copy elsewhere
overrides. ``published/<name>`` records are written once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TypeVar

from .. import formats
from ..crypto import KIND_GRANT, KIND_PUBLISHED, KIND_SHARED, open_sealed, seal
from ..errors import FreeholdError, IntegrityError
from .replicas import ReplicaSet

SHARED_PREFIX = "shared/"
GRANTS_PREFIX = "grants/"
PUBLISHED_PREFIX = "published/"
T = TypeVar("T")


def expired(expires: str, now: str) -> bool:
    """Whether a grant's ``expires`` (ISO 8601 UTC, "" never) has passed at ``now`` (same form)."""
    return bool(expires) and expires <= now


def new_name() -> bytes:
    return secrets.token_bytes(16)


def _context(prefix: str, name: bytes) -> bytes:
    return prefix.rstrip("/").encode() + name


def seal_shared(key: bytes, obj: formats.Shared) -> bytes:
    return bytes(seal(key, KIND_SHARED, _context(SHARED_PREFIX, obj.name), formats.encode(obj)))


def open_shared(key: bytes, name: bytes, vault_id: bytes, env: bytes) -> formats.Shared:
    """A grant object, authenticated under its key and name, of this vault, named ``name``."""
    plain = open_sealed(key, KIND_SHARED, _context(SHARED_PREFIX, name), env, "grant object")
    obj = formats.decode(plain, formats.Shared, "grant object")
    if obj.name != name or obj.vault_id != vault_id:
        raise IntegrityError("grant object belongs to another grant or vault")
    return obj


def read_shared(replicas: ReplicaSet, key: bytes, name: bytes, vault_id: bytes) -> formats.Shared:
    return replicas.newest(SHARED_PREFIX + name.hex(), lambda env: open_shared(key, name, vault_id, env),
                           lambda s: s.time)


def write_shared(replicas: ReplicaSet, key: bytes, obj: formats.Shared, quorum: int) -> list[str]:
    return replicas.put_all(SHARED_PREFIX + obj.name.hex(), seal_shared(key, obj), quorum=quorum)


def delete_shared(replicas: ReplicaSet, name: bytes) -> dict[str, FreeholdError | None]:
    return replicas.delete_each(SHARED_PREFIX + name.hex())


def write_grant(replicas: ReplicaSet, metadata_key: bytes, grant: formats.Grant, quorum: int) -> list[str]:
    env = seal(metadata_key, KIND_GRANT, _context(GRANTS_PREFIX, grant.name), formats.encode(grant))
    return replicas.put_all(GRANTS_PREFIX + grant.name.hex(), env, quorum=quorum)


def _grant_verifier(metadata_key: bytes, name: bytes) -> Callable[[bytes], formats.Grant]:
    def verify(env: bytes) -> formats.Grant:
        plain = open_sealed(metadata_key, KIND_GRANT, _context(GRANTS_PREFIX, name), env, "grant record")
        grant = formats.decode(plain, formats.Grant, "grant record")
        if grant.name != name:
            raise IntegrityError("grant record is stored under another grant's name")
        return grant
    return verify


def _stamp(grant: formats.Grant) -> str:
    return max(grant.created, grant.revoked)


def grants(replicas: ReplicaSet, metadata_key: bytes, warn: Callable[[str], None]) -> list[formats.Grant]:
    """Every grant record that verifies (the newest copy of each), oldest first."""
    out = []
    for full in replicas.listing(GRANTS_PREFIX).names:
        hexname = full[len(GRANTS_PREFIX):]
        try:
            name = bytes.fromhex(hexname)
            out.append(replicas.newest(full, _grant_verifier(metadata_key, name), _stamp))
        except ValueError:
            warn(f"ignored {full}: not a grant name")
        except FreeholdError as exc:
            warn(f"ignored {full}: {exc}")
    return sorted(out, key=lambda g: (g.created, g.name))


def write_published(replicas: ReplicaSet, metadata_key: bytes, rec: formats.Published, quorum: int) -> str:
    name = new_name()
    env = seal(metadata_key, KIND_PUBLISHED, _context(PUBLISHED_PREFIX, name), formats.encode(rec))
    replicas.put_all(PUBLISHED_PREFIX + name.hex(), env, quorum=quorum)
    return name.hex()


def published(replicas: ReplicaSet, metadata_key: bytes, warn: Callable[[str], None]
              ) -> list[tuple[str, formats.Published]]:
    """Every publishing record that verifies, oldest first."""
    out = []
    for full in replicas.listing(PUBLISHED_PREFIX).names:
        hexname = full[len(PUBLISHED_PREFIX):]
        try:
            name = bytes.fromhex(hexname)

            def verify(env: bytes, name: bytes = name) -> formats.Published:
                plain = open_sealed(metadata_key, KIND_PUBLISHED, _context(PUBLISHED_PREFIX, name), env,
                                    "publishing record")
                return formats.decode(plain, formats.Published, "publishing record")
            out.append((hexname, replicas.read(full, verify).value))
        except ValueError:
            warn(f"ignored {full}: not a record name")
        except FreeholdError as exc:
            warn(f"ignored {full}: {exc}")
    return sorted(out, key=lambda x: (x[1].time, x[0]))
