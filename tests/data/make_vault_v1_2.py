"""Make tests/data/vault-v1.2: a small vault written by the format-1.2 writer, stored for good.

This script was run ONCE, as root, with the format-1.2 writer (a clean checkout of commit 462bc15,
the release of format 1.2, in a worktree) first on the path:

    git -C /work/main worktree add /tmp/fh-v12 462bc15
    PYTHONPATH=/tmp/fh-v12/src .venv/bin/python tests/data/make_vault_v1_2.py

It must never be run again over tests/data/vault-v1.2 (it refuses to): the stored objects are the
point, because they were written by the code of format version 1.2, and every later version must
still read them (docs/design.md: "Once released, a format version stays readable"). Kept so that
anyone can see exactly how the fixture was made, and make a scratch one with ``--out``.

What it does:
1. builds a deterministic source tree at SOURCE (a 700 KiB pseudo-random file, a compressible
   4.5 MiB log cut into two chunks or more, small text files, an empty file) holding everything
   format 1.2 records (design.md §11, ``Node.meta``): two files, the char device, a directory and
   a symlink owned by uid/gid 1234:2345 (ids with no name here), user.* extended attributes on a
   file and a directory, a POSIX access ACL on a file and a default ACL on a directory
   (``setfacl``: system.posix_acl_* xattrs), a hardlink pair, a 1 MiB sparse file with a hole
   between two written blocks, a fifo, a char device (1, 3) and a block device (7, 0) (the 1.2
   node types), a setgid directory and a sticky one, every atime and mtime fixed with os.utime in
   ns; and entries the selection leaves out (``*.tmp``, ``cache``);
2. ``Vault.init`` 3-of-5 over five local-directory providers at PROVIDERS/p1..p5 (jurisdictions
   DE, FR, DE, FR, NL), Argon2id at KdfParams.weak(64);
3. backs SOURCE up with ``BackupOptions(excludes=("*.tmp", "cache"))`` (snapshot 1, ``excluded``
   3);
4. changes the tree: one file rewritten, one xattr changed (ctime only), a third name for the
   hardlinked file, a file added with owner 2345:1234; backs it up again (snapshot 2, parent 1);
5. restores both snapshots with the same writer and checks every entry (content, mode, times,
   owner, xattrs, link groups, rdev, sparseness) against the source, checks every node's
   recorded ``meta`` against the source's lstat, and ``check --read-data`` healthy;
6. stores under OUT: providers/p1..p5 (every object, byte for byte), expected.json and
   passphrase.txt.

Torn files (``Meta.torn``, ``Snapshot.torn``) are not in the fixture: a file rewritten while it is
read cannot be made deterministically. Both snapshots record ``torn`` empty.

Needs root (chown, mknod) and ``setfacl`` (apt package ``acl``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import blake3

PROVIDERS = Path("/tmp/freehold-fixture-v1.2-gen")   # recorded in the sealed config (as written)
SOURCE = Path("/tmp/freehold-fixture-v1.2-src/srv")   # recorded in the snapshots' paths
PASSPHRASE = "format one point two, kept forever: freehold fixture v1.2 \u00e5ngstr\u00f6m"
JURISDICTIONS = ["DE", "FR", "DE", "FR", "NL"]
EXCLUDES = ("*.tmp", "cache")
K, N = 3, 5
T0 = 1_660_000_000_000_000_000                        # 2022-08-08T23:06:40Z, in ns
UID, GID = 1234, 2345                                 # no user or group of these ids exists here
HERE = Path(__file__).resolve().parent
NOATIME = getattr(os, "O_NOATIME", 0)


def stream(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-random bytes (BLAKE3's XOF)."""
    return blake3.blake3(seed).digest(length=size)


def set_times(root: Path, times: dict[str, tuple[int, int]]) -> None:
    """Fixed (atime, mtime) for entries; directories last, deepest first."""
    entries = sorted(times, key=lambda rel: (rel.count("/"), rel), reverse=True)
    isdir = {rel: (root / rel).is_dir() and not (root / rel).is_symlink() for rel in entries}
    for rel in [e for e in entries if not isdir[e]] + [e for e in entries if isdir[e]]:
        os.utime(root / rel if rel else root, ns=times[rel], follow_symlinks=False)


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True)


def build_source(root: Path) -> None:
    if root.parent.exists():
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    files: dict[str, tuple[bytes, int]] = {
        "README.txt": (b"Freehold fixture, format version 1.2: everything a file is.\nDo not regenerate.\n", 0o644),
        "empty.txt": (b"", 0o644),
        "data/random.bin": (stream(b"freehold fixture v1.2 random", 700 * 1024 + 77), 0o640),
        "data/big.log": (b"".join(b"2022-08-08 23:%02d:%02d host=gamma path=/q/%06d status=200\n"
                                  % (i // 60 % 60, i % 60, i) for i in range(90_000))[:4 * 1024 * 1024 + 512 * 1024],
                         0o644),
        "data/notes.txt": (b"notes with extended attributes and an access ACL\n", 0o644),
        "data/old.tmp": (b"left out by *.tmp\n", 0o644),
        "links/a": (stream(b"freehold fixture v1.2 hardlink", 5000), 0o644),
        "project/plan.txt": (b"plan, first version\n", 0o664),
        "shared/board.txt": (b"anyone may write here\n", 0o666),
        "scratch.tmp": (b"left out by *.tmp\n", 0o600),
        "cache/blob": (b"left out with its directory (cache)\n", 0o644),
    }
    for d in ("data", "links", "project", "shared", "devices", "cache"):
        (root / d).mkdir()
        os.chmod(root / d, 0o755)
    for rel, (data, mode) in files.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    os.link(root / "links/a", root / "links/b")          # one file, two names (nlink 2)
    with open(root / "data/sparse.img", "wb") as f:     # 1 MiB: a block, a hole, a block
        f.write(b"head" * 1024)
        f.seek(1024 * 1024 - 4096)
        f.write(b"tail" * 1024)
    os.chmod(root / "data/sparse.img", 0o644)
    os.mkfifo(root / "devices/fifo", 0o640)
    os.mknod(root / "devices/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "devices/loop", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.chmod(root / "devices/fifo", 0o640)               # not narrowed by the umask
    os.chmod(root / "devices/null", 0o666)
    os.chmod(root / "devices/loop", 0o660)
    os.symlink("data/notes.txt", root / "notes-link")
    # Owners: 1234:2345 on a file, the char device, the project directory, its file and a symlink.
    for rel in ("data/random.bin", "devices/null", "project", "project/plan.txt"):
        os.chown(root / rel, UID, GID)
    os.chown(root / "notes-link", UID, GID, follow_symlinks=False)
    os.chown(root / "devices/loop", 0, GID)
    os.chmod(root / "project", 0o2775)                   # setgid (after chown, which may clear it)
    os.chmod(root / "shared", 0o1777)                    # sticky
    # Extended attributes and ACLs (system.posix_acl_access / _default).
    os.setxattr(root / "data/notes.txt", "user.comment", b"kept by format 1.2")
    os.setxattr(root / "data/notes.txt", "user.binary", bytes(range(256)))
    os.setxattr(root / "project", "user.purpose", b"a directory's own xattr")
    setfacl("-m", f"u:{UID}:r,g:{GID}:rw", str(root / "data/notes.txt"))
    setfacl("-d", "-m", f"u:{UID}:rwx,g:{GID}:rx", str(root / "project"))
    times = {}
    for i, rel in enumerate(all_entries(root)):
        mtime = T0 + i * 2_000_000_011 + 654_321
        times[rel] = (mtime + 3_600_000_000_007 + i, mtime)      # atime an hour after mtime
    set_times(root, times)


def change_source(root: Path) -> None:
    """Between the two backups: one file rewritten, one xattr changed, a third name for the
    hardlinked file, one file added."""
    (root / "project/plan.txt").write_bytes(b"plan, second version: a little longer\n")
    os.setxattr(root / "data/notes.txt", "user.comment", b"changed between the snapshots")
    os.link(root / "links/a", root / "links/c")
    (root / "data/added.txt").write_bytes(b"added after the first backup\n")
    os.chown(root / "data/added.txt", GID, UID)
    os.chmod(root / "data/added.txt", 0o600)
    t1 = T0 + 86_400 * 10**9
    set_times(root, {"project/plan.txt": (t1 + 101, t1 + 11), "data/added.txt": (t1 + 202, t1 + 22),
                     "project": (t1 + 303, t1 + 33), "data": (t1 + 404, t1 + 44), "links": (t1 + 505, t1 + 55)})


def all_entries(root: Path) -> list[str]:
    out = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
         stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}


def read_quietly(path: Path) -> bytes:
    """A file's bytes, leaving its atime alone (O_NOATIME: we are root)."""
    fd = os.open(path, os.O_RDONLY | NOATIME)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def describe(root: Path, prefix: str, skip: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Every entry under root (root included, as ``prefix``): what a restore must reproduce,
    1.2 metadata included. Every lstat is taken before any content is read."""
    rels = [rel for rel in all_entries(root) if not any(rel == s or rel.startswith(s + "/") for s in skip)]
    stats = {rel: (root / rel if rel else root).lstat() for rel in rels}
    groups: dict[tuple[int, int], str] = {}
    for rel in rels:
        st = stats[rel]
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), f"{prefix}/{rel}")
    out = []
    for rel in rels:
        p, st = (root / rel if rel else root), stats[rel]
        kind = TYPES[stat.S_IFMT(st.st_mode)]
        entry: dict[str, Any] = {"path": f"{prefix}/{rel}" if rel else prefix, "type": kind,
                                 "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns,
                                 "uid": st.st_uid, "gid": st.st_gid}
        if kind not in ("dir", "symlink"):      # 1.2 records atime of files and special files
            entry["atime_ns"] = st.st_atime_ns
        if kind == "symlink":
            target = os.fsencode(os.readlink(p))
            entry.update(size=len(target), target=os.fsdecode(target), blake3=blake3.blake3(target).hexdigest())
        elif kind == "file":
            data = read_quietly(p)
            entry.update(size=len(data), blake3=blake3.blake3(data).hexdigest(), nlink=st.st_nlink,
                         sparse=st.st_blocks * 512 < st.st_size)
            if st.st_nlink > 1:
                entry["link"] = groups[(st.st_dev, st.st_ino)]
        elif kind in ("chardev", "blockdev"):
            entry["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
        entry["xattrs"] = {n: os.getxattr(p, n, follow_symlinks=False).hex()
                           for n in sorted(os.listxattr(p, follow_symlinks=False))}
        out.append(entry)
    return out


def recorded(node: Any) -> dict[str, Any]:
    """A node's 1.2 metadata as the writer recorded it (``Node.meta``)."""
    m = node.meta
    assert m is not None, node
    return {"type": node.type, "mode": node.mode, "mtime": node.mtime, "size": node.size,
            "uid": m.uid, "gid": m.gid, "user": m.user, "group": m.group, "atime": m.atime,
            "nlink": m.nlink, "rdev": m.rdev, "sparse": m.sparse, "torn": m.torn,
            "xattrs": {os.fsdecode(x.n): x.v.hex() for x in m.xattrs}}


def check_recorded(meta: dict[str, dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """What the writer recorded is what the source is."""
    assert sorted(meta) == sorted(e["path"] for e in entries), sorted(set(meta) ^ {e["path"] for e in entries})
    for e in entries:
        m = meta[e["path"]]
        assert (m["type"], m["mode"], m["mtime"], m["uid"], m["gid"]) == \
            (e["type"], e["mode"], e["mtime_ns"], e["uid"], e["gid"]), (e, m)
        assert m["xattrs"] == e["xattrs"] and not m["torn"], (e, m)
        assert m["atime"] == e.get("atime_ns", 0), (e, m)
        if e["type"] == "file":
            assert (m["size"], m["sparse"]) == (e["size"], e["sparse"]), (e, m)
            assert m["nlink"] == (e["nlink"] if e["nlink"] > 1 else 0), (e, m)
        rdev = e.get("rdev")
        assert m["rdev"] == (os.makedev(*rdev) if rdev else 0), (e, m)


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
    ap.add_argument("--out", type=Path, default=HERE / "vault-v1.2")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        print(f"refusing: {out} already holds a fixture; it pins format 1.2 and is never regenerated",
              file=sys.stderr)
        return 2

    import freehold
    from freehold import formats
    from freehold.api import BackupOptions
    from freehold.keys import KdfParams
    from freehold.vault import ProviderSpec, Vault

    revision = getattr(formats, "FORMAT_REVISION", None)
    print(f"writer: {Path(freehold.__file__).parent} (format revision {revision})")
    if revision != "1.2" or formats.FORMAT_VERSION != 1:
        print("refusing: this writer does not write format 1.2", file=sys.stderr)
        return 2
    if os.geteuid() != 0 or shutil.which("setfacl") is None:
        print("refusing: needs root (chown, mknod) and setfacl (apt package acl)", file=sys.stderr)
        return 2

    build_source(SOURCE)
    if PROVIDERS.exists():
        shutil.rmtree(PROVIDERS)
    providers = [PROVIDERS / f"p{i}" for i in range(1, N + 1)]
    for p in providers:
        p.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="freehold-fixture-v1.2-"))
    home = work / "home"
    specs = [ProviderSpec(p.as_uri(), jurisdiction=j) for p, j in zip(providers, JURISDICTIONS, strict=True)]
    Vault.init(specs, K, N, PASSPHRASE, home=home, kdf=KdfParams.weak(64)).close()

    snapshots: list[dict[str, Any]] = []
    skip = ("cache", "scratch.tmp", "data/old.tmp")          # what EXCLUDES leaves out

    def backup() -> None:
        before = describe(SOURCE, SOURCE.name, skip)
        with Vault.open(PASSPHRASE, home=home) as v:
            sid, snap, _ = v.backup([str(SOURCE)], options=BackupOptions(excludes=EXCLUDES))
            meta = {path: recorded(node) for path, node in v.ls(sid)}
        entries = describe(SOURCE, SOURCE.name, skip)
        assert entries == before, "the backup changed the source (an atime?)"
        check_recorded(meta, entries)
        assert snap.skipped == [] and snap.torn == [] and snap.excluded == len(skip), snap
        snapshots.append({"id": sid, "paths": list(snap.paths),
                          "parent": snap.parent.hex() if snap.parent is not None else None,
                          "files": snap.files, "dirs": snap.dirs, "size": snap.size,
                          "excluded": snap.excluded, "torn": list(snap.torn), "skipped": list(snap.skipped),
                          "entries": entries, "meta": meta})
        print(f"snapshot {sid[:12]}: {snap.files} files, {snap.dirs} dirs, {snap.size} bytes, "
              f"{snap.excluded} excluded")

    backup()
    change_source(SOURCE)
    backup()
    assert snapshots[1]["parent"] == snapshots[0]["id"], "the second snapshot must have the first as parent"

    # The writer restores what it wrote (so expected.json is also what format 1.2 restores).
    with Vault.open(PASSPHRASE, home=home) as v:
        assert {sid for sid, _ in v.snapshots()} == {s["id"] for s in snapshots}
        for s in snapshots:
            target = work / f"restore-{s['id'][:12]}"
            stats = v.restore(s["id"], target)
            assert not getattr(stats, "failed", None), stats
            got = describe(target / SOURCE.name, SOURCE.name)
            assert got == s["entries"], [(a, b) for a, b in zip(got, s["entries"], strict=False) if a != b][:3]
        report = v.check(read_data=True)
        assert report.healthy, report.problems
        chunks = {path: len(node.content) for path, node in v.ls(snapshots[0]["id"]) if node.type == "file"}
        assert chunks["srv/data/big.log"] >= 2, chunks   # longer than the largest chunk (4 MiB)
        info = v.info()
        entries = [{"id": e.id, "url": e.url, "jurisdiction": e.jurisdiction, "operator": e.operator,
                    "marker": e.marker} for e in info.providers]
        pack_count = len(v.packs())
        generation = info.generation

    objects = provider_objects(providers)
    stored = sum(f.stat().st_size for p in providers for f in p.rglob("*") if f.is_file())
    assert stored < 3 * 2**20, f"the fixture would hold {stored} bytes"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROVIDERS, out / "providers")
    assert provider_objects([out / "providers" / p.name for p in providers]) == objects
    (out / "passphrase.txt").write_text(PASSPHRASE + "\n", encoding="utf-8")
    expected = {
        "format": "1.2", "k": K, "n": N, "providers_at": str(PROVIDERS), "source": str(SOURCE),
        "writer": "462bc15", "generation": generation, "excludes": list(EXCLUDES),
        "providers": entries, "packs": pack_count,
        "snapshots": snapshots,
        "objects": objects,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=False) + "\n")
    shutil.rmtree(work)
    shutil.rmtree(PROVIDERS)
    shutil.rmtree(SOURCE.parent)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(objects)} objects, {pack_count} packs, {size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
