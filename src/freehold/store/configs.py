"""The vault's config: the one replicated object that changes, with generations that only move
forward (docs/design.md §13, format 1.1).

Readers take the newest valid generation over every reachable provider and the local cache,
so a provider replaying an older (authentic) config is outvoted and healed; one older than the
newest this machine has seen is refused. Writers claim the next generation with a
create-if-absent of ``configs/<generation>`` on every provider; a change holds only when a
majority of the vault's providers took its claim, so two concurrent changes never both succeed.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec

from .. import formats
from ..crypto import KIND_CONFIG, VaultKeys, open_sealed, seal
from ..errors import (
    ConflictError,
    FreeholdError,
    IntegrityError,
    ObjectNotFound,
    ProviderError,
    QuorumError,
    VaultNotFound,
)
from .cache import LocalCache
from .replicas import ReplicaSet, Verified

CONFIG_NAME = "config"
CLAIMS_PREFIX = "configs/"
# A claim without a majority older than this is taken as abandoned (its writer crashed).
STALE_CLAIM = timedelta(minutes=10)


class StaleConfig(IntegrityError):
    """Every reachable provider serves a config older than one this machine has seen."""


def seal_config(keys: VaultKeys, config: formats.Config) -> bytes:
    return bytes(seal(keys.metadata, KIND_CONFIG, CONFIG_NAME.encode(), formats.encode(config)))


def open_config(keys: VaultKeys, env: bytes) -> formats.Config:
    plain = open_sealed(keys.metadata, KIND_CONFIG, CONFIG_NAME.encode(), env, "config")
    return formats.decode(plain, formats.Config, "config")


def admits(config: formats.Config, key_id: str) -> bool:
    """Whether a key object may open the vault: not revoked, and listed (1.1) or any (version 1)."""
    return key_id not in config.revoked and (not config.keys or key_id in config.keys)


def majority(config: formats.Config) -> int:
    return len(config.providers) // 2 + 1


def claim_name(generation: int) -> str:
    return f"{CLAIMS_PREFIX}{generation:012d}"


def _rank(c: formats.Config) -> tuple[int, bytes]:
    return c.generation, c.change


@dataclass
class ConfigRead:
    config: formats.Config
    env: bytes
    stale: set[str] = field(default_factory=set)      # reachable providers without the newest
    bad: dict[str, str] = field(default_factory=dict)  # provider -> why its copy was refused
    support: int = 0                                   # providers holding a config valid under these keys

    @property
    def confirmed(self) -> bool:
        """More providers hold a config that opens under these keys than hold one that does not.
        A hostile minority can plant a key object and a config sealed under a master of its own
        choosing; the vault's master is the one the majority of present copies answers to."""
        return self.support > len(self.bad)

    @property
    def plausible(self) -> bool:
        """Not outvoted: enough to follow the config's provider list and then decide."""
        return self.support >= len(self.bad)


class ConfigStore:
    def __init__(self, replicas: ReplicaSet, keys: VaultKeys, cache: LocalCache) -> None:
        self.replicas = replicas
        self.keys = keys
        self.cache = cache

    def _verify(self, env: bytes) -> formats.Config:
        return open_config(self.keys, env)

    def load(self, *, seen_generation: int = 0, vault_id: bytes | None = None, claims: bool = False) -> ConfigRead:
        """The newest valid config over every reachable provider and the local cache; with
        ``claims`` (writers), also any claim that a majority holds. A decided claim whose writer
        stopped before writing ``config`` was never reported as done, so readers may ignore it;
        a writer must not, or it would build on the generation before it."""
        copies = self.replicas.read_each(CONFIG_NAME, self._verify)
        valid: list[Verified[formats.Config]] = []
        out_bad: dict[str, str] = {}
        for pid, got in copies.items():
            if isinstance(got, FreeholdError):
                if not isinstance(got, ObjectNotFound) and not _unreachable(got):
                    out_bad[pid] = str(got)
            elif vault_id is not None and got.value.vault_id != vault_id:
                out_bad[pid] = "config of another vault"
            else:
                valid.append(got)
        cached = self.cache.get("config", "newest")
        if cached is not None:
            try:
                c = self._verify(cached)
                if vault_id is None or c.vault_id == vault_id:
                    valid.append(Verified(c, cached, "cache"))
            except IntegrityError:
                self.cache.drop("config", "newest")
        if not valid:
            if out_bad:
                detail = "; ".join(f"{p}: {why}" for p, why in sorted(out_bad.items()))
                raise IntegrityError(f"no reachable provider holds a valid config of this vault ({detail})")
            errors = [e for e in copies.values() if isinstance(e, FreeholdError) and _unreachable(e)]
            if errors and len(errors) == len(copies):
                raise errors[0]
            raise VaultNotFound("no provider holds this vault's config")
        best = max(valid, key=lambda v: _rank(v.value))
        adopted = self._majority_claim(best.value) if claims else None
        if adopted is not None:
            best = adopted
        if best.value.generation < seen_generation:
            raise StaleConfig(
                f"every reachable provider serves config generation {best.value.generation}, older than "
                f"generation {seen_generation} that this machine has seen: a provider is replaying an old "
                "config (or the newer one was lost); refusing to use it")
        for v in valid:
            if v.provider != "cache" and _rank(v.value) < _rank(best.value):
                self.replicas.session.warn(
                    f"provider {v.provider}: config is generation {v.value.generation}, older than the newest "
                    f"({best.value.generation}); the newest is used and the old copy will be replaced")
        stale = set(out_bad)
        for pid, got in copies.items():
            if isinstance(got, ObjectNotFound) or (isinstance(got, Verified) and got.raw != best.raw):
                stale.add(pid)
        for pid, why in out_bad.items():
            self.replicas.session.warn(f"provider {pid}: config refused ({why}); another copy is used")
        read = ConfigRead(best.value, best.raw, stale, out_bad, support=sum(v.provider != "cache" for v in valid))
        if read.confirmed or (cached is not None and best.provider == "cache"):
            self.cache.put("config", "newest", best.raw)
        return read

    def _majority_claim(self, best: formats.Config) -> Verified[formats.Config] | None:
        """A claim newer than ``best`` held by a majority: a change whose writer stopped after
        winning it (before or while writing ``config``). It is decided, so it is adopted."""
        claims = self._claims_above(best.generation)
        for gen in sorted(claims, reverse=True):
            got = self.replicas.read_each(claim_name(gen), self._claim_verifier(gen))
            versions: dict[bytes, list[Verified[formats.Config]]] = {}
            for v in got.values():
                if isinstance(v, Verified) and v.value.vault_id == best.vault_id:
                    versions.setdefault(v.raw, []).append(v)
            for holders in versions.values():
                if len(holders) >= majority(holders[0].value):
                    return holders[0]
        return None

    def _claims_above(self, generation: int) -> list[int]:
        try:
            listing = self.replicas.listing(CLAIMS_PREFIX)
        except FreeholdError:
            return []
        gens = []
        for name in listing.names:
            tail = name[len(CLAIMS_PREFIX):]
            if tail.isdigit() and int(tail) > generation:
                gens.append(int(tail))
        return gens

    def _claim_verifier(self, gen: int) -> Callable[[bytes], formats.Config]:
        def verify(env: bytes) -> formats.Config:
            c = self._verify(env)
            if c.generation != gen:
                raise IntegrityError(f"{claim_name(gen)} holds generation {c.generation}")
            return c
        return verify

    def heal(self, read: ConfigRead) -> list[str]:
        """Write the newest config to reachable providers holding an older or bad copy, only when
        these keys are confirmed as the vault's (a copy that does not open under them might be the
        real vault's config, and these keys an impostor's)."""
        if not read.confirmed:
            return []
        members = {p.id for p in read.config.providers}  # never a provider being added, not yet named
        targets = sorted((read.stale & members) - self.replicas.session.down)
        if not targets:
            return []
        got = self.replicas.gather(lambda p: p.put(CONFIG_NAME, read.env), pids=targets, enough=len(targets))
        healed = sorted(pid for pid, r in got.items() if not isinstance(r, FreeholdError))
        if healed:
            self.replicas.session.warn(f"provider(s) {', '.join(healed)}: config was missing, damaged or older "
                                       f"than generation {read.config.generation}; replaced with the newest")
        return healed

    def change(self, seen: formats.Config, mutate: Callable[[formats.Config], formats.Config]
               ) -> tuple[formats.Config, list[str]]:
        """Apply ``mutate`` to the newest config as the next generation. Refused (ConflictError)
        when the newest is not ``seen`` (another machine changed it since) or another change
        wins the claim. Returns (new config, providers that missed it and will be healed)."""
        current = self.load(seen_generation=seen.generation, vault_id=seen.vault_id, claims=True)
        cur = current.config
        if _rank(cur) != _rank(seen):
            # A decided change whose writer stopped before writing `config` is finished here, so
            # that the retry (and every reader) sees it.
            self.heal(current)
            raise ConflictError(f"the vault's config changed since this command read it (generation "
                                f"{seen.generation} -> {cur.generation}, by another machine); nothing was "
                                "changed: run the command again")
        gen = cur.generation + 1
        pending = self._claims_above(cur.generation)
        if pending:
            top = max(pending)
            if not self._abandoned(top):
                raise ConflictError(f"another change of the vault's config (generation {top}) is in progress; "
                                    "nothing was changed: run the command again in a moment")
            gen = top + 1
        now = datetime.now(UTC)
        new = msgspec.structs.replace(mutate(cur), generation=gen, change=secrets.token_bytes(16),
                                      replaces=cur.change, changed=now.isoformat(timespec="seconds"))
        env = seal_config(self.keys, new)
        pids = [p.id for p in new.providers if p.id in self.replicas.providers
                and p.id not in self.replicas.session.down]
        got = self.replicas.put_new_each(claim_name(gen), env, pids=pids)
        won = [pid for pid, r in got.items() if r is True]
        lost = [pid for pid, r in got.items() if r is False]
        need = majority(new)
        if len(won) < need:
            self.replicas.delete_each(claim_name(gen), pids=won)
            if lost:
                raise ConflictError("another machine changed the vault's config at the same time; nothing was "
                                    "changed: run the command again")
            failed = "; ".join(f"{pid}: {r}" for pid, r in sorted(got.items()) if isinstance(r, FreeholdError))
            raise QuorumError(f"only {len(won)} of {len(new.providers)} providers took the config change and "
                              f"{need} are needed; nothing was changed ({failed})")
        written = self.replicas.put_all(CONFIG_NAME, env, quorum=1, pids=pids)
        self.cache.put("config", "newest", env)
        missed = sorted({p.id for p in new.providers} - set(written))
        self.replicas.session.miss(CONFIG_NAME, missed)
        return new, missed

    def _abandoned(self, gen: int) -> bool:
        for got in self.replicas.read_each(claim_name(gen), self._claim_verifier(gen)).values():
            if isinstance(got, Verified):
                try:
                    when = datetime.fromisoformat(got.value.changed)
                except ValueError:
                    return True
                return datetime.now(UTC) - when > STALE_CLAIM
        return True  # nothing of it verifies: not a change of this vault


def _unreachable(exc: FreeholdError) -> bool:
    return isinstance(exc, ProviderError) and not isinstance(exc, ObjectNotFound)
