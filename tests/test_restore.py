"""The restore's file writing: the helper process (filewriter) and the in-process path agree, and
the helper's failures reach the user as errors naming the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from freehold import filewriter, restore
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
    real = restore._helper_sink

    def spy() -> restore._HelperSink | None:
        sink = real()
        started.append(sink)
        return sink

    monkeypatch.setattr(restore, "_helper_sink", spy)
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


def test_helper_failure_names_the_file(env: Env, tmp_path: Path, used: list[object]) -> None:
    src = write_tree(tmp_path / "src", small=300)
    with env.init() as v:
        v.backup([str(src)])
        root = tmp_path / "t" / "src"
        (root / "d2" / "e2" / "f2.txt").mkdir(parents=True)  # a directory where a file goes
        with pytest.raises(IsADirectoryError) as exc:
            v.restore("latest", tmp_path / "t")
    assert used and used[0] is not None
    assert exc.value.filename.endswith("d2/e2/f2.txt")


def test_helper_that_dies_is_a_clear_error(env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", small=300)
    real = restore._helper_sink

    def doomed() -> restore._HelperSink | None:
        sink = real()
        assert sink is not None
        sink.proc.kill()
        sink.proc.wait()
        return sink

    monkeypatch.setattr(restore, "_helper_sink", doomed)
    with env.init() as v:
        v.backup([str(src)])
        with pytest.raises(FreeholdError, match="helper process ended unexpectedly"):
            v.restore("latest", tmp_path / "t")


def _serve(payload: bytes) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-I", "-S", filewriter.__file__], input=payload,
                          capture_output=True, check=False)
    return proc.returncode, proc.stdout.decode()


def test_filewriter_protocol(tmp_path: Path) -> None:
    def record(path: Path, mode: int, mtime: int, data: bytes) -> bytes:
        name = os.fsencode(path)
        return filewriter.RECORD.pack(len(name), mode, mtime, len(data)) + name + data

    a, b = tmp_path / "a", tmp_path / "b"
    code, out = _serve(record(a, 0o640, 5_000_000_123, b"alpha") + record(b, 0o600, 7, b""))
    assert (code, out) == (0, '{"files": 2}\n')
    assert a.read_bytes() == b"alpha" and a.stat().st_mode & 0o7777 == 0o640
    assert a.stat().st_mtime_ns == 5_000_000_123 and b.read_bytes() == b""
    # a request cut short is refused, not half-written silently
    code, out = _serve(record(tmp_path / "c", 0o644, 1, b"x" * 100)[:-10])
    assert code == 1 and '"truncated request"' in out and '"files": 0' in out


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
