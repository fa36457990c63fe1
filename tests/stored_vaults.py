"""What the stored-vault tests (test_fixture_v1*.py) share: a restored tree described as
expected.json records it, and the comparison."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3

V1 = Path(__file__).resolve().parent / "data" / "vault-v1"
V1_AT = Path("/tmp/freehold-fixture-v1")           # where its sealed config says the providers are
V1_LOCK = Path("/tmp/freehold-fixture-v1.lock")


@contextlib.contextmanager
def v1_placed() -> Iterator[Path]:
    """The format-1 fixture's providers copied to their recorded place, one user at a time (the
    path is fixed), removed afterwards."""
    with open(V1_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        shutil.rmtree(V1_AT, ignore_errors=True)
        shutil.copytree(V1 / "providers", V1_AT)
        try:
            yield V1_AT
        finally:
            shutil.rmtree(V1_AT, ignore_errors=True)


def describe(root: Path) -> dict[str, dict[str, Any]]:
    """Every entry of a restored tree (root included) as expected.json records it, by path."""
    out: dict[str, dict[str, Any]] = {}
    base = root.parent
    for dirpath, dirnames, filenames in os.walk(root):
        paths = [Path(dirpath)] if Path(dirpath) == root else []
        paths += [Path(dirpath) / name for name in dirnames + filenames]
        for p in paths:
            st = p.lstat()
            entry: dict[str, Any] = {"path": str(p.relative_to(base)), "mode": st.st_mode & 0o7777,
                                     "mtime_ns": st.st_mtime_ns}
            if p.is_symlink():
                target = os.fsencode(os.readlink(p))
                entry.update(type="symlink", size=len(target), target=os.fsdecode(target),
                             blake3=blake3.blake3(target).hexdigest())
            elif p.is_dir():
                entry.update(type="dir")
            else:
                data = p.read_bytes()
                entry.update(type="file", size=len(data), blake3=blake3.blake3(data).hexdigest())
            out[entry["path"]] = entry
    return out


def assert_restored(target: Path, snap: dict[str, Any]) -> None:
    roots = sorted(os.listdir(target))
    assert roots == [Path(p).name for p in snap["paths"]], roots
    got = describe(target / roots[0])
    want = {e["path"]: e for e in snap["entries"]}
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    wrong = [(want[p], got[p]) for p in want if got[p] != want[p]]
    assert not wrong, wrong[:3]


# ------------------------------------------------------------------ format 1.2 and later: metadata

META_TYPES = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink", 0o010000: "fifo",
              0o020000: "chardev", 0o060000: "blockdev"}


def read_quietly(path: Path) -> bytes:
    """A file's bytes, leaving its atime alone where O_NOATIME is allowed (lstat came first anyway)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def describe_with_meta(root: Path) -> list[dict[str, Any]]:
    """Every entry of a restored tree (root included) as the expected.json of vault-v1.2 and later
    records it: type, mode, mtime_ns, uid, gid, atime_ns (not of directories and symlinks), size
    and BLAKE3 of the content or the target, nlink and ``sparse`` of files, ``link`` (the first
    path sharing the inode) of hardlinked files, ``rdev`` of devices, every xattr as hex. Every
    lstat is taken before any content is read."""
    import stat

    rels = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rels += [os.path.relpath(os.path.join(dirpath, n), root) for n in sorted(dirnames + filenames)]
    stats = {rel: (root / rel if rel else root).lstat() for rel in rels}
    prefix = root.name
    groups: dict[tuple[int, int], str] = {}
    for rel in rels:
        if stat.S_ISREG(stats[rel].st_mode) and stats[rel].st_nlink > 1:
            groups.setdefault((stats[rel].st_dev, stats[rel].st_ino), f"{prefix}/{rel}")
    out = []
    for rel in rels:
        p, st = (root / rel if rel else root), stats[rel]
        kind = META_TYPES[stat.S_IFMT(st.st_mode)]
        entry: dict[str, Any] = {"path": f"{prefix}/{rel}" if rel else prefix, "type": kind,
                                 "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns,
                                 "uid": st.st_uid, "gid": st.st_gid}
        if kind not in ("dir", "symlink"):
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


def assert_restored_with_meta(target: Path, snap: dict[str, Any]) -> None:
    """``target`` holds exactly the snapshot ``snap`` of an expected.json (1.2 shape), every
    entry's content and metadata as recorded."""
    roots = sorted(os.listdir(target))
    assert roots == [Path(p).name for p in snap["paths"]], roots
    got = {e["path"]: e for e in describe_with_meta(target / roots[0])}
    want = {e["path"]: e for e in snap["entries"]}
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    wrong = {p: {k: (want[p].get(k), got[p].get(k)) for k in sorted(want[p].keys() | got[p].keys())
                 if want[p].get(k) != got[p].get(k)} for p in want if got[p] != want[p]}
    assert not wrong, f"(expected, restored) where they differ: {wrong}"


def object_hashes(root: Path) -> dict[str, str]:
    """BLAKE3 of every file under ``root`` (a fixture's ``providers/``), by path relative to it."""
    return {str(f.relative_to(root)): blake3.blake3(f.read_bytes()).hexdigest()
            for f in sorted(root.rglob("*")) if f.is_file()}
