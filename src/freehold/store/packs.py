"""Packs and shares: laying a pack out as n erasure-coded shares and writing them where the
placement policy says (docs/design.md §8, §9, §9a).

A pack is padded (random bytes between its last blob and its trailer) to a Padmé length of at
least ``MIN_PACK``, so the share sizes a provider sees, and the pack length in every share
header, say little about the sizes of the files inside (§17).
"""

from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait

import blake3
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .. import erasure, formats, placement
from ..crypto import KIND_PACK_TRAILER, VaultKeys, seal
from ..errors import FreeholdError, PolicyError, QuorumError
from ..formats import SHARE_HEADER_LEN, PackEntry, PackRecord, ShareHeader, ShareRecord
from ..providers.base import Provider
from .session import Session

DATA_PREFIX = "data/"
MIN_PACK = 64 * 1024             # packs are padded to at least this length
SHARE_BUFFER_STEP = 64 * 1024    # share buffer sizes are whole multiples of this
MAX_PACKS_BUFFERED = 2           # share buffers kept for reuse: enough for the packs a backup has in flight


def share_name(pack_id: bytes, index: int) -> str:
    h = pack_id.hex()
    return f"{DATA_PREFIX}{h[:2]}/{h}.{index}"


def padme(length: int) -> int:
    """Padmé (Nikitin et al., PETS 2019): round up so that only the top O(log log L) bits of the
    length remain; at most 12 % overhead, typically much less."""
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    mask = (1 << (e - s)) - 1
    return (length + mask) & ~mask


def padded_length(length: int) -> int:
    return padme(max(length, MIN_PACK))


def trailer(keys: VaultKeys, entries: list[PackEntry]) -> bytes:
    env = seal(keys.index, KIND_PACK_TRAILER, b"pack-trailer",
               formats.encode(formats.PackTrailer(v=formats.FORMAT_VERSION, blobs=entries)))
    return bytes(env) + formats.PACK_TRAILER_LEN.pack(len(env))


def close_pack(keys: VaultKeys, parts: list[bytes | bytearray], entries: list[PackEntry]) -> None:
    """Append padding and the sealed trailer to a pack's blob envelopes (in place)."""
    tail = trailer(keys, entries)
    body = sum(len(p) for p in parts)
    pad = padded_length(body + len(tail)) - body - len(tail)
    if pad:
        parts.append(_random(pad))  # random, not zeros: a data share must not show where blobs end
    parts.append(tail)


def _random(n: int) -> bytes:
    """n bytes indistinguishable from ciphertext: AES-256-CTR keystream under a fresh random key
    (a CSPRNG; ~20x faster than os.urandom here, which cost 50 ms of the walking thread per GiB),
    made from one shared block of zeros so that nothing but the output is allocated."""
    seed = os.urandom(48)  # one system call: a key and a counter block
    enc = Cipher(algorithms.AES(seed[:32]), modes.CTR(seed[32:])).encryptor()
    if n <= len(_ZEROS):
        return enc.update(_ZEROS[:n])
    return b"".join(enc.update(_ZEROS[: min(len(_ZEROS), n - at)]) for at in range(0, n, len(_ZEROS)))


_ZEROS = memoryview(bytes(1 << 20))


class ShareBuffers:
    """Page-aligned buffers for shares, reused from pack to pack: O_DIRECT needs aligned memory,
    and fresh memory for every pack cost a page fault per 4 KiB. Buffers are made at least
    ``typical`` bytes (a full pack's share), so nearly every pack fits the ones kept; at most
    ``keep`` are kept, and kept ones too small for a rare larger pack are dropped, not hoarded."""

    def __init__(self, keep: int, typical: int) -> None:
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()
        self._keep = keep
        self._typical = typical

    def take(self, size: int) -> mmap.mmap:
        with self._lock:
            for j, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(j)
            self._free = []  # all too small: let them go rather than hold them and a new one
        size = max(size, self._typical)
        return mmap.mmap(-1, -(-size // SHARE_BUFFER_STEP) * SHARE_BUFFER_STEP)

    def give(self, buf: mmap.mmap) -> None:
        # Never closed explicitly: a view may outlive its write in an error's traceback, and
        # a mapping is unmapped when its last view and reference are gone.
        with self._lock:
            if len(self._free) < self._keep:
                self._free.append(buf)

    def clear(self) -> None:
        with self._lock:
            self._free = []


class PackWriter:
    """Writes packs as shares for one operation (its ``Session`` says who is down)."""

    def __init__(self, keys: VaultKeys, config: formats.Config, providers: dict[str, Provider],
                 pool: ThreadPoolExecutor, buffers: ShareBuffers, session: Session) -> None:
        self.keys = keys
        self.config = config
        self.providers = providers
        self.pool = pool
        self.buffers = buffers
        self.session = session
        self.k = config.k
        self.n = config.n

    def placement(self, pack_id: bytes) -> list[str]:
        """Provider id for each share index, under the vault's policy: shares on providers down in
        this operation are skipped in degraded mode when no other placement exists."""
        down = self.session.down
        try:
            return placement.place(pack_id, self.config.providers, self.n, self.config.policy, down)
        except PolicyError:
            if not (self.session.degraded and down):
                raise
            return placement.place(pack_id, self.config.providers, self.n, self.config.policy)

    def check_placement(self) -> None:
        """Refuse, before any byte is written, a policy the reachable providers cannot satisfy."""
        placement.check(self.config.providers, self.n, self.config.policy,
                        () if self.session.degraded else self.session.down)

    def write(self, parts: list[bytes | bytearray], entries: list[PackEntry]) -> PackRecord:
        """Lay a closed pack (``close_pack``; ``parts`` are consumed) out as its n shares, each
        header and payload in one page-aligned buffer, and write them in parallel. Returns when
        all are durable. The blobs are copied once, straight into the stripes, and parity is
        computed in place."""
        pack_len = sum(len(p) for p in parts)
        # The pack id is the keyed hash of its trailer (the last part: envelope and length field).
        pack_id = self.keys.name_id(parts[-1])
        size = erasure.stripe_size(pack_len, self.k)
        bufs = [self.buffers.take(SHARE_HEADER_LEN + size) for _ in range(self.n)]
        views = [memoryview(b)[: SHARE_HEADER_LEN + size] for b in bufs]
        try:
            stripes = [v[SHARE_HEADER_LEN:] for v in views]
            _scatter(parts, stripes[: self.k], pack_len)
            erasure.parity_into(stripes[: self.k], stripes[self.k:], self.k, self.n)
            return self._put_shares(pack_id, pack_len, size, views, entries)
        finally:
            for v in views:
                v.release()
            for b in bufs:
                self.buffers.give(b)

    def _put_shares(self, pack_id: bytes, pack_len: int, size: int, views: list[memoryview],
                    entries: list[PackEntry]) -> PackRecord:
        where = self.placement(pack_id)
        records: list[ShareRecord | None] = []
        futures: dict[int, Future[None]] = {}
        for i, view in enumerate(views):
            if where[i] in self.session.down:
                records.append(None)  # degraded: recorded as missing, `check` reports it
                continue
            view[:SHARE_HEADER_LEN] = ShareHeader(self.k, self.n, i, pack_len, size, pack_id).pack()
            records.append(ShareRecord(p=where[i], h=blake3.blake3(view).digest(), z=len(view)))
            try:
                futures[i] = self.pool.submit(self.providers[where[i]].put, share_name(pack_id, i), view)
            except BaseException:
                wait(futures.values())  # no put may still read a buffer when it is reused
                raise
        wait(futures.values())  # every put has ended, whatever happens next
        errors: dict[str, FreeholdError] = {}
        for i, fut in futures.items():
            exc = fut.exception()
            if exc is not None:
                if not isinstance(exc, FreeholdError):
                    raise exc
                errors[where[i]] = exc
                records[i] = None
        written = sum(r is not None for r in records)
        self.settle(errors, written, f"pack {pack_id.hex()[:12]}")
        return PackRecord(id=pack_id, len=pack_len, k=self.k, n=self.n, shares=records, blobs=entries)

    def settle(self, errors: dict[str, FreeholdError], written: int, what: str) -> None:
        """A backup's write holds when every provider took it, or, degraded, at least k+1 did
        (the others are then down for the rest of this operation)."""
        if not errors and (not self.session.degraded or written >= self.k + 1):
            return
        if self.session.degraded and written >= self.k + 1:
            for pid, exc in errors.items():
                self.session.warn(f"provider {pid} unreachable: {exc}")
                self.session.down.add(pid)
            return
        if not errors:
            raise QuorumError(f"{what}: only {written} providers are reachable; even a degraded "
                              f"backup needs k+1 = {self.k + 1}")
        pid, first = next(iter(errors.items()))
        others = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        hint = "" if self.session.degraded else "; nothing was lost (use --degraded to back up anyway)"
        text = str(first) if str(first).startswith("provider ") else f"provider {pid}: {first}"
        raise type(first)(f"{text}{others}{hint}")

    def metadata_quorum(self) -> int:
        """Providers that must take an index or snapshot object of a backup."""
        usable = len([p for p in self.providers if p not in self.session.down])
        return self.k + 1 if self.session.degraded else usable


def _scatter(parts: list[bytes | bytearray], stripes: list[memoryview], pack_len: int) -> None:
    """Copy the pack's parts into its k stripes and zero the padding after ``pack_len``
    (the buffers are reused). Parts are dropped as they are copied."""
    size = len(stripes[0])
    pos = 0
    parts.reverse()
    while parts:
        part = memoryview(parts.pop())
        off = 0
        while off < len(part):
            i, at = divmod(pos, size)
            n = min(size - at, len(part) - off)
            stripes[i][at: at + n] = part[off: off + n]
            off += n
            pos += n
    while pos < size * len(stripes):
        i, at = divmod(pos, size)
        stripes[i][at:] = bytes(size - at)
        pos += size - at
