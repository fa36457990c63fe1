"""Sealed, content-addressed metadata objects (index and snapshots), read and healed across
replicas (docs/design.md §10, §12, §15).

Each object is named by the keyed hash of its plaintext and sealed with that name as context,
so a copy verifies only under its own name in its own vault: a stray, damaged, swapped or
foreign copy is skipped with a warning and the next provider's copy is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..crypto import KIND_SNAPSHOT, VaultKeys, open_sealed, seal
from ..errors import FreeholdError, IntegrityError
from .cache import LocalCache
from .replicas import Listing, ReplicaSet, Verified

INDEX_PREFIX = "index/"
SNAPSHOT_PREFIX = "snapshots/"
MARKER_PREFIX = "ids/"      # ids/<hex token>: a provider's identity marker (empty object)


@dataclass
class ReplicaFinding:
    """A replicated object that some reachable provider lacks or holds a bad copy of."""

    name: str
    missing: set[str] = field(default_factory=set)
    bad: dict[str, str] = field(default_factory=dict)   # provider -> why its copy is refused
    valid: bool = True                                  # some provider holds a valid copy
    healed: set[str] = field(default_factory=set)


class SealedObjects:
    def __init__(self, replicas: ReplicaSet, keys: VaultKeys, cache: LocalCache,
                 foreign_snapshot: Callable[[str, bytes], bytes] | None = None) -> None:
        self.replicas = replicas
        self.keys = keys
        self.cache = cache
        # 2.0: how the owner opens a writer's snapshot object (store.writers), given its name.
        self.foreign_snapshot = foreign_snapshot

    def _verifier(self, name: str, kind: int, what: str) -> Callable[[bytes], bytes]:
        name_hex = name.rsplit("/", 1)[1]
        context = name.encode()

        def verify(env: bytes) -> bytes:
            if kind == KIND_SNAPSHOT and self.foreign_snapshot is not None and env[:2] != b"FE":
                plain = self.foreign_snapshot(name, env)
            else:
                plain = open_sealed(self.keys.sealing_key(kind), kind, context, env, what)
            if self.keys.name_id(plain).hex() != name_hex:
                raise IntegrityError(f"{what} does not match its name")
            return plain

        return verify

    def read(self, prefix: str, name_hex: str, kind: int, what: str) -> tuple[bytes, bytes]:
        """(envelope, plaintext) of a verified copy: the cache's, else the first provider's."""
        name = prefix + name_hex
        verify = self._verifier(name, kind, what)
        sub = prefix.rstrip("/")
        env = self.cache.get(sub, name_hex)
        if env is not None:
            try:
                return env, verify(env)
            except IntegrityError:
                self.cache.drop(sub, name_hex)
        got: Verified[bytes] = self.replicas.read(name, verify)
        self.cache.put(sub, name_hex, got.raw)
        return got.raw, got.value

    def write(self, prefix: str, kind: int, plain: bytes, *, quorum: int) -> str:
        name_hex = self.keys.name_id(plain).hex()
        name = prefix + name_hex
        env = seal(self.keys.sealing_key(kind), kind, name.encode(), plain)
        self.replicas.put_all(name, env, quorum=quorum)
        self.cache.put(prefix.rstrip("/"), name_hex, env)
        return name_hex

    def listing(self, prefix: str) -> Listing:
        return self.replicas.listing(prefix)

    def survey(self, prefix: str, kind: int, what: str, listing: Listing | None = None,
               deep: bool = False) -> list[ReplicaFinding]:
        """Every object under ``prefix`` that some reachable provider lacks, or (``deep``: each
        provider's copy read and verified) holds a bad copy of, or that verifies nowhere."""
        listing = listing or self.listing(prefix)
        out = []
        for name in listing.names:
            finding = ReplicaFinding(name, missing=listing.lacking(name))
            finding.missing |= self.replicas.session.missed.get(name, set()) & listing.reachable
            if deep:
                verify = self._verifier(name, kind, what)
                for pid, got in self.replicas.read_each(name, verify).items():
                    if isinstance(got, FreeholdError) and pid in listing.held[name]:
                        finding.bad[pid] = str(got)
                finding.valid = len(finding.bad) < len(listing.held[name])
                finding.missing -= set(finding.bad)
            if finding.missing or finding.bad:
                out.append(finding)
        return out

    def heal(self, findings: list[ReplicaFinding], kind: int, what: str) -> int:
        """Copy a verified replica to the providers that lack it or hold a bad copy. Safe at
        any time: a content-addressed object is complete and immutable. Returns copies made."""
        copies = 0
        for f in findings:
            targets = sorted((f.missing | set(f.bad)) - self.replicas.session.down)
            if not targets or not f.valid:
                continue
            prefix, name_hex = f.name.rsplit("/", 1)
            try:
                env, _ = self.read(prefix + "/", name_hex, kind, what)
            except FreeholdError as exc:
                self.replicas.session.warn(f"cannot heal {f.name}: {exc}")
                f.valid = False
                continue
            got = self.replicas.gather(lambda p, name=f.name, env=env: p.put(name, env), pids=targets,
                                      enough=len(targets))
            for pid, result in got.items():
                if isinstance(result, FreeholdError):
                    self.replicas.session.warn(f"provider {pid}: cannot restore a copy of {f.name}: {result}")
                else:
                    f.healed.add(pid)
                    copies += 1
        return copies
