#!/usr/bin/env python3
"""Benchmark ``freehold publish`` of one large random file against the IPFS reference importer.

Freehold: the whole command, ``freehold publish FILE`` into a fresh 3-of-5 vault over five local
directories (temp folders under ``--work``, on the same disk as the data): the backup (chunking,
hashing, compression, encryption, erasure coding, five share writes), then the UnixFS DAG
computed from the vault's stored copy (every chunk read back, authenticated and decoded), then
the record. The reference: npm's ``ipfs-unixfs-importer`` (``tests/js/jsref/import.mjs``, the
harness of :mod:`freehold.testing.jsref`, without a CAR) on the same file with the same
profile, which only reads the file and hashes it. Both must print the same root CID.

Unless ``--no-breakdown``, two more timings split Freehold's figure: ``freehold backup`` of the
file into another fresh vault, and ``freehold publish SNAPSHOT:PATH`` of it there (the DAG from
the vault's content and the record, no backup); then one in-process run times the phases
(opening the vault, the backup, reading the file back from the vault alone, the DAG from the
vault, the DAG from the local file). ``--cprofile FILE`` runs one more publish in-process under
cProfile and prints its top functions (the main thread's).

    .venv/bin/python benchmarks/publish_vault.py                 # 1 GiB, --repeat 3
    .venv/bin/python benchmarks/publish_vault.py --size 256M --repeat 1 --cprofile /tmp/pub.prof
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO_ROOT / ".venv" / "bin" / "python"
PASS = "benchmark passphrase"
MIB = 1024 * 1024


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_data(path: Path, size: int) -> None:
    if path.is_file() and path.stat().st_size == size:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(left, 16 * MIB)
            f.write(os.urandom(n))
            left -= n
    tmp.replace(path)


class Vaults:
    """Fresh vaults (home + five provider folders) under one temp folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def new(self) -> dict[str, str]:
        self.count += 1
        base = self.root / f"vault{self.count}"
        provs = [base / f"p{i}" for i in range(1, 6)]
        for p in provs:
            p.mkdir(parents=True)
        env = {**os.environ, "FREEHOLD_HOME": str(base / "home"), "FREEHOLD_PASSPHRASE": PASS}
        run([str(VENV_PYTHON), "-m", "freehold.cli", "init", "--k", "3", "--n", "5",
             *[p.as_uri() for p in provs]], env)
        return env

    def drop(self, env: dict[str, str]) -> None:
        shutil.rmtree(Path(env["FREEHOLD_HOME"]).parent, ignore_errors=True)


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def reference(path: Path, profile: str) -> tuple[float, str]:
    from freehold.testing import jsref

    home = jsref.ensure_installed()
    t, out = run(["node", str(home / "import.mjs"), "--profile", profile, str(path)])
    return t, json.loads(out.strip().splitlines()[-1])["root"]


def cprofile(vaults: Vaults, data: Path, profile: str, out: Path) -> None:
    import cProfile
    import pstats

    env = vaults.new()
    os.environ.update(FREEHOLD_HOME=env["FREEHOLD_HOME"], FREEHOLD_PASSPHRASE=PASS)
    from freehold.vault import Vault

    prof = cProfile.Profile()
    with Vault.open(PASS) as v:
        prof.enable()
        v.publish(str(data), profile=profile)
        prof.disable()
    prof.dump_stats(str(out))
    stats = pstats.Stats(str(out))
    print("\ncProfile of one in-process publish (main thread; worker threads are not profiled), by tottime:")
    stats.sort_stats("tottime").print_stats(15)
    vaults.drop(env)


def phases(vaults: Vaults, data: Path, profile: str) -> dict[str, float]:
    """In-process, one of each: where a publish's time goes (the vault's private parts are used
    here to time the DAG's two halves separately)."""
    from freehold.jobs import publish as publish_job
    from freehold.unixfs import PROFILES, import_path
    from freehold.vault import Vault

    env = vaults.new()
    os.environ.update(FREEHOLD_HOME=env["FREEHOLD_HOME"], FREEHOLD_PASSPHRASE=PASS)
    out: dict[str, float] = {}
    t = time.perf_counter()
    with Vault.open(PASS) as v:
        out["open the vault (passphrase KDF, index)"] = time.perf_counter() - t
        t = time.perf_counter()
        sid, snap, _ = v.backup([str(data)])
        out["backup"] = time.perf_counter() - t
        op = v._op()
        _, node = publish_job.find(op, snap, sid, str(data))
        ref = publish_job.FileRef.of(op, node)
        t = time.perf_counter()
        for _ in publish_job.file_pieces(op, ref):
            pass
        out["read back from the vault only (no hashing)"] = time.perf_counter() - t
        t = time.perf_counter()
        publish_job.build(op, node, PROFILES[profile])
        out["DAG from the vault (read back + hash)"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in import_path(data, PROFILES[profile]):
        pass
    out["DAG from the local file (freehold.unixfs)"] = time.perf_counter() - t
    vaults.drop(env)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="file size (1G, 256M, ...); default 1G")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", default="unixfs-v1-2025", help="UnixFS profile (both sides)")
    ap.add_argument("--work", type=Path, default=REPO_ROOT / "bench-work" / "publish",
                    help="data and temp vaults go here (same disk); default bench-work/publish")
    ap.add_argument("--no-breakdown", action="store_true", help="time only the whole publish and the reference")
    ap.add_argument("--cprofile", type=Path, default=None, help="also profile one in-process publish into FILE")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()
    if Path(sys.executable).resolve() != VENV_PYTHON.resolve() and VENV_PYTHON.exists():
        os.execv(str(VENV_PYTHON), [str(VENV_PYTHON), *sys.argv])
    size = parse_size(args.size)
    data = args.work / f"random-{size}.bin"
    make_data(data, size)
    times: dict[str, list[float]] = {"freehold publish FILE": [], "reference importer": []}
    if not args.no_breakdown:
        times["  of which: freehold backup FILE"] = []
        times["  of which: freehold publish SNAP:PATH"] = []
    cids: set[str] = set()
    with tempfile.TemporaryDirectory(dir=args.work, prefix="vaults-") as tmp:
        vaults = Vaults(Path(tmp))
        for i in range(args.repeat):
            env = vaults.new()
            t, out = run([str(VENV_PYTHON), "-m", "freehold.cli", "publish", str(data), "--profile", args.profile,
                          "--json"], env)
            res = json.loads(out)
            cids.add(res["cid"])
            times["freehold publish FILE"].append(t)
            vaults.drop(env)
            t, root = reference(data, args.profile)
            cids.add(root)
            times["reference importer"].append(t)
            if not args.no_breakdown:
                env = vaults.new()
                t, out = run([str(VENV_PYTHON), "-m", "freehold.cli", "backup", str(data)], env)
                times["  of which: freehold backup FILE"].append(t)
                sid = out.strip().splitlines()[-1]
                t, out = run([str(VENV_PYTHON), "-m", "freehold.cli", "publish", f"{sid}:{data}",
                              "--profile", args.profile, "--json"], env)
                cids.add(json.loads(out)["cid"])
                times["  of which: freehold publish SNAP:PATH"].append(t)
                vaults.drop(env)
            print(f"repeat {i + 1}/{args.repeat}: " + ", ".join(f"{k.strip()} {v[-1]:.2f}s" for k, v in times.items()),
                  file=sys.stderr)
        split = {} if args.no_breakdown else phases(vaults, data, args.profile)
        if args.cprofile is not None:
            cprofile(vaults, data, args.profile, args.cprofile)
    if len(cids) != 1:
        raise SystemExit(f"the CIDs differ: {sorted(cids)}")
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["freehold publish FILE"] / med["reference importer"]
    print(f"\n{size / MIB:.0f} MiB random file, profile {args.profile}, k=3 n=5 over local folders, "
          f"median of {args.repeat}; root {cids.pop()}")
    for k, v in med.items():
        print(f"{k:40s} {v:8.2f} s  {size / v / 1e6:8.1f} MB/s   (runs: {', '.join(f'{x:.2f}' for x in times[k])})")
    print(f"{'ratio freehold / reference':40s} {ratio:8.2f}")
    if split:
        print("\nin-process, one run each:")
        for k, v in split.items():
            print(f"  {k:50s} {v:6.2f} s")
    if args.json is not None:
        summary: dict[str, Any] = {"size": size, "profile": args.profile, "repeat": args.repeat, "times": times,
                                   "medians": med, "ratio": ratio, "in_process": split}
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
