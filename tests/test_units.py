"""Property tests of the building blocks: envelope, share header, erasure code, chunker, formats."""

from __future__ import annotations

import io
import itertools
import os
import random
import sys
import threading
import time
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given, settings
from hypothesis import strategies as st

from freehold import erasure, formats, isal
from freehold.chunking import Chunker, Compressor
from freehold.crypto import ENC_NONE, ENC_ZSTD, KIND_DATA, KIND_INDEX, VaultKeys, open_sealed, seal
from freehold.errors import IntegrityError
from freehold.store.reader import _coalesce, _segments

KEYS = VaultKeys.derive(bytes(range(32)))


@given(st.binary(max_size=5000), st.binary(max_size=40))
def test_envelope_round_trip(plain: bytes, context: bytes) -> None:
    env = seal(KEYS.metadata, KIND_INDEX, context, plain)
    assert open_sealed(KEYS.metadata, KIND_INDEX, context, env) == plain
    assert len(plain) < 16 or plain[:16] not in env


@given(st.binary(min_size=1, max_size=2000), st.data())
def test_envelope_detects_any_flip_truncation_or_context_change(plain: bytes, data: st.DataObject) -> None:
    env = bytearray(seal(KEYS.metadata, KIND_DATA, b"ctx", plain))
    pos = data.draw(st.integers(0, len(env) - 1))
    env[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(IntegrityError):
        open_sealed(KEYS.metadata, KIND_DATA, b"ctx", bytes(env))
    good = seal(KEYS.metadata, KIND_DATA, b"ctx", plain)
    with pytest.raises(IntegrityError):
        open_sealed(KEYS.metadata, KIND_DATA, b"ctx", good[: data.draw(st.integers(0, len(good) - 1))])
    with pytest.raises(IntegrityError):
        open_sealed(KEYS.metadata, KIND_DATA, b"other", good)
    with pytest.raises(IntegrityError):
        open_sealed(KEYS.metadata, KIND_INDEX, b"ctx", good)
    with pytest.raises(IntegrityError):
        open_sealed(VaultKeys.derive(os.urandom(32)).metadata, KIND_DATA, b"ctx", good)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_blob_key_is_hkdf_expand(master: bytes, blob_id: bytes) -> None:
    # blob_key computes HKDF-Expand's single output block directly; it must equal the library's.
    keys = VaultKeys.derive(master)
    expected = HKDFExpand(algorithm=hashes.SHA256(), length=32,
                          info=b"freehold/v1/blob/" + blob_id).derive(keys.data_root)
    assert keys.blob_key(blob_id) == expected


def test_subkeys_are_distinct_and_blob_keys_differ_per_blob() -> None:
    ks = [KEYS.chunk_id, KEYS.data_root, KEYS.metadata, KEYS.object_name]
    assert len(set(ks)) == 4
    assert KEYS.blob_key(b"a" * 32) != KEYS.blob_key(b"b" * 32)
    # keyed ids: another vault gets other ids for the same content
    assert KEYS.blob_id(b"same") != VaultKeys.derive(os.urandom(32)).blob_id(b"same")


@given(st.integers(1, 255), st.integers(1, 255), st.integers(0, 255), st.integers(0, 2**63),
       st.integers(1, 2**40), st.binary(min_size=32, max_size=32))
def test_share_header_round_trip(k: int, n: int, i: int, plen: int, stripe: int, pid: bytes) -> None:
    h = formats.ShareHeader(k, n, i, plen, stripe, pid)
    raw = h.pack()
    assert len(raw) == formats.SHARE_HEADER_LEN
    assert formats.ShareHeader.unpack(raw) == h
    with pytest.raises(IntegrityError):
        formats.ShareHeader.unpack(b"XXXX" + raw[4:])
    with pytest.raises(IntegrityError):
        formats.ShareHeader.unpack(raw[:10])


@given(st.binary(min_size=0, max_size=3000), st.integers(1, 5), st.integers(0, 3), st.data())
def test_erasure_any_k_shares_rebuild_the_pack(pack: bytes, k: int, extra: int, data: st.DataObject) -> None:
    n = k + extra
    shares = [b"".join(parts) for parts in erasure.encode(bytearray(pack), len(pack), k, n)]
    size = erasure.stripe_size(len(pack), k)
    assert all(len(s) == size for s in shares)
    assert b"".join(bytes(s) for s in shares[:k])[: len(pack)] == pack  # systematic
    chosen = data.draw(st.permutations(range(n)))[:k]
    a = data.draw(st.integers(0, size - 1))
    b = data.draw(st.integers(a + 1, size))
    cols = erasure.decode_columns([(i, bytes(shares[i][a:b])) for i in chosen], k, n)
    assert cols == [bytes(shares[j][a:b]) for j in range(k)]


def test_erasure_every_combination_for_3_of_5() -> None:
    pack = os.urandom(100_001)
    shares = [b"".join(parts) for parts in erasure.encode(bytearray(pack), len(pack), 3, 5)]
    for combo in itertools.combinations(range(5), 3):
        got = erasure.decode_columns([(i, bytes(shares[i])) for i in combo], 3, 5)
        assert b"".join(got)[: len(pack)] == pack


@given(st.integers(0, 10_000), st.integers(1, 5000), st.integers(1, 3000))
def test_segments_cover_the_range(start: int, length: int, stripe: int) -> None:
    segs = _segments(start, start + length, stripe)
    assert sum(b - a for _, a, b in segs) == length
    pos = start
    for j, a, b in segs:
        assert j * stripe + a == pos and 0 <= a < b <= stripe
        pos = j * stripe + b


@given(st.lists(st.integers(1, 50_000), min_size=1, max_size=60), st.integers(1, 5))
def test_coalesce_groups_stay_in_one_stripe_and_keep_every_blob(sizes: list[int], k: int) -> None:
    offs = list(itertools.accumulate([0, *sizes]))
    entries = [formats.PackEntry(id=bytes([i % 256]) * 32, t=0, o=o, l=s, s=s)
               for i, (o, s) in enumerate(zip(offs, sizes, strict=False))]
    rec = formats.PackRecord(id=b"p" * 32, len=offs[-1], k=k, n=k, shares=[], blobs=entries)
    groups = list(_coalesce(rec, entries))
    assert [e for g in groups for e in g] == entries
    stripe = erasure.stripe_size(rec.len, k)
    for g in groups:
        assert len({e.o // stripe for e in g}) == 1


@given(st.binary(max_size=200_000))
def test_chunker_reassembles_and_is_deterministic(data: bytes) -> None:
    ch = Chunker(seed=12345, min_size=1024, avg_size=4096, max_size=16384)
    chunks = list(ch.chunks(io.BytesIO(data)))
    assert b"".join(chunks) == data
    assert chunks == list(ch.chunks(io.BytesIO(data)))
    assert all(len(c) <= 16384 for c in chunks)


def test_chunker_seed_changes_boundaries() -> None:
    data = os.urandom(2_000_000)
    def sizes(seed: int) -> list[int]:
        ch = Chunker(seed=seed, min_size=1024, avg_size=8192, max_size=65536)
        return [len(c) for c in ch.chunks(io.BytesIO(data))]

    a, b = sizes(1), sizes(99)
    assert a != b


@given(st.binary(max_size=100_000) | st.text(max_size=50_000).map(str.encode))
def test_compressed_envelope_round_trip(data: bytes) -> None:
    encoding, body = Compressor().encode(data)
    assert encoding in (ENC_NONE, ENC_ZSTD) and len(body) <= len(data)
    env = seal(KEYS.metadata, KIND_DATA, b"c", body, encoding)
    assert open_sealed(KEYS.metadata, KIND_DATA, b"c", env) == data
    # The encoding byte is authenticated: flipping it is detected, not misdecoded.
    bad = bytearray(env)
    bad[4] ^= 1
    with pytest.raises(IntegrityError):
        open_sealed(KEYS.metadata, KIND_DATA, b"c", bad)


def test_compressor_skips_random_data_and_packs_text() -> None:
    c = Compressor()
    assert c.encode(os.urandom(300_000))[0] == ENC_NONE
    assert c.encode(b"hello world " * 30_000)[0] == ENC_ZSTD


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200_000) | st.integers(0, 200_000).map(lambda n: bytes(n)), st.integers(700, 70_000),
       st.integers(1, 4), st.integers(0, 2))
def test_segmented_chunking_cuts_exactly_where_whole_buffer_cutting_does(
        data: bytes, segment: int, ahead: int, hint: int) -> None:
    """Pieces cut on two threads and stitched at the seams give the sequential chunks and ids,
    whatever the piece size (smaller than a chunk, or than min_size, included), the look-ahead,
    and whether the size hint is exact, short (the file grew) or absent. Zero bytes included:
    long runs without a content-defined cut end at max_size exactly at seams."""
    from concurrent.futures import ThreadPoolExecutor

    import freehold.chunking as chunking

    ch = Chunker(seed=777, min_size=1024, avg_size=4096, max_size=16384)
    old = chunking.SEGMENT
    chunking.SEGMENT = segment
    read = io.BytesIO(data)
    lock = threading.Lock()

    def read_at(offset: int, length: int) -> bytes:
        with lock:
            read.seek(offset)
            return read.read(min(length, 5000))  # short reads inside the file are allowed

    try:
        with ThreadPoolExecutor(2) as pool:
            size_hint = [len(data), len(data) // 2, 0][hint]
            got = [(bytes(c), i) for c, i in ch.chunks_at(read_at, pool.submit, lambda c: KEYS.blob_id(c),
                                                          size_hint, ahead)]
        streamed = [bytes(c) for c in ch.chunks(io.BytesIO(data))]
    finally:
        chunking.SEGMENT = old
    want = [bytes(c) for c in ch.cut(data)]
    assert [c for c, _ in got] == want
    assert [i for _, i in got] == [KEYS.blob_id(c) for c in want]
    assert streamed == want


def test_segmented_chunking_stops_its_reads_when_abandoned() -> None:
    """A caller that stops early (an error, a skipped file) may close the file at once: no
    read is still running or starts later."""
    from concurrent.futures import ThreadPoolExecutor

    import freehold.chunking as chunking

    ch = Chunker(seed=777, min_size=1024, avg_size=4096, max_size=16384)
    data = os.urandom(400_000)
    closed = threading.Event()
    late: list[int] = []

    def read_at(offset: int, length: int) -> bytes:
        time.sleep(0.02)  # a slow disk: later pieces are still queued or running at close
        if closed.is_set():
            late.append(offset)
        return data[offset: offset + length]

    old = chunking.SEGMENT
    chunking.SEGMENT = 20_000
    try:
        with ThreadPoolExecutor(2) as pool:
            gen = ch.chunks_at(read_at, pool.submit, KEYS.blob_id, len(data), 4)
            next(gen)
            gen.close()
            closed.set()
    finally:
        chunking.SEGMENT = old
    assert late == []


node_st = st.builds(
    formats.Node, name=st.binary(min_size=1, max_size=40), type=st.sampled_from(["file", "dir", "symlink"]),
    mode=st.integers(0, 0o7777), mtime=st.integers(-(2**62), 2**62), size=st.integers(0, 2**50),
    content=st.lists(st.binary(min_size=32, max_size=32), max_size=5),
    subtree=st.none() | st.binary(min_size=32, max_size=32), target=st.none() | st.binary(max_size=50))


@given(st.lists(node_st, max_size=10))
def test_tree_encoding_round_trip(nodes: list[formats.Node]) -> None:
    tree = formats.Tree(v=1, nodes=nodes)
    assert formats.decode(formats.encode(tree), formats.Tree, "tree") == tree


@given(st.binary(max_size=200))
def test_decoding_garbage_is_an_integrity_error_not_a_crash(junk: bytes) -> None:
    for typ in (formats.Tree, formats.Snapshot, formats.IndexFile, formats.Config, formats.KeyFile):
        try:
            formats.decode(junk, typ, "x")
        except IntegrityError:
            pass


@given(st.binary(min_size=1, max_size=5000), st.integers(1, 64), st.integers(2, 4))
def test_windowed_parity_equals_whole_stripe_parity(pack: bytes, window: int, k: int) -> None:
    """The zfec fallback computes parity in column windows: same bytes as whole stripes."""
    import zfec

    old = erasure.ENCODE_WINDOW, erasure.PARITY
    erasure.ENCODE_WINDOW, erasure.PARITY = window, "zfec"
    try:
        shares = [b"".join(parts) for parts in erasure.encode(bytearray(pack), len(pack), k, k + 2)]
    finally:
        erasure.ENCODE_WINDOW, erasure.PARITY = old
    whole = zfec.Encoder(k, k + 2).encode([bytes(s) for s in shares[:k]], [k, k + 1])
    assert shares[k:] == [bytes(p) for p in whole]


def test_isal_is_used_where_its_library_is_installed() -> None:
    """On Linux x86_64/aarch64 the pyeclib wheel brings ISA-L: the fast path must be live there,
    or every other parity test would only be testing zfec."""
    import platform

    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("ISA-L comes with the pyeclib wheel on Linux x86_64/aarch64 only")
    assert isal.library() is not None
    assert isal.parity(3, 5) is not None


@settings(max_examples=300)
@given(st.integers(0, 70_000), st.integers(1, 12), st.integers(1, 6), st.randoms(use_true_random=False))
def test_isal_parity_is_zfec_parity(length: int, k: int, extra: int, rnd: random.Random) -> None:
    """ISA-L with zfec's coefficients gives zfec's bytes for any k, n and length (vector
    kernels and byte-wise tails alike), so shares do not depend on which library wrote them."""
    import zfec

    coder = isal.parity(k, k + extra)
    if coder is None:
        pytest.skip("no ISA-L here")
    stripes = [bytearray(rnd.randbytes(length)) for _ in range(k)]
    got = coder.encode(stripes, length)
    want = zfec.Encoder(k, k + extra).encode([bytes(s) for s in stripes], list(range(k, k + extra)))
    assert [bytes(g) for g in got] == [bytes(w) for w in want]


def test_encode_paths_agree_and_isal_refuses_a_wrong_library(monkeypatch: pytest.MonkeyPatch) -> None:
    pack = os.urandom(1_000_003)
    fast = [b"".join(p) for p in erasure.encode(bytearray(pack), len(pack), 3, 5)]
    monkeypatch.setattr(erasure, "PARITY", "zfec")
    slow = [b"".join(p) for p in erasure.encode(bytearray(pack), len(pack), 3, 5)]
    assert fast == slow
    # A library that computes something else is caught by the self-check and not used.
    monkeypatch.setattr(isal, "zfec_matrix", lambda k, n: [[1] * k for _ in range(n - k)])
    isal.parity.cache_clear()
    try:
        assert isal.parity(3, 5) is None or isal.library() is None
    finally:
        monkeypatch.undo()
        isal.parity.cache_clear()


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=8), st.integers(1, 6), st.data())
def test_scatter_lays_the_pack_out_as_zero_padded_stripes(parts: list[bytes], k: int, data: st.DataObject) -> None:
    from freehold.store.packs import _scatter

    pack = b"".join(parts)
    size = erasure.stripe_size(len(pack), k)
    # Reused buffers hold old bytes: the padding must be zeroed, not assumed.
    junk = data.draw(st.integers(0, 255))
    stripes = [memoryview(bytearray([junk]) * size) for _ in range(k)]
    _scatter([bytearray(p) for p in parts], stripes, len(pack))
    assert b"".join(bytes(s) for s in stripes) == pack + bytes(k * size - len(pack))


def test_local_provider_writes_page_aligned_buffers_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A share in a page-aligned buffer is written with O_DIRECT from where it is, in one call:
    only its last partial 4 KiB block goes through the bounce buffer; the bytes are the same."""
    import mmap

    from freehold.providers import local

    blocks: list[int] = []
    real_write = local._write_block

    def recording_write(fd: int, block: memoryview, first: bool) -> bool:
        blocks.append(len(block))
        return real_write(fd, block, first)

    monkeypatch.setattr(local, "_write_block", recording_write)
    prov = local.LocalProvider(tmp_path)
    buf = mmap.mmap(-1, 4 * 1024 * 1024)
    payload = os.urandom(3 * 1024 * 1024 + 123)
    view = memoryview(buf)[: len(payload)]
    view[:] = payload
    prov.put("data/aligned", view)
    assert (tmp_path / "data" / "aligned").read_bytes() == payload
    if not prov._direct:
        pytest.skip("this file system refuses O_DIRECT")
    assert blocks == [3 * 1024 * 1024, 4096]
    blocks.clear()
    unaligned = bytearray(b"x" + payload)
    prov.put("data/copied", memoryview(unaligned)[1:])
    assert (tmp_path / "data" / "copied").read_bytes() == payload
    assert blocks == [1024 * 1024] * 3 + [4096]


@given(st.lists(st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode), max_size=40))
def test_batch_compression_round_trips_and_skips_what_does_not_shrink(items: list[bytes]) -> None:
    """Small blobs compressed in one zstd call per batch: each comes back through the envelope
    unchanged, and is stored as it is whenever zstd would not make it smaller."""
    encoded = Compressor().encode_many(list(items))
    assert len(encoded) == len(items)
    for data, (encoding, body) in zip(items, encoded, strict=True):
        assert encoding in (ENC_NONE, ENC_ZSTD)
        assert len(body) <= len(data)
        if encoding == ENC_NONE:
            assert bytes(body) == data
        env = seal(KEYS.metadata, KIND_DATA, b"b", body, encoding)
        assert open_sealed(KEYS.metadata, KIND_DATA, b"b", env) == data
    assert Compressor().encode_many([b"abc " * 1000])[0][0] == ENC_ZSTD
    assert Compressor().encode_many([os.urandom(5000)])[0][0] == ENC_NONE


@given(st.lists(st.binary(min_size=1, max_size=5000), min_size=1, max_size=40), st.data())
def test_decode_many_equals_one_by_one_and_refuses_wrong_sizes(items: list[bytes], data: st.DataObject) -> None:
    import zstandard

    from freehold.crypto import decode, decode_many

    bodies = [zstandard.ZstdCompressor(level=3).compress(x) for x in items]
    got = decode_many(bodies, [len(x) for x in items])
    assert got is not None and [bytes(v) for v in got] == items == [decode(ENC_ZSTD, b) for b in bodies]
    wrong = data.draw(st.integers(0, len(items) - 1))
    sizes = [len(x) + (1 if i == wrong else 0) for i, x in enumerate(items)]
    assert decode_many(bodies, sizes) is None


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), st.binary(min_size=8, max_size=32), st.integers(1, 3), st.integers(1, 8),
       st.integers(0, 64))
def test_stretch_is_argon2id_whatever_the_thread_count(passphrase: bytes, salt: bytes, t: int, p: int,
                                                        extra_kib: int) -> None:
    # keys._stretch runs at most one thread per core; the output must be argon2-cffi's, which
    # runs one thread per lane.
    from argon2.low_level import Type, hash_secret_raw

    from freehold import keys

    params = keys.KdfParams(t=t, m=8 * p + extra_kib, p=p)
    assert keys._stretch(passphrase, salt, params) == hash_secret_raw(
        passphrase, salt, time_cost=t, memory_cost=params.m, parallelism=p, hash_len=32, type=Type.ID)


@pytest.mark.parametrize(("t", "m", "p"), [(1, 8, 4), (0, 64, 1), (1, 64, 65), (65, 64, 1), (1, 5 * 1024 * 1024, 1)])
def test_key_objects_with_argon2_parameters_it_cannot_run_are_refused(t: int, m: int, p: int) -> None:
    # A hostile provider's key object must not make the unlock burn unbounded memory or time, nor
    # end in an Argon2 error: memory below 8 KiB per lane is refused like the other bounds.
    from freehold import keys
    from freehold.errors import IntegrityError

    good = keys.read_keyfile(keys.wrap(os.urandom(32), b"pw", b"v" * 16, keys.KdfParams.weak(64)))
    bad = formats.encode(msgspec.structs.replace(good, t=t, m=m, p=p))
    with pytest.raises(IntegrityError, match="out-of-range Argon2"):
        keys.read_keyfile(bad)
