"""freehold.unixfs against the IPFS reference importer (npm ipfs-unixfs-importer 17.1.1, run by
freehold.testing.jsref): root CIDs and CAR bytes must be identical. Plus property tests of the
dag-pb and CAR codecs and of streaming."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import random
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multiformats import multibase

from freehold.errors import IntegrityError, UsageError
from freehold.testing import jsref
from freehold.unixfs import (
    PROFILES,
    Block,
    Entry,
    FileImporter,
    Link,
    Profile,
    cid_str,
    decode_node,
    encode_node,
    import_file,
    import_path,
    import_tree,
    parse_cid,
    read_car,
    verify_block,
    write_car,
)
from freehold.unixfs.cids import DAG_PB, IDENTITY, RAW, make_cid
from freehold.unixfs.dagpb import DIRECTORY, HAMT_SHARD, decode_unixfs, link_size

V1, V0 = PROFILES["unixfs-v1-2025"], PROFILES["unixfs-v0-2015"]
BOTH = [V1, V0]
MiB = 1 << 20
THRESHOLD = 262_144

# Test-only profiles, compared with the reference run with the same explicit options.
SMALL = Profile("small-1k", cid_version=1, raw_leaves=True, chunk_size=1024, max_links=1024)
TINY_V0 = Profile("tiny-v0", cid_version=0, raw_leaves=False, chunk_size=100, max_links=3)
TINY_V1PB = Profile("tiny-v1-pb", cid_version=1, raw_leaves=False, chunk_size=64, max_links=11,
                    reduce_single_leaf_to_self=False)


@pytest.fixture(scope="module")
def reference() -> Path:
    if not jsref.tools_available():
        pytest.skip("node and npm are not on PATH")
    return jsref.ensure_installed()


def _bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _our_car(path: Path, profile: Profile) -> tuple[bytes, bytes]:
    blocks = list(import_path(path, profile))
    out = io.BytesIO()
    write_car([blocks[-1].cid], blocks, out)
    return blocks[-1].cid, out.getvalue()


def assert_like_reference(path: Path, profile: Profile, tmp_path: Path) -> bytes:
    """Root CID and CAR bytes equal to the reference's; returns the root."""
    car = tmp_path / f"ref-{profile.name}.car"
    ref = jsref.reference_import(path, profile, car)
    root, ours = _our_car(path, profile)
    assert cid_str(root) == ref["root"]
    theirs = car.read_bytes()
    assert len(ours) == len(theirs)
    assert ours == theirs
    return root


# -- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("profile", BOTH, ids=lambda p: p.name)
@pytest.mark.parametrize("size", [0, 12, 5 * MiB + 3], ids=["empty", "12B", "5MiB+3"])
def test_file_matches_reference(reference: Path, tmp_path: Path, profile: Profile, size: int) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(_bytes(size, size))
    assert_like_reference(f, profile, tmp_path)


def test_known_cids_of_the_empty_file() -> None:
    assert cid_str(list(import_file([], V1))[-1].cid) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert cid_str(list(import_file([b""], V0))[-1].cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_multi_level_file_v0(reference: Path, tmp_path: Path) -> None:
    """More than 174 leaves of 256 KiB: two levels of parents under the v0 profile."""
    f = tmp_path / "big.bin"
    f.write_bytes(_bytes(181 * V0.chunk_size + 7, 1))
    root = assert_like_reference(f, V0, tmp_path)
    blocks = {b.cid: b.data for b in import_path(f, V0)}
    _, links = decode_node(blocks[root])
    assert len(links) == 2 and all(len(decode_node(blocks[link.cid])[1]) > 1 for link in links)


@pytest.mark.parametrize(("profile", "size"), [
    (SMALL, 1100 * 1024 + 5),            # 1101 leaves: two levels, as a >1 GiB file under v1-2025
    (SMALL, 1024 * 1024),                # exactly 1024 leaves: one parent
    (SMALL, 1025 * 1024),                # 1025: a second parent of one leaf
    (TINY_V0, 5000),                     # 50 leaves, 3 links a node: four levels, several parents a write batch
    (TINY_V1PB, 64 * 11 * 11 + 1),       # CIDv1 dag-pb leaves, 3 levels
    (TINY_V1PB, 12),                     # reduceSingleLeafToSelf false: a parent over one leaf
    (TINY_V1PB, 0),
], ids=["small-2-levels", "small-1024", "small-1025", "tiny-v0", "tiny-v1pb", "tiny-v1pb-12", "tiny-v1pb-0"])
def test_file_with_explicit_options_matches_reference(reference: Path, tmp_path: Path, profile: Profile,
                                                      size: int) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(_bytes(size, 7))
    assert_like_reference(f, profile, tmp_path)


@pytest.mark.deep
def test_file_over_1024_leaves_v1(reference: Path, tmp_path: Path) -> None:
    """The real v1-2025 two-level case: 1025 MiB + 1 byte."""
    f = tmp_path / "huge.bin"
    with open(f, "wb") as out:
        rng = random.Random(3)
        for _ in range(1025):
            out.write(rng.randbytes(MiB))
        out.write(b"!")
    assert_like_reference(f, V1, tmp_path)


def test_repeated_chunks_are_written_once(reference: Path, tmp_path: Path) -> None:
    f = tmp_path / "zeros.bin"
    f.write_bytes(bytes(3 * V0.chunk_size))
    assert_like_reference(f, V0, tmp_path)


# -- folders ---------------------------------------------------------------------------------

def _make_tree(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "deep.txt").write_text("deep\n")
    (root / "a" / "zero").write_bytes(b"")
    (root / "a" / "big.bin").write_bytes(_bytes(2 * MiB + 77, 5))
    (root / "empty").mkdir()
    (root / "x" / "empty-inside").mkdir(parents=True)
    (root / "x" / "also-zero").write_bytes(b"")
    for i, name in enumerate([unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"),
                              "😀 emoji ☃.txt", "日本語", "Ωmega", "z\u200bwidth", "spaces  in name"]):
        (root / name).write_text(f"{i} {name}\n")
    (root / "x" / "copy.bin").write_bytes((root / "a" / "big.bin").read_bytes())


@pytest.mark.parametrize("profile", BOTH, ids=lambda p: p.name)
def test_tree_matches_reference(reference: Path, tmp_path: Path, profile: Profile) -> None:
    tree = tmp_path / "tree"
    _make_tree(tree)
    root = assert_like_reference(tree, profile, tmp_path)
    blocks = {b.cid: b.data for b in import_path(tree, profile)}
    data, links = decode_node(blocks[root])
    assert decode_unixfs(data).type == DIRECTORY
    names = [link.name for link in links]
    assert names == sorted(names)
    assert "café".encode() in names and unicodedata.normalize("NFD", "café").encode() in names


@pytest.mark.parametrize("profile", BOTH, ids=lambda p: p.name)
def test_empty_folder_matches_reference(reference: Path, tmp_path: Path, profile: Profile) -> None:
    (tmp_path / "nothing").mkdir()
    assert_like_reference(tmp_path / "nothing", profile, tmp_path)


def _estimate(profile: Profile, name: bytes, cid_len: int, tsize: int) -> int:
    if profile.shard_split_strategy == "links-bytes":
        return len(name) + cid_len
    return link_size(len(name), cid_len, tsize)


def _fill(folder: Path, profile: Profile, extra: int) -> int:
    """Files whose estimated folder size is exactly the threshold + ``extra``; returns it."""
    folder.mkdir()
    cid_len = 36 if profile.raw_leaves else 34
    total = 4 if profile.shard_split_strategy == "block-bytes" else 0
    target = THRESHOLD + extra
    names: list[bytes] = []

    def name(i: int, n: int) -> bytes:
        return f"{i:05d}".encode().ljust(n, b"n")

    def size(i: int, n: int) -> int:
        content = f"file {i}".encode()
        tsize = len(content) if profile.raw_leaves else len(content) + 8   # UnixFS File leaf node
        return _estimate(profile, name(i, n), cid_len, tsize)

    i = 0
    while target - total > 2 * size(i, 220):
        names.append(name(i, 200))
        total += size(i, 200)
        i += 1
    pairs = ((a, b) for a in range(8, 230) for b in range(8, 230)
             if size(i, a) + size(i + 1, b) == target - total)
    a, b = next(pairs)
    names += [name(i, a), name(i + 1, b)]
    total += size(i, a) + size(i + 1, b)
    for j, n in enumerate(names):
        (folder / os.fsdecode(n)).write_bytes(f"file {j}".encode())
    return total


def _child_type(blocks: dict[bytes, bytes], root: bytes, name: bytes) -> int:
    _, links = decode_node(blocks[root])
    cid = next(link.cid for link in links if link.name == name)
    return decode_unixfs(decode_node(blocks[cid])[0]).type


@pytest.mark.parametrize("profile", BOTH, ids=lambda p: p.name)
def test_hamt_threshold_matches_reference(reference: Path, tmp_path: Path, profile: Profile) -> None:
    """A folder estimated at exactly the threshold stays flat (even with a sub-folder, which the
    estimate does not count); one byte more makes it a HAMT shard, with a sub-folder inside."""
    tree = tmp_path / "tree"
    tree.mkdir()
    assert _fill(tree / "at", profile, 0) == THRESHOLD
    (tree / "at" / "zz-sub").mkdir()
    (tree / "at" / "zz-sub" / "f").write_text("in a sub-folder")
    assert _fill(tree / "over", profile, 1) > THRESHOLD
    (tree / "over" / "zz-sub" / "deeper").mkdir(parents=True)
    (tree / "over" / "zz-sub" / "deeper" / "g").write_text("under a shard")
    (tree / "over" / "zz-empty").mkdir()
    root = assert_like_reference(tree, profile, tmp_path)
    blocks = {b.cid: b.data for b in import_path(tree, profile)}
    assert _child_type(blocks, root, b"at") == DIRECTORY
    assert _child_type(blocks, root, b"over") == HAMT_SHARD


def test_import_tree_rules() -> None:
    files = [Entry(b"d/f", "file", lambda: [b"x"])]
    with pytest.raises(UsageError):
        list(import_tree([*files, Entry(b"d", "dir")], V1))      # a folder entry after its contents
    with pytest.raises(UsageError):
        list(import_tree([*files, Entry(b"d/f/g", "file", lambda: [b""])], V1))
    with pytest.raises(UsageError):
        list(import_tree([Entry(b"../x", "file", lambda: [b""])], V1))
    with pytest.raises(UsageError):
        list(import_tree([Entry(b"\xff", "file", lambda: [b""])], V1))
    a = list(import_tree([Entry(b"./d//f", "file", lambda: [b"x"])], V1))[-1]
    b = list(import_tree(files, V1))[-1]
    assert a == b


def test_symlinks_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "link").symlink_to("/etc/hostname")
    with pytest.raises(UsageError):
        list(import_path(tmp_path / "d", V1))
    with pytest.raises(UsageError):
        list(import_path(tmp_path / "d" / "link", V1))


# -- streaming -------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=5000), cuts=st.lists(st.integers(0, 5000), max_size=12))
def test_streaming_pieces_give_the_same_blocks(data: bytes, cuts: list[int]) -> None:
    profile = TINY_V0
    whole = list(import_file([data], profile))
    points = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    pieces = [memoryview(data)[a:b] for a, b in itertools.pairwise(points)]
    assert list(import_file(pieces, profile)) == whole
    assert [b.offset for b in whole if b.offset >= 0] == list(range(0, max(len(data), 1), profile.chunk_size))


def test_streaming_odd_pieces_real_profile() -> None:
    data = _bytes(3 * MiB + 12345, 9)
    for profile in BOTH:
        whole = list(import_file([data], profile))
        imp = FileImporter(profile)
        got: list[Block] = []
        pos, rng = 0, random.Random(4)
        while pos < len(data):
            n = rng.choice([1, 7, 4095, 65536, 262143, 1048577])
            got += imp.update(data[pos:pos + n])
            pos += n
        got += imp.finish()
        assert got == whole
        assert imp.root == whole[-1].cid and imp.size == len(data)
        for b in got:
            if b.offset >= 0 and profile.raw_leaves:
                assert data[b.offset:b.offset + len(b.data)] == b.data


# -- codecs ----------------------------------------------------------------------------------

_digests = st.binary(min_size=32, max_size=32)
_cids = st.one_of(
    _digests.map(lambda d: make_cid(0, DAG_PB, d)),
    st.tuples(st.sampled_from([RAW, DAG_PB, 0x71]), _digests).map(lambda t: make_cid(1, t[0], t[1])),
    st.binary(max_size=40).map(lambda d: make_cid(1, RAW, d, IDENTITY)),
)
_links = st.builds(Link, cid=_cids, name=st.binary(max_size=40), tsize=st.integers(0, 2**64 - 1))


@settings(max_examples=200, deadline=None)
@given(data=st.one_of(st.none(), st.binary(max_size=300)), links=st.lists(_links, max_size=8))
def test_dagpb_round_trip(data: bytes | None, links: list[Link]) -> None:
    block = encode_node(data, links)
    got_data, got_links = decode_node(block)
    assert got_data == data
    assert got_links == sorted(links, key=lambda link: link.name)
    assert encode_node(got_data, got_links) == block


def _field_ends(block: bytes) -> set[int]:
    from freehold.unixfs.cids import read_varint
    ends, pos = {0}, 0
    while pos < len(block):
        _, pos = read_varint(block, pos)
        length, pos = read_varint(block, pos)
        pos += length
        ends.add(pos)
    return ends


@settings(max_examples=150, deadline=None)
@given(data=st.one_of(st.none(), st.binary(max_size=100)), links=st.lists(_links, min_size=0, max_size=4))
def test_dagpb_truncated_is_rejected(data: bytes | None, links: list[Link]) -> None:
    block = encode_node(data, links)
    ends = _field_ends(block)
    for cut in range(len(block)):
        if cut in ends:
            decode_node(block[:cut])
        else:
            with pytest.raises(IntegrityError):
                decode_node(block[:cut])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_dagpb_garbage_raises_only_integrity_error(garbage: bytes) -> None:
    try:
        _, links = decode_node(garbage)
    except IntegrityError:
        return
    assert isinstance(links, list)


def test_dagpb_strictness() -> None:
    cid = make_cid(1, RAW, hashlib.sha256(b"x").digest())
    good = encode_node(b"d", [Link(cid, b"n", 1)])
    link = good[:good.index(b"\x0a\x01d")]
    data_first = b"\x0a\x01d" + link
    assert decode_node(data_first) == decode_node(good)                   # both orders accepted
    bad = [
        link + b"\x0a\x01d" + link,                                         # Links, Data, Links
        b"\x0a\x01d" + b"\x0a\x01d",                                        # Data twice
        b"\x12\x03\x0a\x01\x00",                                            # Hash not a CID
        b"\x12\x02\x18\x01",                                                # link without Hash
        b"\x1a\x00",                                                        # unknown field
        b"\x08\x01",                                                        # wrong wire type
        b"\x0a\x80\x00",                                                    # non-minimal varint
        b"\x12" + bytes([len(link) - 2 + 3]) + link[2:] + b"\x22\x00",        # unknown link field
    ]
    for block in bad:
        with pytest.raises(IntegrityError):
            decode_node(block)


_blocks = st.lists(st.binary(max_size=600), max_size=8, unique=True)


@settings(max_examples=100, deadline=None)
@given(payloads=_blocks, identity=st.booleans())
def test_car_round_trip(payloads: list[bytes], identity: bool) -> None:
    blocks = [(make_cid(1, RAW, hashlib.sha256(p).digest()), p) for p in payloads]
    if identity:
        blocks.append((make_cid(1, RAW, b"tiny", IDENTITY), b"tiny"))
    roots = [blocks[0][0]] if blocks else [make_cid(0, DAG_PB, bytes(32))]
    out = io.BytesIO()
    n = write_car(roots, [*blocks, *blocks[:1]], out)          # a repeated block is written once
    assert n == len(out.getvalue())
    got_roots, it = read_car(out.getvalue())
    assert got_roots == roots and list(it) == blocks
    got_roots, it = read_car(io.BytesIO(out.getvalue()))
    assert list(it) == blocks


@settings(max_examples=100, deadline=None)
@given(payloads=_blocks.filter(bool), which=st.integers(0, 7), flip=st.integers(0, 10_000))
def test_car_rejects_a_block_not_matching_its_cid(payloads: list[bytes], which: int, flip: int) -> None:
    payloads = [p or b"." for p in payloads]
    blocks = [(make_cid(1, RAW, hashlib.sha256(p).digest()), p) for p in payloads]
    out = io.BytesIO()
    write_car([blocks[0][0]], blocks, out)
    raw = bytearray(out.getvalue())
    i = which % len(blocks)
    start = raw.index(blocks[i][0] + blocks[i][1]) + len(blocks[i][0])
    raw[start + flip % len(blocks[i][1])] ^= 0x01
    _, it = read_car(bytes(raw))
    with pytest.raises(IntegrityError):
        list(it)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_car_garbage_raises_only_integrity_error(garbage: bytes) -> None:
    try:
        _, it = read_car(garbage)
        list(it)
    except IntegrityError:
        pass


def test_car_truncated_is_rejected(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(_bytes(3000, 2))
    blocks = list(import_path(f, TINY_V0))
    out = io.BytesIO()
    write_car([blocks[-1].cid], blocks, out)
    full = out.getvalue()
    for cut in (1, 5, len(full) // 2, len(full) - 1):
        with pytest.raises(IntegrityError):
            _, it = read_car(full[:cut])
            list(it)


def test_verify_block_and_cid_text() -> None:
    data = b"hello"
    cid = make_cid(1, RAW, hashlib.sha256(data).digest())
    verify_block(cid, data)
    with pytest.raises(IntegrityError):
        verify_block(cid, b"hellO")
    verify_block(make_cid(1, RAW, data, IDENTITY), data)
    with pytest.raises(IntegrityError):
        verify_block(make_cid(1, RAW, data, 0x13), data)                 # sha2-512: not verifiable here
    for text in ("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                 "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"):
        assert cid_str(parse_cid(text)) == text
    empty = parse_cid("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku")
    assert parse_cid(multibase.encode(empty, "base58btc")) == empty          # other multibases are read
    assert parse_cid("BAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU") == empty   # base32upper
    for bad in ("", "Qm", "bafyINVALID", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk",
                "bAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU", "hello", "b" * 600, "\u00e9",
                "zQmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"):
        with pytest.raises(UsageError):
            parse_cid(bad)
