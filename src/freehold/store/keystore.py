"""Key objects on the providers: finding the one a passphrase opens, at a bounded cost, and
adding or deleting them on a quorum (docs/design.md §13, §13a).

Key objects are not encrypted (they hold the Argon2id parameters needed to open them), so any
provider can damage, replace or plant one. Unlocking therefore tries every distinct valid copy
of a key object, not just the first provider's; tries the key ids this machine knows first; and
tries at most ``MAX_UNKNOWN`` others, cheapest first, naming the ones it skipped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

from .. import formats, keys
from ..errors import FreeholdError, ObjectNotFound, ProviderUnavailable, VaultNotFound, WrongPassphrase
from .replicas import Listing, ReplicaSet, Verified

KEYS_PREFIX = "keys/"
MAX_UNKNOWN = 4          # key objects this machine does not know, tried per unlock at most
MAX_VERSIONS = 3         # distinct copies of one key object tried at most


@dataclass(frozen=True)
class Unlocked:
    master: bytes
    key_id: str
    keyfile: formats.KeyFile


class KeyStore:
    def __init__(self, replicas: ReplicaSet) -> None:
        self.replicas = replicas

    def ids(self) -> list[str]:
        return [n[len(KEYS_PREFIX):] for n in self.replicas.listing(KEYS_PREFIX).names]

    def versions(self, kid: str, vault_id: bytes | None, known: bool = False) -> list[formats.KeyFile]:
        """The distinct valid copies of a key object (of ``vault_id``, when given). ``known``:
        a key id this machine has opened before, held to format 1's wider Argon2id limits."""
        limits = keys.FORMAT_1 if known else keys.STRICT
        got = self.replicas.read_each(KEYS_PREFIX + kid, lambda data: keys.read_keyfile(data, limits))
        seen: dict[bytes, formats.KeyFile] = {}
        for pid, v in sorted(got.items()):
            if isinstance(v, Verified):
                if vault_id is None or v.value.vault_id == vault_id:
                    seen.setdefault(v.raw, v.value)
            elif not isinstance(v, ObjectNotFound | ProviderUnavailable):
                self.replicas.session.warn(f"provider {pid}: {KEYS_PREFIX}{kid}: {v}")
        return list(seen.values())

    def candidates(self, passphrase: str, vault_id: bytes | None, known: list[str]) -> Iterator[Unlocked]:
        """Every master secret the passphrase opens, known key ids first, then at most
        ``MAX_UNKNOWN`` others, cheapest first. The caller takes the first whose config opens
        (a planted key object can wrap a secret of the attacker's choosing). Ends by raising
        WrongPassphrase, or VaultNotFound when no key object of the vault was found."""
        forms = keys.passphrase_forms(passphrase)
        found = False
        # The key this machine knows: the first copy that parses, and only if that does not open,
        # every distinct copy (one provider's damaged copy must not lock the owner out).
        for kid in known:
            try:
                one = self.replicas.read(KEYS_PREFIX + kid, lambda d: keys.read_keyfile(d, keys.FORMAT_1))
            except FreeholdError:
                continue
            found = True
            if vault_id is None or one.value.vault_id == vault_id:
                opened = self._open(kid, [one.value], forms)
                if opened is not None:
                    yield opened
            opened = self._open(kid, [v for v in self.versions(kid, vault_id, known=True) if v != one.value], forms)
            if opened is not None:
                yield opened
        held = self.replicas.listing(KEYS_PREFIX).held
        listed = [n[len(KEYS_PREFIX):] for n in sorted(held)]
        first = [k for k in known if k in listed]
        # The vault's own key objects are on a quorum (at least k providers), a planted one on the
        # hostile providers only (at most n-k < k): the most widely held are tried first, then the
        # cheapest, so planted objects cannot crowd the real ones out.
        ranked: list[tuple[int, int, str, list[formats.KeyFile]]] = []
        for kid in (k for k in listed if k not in first):
            vs = self.versions(kid, vault_id)
            if vs:
                ranked.append((-len(held[KEYS_PREFIX + kid]), min(keys.cost(v) for v in vs), kid, vs))
        ranked.sort()
        found |= bool(ranked)
        if len(ranked) > MAX_UNKNOWN:
            skipped = ", ".join(kid[:8] for _, _, kid, _ in ranked[MAX_UNKNOWN:])
            self.replicas.session.warn(f"{len(ranked)} key objects are unknown to this machine; tried the "
                                       f"{MAX_UNKNOWN} most widely held, skipped {skipped}")
        for _, _, kid, vs in ranked[:MAX_UNKNOWN]:
            opened = self._open(kid, vs, forms)
            if opened is not None:
                yield opened
        if not found:
            raise VaultNotFound("no reachable provider holds a key object of this vault")
        raise WrongPassphrase("wrong passphrase (it opens none of this vault's keys)")

    @staticmethod
    def _open(kid: str, versions: list[formats.KeyFile], forms: list[bytes]) -> Unlocked | None:
        for kf in sorted(versions, key=keys.cost)[:MAX_VERSIONS]:
            for form in forms:
                try:
                    return Unlocked(keys.unwrap(kf, form), kid, kf)
                except WrongPassphrase:
                    continue
        return None

    def add(self, master: bytes, passphrase: str, vault_id: bytes, kdf: keys.KdfParams, created: str,
            *, quorum: int) -> tuple[str, list[str]]:
        """A new key object on a quorum of providers: (key id, providers that missed it). On a
        quorum failure the copies made are deleted again, so a refused add leaves nothing."""
        form = keys.passphrase_forms(passphrase)[0]
        kid = secrets.token_hex(16)
        blob = keys.wrap(master, form, vault_id, kdf, created)
        name = KEYS_PREFIX + kid
        try:
            written = self.replicas.put_all(name, blob, quorum=quorum)
        except FreeholdError:
            self.replicas.delete_each(name)
            raise
        return kid, sorted(set(self.replicas.providers) - set(written))

    def purge_revoked(self, revoked: set[str], listing: Listing | None = None) -> dict[str, dict[str, bool]]:
        """Delete every revoked key object wherever it is listed (a provider that missed the
        revocation, or one replaying the object): {name: {provider: deleted}}."""
        if not revoked:
            return {}
        listing = listing or self.replicas.listing(KEYS_PREFIX)
        out: dict[str, dict[str, bool]] = {}
        for name in listing.names:
            if name[len(KEYS_PREFIX):] in revoked:
                holders = sorted(listing.held[name])
                got = self.replicas.delete_each(name, pids=holders)
                out[name] = {pid: not isinstance(got.get(pid), FreeholdError) for pid in holders}
        return out

    def delete(self, kid: str) -> tuple[list[str], list[str]]:
        """Delete a key object everywhere reachable: (deleted on, still pending on)."""
        got = self.replicas.delete_each(KEYS_PREFIX + kid)
        done = sorted(pid for pid, r in got.items() if not isinstance(r, FreeholdError))
        return done, sorted(set(self.replicas.providers) - set(done))
