#!/usr/bin/env python3
"""Benchmark ``freehold publish`` of one large random file against the IPFS reference importer.

Freehold: the whole command, ``freehold publish FILE`` into a fresh 3-of-5 vault over five local
directories (temp folders under ``--work``, on the same disk as the data): the backup (chunking,
hashing, compression, encryption, erasure coding, five share writes), then the UnixFS DAG
computed from the vault's stored copy (every chunk read back, authenticated and decoded), then
the record. The reference: npm's ``ipfs-unixfs-importer`` (``tests/js/jsref/import.mjs``, the
harness of :mod:`freehold.testing.jsref`, without a CAR) on the same file with the same
profile, which only reads the file and hashes it. Both must print the same root CID.
``freehold publish FILE`` computes a local regular file's DAG from the file while the backup
runs (freehold.jobs.publish_local); each run checks (from the command's debug log) that it did.
"freehold publish FILE, vault path" is the same command on the same file with its mtime set to
now just before (a file modified less than 2 s ago is not trusted to be what the backup read),
so its DAG is computed from the vault's copy, as every publish did before the local path
(the mtime is put back after).

Side by side, like with like, on the same file and disk (medians of ``--repeat``):

(a) DAG only: ``freehold.unixfs.import_file`` on the local file vs the reference importer (the
    code of benchmarks/publish.py, ``run_freehold`` and ``run_js``);
(b) store and identify: ``freehold publish FILE`` (encrypts, erasure-codes 3-of-5, writes and
    fsyncs five shares, computes the DAG, writes the record) vs the reference importer writing
    every block into a filesystem blockstore (npm ``blockstore-fs``, what ``ipfs add`` does;
    ``import.mjs --blockstore DIR``, a fresh DIR under ``--work``), fsyncing its files and
    folders at the end.

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
import importlib.util
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
# The CLI with freehold.jobs.publish_local's debug log on stderr (which way the DAG was computed).
CLI = [str(VENV_PYTHON), "-c",
       "import logging, runpy, sys; h = logging.StreamHandler(sys.stderr); "
       "lg = logging.getLogger('freehold.jobs.publish_local'); lg.addHandler(h); lg.setLevel(logging.DEBUG); "
       "sys.argv[0] = 'freehold'; runpy.run_module('freehold.cli', run_name='__main__', alter_sys=True)"]
LOCAL_USED = "the DAG computed from the local file is used"
VAULT_USED = "the DAG is computed from the vault"


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
    elapsed, out, _ = run_full(cmd, env)
    return elapsed, out


def run_full(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout, proc.stderr


def publish_file(env: dict[str, str], data: Path, profile: str, expect: str) -> tuple[float, str]:
    """``freehold publish FILE --json``: (seconds, CID), checking which way its DAG went."""
    t, out, err = run_full([*CLI, "publish", str(data), "--profile", profile, "--json"], env)
    if expect not in err:
        raise SystemExit(f"freehold publish did not say {expect!r}:\n{err}")
    return t, json.loads(out)["cid"]


def dag_only_code() -> Any:
    """benchmarks/publish.py, for its run_freehold and run_js (the DAG-only comparison)."""
    spec = importlib.util.spec_from_file_location("publish_bench", Path(__file__).with_name("publish.py"))
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def reference_blockstore(path: Path, profile: str, store: Path) -> tuple[float, str]:
    """The reference importer storing its blocks in a blockstore-fs at ``store`` (fsynced)."""
    from freehold.testing import jsref

    home = jsref.ensure_installed()
    t, out = run(["node", str(home / "import.mjs"), "--profile", profile, "--blockstore", str(store), str(path)])
    res = json.loads(out.strip().splitlines()[-1])
    if res.get("blockstore") != str(store):
        raise SystemExit(f"the reference did not use the blockstore: {res}")
    return t, res["root"]


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
    from freehold.jobs import publish_local
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
    env = vaults.new()
    os.environ.update(FREEHOLD_HOME=env["FREEHOLD_HOME"], FREEHOLD_PASSPHRASE=PASS)
    with Vault.open(PASS) as v:
        taken = publish_local.TALLY.local
        t = time.perf_counter()
        v.publish(str(data), profile=profile)
        out["publish FILE (backup, and the DAG from the file meanwhile)"] = time.perf_counter() - t
        if publish_local.TALLY.local != taken + 1:
            raise SystemExit(f"the in-process publish did not take the local path: {publish_local.TALLY}")
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
    side: dict[str, list[float]] = {"fh_vault": [], "fh_dag": [], "js_dag": [], "js_store": []}
    code = dag_only_code()
    st = data.stat()
    old = time.time_ns() - 3600 * 10**9
    if st.st_mtime_ns > old:         # not "modified just now" (publish_local.RACY_NS)
        os.utime(data, ns=(st.st_atime_ns, old))
    cids: set[str] = set()
    with tempfile.TemporaryDirectory(dir=args.work, prefix="vaults-") as tmp:
        vaults = Vaults(Path(tmp))
        for i in range(args.repeat):
            env = vaults.new()
            t, cid = publish_file(env, data, args.profile, LOCAL_USED)
            cids.add(cid)
            times["freehold publish FILE"].append(t)
            vaults.drop(env)
            t, root = reference(data, args.profile)
            cids.add(root)
            times["reference importer"].append(t)
            env = vaults.new()
            st = data.stat()
            os.utime(data)                                     # mtime now: the vault path
            try:
                t, cid = publish_file(env, data, args.profile, VAULT_USED)
            finally:
                os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
            cids.add(cid)
            side["fh_vault"].append(t)
            vaults.drop(env)
            t, cid = code.run_freehold(data, args.profile, None)
            cids.add(cid)
            side["fh_dag"].append(t)
            t, cid = code.run_js(data, args.profile)
            cids.add(cid)
            side["js_dag"].append(t)
            store = Path(tmp) / f"blockstore-{i}"
            t, cid = reference_blockstore(data, args.profile, store)
            cids.add(cid)
            side["js_store"].append(t)
            shutil.rmtree(store)
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
            print(f"repeat {i + 1}/{args.repeat}: " + ", ".join(f"{k.strip()} {v[-1]:.2f}s" for k, v in
                                                               [*times.items(), *side.items()]), file=sys.stderr)
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
    sm = {k: statistics.median(v) for k, v in side.items()}
    fh = med["freehold publish FILE"]

    def line(label: str, v: float, runs: list[float]) -> None:
        print(f"  {label:56s} {v:7.2f} s  {size / v / 1e6:8.1f} MB/s   (runs: {', '.join(f'{x:.2f}' for x in runs)})")

    print("\nold vs new: freehold publish FILE")
    line("vault path (DAG read back from the vault; as before)", sm["fh_vault"], side["fh_vault"])
    line("local path (DAG from the file during the backup)", fh, times["freehold publish FILE"])
    print(f"  {'speed-up vault path / local path':56s} {sm['fh_vault'] / fh:7.2f}")
    print("\n(a) DAG only, local file -> root CID")
    line("freehold.unixfs.import_file (benchmarks/publish.py)", sm["fh_dag"], side["fh_dag"])
    line("reference importer (benchmarks/publish.py)", sm["js_dag"], side["js_dag"])
    print(f"  {'ratio freehold / reference':56s} {sm['fh_dag'] / sm['js_dag']:7.2f}")
    print("\n(b) store and identify: content on disk, fsynced, and its CID")
    line("freehold publish FILE (encrypt, 3-of-5, 5 shares, DAG)", fh, times["freehold publish FILE"])
    line("reference importer into blockstore-fs (fsynced)", sm["js_store"], side["js_store"])
    print(f"  {'ratio freehold / reference':56s} {fh / sm['js_store']:7.2f}")
    if split:
        print("\nin-process, one run each:")
        for k, v in split.items():
            print(f"  {k:50s} {v:6.2f} s")
    if args.json is not None:
        summary: dict[str, Any] = {"size": size, "profile": args.profile, "repeat": args.repeat, "times": times,
                                   "medians": med, "ratio": ratio, "in_process": split, "side_by_side": side,
                                   "side_by_side_medians": sm}
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
