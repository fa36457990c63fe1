"""Sharing one folder or file with a person's public key (design §20).

The hostile cases first: the holder of a capability tries every key they have against every
other object of the vault; a wrong identity, a damaged or foreign grant object, a replayed old
copy, an expired capability. Then the ordinary ones: ls, restore and cat through the capability,
live grants that follow later backups until revoked, and revocation that leaves nothing behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyrage
import pytest
from pyrage import x25519

from freehold import caps, formats
from freehold.crypto import (
    KIND_CONFIG,
    KIND_DATA,
    KIND_DELETION,
    KIND_GRANT,
    KIND_INDEX,
    KIND_KEY,
    KIND_SHARED,
    KIND_SNAPSHOT,
    KIND_TREE,
    unseal,
)
from freehold.errors import IntegrityError, UsageError
from freehold.store import grants as grant_objects
from freehold.vault_shared import SharedVault

from .conftest import Env, same_tree
from .people import age_identity, ssh_identity


def _home(root: Path) -> Path:
    src = root / "records"
    (src / "health" / "scans").mkdir(parents=True)
    (src / "health" / "diagnosis-2026.txt").write_text("blood pressure fine " * 500)
    (src / "health" / "scans" / "knee.bin").write_bytes(os.urandom(700_000))
    (src / "health" / "Zürich–visit ✓.txt").write_text("non-ascii name")
    (src / "social").mkdir()
    (src / "social" / "posts.json").write_text('{"secret-outside": 1}' * 300)
    (src / "taxes-outside.txt").write_text("income " * 1000)
    return src


@pytest.fixture
def shared_env(env: Env, tmp_path: Path) -> tuple[Env, Path]:
    src = _home(tmp_path)
    v = env.init()
    v.backup([str(src)])
    v.close()
    return env, src


def _open(cap_text: str, ident: Path, tmp: Path) -> SharedVault:
    return SharedVault.open(cap_text, ident)


def test_share_folder_to_age_key_restores_exactly_that_folder(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub])
    v.close()
    assert res.path == "records/health" and res.blobs > 3
    with _open(res.capability, ident, tmp_path) as sv:
        names = [p for p, _ in sv.ls()]
        assert names[0] == "health" and "health/scans/knee.bin" in names
        assert not any("social" in n or "taxes" in n for n in names)
        out = tmp_path / "out"
        stats = sv.restore(out)
        assert not stats.failed
        same_tree(src / "health", out / "health")
        assert b"".join(sv.cat("health/diagnosis-2026.txt")) == (src / "health" / "diagnosis-2026.txt").read_bytes()
        with pytest.raises(UsageError):
            list(sv.cat("health/scans"))


def test_share_one_file_to_ssh_key(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    key, pub = ssh_identity(tmp_path, "doctor@example")
    v = env.open()
    res = v.share(str(src / "health" / "scans" / "knee.bin"), [pub])
    v.close()
    with _open(res.capability, key, tmp_path) as sv:
        assert [p for p, _ in sv.ls()] == ["knee.bin"]
        assert b"".join(sv.cat("knee.bin")) == (src / "health" / "scans" / "knee.bin").read_bytes()


def test_the_wrong_identity_opens_nothing(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    (tmp_path / "a").mkdir()
    _, pub = age_identity(tmp_path / "a")
    other, _ = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub])
    v.close()
    with pytest.raises(UsageError, match="not for this identity"):
        SharedVault.open(res.capability, other)
    with pytest.raises(UsageError, match="not a Freehold capability"):
        SharedVault.open("hello", other)


def _reader_keys(cap_text: str, ident: Path) -> tuple[formats.Capability, formats.Shared]:
    with SharedVault.open(cap_text, ident) as sv:
        return sv.capability, sv.shared


def test_a_capability_decrypts_nothing_outside_its_path(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    """Cryptographically: every key the holder has (the grant key and the granted blob keys) is
    tried on every blob envelope of the vault and every replicated object; only the shared blobs
    (and the grant object itself) open, and no plaintext they yield names anything outside."""
    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub])
    other = v.share(str(src / "social"), [pub])   # another grant: its object must stay closed too
    packs = v.packs()
    op = v._op()
    envelopes = []
    for rec in packs:
        data = op.reader.read_range_fast(rec, 0, rec.len)
        envelopes += [(e.id, e.t, data[e.o: e.o + e.l]) for e in rec.blobs]
    v.close()
    cap, shared = _reader_keys(res.capability, ident)
    held = [cap.key, *shared.keys.values()]
    granted = set(shared.keys)
    # Exactly the shared subtree's blobs are granted; pack records list nothing else.
    assert all(e.id in granted for rec in shared.packs for e in rec.blobs)
    opened = []
    for bid, t, env_bytes in envelopes:
        kind = KIND_TREE if t == formats.BLOB_TREE else KIND_DATA
        for key in held:
            try:
                opened.append(unseal(key, kind, bid, env_bytes))
                assert bid in granted and key == shared.keys[bid]
            except IntegrityError:
                pass
    assert len(opened) == len(granted)
    from freehold.crypto import decode
    plain = b"".join(decode(enc, body) for enc, body in opened)
    for outside in (b"social", b"posts.json", b"taxes-outside", b"secret-outside", b"income"):
        assert outside not in plain
    # Every replicated object: no held key opens any of them, under any kind, except its own grant object.
    kinds = (KIND_SNAPSHOT, KIND_INDEX, KIND_CONFIG, KIND_KEY, KIND_DELETION, KIND_GRANT, KIND_SHARED)
    for prov, path in env.objects():
        rel = path.relative_to(prov).as_posix()
        if rel.startswith("data/"):
            continue
        body = path.read_bytes()
        for key in held:
            for kind in kinds:
                for ctx in _contexts(rel):
                    try:
                        unseal(key, kind, ctx, body)
                    except IntegrityError:
                        continue
                    assert rel == f"shared/{res.id}" and key == cap.key and kind == KIND_SHARED, rel
    assert other.id != res.id


def _contexts(rel: str) -> list[bytes]:
    prefix, _, name = rel.partition("/")
    out = [rel.encode(), name.encode(), b"config", b"maintenance"]
    try:
        out.append(prefix.encode() + bytes.fromhex(name))
        out.append(bytes.fromhex(name))
    except ValueError:
        pass
    return out


def test_hostile_grant_objects_are_refused(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    """Garbage, truncation, an empty object, another grant's object under this name, on every
    provider: the holder gets a clear error, never wrong content; on some providers only: the
    others' copies serve."""
    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    v = env.open()
    a = v.share(str(src / "health"), [pub])
    b = v.share(str(src / "social"), [pub])
    v.close()
    copies = {p: p / "shared" / a.id for p in env.providers}
    good = {p: f.read_bytes() for p, f in copies.items()}
    foreign = (env.providers[0] / "shared" / b.id).read_bytes()
    for bad in (b"garbage" * 10, good[env.providers[0]][:-7], b"", foreign):
        for f in list(copies.values())[:2]:          # two of five providers hostile: still readable
            f.write_bytes(bad)
        with SharedVault.open(a.capability, ident) as sv:
            assert sv.shared.path == "records/health"
        for f in copies.values():                    # every provider hostile: refused, clearly
            f.write_bytes(bad)
        with pytest.raises(IntegrityError):
            SharedVault.open(a.capability, ident)
        for p, f in copies.items():
            f.write_bytes(good[p])


def test_live_grant_follows_backups_until_revoked(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    v = env.open()
    live = v.share(str(src / "health"), [pub], live=True)
    fixed = v.share(str(src / "health"), [pub])
    (src / "health" / "new-result.txt").write_text("added after sharing")
    v.backup([str(src)])
    v.close()
    with SharedVault.open(live.capability, ident) as sv:
        assert "health/new-result.txt" in [p for p, _ in sv.ls()]
    with SharedVault.open(fixed.capability, ident) as sv:
        assert "health/new-result.txt" not in [p for p, _ in sv.ls()]
    saved = (env.providers[0] / "shared" / live.id).read_bytes()
    v = env.open()
    info = v.revoke_share(live.id[:8])
    assert info.revoked and info.state == "revoked"
    (src / "health" / "after-revocation.txt").write_text("never for the revoked reader")
    v.backup([str(src)])
    listed = {g.id: g for g in v.shares()}
    v.close()
    assert listed[live.id].state == "revoked" and listed[fixed.id].state == "active"
    assert not any((p / "shared" / live.id).exists() for p in env.providers)
    with pytest.raises(Exception, match="no reachable provider"):
        SharedVault.open(live.capability, ident)
    # A provider that kept the revoked object (it was down, or restores old copies): the next
    # backup deletes it again, and it never held anything written after the revocation.
    kept = env.providers[0] / "shared" / live.id
    kept.parent.mkdir(exist_ok=True)
    kept.write_bytes(saved)
    with SharedVault.open(live.capability, ident) as sv:
        assert "health/after-revocation.txt" not in [p for p, _ in sv.ls()]
    v = env.open()
    v.backup([str(src)])
    v.close()
    assert not kept.exists()


def test_expired_capability_is_refused_and_its_object_deleted(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub], expires="1h")
    with pytest.raises(UsageError):
        v.share(str(src / "health"), [pub], expires="0d")
    v.close()
    cap = caps.read(res.capability, caps.load_identity(ident))
    assert cap.expires > "2026"
    # Rewrite the capability as if an hour had passed (the holder's clock): refused.
    old = formats.Capability(**{f: getattr(cap, f) for f in cap.__struct_fields__ if f != "expires"},
                             expires="2000-01-01T00:00:00+00:00")
    text = caps.write(old, [x25519.Recipient.from_str(pub)])
    with pytest.raises(UsageError, match="expired"):
        SharedVault.open(text, ident)


def test_bad_recipients_are_clear_errors(tmp_path: Path) -> None:
    for bad in ("age1notakey", "ssh-ed25519 AAAAnotbase64", "someone@example.com"):
        with pytest.raises(UsageError):
            caps.recipients([bad])
    f = tmp_path / "keys.txt"
    f.write_text("# team\n\n" + str(x25519.Identity.generate().to_public()) + "\n")
    rs, names = caps.recipients([str(f)])
    assert len(rs) == 1 and names[0].startswith("age1")
    with pytest.raises(UsageError):
        caps.load_identity(f)                       # a recipients file is not an identity
    assert pyrage.x25519


def test_grant_object_names_and_records_hold_no_secret(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    env, src = shared_env
    _, pub = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub], label="dr-who")
    v.close()
    assert len(bytes.fromhex(res.id)) == 16
    for prov, path in env.objects():
        rel = path.relative_to(prov).as_posix()
        if rel.startswith(("grants/", "shared/")):
            data = path.read_bytes()
            assert b"health" not in data and b"dr-who" not in data and pub.encode() not in data
    assert grant_objects.SHARED_PREFIX == "shared/"


def test_share_with_a_provider_down_needs_degraded(shared_env: tuple[Env, Path], tmp_path: Path) -> None:
    import shutil

    env, src = shared_env
    ident, pub = age_identity(tmp_path)
    shutil.rmtree(env.providers[4])
    env.providers[4].write_text("not a directory any more")   # the disk is gone
    r = env.cli("share", str(src / "health"), "--to", pub, "--out", str(tmp_path / "a.cap"), check=False)
    assert r.returncode != 0 and not (tmp_path / "a.cap").exists()
    env.cli("share", str(src / "health"), "--to", pub, "--out", str(tmp_path / "b.cap"), "--degraded")
    with SharedVault.open((tmp_path / "b.cap").read_text(), ident) as sv:
        assert "health/diagnosis-2026.txt" in [p for p, _ in sv.ls()]


def test_maintain_deletes_expired_grant_objects(shared_env: tuple[Env, Path], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from freehold import vault_sharing

    env, src = shared_env
    _, pub = age_identity(tmp_path)
    v = env.open()
    res = v.share(str(src / "health"), [pub], expires="1d")
    v.close()
    assert all((p / "shared" / res.id).exists() for p in env.providers)
    monkeypatch.setattr(vault_sharing, "utc_stamp", lambda precise=False: "2999-01-01T00:00:00+00:00")
    v = env.open()
    v.maintain()
    v.close()
    assert not any((p / "shared" / res.id).exists() for p in env.providers)
