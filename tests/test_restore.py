"""The restore's file writing: the helper process (filewriter) and the in-process path agree, and
the helper's failures reach the user as errors naming the file."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from freehold import filewriter, restore, restore_files
from freehold.errors import FreeholdError

from .conftest import Env, same_tree, write_tree


def _varied_tree(root: Path) -> Path:
    src = write_tree(root, seed=4, small=300, big=3_000_000)
    modes = [0o600, 0o644, 0o640, 0o444, 0o755, 0o4755, 0o2750, 0o1777]
    for i, mode in enumerate(modes):
        f = src / f"mode{i}"
        f.write_bytes(os.urandom(100 + i))
        f.chmod(mode)
        os.utime(f, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i * 1_000_003))
    (src / "empty2").write_bytes(b"")
    return src


@pytest.fixture
def used(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records each helper the restore starts."""
    started: list[object] = []
    real = restore_files.helper_sink

    def spy(job: restore_files.Job, root: int) -> restore_files.HelperSink | None:
        sink = real(job, root)
        started.append(sink)
        return sink

    monkeypatch.setattr(restore_files, "helper_sink", spy)
    return started


@pytest.mark.parametrize("batch", [restore.BATCH_BYTES, 256 * 1024])
def test_helper_and_inline_restores_are_identical(env: Env, tmp_path: Path, used: list[object],
                                                  monkeypatch: pytest.MonkeyPatch, batch: int) -> None:
    # Small batches make many files span batches (written by this process) next to the helper's.
    monkeypatch.setattr(restore, "BATCH_BYTES", batch)
    src = _varied_tree(tmp_path / "src")
    with env.init() as v:
        v.backup([str(src)])
        v.restore("latest", tmp_path / "helper")
        assert len(used) == 1 and used[0] is not None
        monkeypatch.setattr(restore, "HELPER_MIN_FILES", 10**9)
        st = v.restore("latest", tmp_path / "inline")
        assert len(used) == 1
    assert st.files == sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    for out in ("helper", "inline"):
        same_tree(src, tmp_path / out / "src")


def test_helper_replaces_files_and_never_writes_through_symlinks(env: Env, tmp_path: Path,
                                                                 used: list[object]) -> None:
    src = write_tree(tmp_path / "src", small=300)
    victim = tmp_path / "victim"
    victim.write_text("must stay")
    with env.init() as v:
        v.backup([str(src)])
        root = tmp_path / "t" / "src"
        (root / "d1" / "e1").mkdir(parents=True)
        (root / "d1" / "e1" / "f1.txt").write_text("old content that is longer than the new one" * 100)
        (root / "d1" / "e1" / "f1.txt").chmod(0o600)
        os.symlink(victim, root / "d1" / "e1" / "f16.txt")
        v.restore("latest", tmp_path / "t")
    assert used and used[0] is not None
    assert victim.read_text() == "must stay"
    same_tree(src, root)


def test_a_directory_in_the_way_is_that_files_failure(env: Env, tmp_path: Path, used: list[object]) -> None:
    src = write_tree(tmp_path / "src", small=300)
    with env.init() as v:
        v.backup([str(src)])
        root = tmp_path / "t" / "src"
        (root / "d2" / "e2" / "f2.txt").mkdir(parents=True)  # a directory where a file goes
        (root / "d2" / "e2" / "f2.txt" / "mine").write_text("keep")
        (root / "d3" / "e0" / "f3.txt").mkdir(parents=True)  # an empty one is replaced
        st = v.restore("latest", tmp_path / "t")
        assert used and used[0] is not None
        assert st.failed == [("src/d2/e2/f2.txt", "a directory is in the way (--delete replaces it)")]
        assert (root / "d2" / "e2" / "f2.txt" / "mine").read_text() == "keep"
        assert (root / "d3" / "e0" / "f3.txt").read_bytes() == (src / "d3" / "e0" / "f3.txt").read_bytes()
        assert st.files == sum(1 for p in src.rglob("*") if p.is_file() and not p.is_symlink()) - 1
        st = v.restore("latest", tmp_path / "t", options=restore.RestoreOptions(delete=True))
    assert st.failed == [] and st.deleted == 1
    same_tree(src, root)


def test_helper_that_dies_is_a_clear_error(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", small=300)
    real = restore_files.helper_sink

    def doomed(job: restore_files.Job, root: int) -> restore_files.HelperSink | None:
        sink = real(job, root)
        assert sink is not None
        sink.proc.kill()
        sink.proc.wait()
        return sink

    monkeypatch.setattr(restore_files, "helper_sink", doomed)
    with env.init() as v:
        v.backup([str(src)])
        with pytest.raises(FreeholdError, match="helper process ended unexpectedly"):
            v.restore("latest", tmp_path / "t")


def _serve(root: Path, payload: bytes) -> tuple[int, dict[str, object]]:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", filewriter.__file__, str(fd)], input=payload,
                              capture_output=True, check=False, pass_fds=(fd,))
    finally:
        os.close(fd)
    return proc.returncode, json.loads(proc.stdout)


def _dir(rel: bytes) -> bytes:
    return b"D" + filewriter.DIR.pack(len(rel)) + rel


def _file(name: bytes, mode: int, mtime: int, data: bytes, uid: int = -1, gid: int = -1, atime: int = 0,
          flags: int = 0, xattrs: bytes = b"") -> bytes:
    return (b"F" + filewriter.FILE.pack(len(name), mode, uid, gid, atime, mtime, flags, len(xattrs), len(data))
            + name + xattrs + data)


def test_filewriter_protocol(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub" / "in-the-way").mkdir(parents=True)
    (root / "sub" / "in-the-way" / "x").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    code, out = _serve(root, _dir(b"") + _file(b"a", 0o640, 5_000_000_123, b"alpha", atime=7_000_000_000)
                       + _dir(b"sub") + _file(b"b", 0o4755, 7, b"") + _file(b"in-the-way", 0o644, 1, b"no")
                       + _file(b"c", 0o600, 9, b"gamma")
                       + _dir(b"link") + _file(b"d", 0o644, 1, b"through a link"))
    assert code == 0
    assert out["files"] == 3 and out["warnings"] == []
    failed = {f[0]: f[1] for f in out["failed"]}  # type: ignore[union-attr, index]
    assert set(failed) == {"sub/in-the-way", "link/d"}
    assert failed["link/d"] in (errno.ELOOP, errno.ENOTDIR)  # a symlink in the target: never followed
    a = root / "a"
    st = a.stat()  # before reading it: a read moves an atime older than the mtime (relatime)
    assert st.st_mode & 0o7777 == 0o640 and st.st_mtime_ns == 5_000_000_123 and st.st_atime_ns == 7_000_000_000
    assert a.read_bytes() == b"alpha"
    assert (root / "sub" / "b").stat().st_mode & 0o7777 == 0o4755
    assert (root / "sub" / "c").read_bytes() == b"gamma"
    assert list(outside.iterdir()) == []
    # nothing left under a temporary name, the directory in the way untouched
    assert sorted(p.name for p in (root / "sub").iterdir()) == ["b", "c", "in-the-way"]
    assert [p.name for p in (root / "sub" / "in-the-way").iterdir()] == ["x"]
    # a request cut short is refused, not half-written silently
    code, out = _serve(root, _file(b"e", 0o644, 1, b"x" * 100)[:-10])
    assert code == 1 and out["strerror"] == "truncated request" and out["files"] == 0
    assert not (root / "e").exists() and not [p for p in root.iterdir() if ".fh-" in p.name]


def test_helper_writes_survive_short_pipe_writes(env: Env, tmp_path: Path, used: list[object],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A write to a pipe may take less than it was given (a signal arrives): the rest is sent,
    from where it stopped, inside a buffer as well as between buffers."""
    real = os.writev
    calls = []

    def short(fd: int, buffers: list[bytes]) -> int:
        calls.append(len(buffers))
        head: list[memoryview] = []
        for b in buffers[:3]:  # at most three buffers, and 700 bytes of the last one taken
            head.append(memoryview(b)[:700])
            if len(b) > 700:
                break
        return real(fd, head)

    monkeypatch.setattr(os, "writev", short)
    src = write_tree(tmp_path / "src", small=300)
    with env.init() as v:
        v.backup([str(src)])
        v.restore("latest", tmp_path / "t")
    assert used and used[0] is not None and len(calls) > 100
    same_tree(src, tmp_path / "t" / "src")
