"""Issue 12, restore: a restore never writes outside its target (planted symlinks, hardlinks and
fifos at every depth, snapshots that swap a directory for a symlink), never leaves a half file
under its final name (full disk, file size limit, SIGKILL, Ctrl-C), fails per file (a pack
beyond repair costs only its files), takes several includes and excludes, honours --overwrite
and --delete, and gives back what the backup recorded (owners, xattrs, ACLs, hardlinks, holes,
fifos, device nodes, atimes)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from freehold import filewriter, restore, targetfs
from freehold.api import RestoreOptions
from freehold.errors import UsageError

from .conftest import Env, same_tree, write_tree

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root")
TEMP = re.compile(r"\..*\.fh-[0-9a-f]{16}\.part", re.DOTALL)


def _state(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry at and below root: type, mode bits, owner, mtime, and content (or target)."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISREG(st.st_mode):
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as f:
                    what: object = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            else:
                what = ""
            out[str(p.relative_to(root))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid,
                                             st.st_gid, st.st_mtime_ns, st.st_nlink, what)
    return out


def _outside(root: Path) -> Path:
    """A sibling of the targets, with files of many modes (and, as root, owners) to guard."""
    (root / "etc").mkdir(parents=True)
    (root / "deep" / "er").mkdir(parents=True)
    for i, mode in enumerate([0o644, 0o600, 0o755, 0o4755, 0o444, 0o000, 0o2750, 0o1777]):
        for where in (root, root / "deep" / "er"):
            f = where / f"file{i}"
            f.write_bytes(b"outside %d " % i * (i + 1))
            if ROOT:
                os.chown(f, 1000 + i, 2000 + i)
            f.chmod(mode)
            os.utime(f, ns=(1_500_000_000_000_000_000 + i, 1_500_000_000_000_000_000 + i))
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "passwd").chmod(0o644)
    return root


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP.fullmatch(p.name)]


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


def _use_helper(monkeypatch: pytest.MonkeyPatch, helper: bool) -> None:
    if not helper:
        monkeypatch.setattr(restore, "HELPER_MIN_FILES", 10**9)


# -- restore never writes outside its target ---------------------------------------------------------

@pytest.mark.parametrize("helper", [True, False], ids=["helper", "inline"])
def test_symlinks_planted_at_every_depth_are_replaced_never_followed(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: bool) -> None:
    _use_helper(monkeypatch, helper)
    src = write_tree(tmp_path / "src", small=300)
    (src / "etc").mkdir()
    (src / "etc" / "passwd").write_text("restored\n")
    (src / "etc" / "passwd").chmod(0o777)
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    entries = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    depths = {e: e.count("/") + 1 for e in entries}
    with env.init() as v:
        v.backup([str(src)])
        for depth in range(max(depths.values()) + 1):
            t = tmp_path / f"t{depth}"
            (t / "src").parent.mkdir()
            if depth == 0:  # the snapshot's root entry itself
                os.symlink(outside, t / "src")
            else:
                (t / "src").mkdir()
                for e in entries:
                    if depths[e] < depth and (src / e).is_dir() and not (src / e).is_symlink():
                        (t / "src" / e).mkdir(exist_ok=True)
                    elif depths[e] == depth:  # every entry at this depth: a link out of the target
                        aim = outside / "etc" if (src / e).is_dir() else outside / "etc" / "passwd"
                        os.symlink(aim if depth % 2 else os.path.relpath(aim, (t / "src" / e).parent),
                                   t / "src" / e)
            st = v.restore("latest", t)
            assert st.failed == [], (depth, st.failed[:3])
            same_tree(src, t / "src")
            assert not _temps(t)
    assert _state(outside) == before


@pytest.mark.parametrize("helper", [True, False], ids=["helper", "inline"])
def test_a_directory_swapped_for_a_symlink_and_back_never_writes_outside(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: bool) -> None:
    """Finding 1: 'conf' a symlink to a directory elsewhere in one snapshot, a real directory
    in the next, restored one after another into one target."""
    _use_helper(monkeypatch, helper)
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    src = tmp_path / "src"
    src.mkdir()
    snaps = []
    with env.init() as v:
        for round_ in range(4):
            conf = src / "conf"
            if conf.is_symlink():
                conf.unlink()
            elif conf.exists():
                shutil.rmtree(conf)
            if round_ % 2 == 0:
                os.symlink(outside / "etc", conf)
            else:
                conf.mkdir()
                for i in range(300):
                    (conf / f"f{i}").write_text(f"round {round_} file {i}")
                (conf / "passwd").write_text(f"round {round_}\n")
                (conf / "passwd").chmod(0o777)
            snaps.append(v.backup([str(src)]).id)
        target = tmp_path / "target"
        for round_, sid in enumerate(snaps + snaps):  # a directory where a symlink goes: --delete
            st = v.restore(sid, target, options=RestoreOptions(delete=True))
            assert st.failed == []
            conf = target / "src" / "conf"
            if round_ % 2 == 0:
                assert conf.is_symlink() and os.readlink(conf) == str(outside / "etc")
            else:
                assert not conf.is_symlink() and (conf / "passwd").read_text() == f"round {round_ % 4}\n"
                assert (conf / "passwd").stat().st_mode & 0o777 == 0o777
    assert _state(outside) == before


def test_hardlinks_and_fifos_in_the_target_are_replaced_never_written_through(
        env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=300)
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    with env.init() as v:
        v.backup([str(src)])
    target = tmp_path / "target"
    env.cli("restore", "latest", "--target", str(target))
    files = sorted(_files(target / "src"))
    linked = {}
    for i, rel in enumerate(files[::7]):  # files at every depth become links to files outside
        victim = outside / f"file{i % 8}" if i % 2 else outside / "deep" / "er" / f"file{i % 8}"
        (target / "src" / rel).unlink()
        os.link(victim, target / "src" / rel)
        linked[rel] = victim
    for rel in files[3::11]:  # and fifos where files go (opening one would block)
        if rel not in linked:
            (target / "src" / rel).unlink()
            os.mkfifo(target / "src" / rel)
    shutil.rmtree(target / "src" / "d4" / "e1")
    os.mkfifo(target / "src" / "d4" / "e1")  # a fifo where a directory goes
    for mode in ("always", "if-changed", "if-newer"):  # (the outside files' link counts are back)
        env.cli("restore", "latest", "--target", str(target), "--overwrite", mode, timeout=120)
    same_tree(src, target / "src")
    assert _state(outside) == before
    for rel, victim in linked.items():
        assert (target / "src" / rel).stat().st_ino != victim.stat().st_ino


@needs_root
def test_owners_are_set_on_the_new_file_only(env: Env, tmp_path: Path) -> None:
    """As root, restored files get the snapshot's owners through their own descriptors: a
    hardlink planted at the final name to a root-owned set-uid file outside keeps its owner."""
    src = write_tree(tmp_path / "src", small=300)
    for i, p in enumerate(sorted(_files(src).values())):
        os.chown(p, 4000 + i % 3, 5000 + i % 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "su").write_bytes(b"\x7fELF")
    (outside / "su").chmod(0o4755)
    with env.init() as v:
        v.backup([str(src)])
        target = tmp_path / "target"
        v.restore("latest", target)
        before = _state(outside)
        for rel in sorted(_files(target / "src"))[::5]:
            (target / "src" / rel).unlink()
            os.link(outside / "su", target / "src" / rel)
        assert v.restore("latest", target).failed == []
    assert _state(outside) == before
    for rel, p in _files(src).items():
        st, got = p.stat(), (target / "src" / rel).stat()
        assert (got.st_uid, got.st_gid) == (st.st_uid, st.st_gid), rel


def test_leftover_temporary_files_are_removed_and_target_dash_is_refused(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=20)
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    target = tmp_path / "target"
    env.cli("restore", "latest", "--target", str(target))
    left = [target / "src" / ".f0.txt.fh-0123456789abcdef.part", target / "src" / "d1" / ".x.fh-ffffffff00000001.part"]
    for p in left:
        p.write_text("from a killed restore")
    staged = target / "src" / ".d2.fh-0123456789abcdef.part"  # a staged directory, left by a kill
    (staged / "e0").mkdir(parents=True)
    (staged / "e0" / "f2.txt").write_text("half")
    os.symlink("/", staged / "root")  # removed, never followed
    mine = target / "src" / ".notes.fh-draft.part"  # not the pattern: a user's file, kept
    mine.write_text("mine")
    env.cli("restore", "latest", "--target", str(target))
    assert not any(p.exists() for p in left) and not staged.exists() and mine.read_text() == "mine"
    proc = env.cli("restore", "latest", "--target", "-", check=False, cwd=tmp_path)
    assert proc.returncode == 2 and "--target -" in proc.stderr
    assert not (tmp_path / "-").exists()


def test_without_o_tmpfile_files_are_written_under_temporary_names(
        env: Env, tmp_path: Path, tiny_fs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File systems without O_TMPFILE: the named temporary files, renamed when complete, and
    removed when a write fails (here the disk fills up)."""
    monkeypatch.setattr(restore, "HELPER_MIN_FILES", 10**9)
    monkeypatch.setattr(filewriter, "_anonymous", False)
    made: list[bytes] = []
    real = filewriter.temp_name
    monkeypatch.setattr(filewriter, "temp_name", lambda name: made.append(real(name)) or made[-1])
    src = write_tree(tmp_path / "src", small=60)
    (src / "big.bin").write_bytes(os.urandom(1_500_000))
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    with env.init() as v:
        v.backup([str(src)])
        target = tmp_path / "target"
        v.restore("latest", target)
        for rel in sorted(_files(target / "src"))[::4]:  # links out, to be replaced
            (target / "src" / rel).unlink()
            os.symlink(outside / "file1", target / "src" / rel)
        assert v.restore("latest", target).failed == []
        st = v.restore("latest", tiny_fs / "out")
    assert len(made) > 60 and filewriter._anonymous is False  # every file of the second restore
    same_tree(src, target / "src")
    assert _state(outside) == before and not _temps(target)
    failed = dict(st.failed)
    assert failed["src/big.bin"] == "No space left on device"
    _no_half_files(src, tiny_fs / "out", failed)


class _Planting:
    """A progress that, when the restore has prepared its directories, puts something at the
    name of a directory the restore made under a temporary name."""

    def __init__(self, where: Path, what: str, outside: Path) -> None:
        self.where, self.what, self.outside = where, what, outside

    def scanned(self, files: int, size: int) -> None:
        if self.what == "dir":
            (self.where / "mine").mkdir(parents=True)
        else:
            os.symlink(self.outside, self.where)

    def advance(self, size: int) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@pytest.mark.parametrize("what", ["dir", "symlink"])
def test_what_appears_at_a_staged_directorys_name_meanwhile_is_kept(env: Env, tmp_path: Path, what: str) -> None:
    src = write_tree(tmp_path / "src", small=300)
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    target = tmp_path / "target"
    target.mkdir()
    with env.init() as v:
        v.backup([str(src)])
        st = v.restore("latest", target, progress=_Planting(target / "src", what, outside))
    assert [p for p, _ in st.failed] == ["src"]
    assert "cannot move it to its name" in st.failed[0][1]
    staged = _temps(target)
    assert len(staged) == 1 and staged[0].parent == target
    same_tree(src, staged[0])  # restored whole, under the name the failure gives
    assert _state(outside) == before
    if what == "dir":
        assert [p.name for p in (target / "src").iterdir()] == ["mine"]


def test_temp_names_fit_and_match_the_cleanup_pattern() -> None:
    for name in (b"a", b"x" * 255, "é".encode() * 127, b".hidden"):
        tmp = filewriter.temp_name(name)
        assert len(tmp) <= 255 and targetfs.LEFTOVER.fullmatch(tmp) and TEMP.fullmatch(os.fsdecode(tmp))


# -- per-file failures -------------------------------------------------------------------------------

def _damaged_vault(env: Env, tmp_path: Path) -> tuple[Path, set[str]]:
    """A vault with one data pack destroyed on 3 of 5 providers (beyond repair); returns the
    source and the snapshot paths of the files that need that pack."""
    src = write_tree(tmp_path / "src", seed=5, small=400)
    rng = random.Random(5)
    for i in range(4):
        (src / f"big{i}.bin").write_bytes(rng.randbytes(9_000_000))
    with env.init() as v:
        v.backup([str(src)])
        nodes = [(p, n) for p, n in v.ls("latest") if n.type == "file"]
        urls = {p.id: Path(p.url.removeprefix("file://")) for p in v.info().providers}
        data_packs = [r for r in v.packs() if all(b.t == 0 for b in r.blobs)]
        users = {r.id: {p for p, n in nodes if {b.id for b in r.blobs} & set(n.content)} for r in data_packs}
        # the pack that the most files need: small ones (the helper's) and part of a big one
        rec = max(data_packs, key=lambda r: len(users[r.id]))
        for i in (0, 2, 4):
            share = rec.shares[i]
            assert share is not None
            (urls[share.p] / f"data/{rec.id.hex()[:2]}/{rec.id.hex()}.{i}").unlink()
    assert len(users[rec.id]) > 1 and len(users[rec.id]) < len(nodes)
    return src, users[rec.id]


def test_one_pack_beyond_repair_costs_only_its_files(env: Env, tmp_path: Path) -> None:
    src, lost = _damaged_vault(env, tmp_path)
    assert any(p.startswith("src/d") for p in lost)
    with env.open() as v:
        st = v.restore("latest", tmp_path / "out")
    assert {p for p, _ in st.failed} == lost
    assert all(r.startswith("cannot read its data: ") for _, r in st.failed)
    got = _files(tmp_path / "out")
    assert set(got) == {f"src/{k}" for k in _files(src)} - lost
    for rel, p in got.items():
        assert p.read_bytes() == (tmp_path / rel).read_bytes(), rel
    assert not _temps(tmp_path / "out")
    # The command line prints the summary, then each failure, and exits 3.
    proc = env.cli("restore", "latest", "--target", str(tmp_path / "cli"), check=False)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Restored ") and {ln.split(": ", 1)[0] for ln in lines[1:]} >= lost
    assert proc.stderr.strip().splitlines()[-1] == (f"freehold: error: {len(lost)} entries could not be "
                                                      "restored (listed above)")
    proc = env.cli("restore", "latest", "--target", str(tmp_path / "json"), "--json", check=False)
    assert proc.returncode == 3 and {f["path"] for f in json.loads(proc.stdout)["failed"]} == lost


def test_no_data_readable_at_all_is_an_error_not_a_list(env: Env, tmp_path: Path) -> None:
    """Every data pack beyond repair (the trees still readable): the vault cannot give this
    snapshot's data, which is the restore's error (exit 6), not every file's failure."""
    src = write_tree(tmp_path / "src", small=30)
    with env.init() as v:
        v.backup([str(src)])
        urls = {p.id: Path(p.url.removeprefix("file://")) for p in v.info().providers}
        for rec in v.packs():
            if all(b.t == 0 for b in rec.blobs):
                for i in (0, 2, 4):
                    share = rec.shares[i]
                    assert share is not None
                    (urls[share.p] / f"data/{rec.id.hex()[:2]}/{rec.id.hex()}.{i}").unlink()
    proc = env.cli("restore", "latest", "--target", str(tmp_path / "out"), check=False)
    assert proc.returncode == 6, proc.stderr
    assert not _temps(tmp_path / "out")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def _no_half_files(src: Path, out: Path, failed: dict[str, str]) -> None:
    """Every file under its final name is whole; the others are listed; no temporary is left."""
    got = {k: p for k, p in _files(out).items()}
    want = {f"src/{k}" for k in _files(src)}
    assert set(got) | set(failed) == want and not set(got) & set(failed)
    for rel, p in got.items():
        assert p.read_bytes() == (src.parent / rel).read_bytes(), rel
    assert not _temps(out)


@pytest.mark.parametrize("small", [40, 300], ids=["inline", "helper"])
def test_a_full_disk_fails_the_files_that_do_not_fit_and_names_them(
        env: Env, tmp_path: Path, tiny_fs: Path, small: int) -> None:
    src = write_tree(tmp_path / "src", small=small)
    rng = random.Random(3)
    (src / "big.bin").write_bytes(rng.randbytes(1_500_000))      # written here: more than 1 MiB
    (src / "d0" / "mid.bin").write_bytes(rng.randbytes(900_000))  # the helper's, when there is one
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    proc = env.cli("restore", "latest", "--target", str(tiny_fs / "out"), check=False)
    assert proc.returncode == 3, proc.stderr
    failed = dict(ln.split(": ", 1) for ln in proc.stdout.splitlines()[1:] if ": " in ln)
    assert failed.get("src/big.bin") == "No space left on device"
    assert set(failed.values()) == {"No space left on device"}
    _no_half_files(src, tiny_fs / "out", failed)


def test_a_file_size_limit_fails_the_big_file_only(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=300)
    (src / "big.bin").write_bytes(os.urandom(3_000_000))
    env.cli("init", *env.urls)
    env.cli("backup", str(src))

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))

    proc = subprocess.run([sys.executable, "-m", "freehold.cli", "restore", "latest", "--target",
                           str(tmp_path / "out")], env=env.cli_env(), capture_output=True, text=True,
                          preexec_fn=limited, check=False)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout.splitlines()[1:] == ["src/big.bin: File too large"]
    _no_half_files(src, tmp_path / "out", {"src/big.bin": "File too large"})


# -- killed and interrupted restores ------------------------------------------------------------------

def _holders(target: Path) -> bool:
    """Whether any process still has something below ``target`` open (a helper finishing)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(target)):
                    return True
            except OSError:
                pass
    return False


def _settle(target: Path) -> None:
    deadline = time.monotonic() + 30
    while _holders(target):
        assert time.monotonic() < deadline, "a restore's helper kept running"
        time.sleep(0.05)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_sigkill_at_random_points_then_the_same_restore_finishes(env: Env, tmp_path: Path) -> None:
    """Into a new target (directories staged under temporary names) and over an earlier restore
    of an older snapshot (every file replaced in place): after the kill, whatever has its final
    name is a whole file of one snapshot or the other; the same restore again finishes the job."""
    src = write_tree(tmp_path / "src", seed=8, small=3000)
    rng = random.Random(8)
    for i in range(4):
        (src / f"multi{i}.bin").write_bytes(rng.randbytes(3 * 2**20 + i))
    env.cli("init", *env.urls)
    older = env.cli("backup", str(src)).stdout.split()[-1]
    shutil.copytree(src, tmp_path / "older" / "src", symlinks=True)
    for p in sorted(_files(src).values())[::2]:
        p.write_bytes(p.read_bytes() + b" and later")
    env.cli("backup", str(src))
    cmd = [sys.executable, "-m", "freehold.cli", "restore", "latest", "--target"]
    took = []  # kill moments scale with how long a whole restore takes here (the faster of two)
    for whole in ("whole1", "whole2"):
        started = time.perf_counter()
        subprocess.run([*cmd, str(tmp_path / whole)], env=env.cli_env(), check=True, capture_output=True)
        took.append(time.perf_counter() - started)
        same_tree(src, tmp_path / whole / "src")
    killed = 0
    # Trials go on until six kills have landed in a running restore (at most 14): on a loaded
    # machine a kill may come before the target exists or after the restore ended.
    for trial in range(14):
        if killed >= 6:
            break
        target = tmp_path / f"t{trial}"
        if trial % 2:
            env.cli("restore", older, "--target", str(target))
        proc = subprocess.Popen([*cmd, str(target)], env=env.cli_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.1, 0.75) * min(took))
        proc.send_signal(signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL and target.exists()
        _settle(target)
        if target.exists():
            for rel, p in _files(target).items():  # whatever has its final name is whole
                if not any(TEMP.fullmatch(part) for part in Path(rel).parts):
                    assert p.read_bytes() in ((tmp_path / rel).read_bytes(),
                                              (tmp_path / "older" / rel).read_bytes()), (trial, rel)
        env.cli("restore", "latest", "--target", str(target))
        same_tree(src, target / "src")
        assert not _temps(target), trial
    assert killed >= 3, f"kills must land in a running restore ({killed} of {trial + 1})"


def _writing(pid: int, target: Path) -> bool:
    """Whether the process has a file below ``target`` open (one it is writing)."""
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if (os.readlink(f"/proc/{pid}/fd/{fd}").startswith(f"{target}/")
                    and stat.S_ISREG(os.stat(f"/proc/{pid}/fd/{fd}").st_mode)):
                return True
    except OSError:
        pass
    return False


SLOW_READS = """
import time
from freehold.providers.local import LocalProvider
get = LocalProvider.get
def slow(self, name, start=None, end=None):
    if start is not None:
        time.sleep(0.2)
    return get(self, name, start, end)
LocalProvider.get = slow
from freehold.cli import main
main()
"""


@pytest.mark.parametrize("small", [30, 400], ids=["inline", "helper"])
def test_ctrl_c_leaves_no_temporary_and_no_half_file(env: Env, tmp_path: Path, small: int) -> None:
    src = write_tree(tmp_path / "src", small=small)
    for i in range(6):
        (src / f"big{i}.bin").write_bytes(os.urandom(6_000_000))
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    target = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_READS, "restore", "latest", "--target", str(target)],
                            env=env.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not _writing(proc.pid, target):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole foreground group
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    _settle(target)
    assert not _temps(target)
    for rel, p in _files(target).items():
        assert p.read_bytes() == (tmp_path / rel).read_bytes(), rel


# -- selection, --overwrite, --delete ----------------------------------------------------------------

def _restored(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink()}


def test_includes_and_excludes(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=60)
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    every = {f"src/{p}" for p in _restored(src)}

    def run(*args: str) -> set[str]:
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        env.cli("restore", "latest", "--target", str(out), *args)
        return _restored(out)

    two = run("--include", "src/d1", "--include", "src/d3/e0")
    assert two == {p for p in every if p.startswith(("src/d1/", "src/d3/e0/"))} and len(two) > 4
    assert run("--include", f"{src}/d2", "--include", str(src / "one")) == {
        p for p in every if p.startswith("src/d2/") or p == "src/one"}
    assert run("--include", "*.sh", "--include", f"{src}/deep/*/b") == {"src/tool.sh", "src/deep/a/b/c/d/leaf"}
    assert run("--exclude", "src/d0", "--exclude", "*.txt") == {
        p for p in every if not p.startswith("src/d0/") and not p.endswith(".txt")}
    assert run("--include", "src/d1", "--exclude", f"{src}/d1/e1") == {
        p for p in every if p.startswith("src/d1/") and not p.startswith("src/d1/e1/")}
    proc = env.cli("restore", "latest", "--target", str(tmp_path / "x"), "--include", "src/nope", check=False)
    assert proc.returncode == 2 and "not in this snapshot" in proc.stderr


def _mutated(env: Env, tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    src = write_tree(tmp_path / "src", small=30)
    with env.init() as v:
        v.backup([str(src)])
        base = tmp_path / "base"
        v.restore("latest", base)
    t = base / "src"
    changed: dict[str, bytes] = {}

    def put(rel: str, data: bytes, mtime: int | None) -> None:
        old = (t / rel).stat()
        (t / rel).write_bytes(data)
        os.utime(t / rel, ns=(old.st_atime_ns, old.st_mtime_ns if mtime is None else mtime))
        changed[rel] = data

    one = (src / "one").read_bytes()
    put("one", bytes([one[0] ^ 1]) + one[1:], None)            # same size and mtime: changed unseen
    put("d0/e0/f0.txt", b"grown " * 100, None)                  # size differs, mtime the snapshot's
    put("tool.sh", b"newer\n", time.time_ns() + 10**12)       # newer than the snapshot
    put("d1/e1/f1.txt", b"older\n", 1_000_000_000)               # older than the snapshot
    return src, base, changed


@pytest.mark.parametrize("mode", ["always", "if-changed", "if-newer", "never"])
def test_overwrite_modes(env: Env, tmp_path: Path, mode: str) -> None:
    src, base, changed = _mutated(env, tmp_path)
    kept = {"always": set(), "if-changed": {"one"}, "if-newer": {"one", "tool.sh", "d0/e0/f0.txt"},
            "never": set(changed)}[mode]
    with env.open() as v:
        st = v.restore("latest", base, options=RestoreOptions(overwrite=mode))
    assert st.failed == []
    for rel, data in changed.items():
        want = data if rel in kept else (src / rel).read_bytes()
        assert (base / "src" / rel).read_bytes() == want, (mode, rel)
    entries = sum(1 for p in src.rglob("*") if not p.is_dir() or p.is_symlink())
    assert st.kept == {"always": 0, "if-changed": entries - 3, "if-newer": entries - 1, "never": entries}[mode]
    with env.open() as v, pytest.raises(UsageError):
        v.restore("latest", base, options=RestoreOptions(overwrite="sometimes"))


def test_delete_removes_only_what_the_restored_directories_should_not_hold(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=30)
    outside = _outside(tmp_path / "outside")
    before = _state(outside)
    with env.init() as v:
        v.backup([str(src)])
    target = tmp_path / "target"
    env.cli("restore", "latest", "--target", str(target))
    extras = [target / "src" / "extra.txt", target / "src" / "d0" / "more" / "deep" / "x", target / "beside",
              target / "src" / "d2" / "e2" / "old.txt"]
    for p in extras:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("not in the snapshot")
    os.symlink(outside, target / "src" / "d1" / "out")      # a link out: removed, never followed
    os.symlink(outside / "etc" / "passwd", target / "src" / "d3" / "pw")
    os.mkfifo(target / "src" / "d4" / "fifo")
    env.cli("restore", "latest", "--target", str(target))  # without --delete nothing goes
    assert all(p.exists() for p in extras) and (target / "src" / "d1" / "out").is_symlink()
    proc = env.cli("restore", "latest", "--target", str(target), "--include", "src/d2", "--delete", "--json")
    assert json.loads(proc.stdout)["deleted"] == 1 and not extras[3].exists()
    assert all(p.exists() for p in extras[:3])   # outside the restored directories: kept
    proc = env.cli("restore", "latest", "--target", str(target), "--delete", "--json")
    assert json.loads(proc.stdout)["deleted"] == 6
    same_tree(src, target / "src")
    assert sorted(p.name for p in target.iterdir()) == ["src"]
    assert _state(outside) == before


# -- metadata ----------------------------------------------------------------------------------------

def _tool(*args: str) -> str:
    if not shutil.which(args[0]):
        pytest.skip(f"{args[0]} is not installed (make tools)")
    out = subprocess.run(list(args), capture_output=True, text=True, check=True).stdout
    return "\n".join(ln for ln in out.splitlines() if not ln.startswith("# file:"))


def test_new_files_get_owner_mode_xattrs_holes_and_times_through_their_descriptor(tmp_path: Path) -> None:
    """filewriter's own part, on hand-made metadata: what the helper and this process do."""
    acl_src = tmp_path / "acl"
    acl_src.write_text("")
    if subprocess.run(["setfacl", "-m", "u:1234:rwx,m::rwx", str(acl_src)], capture_output=True).returncode:
        pytest.skip("no setfacl, or no ACLs on this file system")
    acl = os.getxattr(acl_src, "system.posix_acl_access")
    mode = stat.S_IMODE(acl_src.stat().st_mode) | 0o4000  # a mode as recorded: its group bits are the mask
    root = tmp_path / "root"
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = b"head" + bytes(3 * filewriter.HOLE + 123) + b"tail" + bytes(64 * filewriter.HOLE)
        warn = filewriter.create(fd, b"f", mode, 1_600_000_000_123_456_789, [data[:5000], data[5000:]],
                                 atime=1_700_000_000_987_654_321, uid=1234 if ROOT else -1, gid=5678 if ROOT else -1,
                                 xattrs=[(b"system.posix_acl_access", acl), (b"user.comment", b"hello")],
                                 flags=filewriter.SPARSE)
    finally:
        os.close(fd)
    f = root / "f"
    st = f.stat()
    assert warn == [] and st.st_size == len(data)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_700_000_000_987_654_321, 1_600_000_000_123_456_789)
    assert st.st_blocks * 512 < len(data) // 2  # holes
    assert stat.S_IMODE(st.st_mode) == mode and os.getxattr(f, "user.comment") == b"hello"
    assert os.getxattr(f, "system.posix_acl_access") == acl
    if ROOT:
        assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert f.read_bytes() == data and sorted(os.listdir(root)) == ["f"]


def test_owners_map_by_name_first() -> None:
    owners = targetfs.Owners()
    assert owners.uid("root", 4321) == 0 and owners.gid("root", 4321) == 0
    assert owners.uid("no-such-user-freehold", 4321) == 4321 and owners.gid("no-such-group-freehold", 9) == 9
    assert owners.uid("", None) == -1


def _stat_line(p: Path, fmt: str) -> str:
    return subprocess.run(["stat", "-c", fmt, str(p)], capture_output=True, text=True, check=True).stdout


def test_metadata_round_trip(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "plain").write_text("plain")
    with env.init() as v:
        v.backup([str(src)])
        if dict(v.ls("latest"))["src/plain"].meta is None:
            pytest.skip("backup does not record metadata yet")
    (src / "plain").chmod(0o640)
    (src / "owned").write_text("owned")
    (src / "named").write_text("named")
    (src / "xattr").write_text("x")
    os.setxattr(src / "xattr", "user.comment", b"hello \x00 world")
    (src / "acl").write_text("acl")
    _tool("setfacl", "-m", "u:1234:rwx,g:5678:r-x", str(src / "acl"))
    _tool("setfacl", "-d", "-m", "u:1234:rwx", str(src / "sub"))
    (src / "h1").write_text("one inode")
    os.link(src / "h1", src / "sub" / "h2")
    with open(src / "sparse", "wb") as f:
        f.truncate(8 * 2**20)
        f.seek(2**20)
        f.write(b"data in the middle")
        f.seek(8 * 2**20 - 5)
        f.write(b"end\n\n")
    os.mkfifo(src / "fifo", 0o620)
    if ROOT:
        os.chown(src / "owned", 1234, 5678)
        os.chown(src / "named", 1, 1)  # names that exist here (daemon, or bin): mapped by name
        os.mknod(src / "null", stat.S_IFCHR | 0o644, os.stat("/dev/null").st_rdev)
    names = [p.name for p in src.iterdir() if not p.is_dir()] + ["sub/h2"]
    for i, name in enumerate(sorted(names)):
        if name != "fifo":
            os.utime(src / name, ns=(1_700_000_000_000_000_001 + i, 1_600_000_000_000_000_003 + i))
    os.utime(src / "fifo", ns=(1_700_000_000_000_000_999, 1_600_000_000_000_000_999))
    shown = {n: _stat_line(src / n, "%u %g %a %F %x %y") for n in names}
    with env.open() as v:
        v.backup([str(src)])
        st = v.restore("latest", tmp_path / "out")
    out = tmp_path / "out" / "src"
    assert st.failed == [] and st.hardlinks == 1 and st.specials == (2 if ROOT else 1)
    assert {n: _stat_line(out / n, "%u %g %a %F %x %y") for n in names} == shown
    assert _stat_line(out / "sub", "%u %g %a %y") == _stat_line(src / "sub", "%u %g %a %y")
    for n in ("xattr", "acl", "sub"):
        assert _tool("getfattr", "-d", "-m", "-", "--absolute-names", str(out / n)) == \
            _tool("getfattr", "-d", "-m", "-", "--absolute-names", str(src / n))
        assert _tool("getfacl", "-p", str(out / n)) == _tool("getfacl", "-p", str(src / n))
    assert (out / "h1").stat().st_ino == (out / "sub" / "h2").stat().st_ino
    assert (out / "h1").stat().st_nlink == 2
    apparent, used = (int(_tool("du", *flags, "-B1", str(out / "sparse")).split()[0])
                      for flags in (["--apparent-size"], []))
    assert apparent == 8 * 2**20 and used < apparent // 4
    assert (out / "sparse").read_bytes() == (src / "sparse").read_bytes()
    assert stat.S_ISFIFO((out / "fifo").lstat().st_mode)
    if ROOT:
        assert (out / "null").lstat().st_rdev == os.stat("/dev/null").st_rdev
        assert stat.S_ISCHR((out / "null").lstat().st_mode)

