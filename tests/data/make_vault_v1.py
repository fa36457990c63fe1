"""Make tests/data/vault-v1: a small vault written by the format-1 writer, stored for good.

This script was run ONCE, with the frozen format-1 writer first on the path:

    PYTHONPATH=/tmp/fh-base/src .venv/bin/python tests/data/make_vault_v1.py

It must never be run again over tests/data/vault-v1 (it refuses to): the stored objects are the
point, because they were written by the code of format version 1, and every later version must
still read them (docs/design.md: "Once released, a format version stays readable"). Kept so that
anyone can see exactly how the fixture was made, and make a scratch one with ``--out``.

What it does:
1. builds a deterministic source tree at SOURCE (nested directories, small text files, a 3 MiB
   pseudo-random file that spans several chunks, a compressible 1 MiB file, an empty file, a
   non-UTF-8 file name, a symlink, a dangling symlink, an executable of mode 0751, a directory of
   mode 0750; every mtime fixed with os.utime in ns);
2. ``Vault.init`` 3-of-5 over five local-directory providers at PROVIDERS/p1..p5, with Argon2id at
   KdfParams.weak(64) (the config records their absolute file:// URLs, so the providers must live
   at exactly that path when the fixture is read: tests copy them there);
3. backs SOURCE up, changes one file and adds one, backs it up again (two snapshots, the second
   with the first as its parent);
4. restores both snapshots with the same writer and checks each entry against the source;
5. stores under OUT: providers/p1..p5 (every object, byte for byte), expected.json (per snapshot:
   its paths, parent, and every entry a restore must produce, plus the BLAKE3 of every stored
   object) and passphrase.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import blake3

PROVIDERS = Path("/tmp/freehold-fixture-v1")      # recorded in the sealed config: never change
SOURCE = Path("/tmp/freehold-fixture-v1-src/docs")  # recorded in the snapshots' paths
PASSPHRASE = "format one forever: freehold fixture v1"
K, N = 3, 5
T0 = 1_600_000_000_000_000_000                      # 2020-09-13T12:26:40Z, in ns
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
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    files: dict[str, bytes] = {
        "README.txt": b"Freehold fixture, format version 1.\nDo not regenerate.\n",
        "notes/2023/january.txt": b"January: started the backup plan.\n" * 3,
        "notes/2023/february.txt": b"February: five providers, any three.\n",
        "notes/2024/march.txt": b"March: first version of this note.\n",
        "notes/empty.txt": b"",
        "notes/caf\udce9.txt": b"not UTF-8 in its name\n",    # the name's bytes are caf\xe9.txt
        "photos/random.bin": stream(b"freehold fixture v1 random", 3 * 1024 * 1024 + 12345),
        "photos/server.log": b"".join(b"2020-09-13 12:%02d:%02d host=alpha status=ok request=%06d\n"
                                      % (i // 60 % 60, i % 60, i) for i in range(20_000))[:1024 * 1024],
        "bin/tool.sh": b"#!/bin/sh\necho 'freehold fixture'\n",
        "deep/a/b/c/d/leaf.txt": stream(b"leaf", 3000),
        "private/secret.txt": b"only for me\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.chmod(path, 0o644)
    os.chmod(root / "bin/tool.sh", 0o751)
    os.chmod(root / "private/secret.txt", 0o600)
    os.chmod(root / "private", 0o750)
    for d in ("notes", "notes/2023", "notes/2024", "photos", "bin", "deep", "deep/a", "deep/a/b",
              "deep/a/b/c", "deep/a/b/c/d"):
        os.chmod(root / d, 0o755)
    os.symlink("README.txt", root / "link-to-readme")
    os.symlink("../nowhere/missing.txt", root / "notes/dangling")
    set_times(root, {rel: T0 + i * 1_000_000_007 + 123_456 for i, rel in enumerate(all_entries(root))})


def change_source(root: Path) -> None:
    """Between the two backups: one file changed, one added."""
    (root / "notes/2024/march.txt").write_bytes(b"March: second version of this note, longer than the first.\n")
    (root / "notes/2024/april.txt").write_bytes(b"April: added after the first backup.\n")
    os.chmod(root / "notes/2024/april.txt", 0o640)
    t1 = T0 + 86_400 * 10**9
    set_times(root, {"notes/2024/march.txt": t1 + 1, "notes/2024/april.txt": t1 + 2,
                     "notes/2024": t1 + 3})


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "vault-v1")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if (out / "providers").exists():
        print(f"refusing: {out} already holds a fixture; it pins format 1 and is never regenerated",
              file=sys.stderr)
        return 2

    import freehold
    from freehold import formats
    from freehold.keys import KdfParams
    from freehold.vault import ProviderSpec, Vault

    print(f"writer: {Path(freehold.__file__).parent} (format version {formats.FORMAT_VERSION})")
    if formats.FORMAT_VERSION != 1:
        print("refusing: this writer is not format version 1", file=sys.stderr)
        return 2

    build_source(SOURCE)
    if PROVIDERS.exists():
        shutil.rmtree(PROVIDERS)
    providers = [PROVIDERS / f"p{i}" for i in range(1, N + 1)]
    for p in providers:
        p.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="freehold-fixture-v1-"))
    home = work / "home"
    v = Vault.init([ProviderSpec(p.as_uri()) for p in providers], K, N, PASSPHRASE, home=home,
                   kdf=KdfParams.weak(64))
    v.close()

    snapshots: list[dict[str, Any]] = []
    for step in range(2):
        if step == 1:
            change_source(SOURCE)
        with Vault.open(PASSPHRASE, home=home) as v:
            sid, snap, _ = v.backup([str(SOURCE)])
        snapshots.append({"id": sid, "paths": list(snap.paths),
                          "parent": snap.parent.hex() if snap.parent is not None else None,
                          "files": snap.files, "dirs": snap.dirs, "size": snap.size,
                          "entries": describe(SOURCE, SOURCE.name)})
        print(f"snapshot {sid[:12]}: {snap.files} files, {snap.dirs} dirs, {snap.size} bytes")
    assert snapshots[1]["parent"] == snapshots[0]["id"], "the second snapshot must have the first as parent"

    # The writer restores what it wrote (so expected.json is also what format 1 restores).
    with Vault.open(PASSPHRASE, home=home) as v:
        assert {sid for sid, _ in v.snapshots()} == {s["id"] for s in snapshots}
        for s in snapshots:
            target = work / f"restore-{s['id'][:12]}"
            v.restore(s["id"], target)
            got = describe(target / SOURCE.name, SOURCE.name)
            assert got == s["entries"], [(a, b) for a, b in zip(got, s["entries"], strict=False) if a != b][:3]
        assert v.check(read_data=True).healthy
        chunks = {path: len(node.content) for path, node in v.ls(snapshots[0]["id"]) if node.type == "file"}
        assert chunks["docs/photos/random.bin"] >= 3, chunks

    objects: dict[str, str] = {}
    for p in providers:
        for f in sorted(p.rglob("*")):
            if f.is_file():
                assert not f.name.startswith("."), f"temporary file left behind: {f}"
                objects[str(f.relative_to(PROVIDERS))] = blake3.blake3(f.read_bytes()).hexdigest()

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROVIDERS, out / "providers")
    (out / "passphrase.txt").write_text(PASSPHRASE + "\n")
    expected = {"format": 1, "k": K, "n": N, "providers_at": str(PROVIDERS), "source": str(SOURCE),
                "snapshots": snapshots, "objects": objects}
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=False) + "\n")
    shutil.rmtree(work)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(objects)} objects, {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
