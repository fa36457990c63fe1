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
