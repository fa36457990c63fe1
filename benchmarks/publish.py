#!/usr/bin/env python3
"""Benchmark UnixFS import: the IPFS reference importer (npm ipfs-unixfs-importer 17.1.1, run by
freehold.testing.jsref's harness, no CAR) against ``freehold.unixfs.import_file`` on the same
random file on the same disk.

Freehold reads the file in 1 MiB reads and computes every block (hashes, dag-pb nodes); the
blocks are discarded, or with ``--car`` also written to a CAR (on the same disk). The file is
read once before timing so both start from the page cache. Prints each timing, the medians and
the ratio JS / Freehold (above 1: Freehold is faster), and checks the two root CIDs agree.

    .venv/bin/python benchmarks/publish.py                       # 1 GiB, unixfs-v1-2025, 3 repeats
    .venv/bin/python benchmarks/publish.py --profile unixfs-v0-2015 --size-mib 256 --repeat 1 --car
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from freehold.testing import jsref  # noqa: E402
from freehold.unixfs import PROFILES, cid_str, import_file, write_car  # noqa: E402

READ = 1 << 20


def make_file(path: Path, size: int, seed: int) -> None:
    """Random content (AES-CTR-like keystream from os.urandom-seeded blocks; fast to make)."""
    if path.is_file() and path.stat().st_size == size:
        return
    import hashlib
    block = hashlib.shake_256(seed.to_bytes(8, "little")).digest(READ)
    with open(path, "wb") as out:
        written, i = 0, 0
        while written < size:
            n = min(READ, size - written)
            # vary each MiB so no two leaves share a CID
            out.write(i.to_bytes(8, "little") + block[8:n] if n > 8 else block[:n])
            written += n
            i += 1


def chunks(path: Path):
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(READ):
            yield piece


def run_freehold(path: Path, profile_name: str, car: Path | None) -> tuple[float, str]:
    profile = PROFILES[profile_name]
    start = time.perf_counter()
    if car is None:
        root = b""
        for block in import_file(chunks(path), profile):
            root = block.cid
    else:
        blocks = import_file(chunks(path), profile)
        held: list = []

        def tee():
            for b in blocks:
                held[:] = [b]
                yield b
        with open(car, "wb") as out:
            # the root is known only at the end: write with a placeholder root, then patch it
            # (same length for a given profile), as a streaming CAR writer does
            placeholder = b"\x12\x20" + bytes(32) if profile.cid_version == 0 else b"\x01\x70\x12\x20" + bytes(32)
            write_car([placeholder], tee(), out)
        root = held[0].cid
        with open(car, "r+b") as out:
            import io
            head = io.BytesIO()
            write_car([root], [], head)
            out.write(head.getvalue())
    return time.perf_counter() - start, cid_str(root)


def run_js(path: Path, profile_name: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = jsref.reference_import(path, profile_name, None)
    return time.perf_counter() - start, result["root"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=sorted(PROFILES), default="unixfs-v1-2025")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--car", action="store_true", help="Freehold also writes a CAR to the work folder")
    ap.add_argument("--work", type=Path, default=ROOT / "bench-work" / "publish")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"random-{args.size_mib}MiB-{args.seed}.bin"
    make_file(data, args.size_mib * READ, args.seed)
    jsref.ensure_installed()
    for _ in chunks(data):      # warm the page cache
        pass
    print(f"file {data} ({args.size_mib} MiB), profile {args.profile}, cpus {os.cpu_count()}")
    js_times, fh_times = [], []
    roots = set()
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        car = Path(tmp) / "out.car" if args.car else None
        for i in range(args.repeat):
            t, root = run_js(data, args.profile)
            js_times.append(t)
            roots.add(root)
            print(f"  run {i + 1}: js reference {t:7.2f} s  ({args.size_mib / t:7.1f} MiB/s)  {root}")
            t, root = run_freehold(data, args.profile, car)
            fh_times.append(t)
            roots.add(root)
            print(f"  run {i + 1}: freehold     {t:7.2f} s  ({args.size_mib / t:7.1f} MiB/s)  {root}"
                  + ("  (+ CAR)" if car else ""))
    js, fh = statistics.median(js_times), statistics.median(fh_times)
    print(f"median: js reference {js:.2f} s, freehold {fh:.2f} s; ratio js/freehold {js / fh:.2f}")
    if len(roots) != 1:
        print(f"ROOT CIDS DIFFER: {sorted(roots)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
