"""Make tests/data/vault-v1.1: a small vault written by the format-1.1 writer, stored for good.

This script was run ONCE, with the format-1.1 writer (the code of this repository at the time)
first on the path:

    PYTHONPATH=/work/main/src .venv/bin/python tests/data/make_vault_v1_1.py

It must never be run again over tests/data/vault-v1.1 (it refuses to): the stored objects are the
point, because they were written by the code of format version 1.1, and every later version must
still read them (docs/design.md: "Once released, a format version stays readable"). Kept so that
anyone can see exactly how the fixture was made, and make a scratch one with ``--out``.

What it does:
1. builds a deterministic source tree at SOURCE (nested directories, small text files, a 2.25 MiB
   pseudo-random file that spans several chunks, a compressible 512 KiB log, an empty file, a
   one-byte file, a non-UTF-8 file name, a name with a space and a decomposed (NFD) accent, a
   symlink, a dangling symlink, an executable of mode 0751, a read-only file of mode 0400, a
   directory of mode 0750; every mtime fixed with os.utime in ns);
2. ``Vault.init`` 3-of-5 over five local-directory providers at PROVIDERS/p1..p5 (jurisdictions
   DE, FR, DE, FR, NL), with Argon2id at KdfParams.weak(64): config generation 1, an identity
   marker ``ids/<marker>`` on each provider;
3. backs SOURCE up (snapshot 1);
4. exercises every format-1.1 config feature, each a config change with its ``configs/<gen>``
   claims: ``set_policy(allow=[DE, FR, NL], min_jurisdictions=2)`` (generation 2),
   ``add_key(SECOND)`` (generation 3: ``keys`` lists both key ids), ``remove_key`` of that key
   (generation 4: ``keys`` the owner's, ``revoked`` the second's; its key object deleted from every
   provider, a copy of it kept under OUT/revoked-key/ so tests can plant it back);
5. changes one file and adds one, backs it up again (snapshot 2, with snapshot 1 as parent);
6. restores both snapshots with the same writer and checks each entry against the source, checks
   ``check --read-data`` is healthy, that the revoked passphrase is refused, that every share
   header's pack length is Padmé-padded, and that every claim and marker is where 1.1 says;
7. stores under OUT: providers/p1..p5 (every object, byte for byte), revoked-key/<id>,
   expected.json and passphrase.txt (the owner's passphrase).

Unlike format 1, the providers need not be at PROVIDERS when the fixture is read: a 1.1 config
records each provider's identity marker, and recovery finds a provider by its marker at whatever
address it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import Any

import blake3

PROVIDERS = Path("/tmp/freehold-fixture-v1.1-gen")    # recorded in the sealed config (as written)
SOURCE = Path("/tmp/freehold-fixture-v1.1-src/papers")  # recorded in the snapshots' paths
# The owner's passphrase holds a composed (NFC) "é": 1.1 stretches NFC(passphrase).
PASSPHRASE = "format one point one, kept forever: freehold fixture v1.1 caf\u00e9"
SECOND = "a second passphrase, revoked at generation 4"
JURISDICTIONS = ["DE", "FR", "DE", "FR", "NL"]
ALLOW = ["DE", "FR", "NL"]
K, N = 3, 5
T0 = 1_650_000_000_000_000_000                        # 2022-04-15T05:20:00Z, in ns
HERE = Path(__file__).resolve().parent


def stream(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-random bytes (BLAKE3's XOF)."""
    return blake3.blake3(seed).digest(length=size)


def set_times(root: Path, times: dict[str, int]) -> None:
    """Fixed mtimes (and atimes) for every entry; directories last, deepest first."""
    entries = sorted(times, key=lambda rel: (rel.count("/"), rel), reverse=True)
    for rel in [e for e in entries if not (root / e).is_dir() or (root / e).is_symlink()]:
        os.utime(root / rel, ns=(times[rel], times[rel]), follow_symlinks=False)
    for rel in [e for e in entries if (root / e).is_dir() and not (root / e).is_symlink()]:
        os.utime(root / rel, ns=(times[rel], times[rel]))


def build_source(root: Path) -> None:
    if root.parent.exists():
        for dirpath, dirnames, _ in os.walk(root.parent):  # read-only entries of an earlier run
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755, follow_symlinks=False)
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    files: dict[str, bytes] = {
        "README.txt": b"Freehold fixture, format version 1.1.\nDo not regenerate.\n",
        "letters/2022/april.txt": b"April: three of five, in three countries.\n" * 4,
        "letters/2022/may.txt": b"May: a policy, a second key, and its revocation.\n",
        "letters/2023/june.txt": b"June: first version of this letter.\n",
        "letters/empty.txt": b"",
        "letters/one.txt": b"1",
        "letters/r\udcf6sti.txt": b"not UTF-8 in its name\n",   # the name's bytes are r\xf6sti.txt
        "letters/cafe\u0301 menu.txt": b"a space and a decomposed accent in its name\n",
        "scans/noise.bin": stream(b"freehold fixture v1.1 noise", 2 * 1024 * 1024 + 256 * 1024 + 4321),
        "scans/access.log": b"".join(b"2022-04-15 05:%02d:%02d host=beta path=/p/%05d status=200\n"
                                     % (i // 60 % 60, i % 60, i) for i in range(12_000))[:512 * 1024],
        "bin/run.sh": b"#!/bin/sh\necho 'freehold fixture v1.1'\n",
        "deep/x/y/z/leaf.bin": stream(b"leaf v1.1", 4097),
        "private/diary.txt": b"dear diary\n",
        "private/readonly.txt": b"do not touch\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)
    os.chmod(root / "bin/run.sh", 0o751)
    os.chmod(root / "private/diary.txt", 0o600)
    os.chmod(root / "private/readonly.txt", 0o400)
    for d in ("letters", "letters/2022", "letters/2023", "scans", "bin", "deep", "deep/x", "deep/x/y",
              "deep/x/y/z"):
        os.chmod(root / d, 0o755)
    os.chmod(root / "private", 0o750)
    os.symlink("letters/2022/april.txt", root / "latest-letter")
    os.symlink("../../gone/away.txt", root / "letters/broken")
    set_times(root, {rel: T0 + i * 2_000_000_011 + 654_321 for i, rel in enumerate(all_entries(root))})


def change_source(root: Path) -> None:
    """Between the two backups: one file changed, one added."""
    (root / "letters/2023/june.txt").write_bytes(b"June: second version of this letter, a little longer.\n")
    (root / "letters/2023/july.txt").write_bytes(b"July: added after the first backup.\n")
    os.chmod(root / "letters/2023/july.txt", 0o640)
    t1 = T0 + 86_400 * 10**9
    set_times(root, {"letters/2023/june.txt": t1 + 11, "letters/2023/july.txt": t1 + 22,
                     "letters/2023": t1 + 33})


def all_entries(root: Path) -> list[str]:
    out = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def describe(root: Path, prefix: str) -> list[dict[str, Any]]:
    """Every entry under root (root included, as ``prefix``): what a restore must reproduce."""
    out = []
    for rel in all_entries(root):
        p = root / rel if rel else root
        st = p.lstat()
        entry: dict[str, Any] = {"path": f"{prefix}/{rel}" if rel else prefix,
                                 "mode": st.st_mode & 0o7777, "mtime_ns": st.st_mtime_ns}
        if p.is_symlink():
            target = os.fsencode(os.readlink(p))
            entry.update(type="symlink", size=len(target), target=os.fsdecode(target),
                         blake3=blake3.blake3(target).hexdigest())
        elif p.is_dir():
            entry.update(type="dir")
        else:
            data = p.read_bytes()
            entry.update(type="file", size=len(data), blake3=blake3.blake3(data).hexdigest())
        out.append(entry)
    return out


def provider_objects(providers: list[Path]) -> dict[str, str]:
    objects: dict[str, str] = {}
    for p in providers:
        for f in sorted(p.rglob("*")):
            if f.is_file():
                assert not f.name.startswith("."), f"temporary file left behind: {f}"
                objects[str(f.relative_to(p.parent))] = blake3.blake3(f.read_bytes()).hexdigest()
    return objects


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "vault-v1.1")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        print(f"refusing: {out} already holds a fixture; it pins format 1.1 and is never regenerated",
              file=sys.stderr)
        return 2

    import freehold
    from freehold import formats
    from freehold.errors import WrongPassphrase
    from freehold.keys import KdfParams
    from freehold.store import packs
    from freehold.vault import ProviderSpec, Vault

    print(f"writer: {Path(freehold.__file__).parent} (format version {formats.FORMAT_VERSION}, 1.1 fields)")
    one_one = ("marker" in formats.ProviderEntry.__struct_fields__
               and {"generation", "change", "replaces", "changed", "keys", "revoked"}
               <= set(formats.Config.__struct_fields__) and hasattr(packs, "padme"))
    if formats.FORMAT_VERSION != 1 or not one_one:
        print("refusing: this writer does not write format 1.1", file=sys.stderr)
        return 2

    build_source(SOURCE)
    if PROVIDERS.exists():
        shutil.rmtree(PROVIDERS)
    providers = [PROVIDERS / f"p{i}" for i in range(1, N + 1)]
    for p in providers:
        p.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="freehold-fixture-v1.1-"))
    home = work / "home"
    kdf = KdfParams.weak(64)
    specs = [ProviderSpec(p.as_uri(), jurisdiction=j) for p, j in zip(providers, JURISDICTIONS, strict=True)]
    v = Vault.init(specs, K, N, PASSPHRASE, home=home, kdf=kdf)
    owner_key = v.key_id
    assert owner_key and v.info().generation == 1
    v.close()

    snapshots: list[dict[str, Any]] = []

    def backup() -> None:
        with Vault.open(PASSPHRASE, home=home) as v:
            sid, snap, _ = v.backup([str(SOURCE)])
        snapshots.append({"id": sid, "paths": list(snap.paths),
                          "parent": snap.parent.hex() if snap.parent is not None else None,
                          "files": snap.files, "dirs": snap.dirs, "size": snap.size,
                          "entries": describe(SOURCE, SOURCE.name)})
        print(f"snapshot {sid[:12]}: {snap.files} files, {snap.dirs} dirs, {snap.size} bytes")

    backup()
    policy = formats.Policy(allow=ALLOW, min_jurisdictions=2)
    with Vault.open(PASSPHRASE, home=home) as v:
        v.set_policy(policy)
        assert v.info().generation == 2 and v.info().policy == policy
        second_key = v.add_key(SECOND, kdf).id
        assert v.info().generation == 3
        held = [p / "keys" / second_key for p in providers]
        assert all(f.is_file() for f in held), "the added key object must be on every provider"
        revoked_object = held[0].read_bytes()
        assert all(f.read_bytes() == revoked_object for f in held)
        change = v.remove_key(second_key)
        assert not change.pending, change
        assert v.info().generation == 4
        assert not any(f.exists() for f in held), "the revoked key object must be deleted everywhere"
    with Vault.open(PASSPHRASE, home=home) as v:  # the owner still opens it
        assert [k.id for k in v.key_objects()] == [owner_key]
    try:
        Vault.open(SECOND, home=home).close()
    except WrongPassphrase:
        pass
    else:
        raise AssertionError("the revoked passphrase must be refused")
    change_source(SOURCE)
    backup()
    assert snapshots[1]["parent"] == snapshots[0]["id"], "the second snapshot must have the first as parent"

    # The writer restores what it wrote (so expected.json is also what format 1.1 restores).
    with Vault.open(PASSPHRASE, home=home) as v:
        assert {sid for sid, _ in v.snapshots()} == {s["id"] for s in snapshots}
        for s in snapshots:
            target = work / f"restore-{s['id'][:12]}"
            v.restore(s["id"], target)
            got = describe(target / SOURCE.name, SOURCE.name)
            assert got == s["entries"], [(a, b) for a, b in zip(got, s["entries"], strict=False) if a != b][:3]
        report = v.check(read_data=True)
        assert report.healthy, report.problems
        chunks = {path: len(node.content) for path, node in v.ls(snapshots[0]["id"]) if node.type == "file"}
        assert chunks["papers/scans/noise.bin"] >= 2, chunks
        info = v.info()
        assert info.generation == 4 and info.policy == policy
        entries = [{"id": e.id, "url": e.url, "jurisdiction": e.jurisdiction, "operator": e.operator,
                    "marker": e.marker} for e in info.providers]
        pack_count = len(v.packs())
    assert [e["jurisdiction"] for e in entries] == JURISDICTIONS
    for p, e in zip(providers, entries, strict=True):
        assert e["url"] == p.as_uri() and len(e["marker"]) == 32
        assert [f.name for f in (p / "ids").iterdir()] == [e["marker"]], "one identity marker per provider"
        assert (p / "ids" / e["marker"]).stat().st_size == 0
        assert sorted(f.name for f in (p / "configs").iterdir()) == [f"{g:012d}" for g in (2, 3, 4)]
        assert sorted(f.name for f in (p / "keys").iterdir()) == [owner_key]
        for share in (p / "data").rglob("*.*"):
            with open(share, "rb") as fh:
                header = fh.read(64)
            length = struct.unpack_from(">Q", header, 8)[0]
            assert header[:4] == b"FHSH" and length >= 65536 and packs.padme(length) == length, (share, length)

    objects = provider_objects(providers)
    stored = sum(f.stat().st_size for p in providers for f in p.rglob("*") if f.is_file())
    assert stored < 5.9 * 2**20, f"the fixture must stay under 6 MiB ({stored} bytes of objects)"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROVIDERS, out / "providers")
    (out / "revoked-key").mkdir()
    (out / "revoked-key" / second_key).write_bytes(revoked_object)
    (out / "passphrase.txt").write_text(PASSPHRASE + "\n", encoding="utf-8")
    expected = {
        "format": "1.1", "k": K, "n": N, "providers_at": str(PROVIDERS), "source": str(SOURCE),
        "generation": 4, "policy": formats.encode_json(policy),
        "providers": entries, "packs": pack_count,
        "keys": [owner_key], "revoked": [second_key],
        "passphrases": {"owner": PASSPHRASE, "revoked": SECOND},
        "revoked_key_object": {"path": f"revoked-key/{second_key}",
                               "blake3": blake3.blake3(revoked_object).hexdigest()},
        "snapshots": snapshots, "objects": objects,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=False) + "\n")
    shutil.rmtree(work)
    shutil.rmtree(PROVIDERS)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(objects)} objects, {pack_count} packs, {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
