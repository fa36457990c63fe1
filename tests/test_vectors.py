"""Format version 1, pinned by known answers (freehold.testing.vectors; docs/design.md §4-§14).

Each vector is checked twice: Freehold's code must produce the frozen bytes, and so must a
reference computation written here from design.md alone (HKDF, AES-GCM and Argon2 called
directly, BLAKE3 directly, headers by int.to_bytes, msgpack from plain dicts, GF(2^8) parity by
hand). A failure on the first side only is a code change that breaks format 1; on both sides,
a changed vector (which must never happen) or a changed dependency.
"""

from __future__ import annotations

import functools
import io
import math
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import blake3
import msgspec
import pytest
import zfec
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from pyfastcdc import FastCDC

from freehold import chunking, crypto, erasure, formats, isal, keys, placement
from freehold.crypto import VaultKeys
from freehold.errors import IntegrityError
from freehold.testing import vectors as V

# ---------------------------------------------------------------------------------------------------
# The reference: design.md's definitions, computed without Freehold's code.


def ref_hkdf(info: bytes, length: int = 32) -> bytes:
    """§4: HKDF-SHA256(ikm=M, salt=none, info, length)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(V.MASTER)


def ref_blob_key(k_data: bytes, blob_id: bytes) -> bytes:
    """§4: HKDF-Expand-SHA256(prk=K_data, info="freehold/v1/blob/" || blob_id, 32), RFC 5869 proper."""
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=b"freehold/v1/blob/" + blob_id).derive(k_data)


def ref_envelope(key: bytes, kind: int, encoding: int, nonce: bytes, context: bytes, body: bytes) -> bytes:
    """§5: "FE" | 1 | kind | encoding | nonce | AES-256-GCM(body) || tag; AD = header || context."""
    header = b"FE" + bytes([1, kind, encoding])
    return header + nonce + AESGCM(key).encrypt(nonce, body, header + context)


def ref_share_header(k: int, n: int, i: int, pack_len: int, stripe: int, pack_id: bytes) -> bytes:
    """§9: the 64-byte share header, big-endian."""
    return (b"FHSH" + bytes([1, k, n, i]) + pack_len.to_bytes(8, "big") + stripe.to_bytes(8, "big")
            + pack_id + bytes(8))


def gf_mul(a: int, b: int) -> int:
    """GF(2^8) with polynomial 0x11d (§9)."""
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return out


def ref_parity(stripes: list[bytes], coeffs: tuple[tuple[int, ...], ...]) -> list[bytes]:
    """§9: parity row r = sum_j c[r][j] * stripe_j over GF(2^8), byte column by byte column."""
    out = []
    for row in coeffs:
        col = bytearray(len(stripes[0]))
        for c, stripe in zip(row, stripes, strict=True):
            for x, byte in enumerate(stripe):
                col[x] ^= gf_mul(c, byte)
        out.append(bytes(col))
    return out


def pack_entry(blob_id: bytes, t: int, o: int, length: int, s: int) -> dict[str, Any]:
    return {"id": blob_id, "t": t, "o": o, "l": length, "s": s}


def mp(obj: Any) -> bytes:
    return msgspec.msgpack.encode(obj)


# The fixed objects, as design.md's maps (plain dicts, fields in the order of the spec; fields at
# their default are omitted where the writer omits them: tree nodes, snapshots, config, providers).

def tree_dict(r: SimpleNamespace) -> dict[str, Any]:
    return {"v": 1, "nodes": [
        {"name": b"bin", "type": "dir", "mode": 0o755, "mtime": V.MTIME, "subtree": V.SUBTREE_ID},
        {"name": b"caf\xe9.txt", "type": "file", "mode": 0o644, "mtime": V.MTIME,
         "size": len(V.BLOB_PLAIN) + len(V.ZSTD_PLAIN), "content": [r.blob_id, r.zstd_blob_id],
         "ino": 1234567, "dev": 2049, "ctime": V.CTIME},
        {"name": b"empty", "type": "file", "mode": 0o600, "mtime": V.MTIME,
         "ino": 1234568, "dev": 2049, "ctime": V.CTIME},
        {"name": b"link", "type": "symlink", "mode": 0o777, "mtime": V.MTIME, "target": V.SYMLINK_TARGET},
    ]}


def snapshot_dict(r: SimpleNamespace) -> dict[str, Any]:
    return {"v": 1, "time": V.SNAPSHOT_TIME, "host": "vectors.example", "paths": ["/home/user/docs"],
            "tree": r.tree_id, "size": len(V.BLOB_PLAIN) + len(V.ZSTD_PLAIN), "files": 2, "dirs": 2,
            "parent": V.PARENT_SNAPSHOT, "tags": ["daily", "vectors"], "skipped": ["/home/user/docs/private"]}


PROVIDER_PLACES = (("DE", "hetzner"), ("FR", "ovh"), ("CH", ""), ("NL", ""), ("DE", "ionos"))


def config_dict() -> dict[str, Any]:
    providers = []
    for pid, url, (juris, op) in zip(V.PROVIDER_IDS, V.PROVIDER_URLS, PROVIDER_PLACES, strict=True):
        entry = {"id": pid, "url": url}
        if juris:
            entry["jurisdiction"] = juris
        if op:
            entry["operator"] = op
        providers.append(entry)
    return {"v": 1, "vault_id": V.VAULT_ID, "k": V.K, "n": V.N,
            "chunker": {"min": V.CHUNKER_MIN, "avg": V.CHUNKER_AVG, "max": V.CHUNKER_MAX},
            "pack_size": V.PACK_SIZE, "providers": providers, "created": V.CREATED,
            "policy": {"allow": ["CH", "DE", "FR", "NL"], "min_jurisdictions": 2, "max_per_operator": 2}}


def config_minimal_dict() -> dict[str, Any]:
    """An older vault's config: 256 KiB minimum, no `created`, the default policy (omitted)."""
    return {"v": 1, "vault_id": V.VAULT_ID, "k": V.K, "n": V.N,
            "chunker": {"min": V.CHUNKER_OLD_MIN, "avg": V.CHUNKER_AVG, "max": V.CHUNKER_MAX},
            "pack_size": V.PACK_SIZE,
            "providers": [{"id": p, "url": u} for p, u in zip(V.PROVIDER_IDS, V.PROVIDER_URLS, strict=True)]}


def keyfile_dict(params: tuple[int, int, int], wrapped: bytes) -> dict[str, Any]:
    t, m, p = params
    return {"v": 1, "kdf": "argon2id", "t": t, "m": m, "p": p, "salt": V.SALT, "vault_id": V.VAULT_ID,
            "wrapped": wrapped, "created": V.CREATED}


def ref_argon2(params: tuple[int, int, int]) -> bytes:
    t, m, p = params
    return hash_secret_raw(V.PASSPHRASE, V.SALT, time_cost=t, memory_cost=m, parallelism=p,
                           hash_len=32, type=Type.ID)


@functools.cache
def reference() -> SimpleNamespace:
    """Every vector except FastCDC and the production Argon2id, from design.md alone."""
    r = SimpleNamespace()
    r.k_id = ref_hkdf(b"freehold/v1/chunk-id")
    r.k_data = ref_hkdf(b"freehold/v1/data-root")
    r.k_meta = ref_hkdf(b"freehold/v1/metadata")
    r.k_name = ref_hkdf(b"freehold/v1/object-name")
    r.chunker_seed_okm = ref_hkdf(b"freehold/v1/chunker-seed", 8)
    r.chunker_seed = (int.from_bytes(r.chunker_seed_okm, "big") & (2**62 - 1)) | 1

    def keyed(key: bytes, data: bytes) -> bytes:
        return blake3.blake3(data, key=key).digest()

    # Blobs (§4, §5, §6).
    r.blob_id = keyed(r.k_id, V.BLOB_PLAIN)
    r.blob_key = ref_blob_key(r.k_data, r.blob_id)
    r.zstd_blob_id = keyed(r.k_id, V.ZSTD_PLAIN)
    r.zstd_blob_key = ref_blob_key(r.k_data, r.zstd_blob_id)
    r.env_data = ref_envelope(r.blob_key, 1, 0, V.NONCE_DATA, r.blob_id, V.BLOB_PLAIN)
    r.env_data_zstd = ref_envelope(r.zstd_blob_key, 1, 1, V.NONCE_DATA_ZSTD, r.zstd_blob_id, V.ZSTD_FRAME)

    # Tree (§11), a tree blob.
    r.tree_msgpack = mp(tree_dict(r))
    r.tree_id = keyed(r.k_id, r.tree_msgpack)
    r.tree_key = ref_blob_key(r.k_data, r.tree_id)
    r.env_tree = ref_envelope(r.tree_key, 2, 0, V.NONCE_TREE, r.tree_id, r.tree_msgpack)

    # Pack (§8): the two data blobs, the trailer envelope, its uint32-LE length.
    entries = [pack_entry(r.blob_id, 0, 0, len(r.env_data), len(V.BLOB_PLAIN)),
               pack_entry(r.zstd_blob_id, 0, len(r.env_data), len(r.env_data_zstd), len(V.ZSTD_PLAIN))]
    r.trailer_msgpack = mp({"v": 1, "blobs": entries})
    r.env_trailer = ref_envelope(r.k_meta, 3, 0, V.NONCE_TRAILER, b"pack-trailer", r.trailer_msgpack)
    tail = r.env_trailer + len(r.env_trailer).to_bytes(4, "little")
    r.pack = r.env_data + r.env_data_zstd + tail
    r.pack_id = keyed(r.k_name, tail)

    # Shares (§9): stripes, parity, headers, names, placement.
    r.pack_len = len(r.pack)
    r.stripe = max(1, math.ceil(r.pack_len / V.K))
    padded = r.pack + bytes(V.K * r.stripe - r.pack_len)
    stripes = [padded[j * r.stripe:(j + 1) * r.stripe] for j in range(V.K)]
    payloads = stripes + ref_parity(stripes, V.PARITY_COEFFICIENTS_3_5)
    r.share_objects = [ref_share_header(V.K, V.N, i, r.pack_len, r.stripe, r.pack_id) + payloads[i]
                       for i in range(V.N)]
    r.share_names = [f"data/{r.pack_id.hex()[:2]}/{r.pack_id.hex()}.{i}" for i in range(V.N)]
    r.placement = sorted(V.PROVIDER_IDS, key=lambda p: blake3.blake3(r.pack_id + p.encode()).digest())
    r.parity = ref_parity(list(V.STRIPES), V.PARITY_COEFFICIENTS_3_5)
    r.share_header = ref_share_header(V.HEADER_K, V.HEADER_N, V.HEADER_I, V.HEADER_L, V.HEADER_S,
                                      V.HEADER_PACK_ID)

    # Index (§10): one pack; share 4 was not written (a degraded backup records nil).
    shares: list[dict[str, Any] | None] = [
        {"p": r.placement[i], "h": blake3.blake3(r.share_objects[i]).digest(), "z": len(r.share_objects[i])}
        for i in range(V.N - 1)]
    shares.append(None)
    r.index_msgpack = mp({"v": 1, "packs": [{"id": r.pack_id, "len": r.pack_len, "k": V.K, "n": V.N,
                                             "shares": shares, "blobs": entries}]})
    r.index_name = "index/" + keyed(r.k_name, r.index_msgpack).hex()
    r.env_index = ref_envelope(r.k_meta, 4, 0, V.NONCE_INDEX, r.index_name.encode(), r.index_msgpack)

    # Snapshot (§12).
    r.snapshot_msgpack = mp(snapshot_dict(r))
    r.snapshot_name = "snapshots/" + keyed(r.k_name, r.snapshot_msgpack).hex()
    r.env_snapshot = ref_envelope(r.k_meta, 5, 0, V.NONCE_SNAPSHOT, r.snapshot_name.encode(), r.snapshot_msgpack)

    # Config (§13).
    r.config_msgpack = mp(config_dict())
    r.config_minimal_msgpack = mp(config_minimal_dict())
    r.env_config = ref_envelope(r.k_meta, 6, 0, V.NONCE_CONFIG, b"config", r.config_msgpack)

    # Key object at the weak test parameters (§13).
    r.argon2_weak = ref_argon2(V.ARGON2_WEAK)
    r.env_key = ref_envelope(r.argon2_weak, 7, 0, V.NONCE_KEY, b"key" + V.VAULT_ID, V.MASTER)
    r.keyfile_msgpack = mp(keyfile_dict(V.ARGON2_WEAK, r.env_key))
    return r


@functools.cache
def reference_default_key() -> SimpleNamespace:
    """The key object at the production Argon2id parameters (t=3, 64 MiB, p=4)."""
    r = SimpleNamespace()
    r.argon2_default = ref_argon2(V.ARGON2_DEFAULT)
    r.env_key_default = ref_envelope(r.argon2_default, 7, 0, V.NONCE_KEY_DEFAULT, b"key" + V.VAULT_ID, V.MASTER)
    r.keyfile_default_msgpack = mp(keyfile_dict(V.ARGON2_DEFAULT, r.env_key_default))
    return r


@functools.cache
def chunk_input() -> bytes:
    return blake3.blake3(V.CHUNK_SEED).digest(length=V.CHUNK_INPUT_LEN)


def ref_chunks(min_size: int) -> list[int]:
    """§7: FastCDC 2020 as pyfastcdc implements it, gear table seeded by the chunker seed."""
    cdc = FastCDC(V.CHUNKER_AVG, min_size=min_size, max_size=V.CHUNKER_MAX, seed=reference().chunker_seed)
    return [c.length for c in cdc.cut_buf(chunk_input())]


# ---------------------------------------------------------------------------------------------------
# Freehold's code against the frozen vectors (and the reference against them too).


def test_vectors_module_is_plain_constants() -> None:
    """The vectors are data: nothing in them may be computed by the code they pin."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(V))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)
                for a in n.names}
    assert imported <= {"annotations"}, imported


def test_reference_matches_the_frozen_vectors() -> None:
    r = reference()
    assert r.k_id == V.K_ID
    assert r.k_data == V.K_DATA
    assert r.k_meta == V.K_META
    assert r.k_name == V.K_NAME
    assert r.chunker_seed_okm == V.CHUNKER_SEED_OKM
    assert r.chunker_seed == V.CHUNKER_SEED
    assert (r.blob_id, r.blob_key, r.zstd_blob_id, r.zstd_blob_key) == (
        V.BLOB_ID, V.BLOB_KEY, V.ZSTD_BLOB_ID, V.ZSTD_BLOB_KEY)
    assert (r.tree_msgpack, r.tree_id) == (V.TREE_MSGPACK, V.TREE_ID)
    assert (r.env_data, r.env_data_zstd, r.env_tree) == (V.ENV_DATA, V.ENV_DATA_ZSTD, V.ENV_TREE)
    assert (r.trailer_msgpack, r.env_trailer) == (V.TRAILER_MSGPACK, V.ENV_TRAILER)
    assert (r.pack, r.pack_id) == (V.PACK, V.PACK_ID)
    assert (r.pack_len, r.stripe) == (V.PACK_LEN, V.STRIPE)
    assert r.share_objects == list(V.SHARE_OBJECTS)
    assert r.share_names == list(V.SHARE_NAMES)
    assert r.placement == list(V.PLACEMENT)
    assert r.parity == list(V.PARITY)
    assert r.share_header == V.SHARE_HEADER
    assert (r.index_msgpack, r.index_name, r.env_index) == (V.INDEX_MSGPACK, V.INDEX_NAME, V.ENV_INDEX)
    assert (r.snapshot_msgpack, r.snapshot_name, r.env_snapshot) == (
        V.SNAPSHOT_MSGPACK, V.SNAPSHOT_NAME, V.ENV_SNAPSHOT)
    assert (r.config_msgpack, r.config_minimal_msgpack, r.env_config) == (
        V.CONFIG_MSGPACK, V.CONFIG_MINIMAL_MSGPACK, V.ENV_CONFIG)
    assert (r.argon2_weak, r.env_key, r.keyfile_msgpack) == (V.ARGON2_WEAK_KEY, V.ENV_KEY, V.KEYFILE_MSGPACK)


# -- §4 keys ------------------------------------------------------------------------------------------

def test_subkeys() -> None:
    vk = VaultKeys.derive(V.MASTER)
    assert vk.chunk_id == V.K_ID
    assert vk.data_root == V.K_DATA
    assert vk.metadata == V.K_META
    assert vk.object_name == V.K_NAME
    assert vk.chunker_seed == V.CHUNKER_SEED
    assert (int.from_bytes(V.CHUNKER_SEED_OKM, "big") & (2**62 - 1)) | 1 == V.CHUNKER_SEED
    assert len({V.K_ID, V.K_DATA, V.K_META, V.K_NAME}) == 4


def test_chunker_seeds() -> None:
    assert len(V.SEED_MASTERS) == len(V.CHUNKER_SEEDS)
    raw = []
    for master, seed in zip(V.SEED_MASTERS, V.CHUNKER_SEEDS, strict=True):
        okm = HKDF(algorithm=hashes.SHA256(), length=8, salt=None, info=b"freehold/v1/chunker-seed").derive(master)
        raw.append(int.from_bytes(okm, "big"))
        assert (raw[-1] & (2**62 - 1)) | 1 == seed
        assert VaultKeys.derive(master).chunker_seed == seed
    # The vectors exercise the mask: each of bits 63, 62, 61 and 0 is set in some raw seed and clear in another.
    for bit in (63, 62, 61, 0):
        assert {(x >> bit) & 1 for x in raw} == {0, 1}, bit


def test_blob_id_and_key() -> None:
    vk = VaultKeys.derive(V.MASTER)
    assert vk.blob_id(V.BLOB_PLAIN) == V.BLOB_ID == blake3.blake3(V.BLOB_PLAIN, key=V.K_ID).digest()
    assert vk.blob_id(memoryview(V.ZSTD_PLAIN)) == V.ZSTD_BLOB_ID
    # The code's HMAC shortcut equals RFC 5869 HKDF-Expand computed by `cryptography`.
    for blob_id, key in ((V.BLOB_ID, V.BLOB_KEY), (V.ZSTD_BLOB_ID, V.ZSTD_BLOB_KEY), (V.TREE_ID, None)):
        assert vk.blob_key(blob_id) == ref_blob_key(V.K_DATA, blob_id)
        if key is not None:
            assert vk.blob_key(blob_id) == key


def test_object_names() -> None:
    """Index and snapshot names are keyed BLAKE3 under K_name of the plaintext (§10, §12);
    share objects are data/<xx>/<hex>.<i> (§9); the snapshot id is the name's hex."""
    vk = VaultKeys.derive(V.MASTER)
    assert "index/" + vk.name_id(V.INDEX_MSGPACK).hex() == V.INDEX_NAME
    assert "snapshots/" + vk.name_id(V.SNAPSHOT_MSGPACK).hex() == V.SNAPSHOT_NAME
    assert vk.name_id(V.PACK[-(len(V.ENV_TRAILER) + 4):]) == V.PACK_ID
    assert V.SHARE_NAMES[3] == f"data/{V.PACK_ID.hex()[:2]}/{V.PACK_ID.hex()}.3"


# Where the writer names share objects (the module has moved before; add its new home here).
SHARE_NAMERS = ("freehold.store.packs", "freehold.repository")


def test_share_names_in_the_writer() -> None:
    import importlib

    for module in SHARE_NAMERS:
        try:
            share_name = importlib.import_module(module).share_name
        except (ImportError, AttributeError):
            continue
        assert [share_name(V.PACK_ID, i) for i in range(V.N)] == list(V.SHARE_NAMES), module
        return
    pytest.fail(f"none of {SHARE_NAMERS} has share_name any more: point SHARE_NAMERS at the module that does")


# -- §5 envelopes -------------------------------------------------------------------------------------

ENVELOPES = ["data", "data zstd", "tree", "pack trailer", "index", "snapshot", "config", "key"]


def envelope_case(what: str) -> tuple[str, bytes, int, int, bytes, bytes, bytes, bytes]:
    """(what, key, kind, encoding, nonce, context, body as stored, envelope) of one vector."""
    cases = [
        ("data", V.BLOB_KEY, 1, 0, V.NONCE_DATA, V.BLOB_ID, V.BLOB_PLAIN, V.ENV_DATA),
        ("data zstd", V.ZSTD_BLOB_KEY, 1, 1, V.NONCE_DATA_ZSTD, V.ZSTD_BLOB_ID, V.ZSTD_FRAME, V.ENV_DATA_ZSTD),
        ("tree", ref_blob_key(V.K_DATA, V.TREE_ID), 2, 0, V.NONCE_TREE, V.TREE_ID, V.TREE_MSGPACK, V.ENV_TREE),
        ("pack trailer", V.K_META, 3, 0, V.NONCE_TRAILER, b"pack-trailer", V.TRAILER_MSGPACK, V.ENV_TRAILER),
        ("index", V.K_META, 4, 0, V.NONCE_INDEX, V.INDEX_NAME.encode(), V.INDEX_MSGPACK, V.ENV_INDEX),
        ("snapshot", V.K_META, 5, 0, V.NONCE_SNAPSHOT, V.SNAPSHOT_NAME.encode(), V.SNAPSHOT_MSGPACK,
         V.ENV_SNAPSHOT),
        ("config", V.K_META, 6, 0, V.NONCE_CONFIG, b"config", V.CONFIG_MSGPACK, V.ENV_CONFIG),
        ("key", V.ARGON2_WEAK_KEY, 7, 0, V.NONCE_KEY, b"key" + V.VAULT_ID, V.MASTER, V.ENV_KEY),
    ]
    assert [c[0] for c in cases] == ENVELOPES
    return next(c for c in cases if c[0] == what)


def test_envelope_kinds_and_encodings() -> None:
    assert (crypto.KIND_DATA, crypto.KIND_TREE, crypto.KIND_PACK_TRAILER, crypto.KIND_INDEX,
            crypto.KIND_SNAPSHOT, crypto.KIND_CONFIG, crypto.KIND_KEY) == (1, 2, 3, 4, 5, 6, 7)
    assert (formats.ENC_NONE, formats.ENC_ZSTD, formats.BLOB_DATA, formats.BLOB_TREE) == (0, 1, 0, 1)
    assert crypto.ENVELOPE_OVERHEAD == 5 + 12 + 16


@pytest.mark.parametrize("what", ENVELOPES)
def test_envelope(what: str) -> None:
    _, key, kind, encoding, nonce, context, body, env = envelope_case(what)
    assert env[:5] == b"FE" + bytes([1, kind, encoding]) and env[5:17] == nonce
    # Sealing with the vector's nonce reproduces it, byte for byte (and so does the reference).
    assert bytes(crypto.seal(key, kind, context, body, encoding, nonce=nonce)) == env
    assert ref_envelope(key, kind, encoding, nonce, context, body) == env
    # It opens to the stored body, also with `cryptography` alone.
    assert crypto.unseal(key, kind, context, env, what) == (encoding, body)
    assert AESGCM(key).decrypt(env[5:17], env[17:], env[:5] + context) == body
    # Bound to its kind, its context and its header.
    with pytest.raises(IntegrityError):
        crypto.unseal(key, kind, context + b"x", env)
    with pytest.raises(IntegrityError):
        crypto.unseal(key, kind % 7 + 1, context, env)
    flipped = bytearray(env)
    flipped[4] ^= 1
    with pytest.raises(IntegrityError):
        crypto.unseal(key, kind, context, bytes(flipped))


def test_blob_envelopes_decode_to_the_plaintext() -> None:
    assert crypto.open_sealed(V.BLOB_KEY, 1, V.BLOB_ID, V.ENV_DATA) == V.BLOB_PLAIN
    assert crypto.open_sealed(V.ZSTD_BLOB_KEY, 1, V.ZSTD_BLOB_ID, V.ENV_DATA_ZSTD) == V.ZSTD_PLAIN
    vk = VaultKeys.derive(V.MASTER)
    assert crypto.open_sealed(vk.blob_key(V.TREE_ID), 2, V.TREE_ID, V.ENV_TREE) == V.TREE_MSGPACK
    assert vk.blob_id(V.TREE_MSGPACK) == V.TREE_ID


def test_seal_without_a_nonce_is_random() -> None:
    a = crypto.seal(V.K_META, crypto.KIND_CONFIG, b"config", V.CONFIG_MSGPACK)
    b = crypto.seal(V.K_META, crypto.KIND_CONFIG, b"config", V.CONFIG_MSGPACK)
    assert a[5:17] != b[5:17] and len(a) == len(V.ENV_CONFIG)
    with pytest.raises(ValueError):
        crypto.seal(V.K_META, crypto.KIND_CONFIG, b"config", b"", nonce=bytes(11))


# -- §8 packs -----------------------------------------------------------------------------------------

def vector_entries() -> list[formats.PackEntry]:
    return [formats.PackEntry(id=V.BLOB_ID, t=formats.BLOB_DATA, o=0, l=len(V.ENV_DATA), s=len(V.BLOB_PLAIN)),
            formats.PackEntry(id=V.ZSTD_BLOB_ID, t=formats.BLOB_DATA, o=len(V.ENV_DATA), l=len(V.ENV_DATA_ZSTD),
                              s=len(V.ZSTD_PLAIN))]


def test_pack_trailer_and_pack_id() -> None:
    vk = VaultKeys.derive(V.MASTER)
    trailer = formats.encode(formats.PackTrailer(v=formats.FORMAT_VERSION, blobs=vector_entries()))
    assert trailer == V.TRAILER_MSGPACK
    env = crypto.seal(vk.metadata, crypto.KIND_PACK_TRAILER, b"pack-trailer", trailer, nonce=V.NONCE_TRAILER)
    assert env == V.ENV_TRAILER
    tail = bytes(env) + formats.PACK_TRAILER_LEN.pack(len(env))
    assert V.ENV_DATA + V.ENV_DATA_ZSTD + tail == V.PACK
    assert vk.name_id(tail) == V.PACK_ID
    # A reader finds the trailer from the pack's end and every blob from it.
    (n,) = formats.PACK_TRAILER_LEN.unpack(V.PACK[-4:])
    got = formats.decode(crypto.open_sealed(vk.metadata, 3, b"pack-trailer", V.PACK[-4 - n:-4]),
                         formats.PackTrailer, "trailer")
    for e, plain in zip(got.blobs, (V.BLOB_PLAIN, V.ZSTD_PLAIN), strict=True):
        assert crypto.open_sealed(vk.blob_key(e.id), 1, e.id, V.PACK[e.o:e.o + e.l]) == plain
        assert e.s == len(plain)


# -- §9 shares ----------------------------------------------------------------------------------------

def test_share_header() -> None:
    h = formats.ShareHeader(V.HEADER_K, V.HEADER_N, V.HEADER_I, V.HEADER_L, V.HEADER_S, V.HEADER_PACK_ID)
    assert h.pack() == V.SHARE_HEADER == ref_share_header(V.HEADER_K, V.HEADER_N, V.HEADER_I, V.HEADER_L,
                                                          V.HEADER_S, V.HEADER_PACK_ID)
    assert len(V.SHARE_HEADER) == formats.SHARE_HEADER_LEN == 64
    assert formats.ShareHeader.unpack(V.SHARE_HEADER) == h
    assert erasure.stripe_size(V.HEADER_L, V.HEADER_K) == V.HEADER_S


def test_parity_coefficients_3_of_5() -> None:
    want = [list(r) for r in V.PARITY_COEFFICIENTS_3_5]
    assert want == [[15, 8, 6], [45, 48, 28]]
    assert isal.zfec_matrix(3, 5) == want
    units = [[bytes([int(i == j)]) for i in range(3)] for j in range(3)]
    # zfec itself.
    for j, unit in enumerate(units):
        got = zfec.Encoder(3, 5).encode(unit, [3, 4])
        assert [g[0] for g in got] == [want[0][j], want[1][j]]
    # freehold.erasure on both paths, and ISA-L directly when it is present.
    for path in ("isal", "zfec"):
        for j, unit in enumerate(units):
            outs = [bytearray(1), bytearray(1)]
            with pytest.MonkeyPatch.context() as mp_:
                mp_.setattr(erasure, "PARITY", path)
                erasure.parity_into([memoryview(bytearray(u)) for u in unit], [memoryview(o) for o in outs], 3, 5)
            assert [o[0] for o in outs] == [want[0][j], want[1][j]], path
    coder = isal.parity(3, 5)
    if coder is not None:
        for j, unit in enumerate(units):
            assert [o[0] for o in coder.encode([bytearray(u) for u in unit], 1)] == [want[0][j], want[1][j]]


@pytest.mark.parametrize("path", ["isal", "zfec"])
def test_parity_bytes(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(erasure, "PARITY", path)
    assert ref_parity(list(V.STRIPES), V.PARITY_COEFFICIENTS_3_5) == list(V.PARITY)
    assert [bytes(b) for b in zfec.Encoder(3, 5).encode(list(V.STRIPES), [3, 4])] == list(V.PARITY)
    outs = [bytearray(len(V.STRIPES[0])) for _ in range(2)]
    erasure.parity_into([memoryview(bytearray(s)) for s in V.STRIPES], [memoryview(o) for o in outs], 3, 5)
    assert [bytes(o) for o in outs] == list(V.PARITY)
    coder = isal.parity(3, 5)
    if path == "isal" and coder is not None:
        assert [bytes(o) for o in coder.encode([bytearray(s) for s in V.STRIPES], len(V.STRIPES[0]))] == list(V.PARITY)


@pytest.mark.parametrize("path", ["isal", "zfec"])
def test_share_objects_of_the_pack(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(erasure, "PARITY", path)
    assert len(V.PACK) == V.PACK_LEN and erasure.stripe_size(V.PACK_LEN, V.K) == V.STRIPE
    payloads = erasure.encode(bytearray(V.PACK), V.PACK_LEN, V.K, V.N)
    for i, parts in enumerate(payloads):
        header = formats.ShareHeader(V.K, V.N, i, V.PACK_LEN, V.STRIPE, V.PACK_ID).pack()
        assert header + b"".join(bytes(p) for p in parts) == V.SHARE_OBJECTS[i], i
    # Any 3 shares decode the stripes, column range by column range.
    stripes = [V.SHARE_OBJECTS[j][64:] for j in range(V.K)]
    assert b"".join(stripes)[:V.PACK_LEN] == V.PACK
    for a, b in ((0, V.STRIPE), (5, 17)):
        pieces = [(i, V.SHARE_OBJECTS[i][64 + a:64 + b]) for i in (4, 1, 3)]
        assert erasure.decode_columns(pieces, V.K, V.N) == [s[a:b] for s in stripes]


def test_placement() -> None:
    providers = [formats.ProviderEntry(id=p, url=u) for p, u in zip(V.PROVIDER_IDS, V.PROVIDER_URLS, strict=True)]
    assert placement.place(V.PACK_ID, providers, V.N, formats.Policy()) == list(V.PLACEMENT)


# -- §10-§13 msgpack structures -----------------------------------------------------------------------

def tree_struct() -> formats.Tree:
    N = formats.Node
    return formats.Tree(v=1, nodes=[
        N(name=b"bin", type="dir", mode=0o755, mtime=V.MTIME, subtree=V.SUBTREE_ID),
        N(name=b"caf\xe9.txt", type="file", mode=0o644, mtime=V.MTIME, size=len(V.BLOB_PLAIN) + len(V.ZSTD_PLAIN),
          content=[V.BLOB_ID, V.ZSTD_BLOB_ID], ino=1234567, dev=2049, ctime=V.CTIME),
        N(name=b"empty", type="file", mode=0o600, mtime=V.MTIME, ino=1234568, dev=2049, ctime=V.CTIME),
        N(name=b"link", type="symlink", mode=0o777, mtime=V.MTIME, target=V.SYMLINK_TARGET),
    ])


def index_struct() -> formats.IndexFile:
    shares: list[formats.ShareRecord | None] = [
        formats.ShareRecord(p=V.PLACEMENT[i], h=blake3.blake3(V.SHARE_OBJECTS[i]).digest(), z=len(V.SHARE_OBJECTS[i]))
        for i in range(V.N - 1)]
    shares.append(None)
    return formats.IndexFile(v=1, packs=[formats.PackRecord(id=V.PACK_ID, len=V.PACK_LEN, k=V.K, n=V.N,
                                                            shares=shares, blobs=vector_entries())])


def snapshot_struct() -> formats.Snapshot:
    return formats.Snapshot(v=1, time=V.SNAPSHOT_TIME, host="vectors.example", paths=["/home/user/docs"],
                            tree=V.TREE_ID, size=len(V.BLOB_PLAIN) + len(V.ZSTD_PLAIN), files=2, dirs=2,
                            parent=V.PARENT_SNAPSHOT, tags=["daily", "vectors"],
                            skipped=["/home/user/docs/private"])


def config_struct() -> formats.Config:
    providers = [formats.ProviderEntry(id=p, url=u, jurisdiction=j, operator=o)
                 for p, u, (j, o) in zip(V.PROVIDER_IDS, V.PROVIDER_URLS, PROVIDER_PLACES, strict=True)]
    return formats.Config(v=1, vault_id=V.VAULT_ID, k=V.K, n=V.N,
                          chunker=formats.Chunker(V.CHUNKER_MIN, V.CHUNKER_AVG, V.CHUNKER_MAX),
                          pack_size=V.PACK_SIZE, providers=providers, created=V.CREATED,
                          policy=formats.Policy(allow=["CH", "DE", "FR", "NL"], min_jurisdictions=2,
                                                max_per_operator=2))


def config_minimal_struct() -> formats.Config:
    return formats.Config(v=1, vault_id=V.VAULT_ID, k=V.K, n=V.N,
                          chunker=formats.Chunker(V.CHUNKER_OLD_MIN, V.CHUNKER_AVG, V.CHUNKER_MAX),
                          pack_size=V.PACK_SIZE,
                          providers=[formats.ProviderEntry(id=p, url=u)
                                     for p, u in zip(V.PROVIDER_IDS, V.PROVIDER_URLS, strict=True)])


def keyfile_struct(params: tuple[int, int, int], wrapped: bytes) -> formats.KeyFile:
    t, m, p = params
    return formats.KeyFile(v=1, kdf="argon2id", t=t, m=m, p=p, salt=V.SALT, vault_id=V.VAULT_ID,
                           wrapped=wrapped, created=V.CREATED)


STRUCT_CASES = [
    ("tree", tree_struct, lambda: V.TREE_MSGPACK),
    ("index", index_struct, lambda: V.INDEX_MSGPACK),
    ("snapshot", snapshot_struct, lambda: V.SNAPSHOT_MSGPACK),
    ("config", config_struct, lambda: V.CONFIG_MSGPACK),
    ("config-minimal", config_minimal_struct, lambda: V.CONFIG_MINIMAL_MSGPACK),
    ("keyfile", lambda: keyfile_struct(V.ARGON2_WEAK, V.ENV_KEY), lambda: V.KEYFILE_MSGPACK),
    ("trailer", lambda: formats.PackTrailer(v=1, blobs=vector_entries()), lambda: V.TRAILER_MSGPACK),
    # format 1.3
    ("deletion", lambda: formats.Deletion(v=1, time=V.V13_TIME, host="vectors.example", reason="prune",
                                          snapshots=[V.PARENT_SNAPSHOT.hex()], index=["ab" * 32],
                                          packs=[V.PACK_ID]), lambda: V.DELETION_MSGPACK),
    ("lock", lambda: formats.Lock(v=1, host="vectors.example", pid=4242, op="backup", time=V.V13_TIME,
                                  refreshed=V.V13_TIME, exclusive=True), lambda: V.LOCK_MSGPACK),
    ("maintenance", lambda: formats.Maintenance(v=1, time=V.V13_TIME, host="vectors.example", period_days=30,
                                                subset=7, subsets=30), lambda: V.MAINTENANCE_MSGPACK),
    ("policy-1.3", lambda: formats.Policy(allow=["DE"], retention=formats.Retention(
        last=3, daily=7, within="30d", tags=["keep"])), lambda: V.POLICY_1_3_MSGPACK),
    ("provider-1.3", lambda: formats.ProviderEntry(id="p1", url="file:///srv/p1", price=4.5, draining=True),
     lambda: V.PROVIDER_1_3_MSGPACK),
]


@pytest.mark.parametrize("case", STRUCT_CASES, ids=lambda c: c[0])
def test_msgpack_encoding(case: tuple[str, Any, Any]) -> None:
    """formats.encode writes the exact field names, order and omissions of design.md; decoding
    the frozen bytes gives the struct back."""
    _, make, frozen = case
    obj = make()
    assert formats.encode(obj) == frozen()
    assert formats.decode(frozen(), type(obj), "vector") == obj


def test_msgpack_field_names() -> None:
    """The frozen bytes, read as plain msgpack, are design.md's maps."""
    r = reference()
    assert msgspec.msgpack.decode(V.TREE_MSGPACK) == tree_dict(r)
    assert msgspec.msgpack.decode(V.SNAPSHOT_MSGPACK) == snapshot_dict(r)
    assert msgspec.msgpack.decode(V.CONFIG_MSGPACK) == config_dict()
    assert msgspec.msgpack.decode(V.CONFIG_MINIMAL_MSGPACK) == config_minimal_dict()
    assert msgspec.msgpack.decode(V.KEYFILE_MSGPACK) == keyfile_dict(V.ARGON2_WEAK, V.ENV_KEY)
    index = msgspec.msgpack.decode(V.INDEX_MSGPACK)
    assert list(index) == ["v", "packs"]
    assert list(index["packs"][0]) == ["id", "len", "k", "n", "shares", "blobs"]
    assert list(index["packs"][0]["shares"][0]) == ["p", "h", "z"] and index["packs"][0]["shares"][-1] is None
    assert list(index["packs"][0]["blobs"][0]) == ["id", "t", "o", "l", "s"]


def test_readers_ignore_unknown_fields() -> None:
    """§3: readers ignore unknown fields; optional fields take their default when absent."""
    d = config_minimal_dict()
    d["future_field"] = {"x": 1}
    assert formats.decode(mp(d), formats.Config, "config") == config_minimal_struct()


def test_sealed_metadata_opens() -> None:
    vk = VaultKeys.derive(V.MASTER)
    got = formats.decode(crypto.open_sealed(vk.metadata, 4, V.INDEX_NAME.encode(), V.ENV_INDEX),
                         formats.IndexFile, "index")
    assert got == index_struct()
    snap = formats.decode(crypto.open_sealed(vk.metadata, 5, V.SNAPSHOT_NAME.encode(), V.ENV_SNAPSHOT),
                          formats.Snapshot, "snapshot")
    assert snap == snapshot_struct()
    cfg = formats.decode(crypto.open_sealed(vk.metadata, 6, b"config", V.ENV_CONFIG), formats.Config, "config")
    assert cfg == config_struct()
    # An index envelope under a snapshot's name, or vice versa, fails (§5).
    with pytest.raises(IntegrityError):
        crypto.open_sealed(vk.metadata, 4, V.SNAPSHOT_NAME.encode(), V.ENV_INDEX)
    with pytest.raises(IntegrityError):
        crypto.open_sealed(vk.metadata, 5, V.INDEX_NAME.encode(), V.ENV_SNAPSHOT)


# -- §13 Argon2id and key objects ---------------------------------------------------------------------

def test_kdf_parameters() -> None:
    assert keys.KdfParams() == keys.KdfParams(*V.ARGON2_DEFAULT)
    assert keys.KdfParams.weak(64) == keys.KdfParams(*V.ARGON2_WEAK)


def test_argon2id_weak_and_key_object() -> None:
    assert keys._stretch(V.PASSPHRASE, V.SALT, keys.KdfParams(*V.ARGON2_WEAK)) == V.ARGON2_WEAK_KEY
    assert ref_argon2(V.ARGON2_WEAK) == V.ARGON2_WEAK_KEY
    kf = keys.read_keyfile(V.KEYFILE_MSGPACK)
    assert kf == keyfile_struct(V.ARGON2_WEAK, V.ENV_KEY)
    assert keys.unwrap(kf, V.PASSPHRASE) == V.MASTER


def test_argon2id_production_parameters() -> None:
    """The production default (t=3, m=64 MiB, p=4), for real: a key object made with it opens."""
    r = reference_default_key()
    assert r.argon2_default == V.ARGON2_DEFAULT_KEY
    assert keys._stretch(V.PASSPHRASE, V.SALT, keys.KdfParams()) == V.ARGON2_DEFAULT_KEY
    assert r.env_key_default == V.ENV_KEY_DEFAULT
    assert crypto.seal(V.ARGON2_DEFAULT_KEY, crypto.KIND_KEY, b"key" + V.VAULT_ID, V.MASTER,
                       nonce=V.NONCE_KEY_DEFAULT) == V.ENV_KEY_DEFAULT
    assert formats.encode(keyfile_struct(V.ARGON2_DEFAULT, V.ENV_KEY_DEFAULT)) == V.KEYFILE_DEFAULT_MSGPACK
    assert r.keyfile_default_msgpack == V.KEYFILE_DEFAULT_MSGPACK
    kf = keys.read_keyfile(V.KEYFILE_DEFAULT_MSGPACK)
    assert (kf.t, kf.m, kf.p) == (3, 65536, 4)
    assert keys.unwrap(kf, V.PASSPHRASE) == V.MASTER


# -- §7 chunking ----------------------------------------------------------------------------------------

def test_chunk_input() -> None:
    assert blake3.blake3(chunk_input()).hexdigest() == V.CHUNK_INPUT_BLAKE3


@pytest.mark.parametrize("min_size", [V.CHUNKER_MIN, V.CHUNKER_OLD_MIN], ids=["min512K", "min256K"])
def test_fastcdc_cut_points(min_size: int) -> None:
    want = list(V.CHUNKS_MIN512K if min_size == V.CHUNKER_MIN else V.CHUNKS_MIN256K)
    assert sum(want) == V.CHUNK_INPUT_LEN
    assert ref_chunks(min_size) == want
    data = chunk_input()
    c = chunking.Chunker(VaultKeys.derive(V.MASTER).chunker_seed, min_size, V.CHUNKER_AVG, V.CHUNKER_MAX)
    assert [len(x) for x in c.cut(data)] == want                    # in memory (files up to 8 MiB)
    assert [len(x) for x in c.chunks(io.BytesIO(data))] == want     # a stream, piece by piece
    # The writer's path for large files: 6 MiB pieces cut on two threads, seams re-cut (§7).
    with ThreadPoolExecutor(2) as pool:
        got = list(c.chunks_at(lambda o, n: data[o:o + n], pool.submit, lambda v: bytes(v[:8]),
                               size_hint=len(data)))
    assert [len(x) for x, _ in got] == want
    assert all(bid == bytes(x[:8]) for x, bid in got)


# ---------------------------------------------------------------------------------------------------
# Format 1.4 (grant objects, grants, capabilities, publishing records) and 2.0 (references, writers,
# signatures): appended vectors (freehold.testing.vectors, after the 1.3 ones). The reference side
# again works from the definitions alone: HKDF, BLAKE3, Ed25519 and X25519 called directly, Bech32
# by hand (BIP 173), msgpack from plain dicts in the order of the structures' fields.

BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def ref_bech32(hrp: str, data: bytes) -> str:
    """BIP 173 Bech32 of 8-bit ``data`` (regrouped in 5 bits, padded), as age encodes its keys."""
    acc, bits, words = 0, 0, []
    for byte in data:
        acc, bits = (acc << 8) | byte, bits + 8
        while bits >= 5:
            bits -= 5
            words.append((acc >> bits) & 31)
    if bits:
        words.append((acc << (5 - bits)) & 31)

    def polymod(values: list[int]) -> int:
        gen = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
        chk = 1
        for v in values:
            top, chk = chk >> 25, ((chk & 0x1FFFFFF) << 5) ^ v
            for i in range(5):
                chk ^= gen[i] if (top >> i) & 1 else 0
        return chk
    expanded = [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]
    mod = polymod(expanded + words + [0] * 6) ^ 1
    checksum = [(mod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(BECH32_CHARSET[w] for w in words + checksum)


def ref_expand(prk: bytes, info: bytes) -> bytes:
    return HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(prk)


def ref_ed25519(seed: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    return Ed25519PrivateKey.from_private_bytes(seed)


def ref_pub(seed: bytes) -> bytes:
    return ref_ed25519(seed).public_key().public_bytes_raw()


@functools.cache
def reference_v2() -> SimpleNamespace:
    """The 2.0 derivations of MASTER and the 1.4/2.0 structures, from the definitions alone."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    r = SimpleNamespace()
    r.conv = ref_hkdf(b"freehold/v2/convergence")
    r.index = ref_hkdf(b"freehold/v2/index")
    r.sign = ref_hkdf(b"freehold/v2/owner-sign")
    r.owner_pub = ref_pub(r.sign)
    age_seed = ref_hkdf(b"freehold/v2/owner-age")
    r.age = ref_bech32("age-secret-key-", age_seed).upper()
    r.age_recipient = ref_bech32("age", X25519PrivateKey.from_private_bytes(age_seed).public_key().public_bytes_raw())
    r.ref = blake3.blake3(V.BLOB_PLAIN, key=r.conv).digest()
    r.locate = ref_expand(r.ref, b"freehold/v2/blob-id")
    r.blob_key = ref_expand(r.ref, b"freehold/v2/blob-key")
    r.writer_pub = ref_pub(V.WRITER_SEED)
    v1 = reference()
    pack = msgspec.msgpack.decode(V.INDEX_MSGPACK)["packs"][0]      # the §10 pack record, as a map
    r.shared_dict = {"v": 1, "vault_id": V.VAULT_ID, "name": V.SHARED_NAME, "time": V.V14_TIME,
                     "snapshot": V.PARENT_SNAPSHOT.hex(), "path": V.V14_PATH, "node": tree_dict(v1)["nodes"][1],
                     "packs": [pack], "keys": {V.BLOB_ID: V.BLOB_KEY, V.ZSTD_BLOB_ID: V.ZSTD_BLOB_KEY},
                     "live": True, "expires": V.V14_EXPIRES}
    r.shared = mp(r.shared_dict)
    r.env_shared = ref_envelope(V.GRANT_KEY, 11, 0, V.NONCE_SHARED, b"shared" + V.SHARED_NAME, r.shared)
    r.grant_dict = {"v": 1, "name": V.SHARED_NAME, "key": V.GRANT_KEY, "to": [r.age_recipient], "path": V.V14_PATH,
                    "snapshot": V.PARENT_SNAPSHOT.hex(), "created": V.V14_TIME, "label": "for Ada", "live": True,
                    "expires": V.V14_EXPIRES, "revoked": V.V14_REVOKED}
    r.capability_dict = {"v": 1, "vault_id": V.VAULT_ID, "name": V.SHARED_NAME, "key": V.GRANT_KEY,
                         "providers": [{"id": "p1", "url": "file:///srv/p1", "jurisdiction": "DE"},
                                       {"id": "p2", "url": "s3://bucket/p2"}],
                         "k": V.K, "n": V.N, "path": "/home/user/docs", "live": True, "expires": V.V14_EXPIRES,
                         "structure": 2}
    r.published_dict = {"v": 1, "time": V.V14_TIME, "cid": V.PUBLISHED_CID, "profile": "unixfs-v1-2025",
                        "snapshot": V.PARENT_SNAPSHOT.hex(), "path": "/home/user/docs", "kind": "dir", "size": 1234,
                        "name": "docs", "description": "the docs", "nft_cid": V.NFT_CID, "nft_json": V.NFT_JSON}
    r.index_1_3_dict = {"v": 1, "packs": [pack], "time": V.V14_TIME}
    r.index_1_3 = mp(r.index_1_3_dict)
    tag = b"freehold/v2/index" + V.VAULT_ID
    r.index_owner_sig = ref_ed25519(r.sign).sign(tag + r.index_1_3)
    r.index_owner = mp({**r.index_1_3_dict, "sig": r.index_owner_sig})             # writer "" is omitted
    unsigned = mp({**r.index_1_3_dict, "writer": V.WRITER_LABEL})
    r.index_writer_sig = ref_ed25519(V.WRITER_SEED).sign(tag + unsigned)
    r.index_writer = mp({**r.index_1_3_dict, "writer": V.WRITER_LABEL, "sig": r.index_writer_sig})
    r.writer_key_dict = {"v": 2, "vault_id": V.VAULT_ID, "label": V.WRITER_LABEL, "conv": r.conv, "index": r.index,
                         "object_name": V.K_NAME, "chunker_seed": V.CHUNKER_SEED, "sign": V.WRITER_SEED,
                         "owner_pub": r.owner_pub, "owner_age": r.age_recipient,
                         "providers": [{"id": "p1", "url": "file:///srv/p1", "jurisdiction": "DE"}]}
    r.writer_dict = {"label": V.WRITER_LABEL, "key": r.writer_pub, "created": V.V14_TIME}
    r.policy_2_dict = {"allow": ["DE"], "writers": [r.writer_dict]}
    r.signed_sig = ref_ed25519(r.sign).sign(b"freehold/v2/writer-config" + V.VAULT_ID + V.ENV_CONFIG)
    r.signed_dict = {"v": 2, "body": V.ENV_CONFIG, "sig": r.signed_sig}
    r.snapshot_writer_dict = {**snapshot_dict(v1), "writer": V.WRITER_LABEL}
    r.snapshot_writer = mp(r.snapshot_writer_dict)
    r.writer_snapshot_name = "snapshots/" + blake3.blake3(r.snapshot_writer, key=V.K_NAME).hexdigest()
    r.writer_snapshot_body = ref_envelope(V.WRITER_SNAPSHOT_KEY, 5, 0, V.NONCE_WRITER_SNAPSHOT,
                                          r.writer_snapshot_name.encode(), r.snapshot_writer)
    r.writer_snapshot_sig = ref_ed25519(V.WRITER_SEED).sign(
        b"freehold/v2/snapshot" + V.VAULT_ID + r.writer_snapshot_name.encode() + V.WRITER_SNAPSHOT_BOX
        + r.writer_snapshot_body)
    r.writer_snapshot_dict = {"v": 2, "writer": V.WRITER_LABEL, "box": V.WRITER_SNAPSHOT_BOX,
                              "body": r.writer_snapshot_body, "sig": r.writer_snapshot_sig}
    return r


def test_reference_matches_the_frozen_1_4_and_2_0_vectors() -> None:
    r = reference_v2()
    assert (r.conv, r.index, r.sign, r.owner_pub) == (V.V2_CONV, V.V2_INDEX, V.V2_SIGN, V.V2_OWNER_PUB)
    assert (r.age, r.age_recipient) == (V.V2_AGE, V.V2_AGE_RECIPIENT)
    assert (r.ref, r.locate, r.blob_key) == (V.V2_REF, V.V2_LOCATE, V.V2_BLOB_KEY)
    assert r.writer_pub == V.WRITER_PUB
    assert (r.shared, r.env_shared) == (V.SHARED_MSGPACK, V.ENV_SHARED)
    assert mp(r.grant_dict) == V.GRANT_MSGPACK
    assert mp(r.capability_dict) == V.CAPABILITY_MSGPACK
    assert mp(r.published_dict) == V.PUBLISHED_MSGPACK
    assert r.index_1_3 == V.INDEX_1_3_MSGPACK
    assert (r.index_owner_sig, r.index_owner) == (V.INDEX_OWNER_SIG, V.INDEX_OWNER_MSGPACK)
    assert (r.index_writer_sig, r.index_writer) == (V.INDEX_WRITER_SIG, V.INDEX_WRITER_MSGPACK)
    assert mp(r.writer_key_dict) == V.WRITER_KEY_MSGPACK
    assert mp(r.writer_dict) == V.WRITER_MSGPACK
    assert mp(r.policy_2_dict) == V.POLICY_2_MSGPACK
    assert (r.signed_sig, mp(r.signed_dict)) == (V.SIGNED_SIG, V.SIGNED_MSGPACK)
    assert (r.snapshot_writer, r.writer_snapshot_name) == (V.SNAPSHOT_WRITER_MSGPACK, V.WRITER_SNAPSHOT_NAME)
    assert (r.writer_snapshot_body, r.writer_snapshot_sig) == (V.WRITER_SNAPSHOT_BODY, V.WRITER_SNAPSHOT_SIG)
    assert mp(r.writer_snapshot_dict) == V.WRITER_SNAPSHOT_MSGPACK


# -- 2.0 keys (design §23) ------------------------------------------------------------------------------

def test_v2_subkeys() -> None:
    vk = VaultKeys.derive(V.MASTER, version=2)
    assert (vk.version, vk.role, vk.label) == (2, "owner", "")
    assert (vk.conv, vk.index, vk.sign, vk.owner_pub) == (V.V2_CONV, V.V2_INDEX, V.V2_SIGN, V.V2_OWNER_PUB)
    assert vk.age == V.V2_AGE
    assert len({V.V2_CONV, V.V2_INDEX, V.V2_SIGN, V.K_ID, V.K_DATA, V.K_META, V.K_NAME}) == 7
    # The format-1 subkeys are derived as before (a 2.0 vault keeps its metadata and name keys).
    assert (vk.chunk_id, vk.data_root, vk.metadata, vk.object_name, vk.chunker_seed) == (
        V.K_ID, V.K_DATA, V.K_META, V.K_NAME, V.CHUNKER_SEED)
    assert crypto.ed25519_public(V.V2_SIGN) == V.V2_OWNER_PUB
    assert crypto.ed25519_public(V.WRITER_SEED) == V.WRITER_PUB
    from pyrage import x25519
    assert str(x25519.Identity.from_str(V.V2_AGE).to_public()) == V.V2_AGE_RECIPIENT   # age itself agrees


def test_v2_reference_locate_and_blob_key() -> None:
    vk = VaultKeys.derive(V.MASTER, version=2)
    assert vk.blob_id(V.BLOB_PLAIN) == V.V2_REF == blake3.blake3(V.BLOB_PLAIN, key=V.V2_CONV).digest()
    assert vk.locate(V.V2_REF) == V.V2_LOCATE
    assert vk.blob_key(V.V2_REF) == V.V2_BLOB_KEY
    assert vk.proves(V.V2_REF, V.BLOB_PLAIN) and not vk.proves(V.V2_REF, V.ZSTD_PLAIN)
    # Whoever holds a reference (a grant's holder: GrantKeys) derives the same key from it alone.
    assert crypto.GrantKeys.random(version=2).blob_key(V.V2_REF) == V.V2_BLOB_KEY
    assert len({V.V2_REF, V.V2_LOCATE, V.V2_BLOB_KEY, V.BLOB_ID, V.BLOB_KEY}) == 5


def test_version_1_derivations_are_unchanged() -> None:
    """version=1 (the default) derives what it always did: no 2.0 key, the index sealed with the
    metadata key, a blob's reference is its index id and its key is HKDF under K_data."""
    for vk in (VaultKeys.derive(V.MASTER), VaultKeys.derive(V.MASTER, version=1)):
        assert (vk.chunk_id, vk.data_root, vk.metadata, vk.object_name, vk.chunker_seed) == (
            V.K_ID, V.K_DATA, V.K_META, V.K_NAME, V.CHUNKER_SEED)
        assert (vk.version, vk.conv, vk.sign, vk.owner_pub, vk.age) == (1, b"", b"", b"", "")
        assert vk.index == V.K_META
        assert vk.blob_id(V.BLOB_PLAIN) == V.BLOB_ID and vk.locate(V.BLOB_ID) == V.BLOB_ID
        assert vk.blob_key(V.BLOB_ID) == V.BLOB_KEY
        assert vk.sealing_key(crypto.KIND_INDEX) == vk.sealing_key(crypto.KIND_SNAPSHOT) == V.K_META


# -- 1.4 and 2.0 structures -------------------------------------------------------------------------------

def shared_struct() -> formats.Shared:
    return formats.Shared(v=1, vault_id=V.VAULT_ID, name=V.SHARED_NAME, time=V.V14_TIME,
                          snapshot=V.PARENT_SNAPSHOT.hex(), path=V.V14_PATH, node=tree_struct().nodes[1],
                          packs=index_struct().packs, keys={V.BLOB_ID: V.BLOB_KEY, V.ZSTD_BLOB_ID: V.ZSTD_BLOB_KEY},
                          live=True, expires=V.V14_EXPIRES)


def grant_struct() -> formats.Grant:
    return formats.Grant(v=1, name=V.SHARED_NAME, key=V.GRANT_KEY, to=[V.V2_AGE_RECIPIENT], path=V.V14_PATH,
                         snapshot=V.PARENT_SNAPSHOT.hex(), created=V.V14_TIME, label="for Ada", live=True,
                         expires=V.V14_EXPIRES, revoked=V.V14_REVOKED)


def capability_struct() -> formats.Capability:
    return formats.Capability(v=1, vault_id=V.VAULT_ID, name=V.SHARED_NAME, key=V.GRANT_KEY,
                              providers=[formats.ProviderEntry(id="p1", url="file:///srv/p1", jurisdiction="DE"),
                                         formats.ProviderEntry(id="p2", url="s3://bucket/p2")],
                              k=V.K, n=V.N, path="/home/user/docs", live=True, expires=V.V14_EXPIRES, structure=2)


def published_struct() -> formats.Published:
    return formats.Published(v=1, time=V.V14_TIME, cid=V.PUBLISHED_CID, profile="unixfs-v1-2025",
                             snapshot=V.PARENT_SNAPSHOT.hex(), path="/home/user/docs", kind="dir", size=1234,
                             name="docs", description="the docs", nft_cid=V.NFT_CID, nft_json=V.NFT_JSON)


def index_1_3_struct() -> formats.IndexFile:
    return msgspec.structs.replace(index_struct(), time=V.V14_TIME)


def writer_struct() -> formats.Writer:
    return formats.Writer(label=V.WRITER_LABEL, key=V.WRITER_PUB, created=V.V14_TIME)


def writer_key_struct() -> formats.WriterKey:
    return formats.WriterKey(v=2, vault_id=V.VAULT_ID, label=V.WRITER_LABEL, conv=V.V2_CONV, index=V.V2_INDEX,
                             object_name=V.K_NAME, chunker_seed=V.CHUNKER_SEED, sign=V.WRITER_SEED,
                             owner_pub=V.V2_OWNER_PUB, owner_age=V.V2_AGE_RECIPIENT,
                             providers=[formats.ProviderEntry(id="p1", url="file:///srv/p1", jurisdiction="DE")])


STRUCT_CASES_1_4_2_0 = [
    ("shared", shared_struct, lambda: V.SHARED_MSGPACK),
    ("grant", grant_struct, lambda: V.GRANT_MSGPACK),
    ("capability", capability_struct, lambda: V.CAPABILITY_MSGPACK),
    ("published", published_struct, lambda: V.PUBLISHED_MSGPACK),
    ("index-1.3", index_1_3_struct, lambda: V.INDEX_1_3_MSGPACK),
    ("index-owner-signed", lambda: msgspec.structs.replace(index_1_3_struct(), sig=V.INDEX_OWNER_SIG),
     lambda: V.INDEX_OWNER_MSGPACK),
    ("index-writer-signed", lambda: msgspec.structs.replace(index_1_3_struct(), writer=V.WRITER_LABEL,
                                                            sig=V.INDEX_WRITER_SIG), lambda: V.INDEX_WRITER_MSGPACK),
    ("writer", writer_struct, lambda: V.WRITER_MSGPACK),
    ("policy-2.0", lambda: formats.Policy(allow=["DE"], writers=[writer_struct()]), lambda: V.POLICY_2_MSGPACK),
    ("writer-key", writer_key_struct, lambda: V.WRITER_KEY_MSGPACK),
    ("signed", lambda: formats.Signed(v=2, body=V.ENV_CONFIG, sig=V.SIGNED_SIG), lambda: V.SIGNED_MSGPACK),
    ("snapshot-writer", lambda: msgspec.structs.replace(snapshot_struct(), writer=V.WRITER_LABEL),
     lambda: V.SNAPSHOT_WRITER_MSGPACK),
    ("writer-snapshot", lambda: formats.WriterSnapshot(v=2, writer=V.WRITER_LABEL, box=V.WRITER_SNAPSHOT_BOX,
                                                       body=V.WRITER_SNAPSHOT_BODY, sig=V.WRITER_SNAPSHOT_SIG),
     lambda: V.WRITER_SNAPSHOT_MSGPACK),
]


@pytest.mark.parametrize("case", STRUCT_CASES_1_4_2_0, ids=lambda c: c[0])
def test_msgpack_encoding_1_4_and_2_0(case: tuple[str, Any, Any]) -> None:
    """formats.encode writes the exact field names, order and omissions; the frozen bytes decode
    to the struct. A field renamed or moved changes the bytes (the map's keys, in field order)."""
    _, make, frozen = case
    obj = make()
    assert formats.encode(obj) == frozen()
    assert formats.decode(frozen(), type(obj), "vector") == obj


def test_msgpack_field_names_1_4_and_2_0() -> None:
    """The frozen bytes, read as plain msgpack, are the maps of the definitions, key by key in order."""
    r = reference_v2()
    for frozen, want in ((V.SHARED_MSGPACK, r.shared_dict), (V.GRANT_MSGPACK, r.grant_dict),
                         (V.CAPABILITY_MSGPACK, r.capability_dict), (V.PUBLISHED_MSGPACK, r.published_dict),
                         (V.WRITER_KEY_MSGPACK, r.writer_key_dict), (V.POLICY_2_MSGPACK, r.policy_2_dict),
                         (V.SIGNED_MSGPACK, r.signed_dict), (V.SNAPSHOT_WRITER_MSGPACK, r.snapshot_writer_dict),
                         (V.WRITER_SNAPSHOT_MSGPACK, r.writer_snapshot_dict)):
        got = msgspec.msgpack.decode(frozen)
        assert got == want and list(got) == list(want)
    assert list(msgspec.msgpack.decode(V.INDEX_1_3_MSGPACK)) == ["v", "packs", "time"]
    assert list(msgspec.msgpack.decode(V.INDEX_OWNER_MSGPACK)) == ["v", "packs", "time", "sig"]
    assert list(msgspec.msgpack.decode(V.INDEX_WRITER_MSGPACK)) == ["v", "packs", "time", "writer", "sig"]
    assert list(msgspec.msgpack.decode(V.WRITER_SNAPSHOT_MSGPACK)) == ["v", "writer", "box", "body", "sig"]


def test_format_1_structures_encode_as_before() -> None:
    """Structures without the 1.4/2.0 fields encode byte for byte as format 1 wrote them: the new
    fields (IndexFile.writer/sig, Snapshot.writer, Policy.writers) are omitted at their default."""
    assert formats.encode(index_struct()) == V.INDEX_MSGPACK
    assert formats.encode(snapshot_struct()) == V.SNAPSHOT_MSGPACK
    assert formats.encode(config_struct()) == V.CONFIG_MSGPACK
    assert formats.encode(config_minimal_struct()) == V.CONFIG_MINIMAL_MSGPACK
    assert formats.encode(formats.Policy(allow=["DE"], retention=formats.Retention(
        last=3, daily=7, within="30d", tags=["keep"]))) == V.POLICY_1_3_MSGPACK
    assert formats.encode(formats.Policy()) == b"\x80"
    # Config still has 15 fields (a fixmap: the policy carries what 1.3 and 2.0 added).
    assert len(formats.Config.__struct_fields__) == 15
    assert V.CONFIG_MSGPACK[0] & 0xF0 == 0x80


def test_grant_object_envelope() -> None:
    """seal_shared: kind 11, context b"shared" || name, under the grant key (its nonce is random:
    fixed here by patching os.urandom); open_shared opens the frozen envelope and refuses it under
    another name or vault."""
    from freehold.store import grants

    assert grants._context(grants.SHARED_PREFIX, V.SHARED_NAME) == b"shared" + V.SHARED_NAME
    with pytest.MonkeyPatch.context() as m:
        m.setattr(crypto.os, "urandom", lambda n: V.NONCE_SHARED if n == crypto.NONCE_LEN else bytes(n))
        assert grants.seal_shared(V.GRANT_KEY, shared_struct()) == V.ENV_SHARED
    assert crypto.seal(V.GRANT_KEY, crypto.KIND_SHARED, b"shared" + V.SHARED_NAME, V.SHARED_MSGPACK,
                       nonce=V.NONCE_SHARED) == V.ENV_SHARED
    assert crypto.KIND_SHARED == 11 and V.ENV_SHARED[3] == 11
    assert grants.open_shared(V.GRANT_KEY, V.SHARED_NAME, V.VAULT_ID, V.ENV_SHARED) == shared_struct()
    with pytest.raises(IntegrityError):
        grants.open_shared(V.GRANT_KEY, bytes(16), V.VAULT_ID, V.ENV_SHARED)
    with pytest.raises(IntegrityError):
        grants.open_shared(V.GRANT_KEY, V.SHARED_NAME, bytes(16), V.ENV_SHARED)


def test_signed_index_objects() -> None:
    """sign_index (Ed25519 is deterministic) gives the frozen signatures; index_author names the
    signer, and refuses an object whose signature or signer does not match."""
    from freehold.store import writers

    owner = VaultKeys.derive(V.MASTER, version=2)
    writer = writers.writer_keys(writer_key_struct())
    assert (writer.label, writer.role, writer.sign, writer.conv, writer.index) == (
        V.WRITER_LABEL, "writer", V.WRITER_SEED, V.V2_CONV, V.V2_INDEX)
    by_owner = writers.sign_index(owner, V.VAULT_ID, index_1_3_struct())
    by_writer = writers.sign_index(writer, V.VAULT_ID, index_1_3_struct())
    assert (by_owner.writer, by_owner.sig) == ("", V.INDEX_OWNER_SIG)
    assert (by_writer.writer, by_writer.sig) == (V.WRITER_LABEL, V.INDEX_WRITER_SIG)
    assert formats.encode(by_owner) == V.INDEX_OWNER_MSGPACK and formats.encode(by_writer) == V.INDEX_WRITER_MSGPACK
    cfg = msgspec.structs.replace(config_struct(), policy=formats.Policy(writers=[writer_struct()]))
    assert writers.index_author(owner, cfg, by_owner) == ""
    assert writers.index_author(owner, cfg, by_writer) == V.WRITER_LABEL
    for bad in (msgspec.structs.replace(by_writer, writer=""),                       # claims the owner
                msgspec.structs.replace(by_owner, time="2026-12-03T05:06:08+00:00"),  # changed after signing
                msgspec.structs.replace(by_writer, writer="phone")):                  # an unknown writer
        with pytest.raises(IntegrityError):
            writers.index_author(owner, cfg, bad)
    signed = b"freehold/v2/writer-config" + V.VAULT_ID + V.ENV_CONFIG
    assert crypto.sign(V.V2_SIGN, signed) == V.SIGNED_SIG
    assert crypto.verify_signature(V.V2_OWNER_PUB, V.SIGNED_SIG, signed)


def test_writer_snapshot_opens_for_the_owner() -> None:
    """The frozen writer's snapshot: signed by the writer over name, box and body, its box opened by
    the owner's age identity (V2_AGE), its body the snapshot with ``writer`` set."""
    from freehold.store import writers

    owner = VaultKeys.derive(V.MASTER, version=2)
    assert crypto.seal(V.WRITER_SNAPSHOT_KEY, crypto.KIND_SNAPSHOT, V.WRITER_SNAPSHOT_NAME.encode(),
                       V.SNAPSHOT_WRITER_MSGPACK, nonce=V.NONCE_WRITER_SNAPSHOT) == V.WRITER_SNAPSHOT_BODY
    got = writers.open_writer_snapshot(owner, V.VAULT_ID, {V.WRITER_LABEL: V.WRITER_PUB}, V.WRITER_SNAPSHOT_NAME,
                                       V.WRITER_SNAPSHOT_MSGPACK)
    assert got == V.SNAPSHOT_WRITER_MSGPACK
    assert formats.decode(got, formats.Snapshot, "snapshot").writer == V.WRITER_LABEL
    with pytest.raises(IntegrityError):   # under another name: the signature covers the name
        writers.open_writer_snapshot(owner, V.VAULT_ID, {V.WRITER_LABEL: V.WRITER_PUB}, V.SNAPSHOT_NAME,
                                     V.WRITER_SNAPSHOT_MSGPACK)
    with pytest.raises(IntegrityError):   # a writer cannot read it back
        writers.open_writer_snapshot(writers.writer_keys(writer_key_struct()), V.VAULT_ID,
                                     {V.WRITER_LABEL: V.WRITER_PUB}, V.WRITER_SNAPSHOT_NAME, V.WRITER_SNAPSHOT_MSGPACK)
