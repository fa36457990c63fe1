"""A file larger than 1 GiB round-trips byte-exact, streamed with flat memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .conftest import Env

GiB = 2**30


def _write_random(path: Path, size: int, seed: int) -> str:
    """Incompressible, non-repeating bytes (AES-CTR keystream), fast to make; returns the sha256."""
    enc = Cipher(algorithms.AES(seed.to_bytes(32, "big")), modes.CTR(bytes(16))).encryptor()
    zero = bytes(8 * 2**20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = enc.update(zero[: min(left, len(zero))])
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * 2**20):
            h.update(block)
    return h.hexdigest()


def _peak_rss_mib(env: Env, *args: str) -> tuple[float, str]:
    """Run the CLI in a fresh process and return its peak RSS (MiB) and stdout."""
    probe = ("import resource, subprocess, sys; "
             "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(p.stderr); print(p.stdout); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(p.returncode)")
    proc = subprocess.run([sys.executable, "-c", probe, sys.executable, "-m", "freehold.cli", *args],
                          env=env.cli_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    *body, rss = proc.stdout.strip().splitlines()
    return int(rss) / 1024, "\n".join(body)


def test_file_over_1_gib_round_trips_with_flat_memory(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    small = tmp_path / "small"
    small.mkdir()
    _write_random(small / "f.bin", 64 * 2**20, seed=1)
    rss_small, _ = _peak_rss_mib(env, "backup", str(small))

    big = tmp_path / "big"
    big.mkdir()
    digest = _write_random(big / "huge.bin", GiB + 12_345_678, seed=2)
    rss_big, out = _peak_rss_mib(env, "backup", str(big), "--json")
    sid = json.loads(out)["snapshot"]
    rss_restore, _ = _peak_rss_mib(env, "restore", sid, "--target", str(tmp_path / "out"))
    os.unlink(big / "huge.bin")  # keep the disk footprint down before hashing the restore
    assert _sha256(tmp_path / "out" / "big" / "huge.bin") == digest
    # Memory is bounded by the pipeline's queues, not by the input: 16x the input adds little.
    assert rss_big < 300, rss_big
    assert rss_big < rss_small + 64, (rss_small, rss_big)
    assert rss_restore < 300, rss_restore
