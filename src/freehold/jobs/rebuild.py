"""What repair is made of below the job itself: the state of one pack on its way through the
pipeline (``Job``, ``Fix``), reading and writing share objects, a pack from its shares and its
trailer, and where rebuilt shares go under the placement policy (``choose_targets``)."""

from __future__ import annotations

import itertools
import mmap
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import blake3

from .. import erasure, formats, placement
from ..crypto import KIND_PACK_TRAILER, open_sealed
from ..errors import IntegrityError, PolicyError, ProviderError
from ..formats import SHARE_HEADER_LEN, PackRecord, ProviderEntry, ShareHeader, ShareRecord
from ..providers.base import Provider
from ..store import Operation
from . import health


@dataclass
class Fix:
    """What repairing one pack did: its new record and the copies to delete once it is indexed."""

    rec: PackRecord
    changed: bool
    delete: list[tuple[str, int]] = field(default_factory=list)   # (provider, share index)
    healthy: bool = True


Fetched = tuple[bytes | None, bool, ProviderError | None]   # object, hash matches the record, error


@dataclass
class Job:
    """One pack on its way through the pipeline: its shares read, then its rebuilt shares written."""

    view: health.PackView
    keep: dict[int, str]                                  # good shares on fit providers
    left: list[tuple[int, str]] = field(default_factory=list)    # copies not read yet, best first
    reads: list[tuple[int, str, Future[Fetched]]] = field(default_factory=list)
    verified: dict[int, bytes] = field(default_factory=dict)
    unverified: list[tuple[int, bytes]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)         # recorded copies found gone or damaged
    objs: dict[int, bytes | memoryview] = field(default_factory=dict)   # share objects to write
    hashes: dict[int, bytes] = field(default_factory=dict)
    bufs: list[mmap.mmap] = field(default_factory=list)   # share buffers to give back once written
    targets: dict[int, str] = field(default_factory=dict)
    puts: dict[int, tuple[str, Future[bool | ProviderError]]] = field(default_factory=dict)

    def futures(self) -> list[Future[Any]]:
        return [f for _, _, f in self.reads] + [f for _, f in self.puts.values()]


def open_trailer(op: Operation, pack: bytes | memoryview) -> tuple[formats.PackTrailer, bytes]:
    """The pack's trailer, authenticated, and the pack id it implies (design §8)."""
    view = memoryview(pack)
    if len(view) < 4:
        raise IntegrityError("pack is too short for a trailer")
    (tlen,) = formats.PACK_TRAILER_LEN.unpack(view[-4:])
    if tlen + 4 > len(view):
        raise IntegrityError("pack trailer length is out of range")
    tail = view[len(view) - 4 - tlen:]
    plain = open_sealed(op.store.keys.index, KIND_PACK_TRAILER, b"pack-trailer", tail[:-4], "pack trailer")
    return formats.decode(plain, formats.PackTrailer, "pack trailer"), op.store.keys.name_id(tail)


def share_objects(pack: bytes, pack_id: bytes, k: int, n: int) -> list[bytes]:
    """The n share objects (header and payload) of a pack: the same bytes a backup wrote."""
    size = erasure.stripe_size(len(pack), k)
    parts = erasure.encode(bytearray(pack), len(pack), k, n)
    return [ShareHeader(k, n, i, len(pack), size, pack_id).pack() + b"".join(bytes(x) for x in part)
            for i, part in enumerate(parts)]


def decode_pack(pieces: list[tuple[int, bytes]], k: int, n: int, length: int) -> bytes:
    """The pack from k share objects (index, object bytes)."""
    stripes = erasure.decode_columns([(i, obj[SHARE_HEADER_LEN:]) for i, obj in pieces[:k]], k, n)
    return b"".join(stripes)[:length]


def recorded_share(rec: PackRecord, i: int) -> ShareRecord | None:
    return rec.shares[i] if i < len(rec.shares) else None


def fetch_share(prov: Provider, name: str, want: ShareRecord | None) -> Fetched:
    """A share object, and whether it is the one the index records (size and BLAKE3 hash)."""
    try:
        obj = prov.get(name)
    except ProviderError as exc:
        return None, False, exc
    return obj, want is not None and len(obj) == want.z and blake3.blake3(obj).digest() == want.h, None


def store_share(prov: Provider, name: str, obj: bytes | memoryview) -> bool | ProviderError:
    """Write a share object and check its size by a HEAD."""
    try:
        prov.put(name, obj)
        return prov.head(name) == len(obj)
    except ProviderError as exc:
        return exc


def choose_targets(cfg: formats.Config, entries: dict[str, ProviderEntry], down: set[str], rec: PackRecord,
                   keep: dict[int, str], view: health.PackView) -> dict[int, str]:
    """Providers for every share not kept, such that the pack's n providers meet the policy:
    where the share was recorded (when fit), else where a stray copy is, else by rank. Kept
    shares are given up (and moved) only when no choice that keeps them all meets the policy."""
    policy = cfg.policy
    for drop in range(len(keep) + 1):
        for kept_ids in itertools.combinations(sorted(keep), len(keep) - drop):
            kept = {i: keep[i] for i in kept_ids}
            redo = [i for i in range(rec.n) if i not in kept]
            got = _fill(cfg, entries, down, rec, kept, redo, view, policy)
            if got is not None:
                return got
    raise PolicyError(f"pack {rec.id.hex()[:12]}: " + placement.explain(
        cfg.providers, rec.n, policy, sorted(down)))

def _fill(cfg: formats.Config, entries: dict[str, ProviderEntry], down: set[str], rec: PackRecord,
          kept: dict[int, str], redo: list[int], view: health.PackView,
          policy: formats.Policy) -> dict[int, str] | None:
    taken = set(kept.values())
    pool = [e for e in placement.eligible(cfg.providers, policy, down) if e.id not in taken]
    recorded = {i: s.p for i, s in enumerate(rec.shares) if s is not None}
    strays = {pid: i for pid, i in view.strays}
    ranked = placement.rank(rec.id, pool)
    preferred = [e for e in ranked if e.id in {recorded.get(i) for i in redo}]
    preferred += [e for e in ranked if e.id in strays and e not in preferred]
    order = preferred + [e for e in ranked if e not in preferred]
    if len(order) < len(redo):
        return None
    base = [entries[p] for p in kept.values()]
    for combo in itertools.islice(itertools.combinations(order, len(redo)), placement.MAX_COMBINATIONS):
        if placement.satisfies(base + list(combo), policy):
            return _assign(redo, [e.id for e in combo], recorded, strays)
    return None

def _assign(redo: list[int], pids: list[str], recorded: dict[int, str], strays: dict[str, int]) -> dict[int, str]:
    out: dict[int, str] = {}
    free = list(pids)
    for i in redo:  # back where it was recorded, then where a copy already is
        for pid in (recorded.get(i), *[p for p, j in strays.items() if j == i]):
            if pid in free:
                out[i] = pid
                free.remove(pid)
                break
    for i in redo:
        if i not in out:
            out[i] = free.pop(0)
    return out
