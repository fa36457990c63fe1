"""What the stored-vault tests (test_fixture_v1*.py) share: a stored vault as its expected.json
describes it (its providers, passphrase, snapshots) with the moves every version's tests make on
it, and a restored tree described as expected.json records it, and the comparison."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3

from freehold.vault import Vault

DATA = Path(__file__).resolve().parent / "data"
SRC = Path(__file__).resolve().parents[1] / "src"
V1 = DATA / "vault-v1"
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


class StoredVault:
    """One stored vault of tests/data (``vault-v1.2``...): what its expected.json records."""

    def __init__(self, name: str) -> None:
        self.dir = DATA / name
        self.expected: dict[str, Any] = json.loads((self.dir / "expected.json").read_text())
        self.owner = (self.dir / "passphrase.txt").read_text(encoding="utf-8").rstrip("\n")
        self.snapshots: list[dict[str, Any]] = self.expected["snapshots"]
        self.providers = [f"p{i}" for i in range(1, self.expected["n"] + 1)]
        # where the writer had the providers (recorded in the sealed config)
        self.written_at = Path(self.expected["providers_at"])

    @contextlib.contextmanager
    def moved(self, tmp_path: Path) -> Iterator[Path]:
        """The providers copied to a path of their own, not the one the config records; nothing
        may be written where the config says they were."""
        root = tmp_path / "disks-mounted-elsewhere"
        shutil.copytree(self.dir / "providers", root)
        existed = self.written_at.exists()
        yield root
        if not existed:
            assert not self.written_at.exists(), f"{self.written_at} was created"

    def urls(self, root: Path, pids: list[str] | None = None) -> list[str]:
        return [(root / pid).as_uri() for pid in (pids or self.providers)]

    def restore_all(self, v: Vault, where: Path) -> None:
        """Every snapshot restored under ``where`` (r0, r1, ...), content and metadata as recorded."""
        for i, s in enumerate(self.snapshots):
            stats = v.restore(s["id"], where / f"r{i}")
            assert not stats.failed, stats.failed
            assert_restored_with_meta(where / f"r{i}", s)

    def cli(self, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(home, self.owner, *args)


def run_cli(home: Path, passphrase: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``freehold ARGS`` of the code under test with that home and passphrase; it must succeed."""
    env = {**os.environ, "FREEHOLD_HOME": str(home), "FREEHOLD_PASSPHRASE": passphrase, "PYTHONPATH": str(SRC)}
    proc = subprocess.run([sys.executable, "-m", "freehold.cli", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"freehold {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def files_below(root: Path) -> set[str]:
    """Every file under ``root``, by path relative to it."""
    return {str(f.relative_to(root)) for f in root.rglob("*") if f.is_file()}


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
