"""Write-only keys for machines (format 2, design §23).

The hostile cases first, shown cryptographically: every key a write-only key file holds, and
every key it could derive from what it can read (the index ids), is tried on every envelope the
owner wrote and on every replicated object; none opens. A machine that forges a snapshot as the
owner's, signs as another writer, or poisons deduplication with a wrong plaintext under a right
reference changes nothing the owner accepts or restores. Then the ordinary flow through the CLI.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import msgspec
import pytest
from pyrage import x25519

from freehold import formats, keys
from freehold.crypto import KIND_CONFIG, KIND_DATA, KIND_GRANT, KIND_INDEX, KIND_SNAPSHOT, KIND_TREE, seal, unseal
from freehold.errors import IntegrityError, UsageError
from freehold.formats import BLOB_DATA, PackEntry
from freehold.keys import KdfParams
from freehold.store import Session
from freehold.store.packs import close_pack
from freehold.store.writers import seal_writer_snapshot, writer_keys
from freehold.vault import ProviderSpec, Vault

from .conftest import PASS, Env, same_tree

NAS_PASS = "nas passphrase"


def _init2(env: Env) -> Vault:
    v = Vault.init([ProviderSpec(u) for u in env.urls], env.k, env.n, PASS, home=env.home,
                   kdf=KdfParams.weak(64), structure=2)
    v.close()
    return env.open()


def _files(root: Path) -> tuple[Path, Path]:
    own = root / "owner"
    (own / "health").mkdir(parents=True)
    (own / "health" / "record.txt").write_text("owner-only diagnosis " * 400)
    (own / "photo.bin").write_bytes(os.urandom(900_000))
    nas = root / "nas"
    nas.mkdir()
    (nas / "camera.bin").write_bytes(os.urandom(1_200_000))
    (nas / "copy-of-photo.bin").write_bytes((own / "photo.bin").read_bytes())
    return own, nas


@pytest.fixture
def world(env: Env, tmp_path: Path):  # type: ignore[no-untyped-def]
    own, nas = _files(tmp_path)
    v = _init2(env)
    v.backup([str(own)])
    key_file = v.add_writer("nas", NAS_PASS, KdfParams.weak(64))
    v.close()
    nas_home = tmp_path / "nas-home"
    w = Vault.setup_writer(key_file, NAS_PASS, nas_home)
    w.close()
    return env, own, nas, key_file, nas_home


def _writer_key(key_file: bytes) -> formats.WriterKey:
    kf = keys.read_keyfile(key_file)
    return formats.decode(keys.unwrap(kf, NAS_PASS.encode(), context=b"writer"), formats.WriterKey, "wk")


def _envelopes(v: Vault) -> list[tuple[bytes, int, bytes]]:
    op = v._op()
    out = []
    for rec in v.packs():
        data = op.reader.read_range_fast(rec, 0, rec.len)
        out += [(e.id, e.t, bytes(data[e.o: e.o + e.l])) for e in rec.blobs]
    return out


def test_a_write_only_key_opens_nothing_the_owner_wrote(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env, _own, _nas, key_file, _nas_home = world
    wk = _writer_key(key_file)
    wkeys = writer_keys(wk)
    v = env.open()
    envelopes = _envelopes(v)
    v.close()
    assert envelopes
    held = [wk.conv, wk.index, wk.object_name, wk.sign, wkeys.metadata, wkeys.data_root, wkeys.chunk_id]
    for bid, t, body in envelopes:
        kind = KIND_TREE if t == formats.BLOB_TREE else KIND_DATA
        # what the writer can derive from what it reads: keys "of" the ids, as if they were references
        for key in [*held, wkeys.blob_key(bid), wkeys.blob_key(wkeys.locate(bid))]:
            with pytest.raises(IntegrityError):
                unseal(key, kind, bid, body)
    # Replicated objects the writer must not read: owner snapshots, the owner's config copy, grants.
    for prov, path in env.objects():
        rel = path.relative_to(prov).as_posix()
        if not rel.startswith(("snapshots/", "config")) or rel.startswith("configs/"):
            continue
        for key in held:
            for kind in (KIND_SNAPSHOT, KIND_CONFIG, KIND_GRANT):
                with pytest.raises(IntegrityError):
                    unseal(key, kind, rel.encode(), path.read_bytes())
    # The owner's snapshot holds the tree's reference; the writer can derive nothing from its name.
    assert not any(k == wk.conv for k in (wkeys.metadata, wkeys.data_root))


def test_a_machine_backs_up_deduplicating_and_cannot_read_back(world) -> None:  # type: ignore[no-untyped-def]
    env, _own, nas, key_file, nas_home = world
    w = Vault.open(NAS_PASS, home=nas_home)
    sid, _snap, stats = w.backup([str(nas)])
    # the photo the owner stored is not stored again: only the camera file is new
    assert stats.new_bytes < 1_300_000 and stats.new_bytes >= 1_200_000
    for call in (lambda: w.snapshots(), lambda: w.ls("latest"), lambda: w.restore("latest", nas_home / "x"),
                 lambda: w.prune(), lambda: w.share("x", ["age1"])):
        with pytest.raises(UsageError, match="write-only key 'nas'"):
            call()
    w.close()
    # its own snapshot object: the writer's keys open nothing in it (its key is sealed to the owner)
    obj = next(p for p in env.providers[0].glob(f"snapshots/{sid}"))
    ws = formats.decode(obj.read_bytes(), formats.WriterSnapshot, "s")
    wk = _writer_key(key_file)
    for key in (wk.conv, wk.index, wk.object_name, wk.sign):
        with pytest.raises(IntegrityError):
            unseal(key, KIND_SNAPSHOT, f"snapshots/{sid}".encode(), ws.body)
    # the owner sees it, marked as the machine's, and restores it byte for byte
    v = env.open()
    snaps = dict(v.snapshots())
    assert snaps[sid].writer == "nas" and all(s.writer == "" for i, s in snaps.items() if i != sid)
    v.restore(sid, env.root / "restored")
    same_tree(nas, env.root / "restored" / "nas")
    v.close()


def _writer_op(nas_home: Path):  # type: ignore[no-untyped-def]
    w = Vault.open(NAS_PASS, home=nas_home)
    op = w._store.operation(Session())
    op.load_index()
    return w, op


def test_forged_snapshots_are_not_accepted_as_the_owners(world) -> None:  # type: ignore[no-untyped-def]
    env, _own, _nas, _key_file, nas_home = world
    w, op = _writer_op(nas_home)
    keys_w = w._store.keys
    cfg = op.config
    v = env.open()
    _, real = v.snapshot("latest")
    v.close()
    fake = msgspec.structs.replace(real, host="owner-laptop", tags=["forged"])

    def named(snap: formats.Snapshot) -> tuple[str, bytes]:
        plain = formats.encode(snap)
        return "snapshots/" + keys_w.name_id(plain).hex(), plain
    forged = []
    # 1. sealed as the owner seals, with every key the writer holds
    name, plain = named(fake)
    for key in (keys_w.index, keys_w.conv, keys_w.object_name, keys_w.metadata):
        forged.append((name, bytes(seal(key, KIND_SNAPSHOT, name.encode(), plain))))
    # 2. a writer snapshot claiming to be nobody (the owner) or another writer
    for label in ("", "laptop"):
        name, plain = named(msgspec.structs.replace(fake, writer=label))
        forged.append((name, seal_writer_snapshot(dataclasses.replace(keys_w, label=label), cfg.vault_id, name,
                                                  plain)))
    # 3. signed as nas, but its content claims another writer (or the owner)
    for claim in ("laptop", ""):
        name, plain = named(msgspec.structs.replace(fake, writer=claim))
        forged.append((name, seal_writer_snapshot(keys_w, cfg.vault_id, name, plain)))
    w.close()
    for name, env_bytes in forged:
        for p in env.providers:
            (p / name).write_bytes(env_bytes)
        v = env.open()
        assert all("forged" not in s.tags for _, s in v.snapshots())
        assert any("ignored" in m for m in v.last_outcome.warnings)
        v.close()
        for p in env.providers:
            (p / name).unlink()


def test_poisoned_deduplication_does_not_reach_the_owner(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The machine knows the convergence key, so for a plaintext it knows it can seal another one
    under the right reference. The owner never deduplicates against a machine's packs."""
    env, own, _nas, _key_file, nas_home = world
    secret = b"the owner's next letter " * 500
    evil = b"EVIL" * len(secret)
    w, op = _writer_op(nas_home)
    ref = w._store.keys.blob_id(secret)
    parts: list[bytes | bytearray] = [op.codec.seal(ref, BLOB_DATA, evil)]
    entries = [PackEntry(id=w._store.keys.locate(ref), t=BLOB_DATA, o=0, l=len(parts[0]), s=len(evil))]
    close_pack(w._store.keys, parts, entries)
    op.write_index([op.packs.write(parts, entries)])
    w.close()
    (own / "letter.txt").write_bytes(secret)
    v = env.open()
    _, _, stats = v.backup([str(own)])
    assert stats.new_bytes >= len(secret)       # stored by the owner, not deduplicated
    v.restore("latest", tmp_path / "back")
    assert (tmp_path / "back" / "owner" / "letter.txt").read_bytes() == secret
    v.close()


def test_forged_index_objects_are_ignored(world) -> None:  # type: ignore[no-untyped-def]
    env, _own, _nas, _key_file, nas_home = world
    w, op = _writer_op(nas_home)
    keys_w = w._store.keys
    rec = op.index.packs()[0]
    unsigned = formats.IndexFile(v=1, packs=[rec], time="2030-01-01T00:00:00.000000+00:00", writer="")
    for sig in (b"", b"\x00" * 64):
        plain = formats.encode(msgspec.structs.replace(unsigned, sig=sig))
        op.objects.write("index/", KIND_INDEX, plain, quorum=1)
    w.close()
    v = env.open()
    assert sum("not signed by the owner or a writer" in m for m in v.last_outcome.warnings) >= 1
    v.close()
    del keys_w


def test_share_from_a_machines_snapshot_in_a_v2_vault(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """2.0 grants list no keys: the references in the shared node are the capability."""
    from freehold.vault_shared import SharedVault

    env, _own, nas, _key_file, nas_home = world
    w = Vault.open(NAS_PASS, home=nas_home)
    sid, _, _ = w.backup([str(nas)])
    w.close()
    ident = x25519.Identity.generate()
    (tmp_path / "id").write_text(str(ident))
    v = env.open()
    res = v.share(str(nas), [str(ident.to_public())], snapshot=sid)
    v.close()
    with SharedVault.open(res.capability, tmp_path / "id") as sv:
        assert sv.shared.keys == {}
        sv.restore(tmp_path / "got")
    same_tree(nas, tmp_path / "got" / "nas")


def test_prune_keeps_what_machines_need(world) -> None:  # type: ignore[no-untyped-def]
    from freehold.api import PruneOptions

    env, _own, nas, _key_file, nas_home = world
    w = Vault.open(NAS_PASS, home=nas_home)
    nsid, _, _ = w.backup([str(nas)])
    w.close()
    v = env.open()
    owner_sid = [s for s, snap in v.snapshots() if snap.writer == ""][0]
    v.forget(ids=[owner_sid])
    v.prune(PruneOptions(max_unused=0.0))
    v.restore(nsid, env.root / "after-prune")
    same_tree(nas, env.root / "after-prune" / "nas")
    assert v.check(read_data=True).exit_code == 0
    v.close()


def test_write_only_keys_need_format_2_and_a_good_passphrase(env: Env, tmp_path: Path) -> None:
    v = env.init()
    with pytest.raises(UsageError, match="format 2"):
        v.add_writer("nas", NAS_PASS)
    v.close()
    env2 = Env(tmp_path / "b", tmp_path / "b" / "home", [tmp_path / "b" / f"p{i}" for i in range(5)], 3, 5)
    for p in env2.providers:
        p.mkdir(parents=True)
    v = _init2(env2)
    blob = v.add_writer("nas", NAS_PASS, KdfParams.weak(64))
    with pytest.raises(UsageError, match="exists already"):
        v.add_writer("nas", NAS_PASS, KdfParams.weak(64))
    with pytest.raises(UsageError, match="--label"):
        v.add_writer("Bad Label!", NAS_PASS)
    v.close()
    from freehold.errors import WrongPassphrase
    with pytest.raises(WrongPassphrase):
        Vault.setup_writer(blob, "not it", tmp_path / "m")
    assert not (tmp_path / "m" / "vault.json").exists()


def test_snapshots_json_names_the_writer(world) -> None:  # type: ignore[no-untyped-def]
    import json

    env, _own, nas, _key_file, nas_home = world
    w = Vault.open(NAS_PASS, home=nas_home)
    sid, _, _ = w.backup([str(nas)])
    w.close()
    listed = {s["id"]: s for s in json.loads(env.cli("snapshots", "--json").stdout)}
    assert listed[sid]["writer"] == "nas"
    assert all(s["writer"] is None for i, s in listed.items() if i != sid)


def test_prune_does_not_launder_a_machines_packs_into_the_owners(world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A prune rewrites index objects under the owner's signature; the machine's packs it keeps
    must stay the machine's, or the owner would then deduplicate against a poisoned blob."""
    from freehold.api import PruneOptions

    env, own, nas, _key_file, nas_home = world
    secret = b"the owner's will " * 700
    w, op = _writer_op(nas_home)
    ref = w._store.keys.blob_id(secret)
    evil = b"EVIL" * (len(secret) // 4)
    parts: list[bytes | bytearray] = [op.codec.seal(ref, BLOB_DATA, evil)]
    entries = [PackEntry(id=w._store.keys.locate(ref), t=BLOB_DATA, o=0, l=len(parts[0]), s=len(evil))]
    close_pack(w._store.keys, parts, entries)
    op.write_index([op.packs.write(parts, entries)])
    w.close()
    (nas / "will.txt").write_bytes(secret)       # the machine's own snapshot now uses its poisoned blob
    w = Vault.open(NAS_PASS, home=nas_home)
    w.backup([str(nas)])
    w.close()
    v = env.open()
    v.forget(ids=[s for s, snap in v.snapshots() if snap.writer == ""][:1])
    v.prune(PruneOptions(max_unused=0.0))
    v.close()
    (own / "will.txt").write_bytes(secret)
    v = env.open()
    _, _, stats = v.backup([str(own)])
    assert stats.new_bytes >= len(secret)         # not deduplicated against the machine's pack
    v.restore("latest", tmp_path / "back")
    assert (tmp_path / "back" / "owner" / "will.txt").read_bytes() == secret
    v.close()
