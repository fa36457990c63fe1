"""Systematic k-of-n erasure coding of packs, column-wise (docs/design.md, "Shares").

A pack of L bytes is padded with zeros to k*S bytes, S = ceil(L / k), and cut into
k contiguous stripes; share i < k *is* stripe i, shares k..n-1 are zfec parity.
zfec's code works byte column by byte column, so the same byte range [a, b) of any
k shares decodes that range of every stripe alone: a degraded read of a small blob
costs k small ranged reads, not k whole shares.

zfec was chosen over pyeclib: it releases the GIL (scales across threads, measured
1,347 MB/s on two threads against pyeclib's 158) and decodes ranges, where
pyeclib's fragments carry headers and decode only whole. Parity is computed by ISA-L
with zfec's coefficients where ISA-L is present (``isal``: the same bytes, ~13x faster).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Iterable, Sequence

import zfec

from . import isal

# "isal" when ISA-L computes parity (checked against zfec when first loaded), else "zfec".
# Tests set this to "zfec" to exercise the fallback.
PARITY = "isal"

def stripe_size(pack_len: int, k: int) -> int:
    return max(1, -(-pack_len // k))


def check_params(k: int, n: int) -> None:
    from .errors import UsageError

    if not (1 <= k <= n <= 255):
        raise UsageError(f"need 1 <= k <= n <= 255 (got k={k}, n={n})")


def padded_size(pack_len: int, k: int) -> int:
    return k * stripe_size(pack_len, k)


ENCODE_WINDOW = 1024 * 1024


def encode(pack: bytearray, pack_len: int, k: int, n: int) -> list[list[memoryview | bytes | bytearray]]:
    """Return the n share payloads (stripe i for i < k, then parity) of ``pack[:pack_len]``,
    each as a list of parts to be written one after the other.

    The buffer is zero-padded in place to k * stripe bytes (the caller owns it) so that
    the data shares are views into it: no copy of the pack is made. (The backup lays packs
    out in share buffers itself and calls ``parity_into``; this serves tests and tools.)"""
    size = stripe_size(pack_len, k)
    total = k * size
    if len(pack) < total:
        pack.extend(bytes(total - len(pack)))
    elif len(pack) > total:
        del pack[total:]
    pack[pack_len:total] = bytes(total - pack_len)  # same length: zeroes the tail without moving
    view = memoryview(pack)
    stripes = [view[i * size:(i + 1) * size] for i in range(k)]
    parity = [bytearray(size) for _ in range(n - k)]
    if parity:
        parity_into(stripes, [memoryview(p) for p in parity], k, n)
    return [[s] for s in stripes] + [[p] for p in parity]


def parity_into(stripes: Sequence[memoryview], outs: Sequence[memoryview], k: int, n: int) -> None:
    """Write the parity of k equal, writable stripes into n - k writable buffers of their size:
    by ISA-L in one call where it is present, else by zfec one 1 MiB column window at a time
    (the code is column-wise, so the bytes are the same; whole 5 MiB stripes overflowed the
    CPU caches and ran 37 % slower)."""
    size = len(stripes[0]) if stripes else 0
    fast = isal.parity(k, n) if PARITY == "isal" else None
    if fast is not None:
        fast.encode_into(stripes, outs, size)
        return
    coder = zfec.Encoder(k, n)
    wanted = list(range(k, n))
    for a in range(0, size, ENCODE_WINDOW):
        b = min(size, a + ENCODE_WINDOW)
        for out, block in zip(outs, coder.encode([s[a:b] for s in stripes], wanted), strict=True):
            out[a:b] = block


def decode_columns(pieces: Sequence[tuple[int, bytes]], k: int, n: int) -> list[bytes]:
    """Given the same column range of k distinct shares as (share index, bytes),
    return that column range of the k stripes."""
    if len(pieces) < k:
        raise ValueError("need k pieces")
    chosen = sorted(pieces[:k], key=lambda p: p[0])
    if all(idx == i for i, (idx, _) in enumerate(chosen)):
        return [bytes(b) for _, b in chosen]
    # zfec reorders the lists it is given: always pass fresh lists.
    blocks = [bytes(b) for _, b in chosen]
    nums = [idx for idx, _ in chosen]
    return [bytes(b) for b in zfec.Decoder(k, n).decode(blocks, nums)]


# -- rebuilding chosen shares from any k (repair) ---------------------------------------------------
#
# Every share is a fixed GF(2^8) combination of the k stripes: share i = G[i] . stripes, with G the
# n x k generator (identity rows, then zfec's parity rows). From any k distinct shares A the stripes
# are inverse(G[A]) . shares[A], so share w = (G[w] . inverse(G[A])) . shares[A]: one linear map,
# which ISA-L's ec_encode_data computes at parity speed once its coefficients are known. Only the
# wanted shares are computed; the pack is never decoded whole or encoded again.

POLY = 0x11D  # the field polynomial of zfec and ISA-L


@functools.lru_cache(maxsize=1)
def _gf() -> tuple[list[int], list[int]]:
    exp = [0] * 510
    log = [0] * 256
    x = 1
    for i in range(255):
        exp[i] = exp[i + 255] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLY
    return exp, log


def _mul(a: int, b: int) -> int:
    if not a or not b:
        return 0
    exp, log = _gf()
    return exp[log[a] + log[b]]


def _inverse(m: list[list[int]]) -> list[list[int]]:
    """The inverse of a square GF(2^8) matrix (Gauss-Jordan); ValueError when it is singular."""
    size = len(m)
    exp, log = _gf()
    a = [row[:] + [int(i == j) for j in range(size)] for i, row in enumerate(m)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if a[r][col]), None)
        if pivot is None:
            raise ValueError("singular matrix")
        a[col], a[pivot] = a[pivot], a[col]
        inv = exp[255 - log[a[col][col]]]
        a[col] = [_mul(v, inv) for v in a[col]]
        for r in range(size):
            f = a[r][col]
            if r != col and f:
                a[r] = [v ^ _mul(f, w) for v, w in zip(a[r], a[col], strict=True)]
    return [row[size:] for row in a]


@functools.lru_cache(maxsize=16)
def _generator(k: int, n: int) -> list[list[int]]:
    return [[int(i == j) for j in range(k)] for i in range(k)] + (isal.zfec_matrix(k, n) if n > k else [])


def rebuild_matrix(k: int, n: int, have: Sequence[int], want: Sequence[int]) -> list[list[int]]:
    """Coefficients giving shares ``want`` from the k distinct shares ``have`` (in that order)."""
    g = _generator(k, n)  # cached: read only
    inv = _inverse([g[i] for i in have])
    return [[_xor_sum(_mul(g[w][t], inv[t][j]) for t in range(k)) for j in range(k)] for w in want]


def _xor_sum(values: Iterable[int]) -> int:
    out = 0
    for v in values:
        out ^= v
    return out


class _Rebuilder:
    """ISA-L tables for one (k, n, have, want)."""

    def __init__(self, lib: ctypes.CDLL, k: int, coeffs: list[list[int]]) -> None:
        self._lib = lib
        self.k = k
        self.rows = len(coeffs)
        flat = [c for row in coeffs for c in row]
        self._tables = ctypes.create_string_buffer(32 * k * self.rows)
        lib.ec_init_tables(k, self.rows, (ctypes.c_ubyte * len(flat))(*flat), self._tables)

    def run(self, srcs: Sequence[int], dsts: Sequence[int], size: int) -> None:
        src = (ctypes.c_void_p * self.k)(*srcs)
        dst = (ctypes.c_void_p * self.rows)(*dsts)
        self._lib.ec_encode_data(size, self.k, self.rows, self._tables, src, dst)


@functools.lru_cache(maxsize=64)
def _rebuilder(k: int, n: int, have: tuple[int, ...], want: tuple[int, ...]) -> _Rebuilder | None:
    """An ISA-L rebuilder that gave zfec's shares on a test vector, or None (then zfec is used)."""
    lib = isal.library()
    if lib is None:
        return None
    try:
        coder = _Rebuilder(lib, k, rebuild_matrix(k, n, have, want))
        size = 4099  # odd length: ISA-L's vector kernels and its byte-wise tail
        stripes = [bytes((i * 131 + j * 7 + (i * j) % 251) & 0xFF for i in range(size)) for j in range(k)]
        shares = stripes + (list(zfec.Encoder(k, n).encode(stripes, list(range(k, n)))) if n > k else [])
        outs = [bytearray(size) for _ in want]
        pins = [ctypes.c_char_p(shares[i]) for i in have]
        coder.run([ctypes.cast(p, ctypes.c_void_p).value or 0 for p in pins],
                  [ctypes.addressof((ctypes.c_char * size).from_buffer(o)) for o in outs], size)
    except (OSError, ValueError, TypeError, ctypes.ArgumentError):
        return None
    if [bytes(o) for o in outs] != [bytes(shares[w]) for w in want]:
        return None
    return coder


def _source_address(buf: bytes | bytearray | memoryview, offset: int, size: int) -> tuple[int, object]:
    """Address of ``buf[offset:offset + size]`` for reading, and what pins it while in use."""
    if len(buf) < offset + size:
        raise ValueError("share shorter than its stripe")
    if isinstance(buf, bytes):
        pin: object = ctypes.c_char_p(buf)  # the bytes object's own storage, not a copy
        return (ctypes.cast(pin, ctypes.c_void_p).value or 0) + offset, pin
    view = memoryview(buf)
    if view.readonly:
        copy = bytearray(view[offset:offset + size])
        return ctypes.addressof((ctypes.c_char * size).from_buffer(copy)), copy
    holder = (ctypes.c_char * size).from_buffer(view, offset)
    return ctypes.addressof(holder), holder


def rebuild_into(have: Sequence[tuple[int, bytes | bytearray | memoryview]], want: Sequence[tuple[int, memoryview]],
                 k: int, n: int, offset: int = 0) -> None:
    """Write shares ``want`` (share index, writable buffer of the stripe size) computed from k
    distinct shares ``have`` (share index, buffer whose stripe starts at ``offset``, e.g. a whole
    share object and its header length): ISA-L in one call where it is present (checked against
    zfec per set of indices), else zfec. The same bytes as ``encode`` gives for those shares."""
    if not want:
        return
    chosen = sorted(have, key=lambda p: p[0])[:k]
    if len(chosen) < k or len({i for i, _ in chosen}) < k:
        raise ValueError("need k distinct shares")
    size = len(want[0][1])
    if any(len(out) != size for _, out in want):
        raise ValueError("output buffers differ in size")
    idx = tuple(i for i, _ in chosen)
    wanted = tuple(i for i, _ in want)
    fast = _rebuilder(k, n, idx, wanted) if PARITY == "isal" else None
    if fast is not None:
        pins: list[object] = []
        srcs: list[int] = []
        for _, buf in chosen:
            addr, pin = _source_address(buf, offset, size)
            srcs.append(addr)
            pins.append(pin)
        dsts: list[int] = []
        for _, out in want:
            holder = (ctypes.c_char * size).from_buffer(out)
            dsts.append(ctypes.addressof(holder))
            pins.append(holder)
        fast.run(srcs, dsts, size)
        del pins
        return
    pieces = [(i, memoryview(buf)[offset:offset + size]) for i, buf in chosen]
    stripes = decode_columns(pieces, k, n)
    parity = [w for w in wanted if w >= k]
    made: dict[int, bytes | memoryview] = {i: stripes[i] for i in wanted if i < k}
    if parity:
        coder = zfec.Encoder(k, n)
        bufs = {w: bytearray(size) for w in parity}
        for a in range(0, size, ENCODE_WINDOW):
            b = min(size, a + ENCODE_WINDOW)
            for w, block in zip(parity, coder.encode([s[a:b] for s in stripes], parity), strict=True):
                bufs[w][a:b] = block
        made.update(bufs)
    for w, out in want:
        out[:] = made[w]
