"""Crash safety: backups killed with SIGKILL at random moments never damage earlier snapshots."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from .conftest import Env, same_tree, write_tree

TRIALS = 24


def test_sigkill_during_backup_never_damages_earlier_snapshots(env: Env, tmp_path: Path) -> None:
    rng = random.Random(2026)
    src = write_tree(tmp_path / "src", small=150, big=4_000_000)
    with env.init() as v:
        first, _, _ = v.backup([str(src)])
    reference = tmp_path / "reference"
    with env.open() as v:
        v.restore(first, reference)
    completed = [first]
    # Kill moments are scaled to how long a backup takes here (start-up plus new data): fixed
    # delays stopped hitting running backups once backups got faster. Every fourth backup runs to
    # the end; its time scales the next kills, and it bounds the work that killed backups leave
    # for later ones to redo.
    took = 0.0
    killed_mid_run = 0
    for trial in range(TRIALS):
        # New data every trial so that each backup has shares, index and a snapshot to write.
        (src / f"new-{trial}.bin").write_bytes(rng.randbytes(rng.choice([32, 64, 96]) * 2**20))
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "freehold.cli", "backup", str(src)],
                                env=env.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if trial % 4 == 0:
            out, _ = proc.communicate()
            assert proc.returncode == 0, f"trial {trial}: an uninterrupted backup failed"
            took = time.perf_counter() - started
        else:
            time.sleep(rng.uniform(0.1, 1.1) * took)  # some land after the end: snapshot writes, exit
            if proc.poll() is None:
                killed_mid_run += 1
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
        if proc.returncode == 0:
            completed.append(out.decode().split()[-1])
        with env.open() as v:
            ids = {sid for sid, _ in v.snapshots()}
            assert set(completed) <= ids, f"trial {trial}: a completed snapshot vanished"
            for sid in completed:  # every tree of every earlier snapshot still loads
                assert len(v.ls(sid)) > 150
            if trial % 6 == 5:
                out_dir = tmp_path / f"restore-{trial}"
                v.restore(first, out_dir)
                same_tree(reference / "src", out_dir / "src")
    killed_trials = TRIALS - len(range(0, TRIALS, 4))
    assert killed_mid_run >= killed_trials // 2, f"most kills must hit a running backup ({killed_mid_run})"
    # The next backup succeeds and the vault checks clean, shares read and verified.
    proc = env.cli("backup", str(src))
    final = proc.stdout.split()[-1]
    check = env.cli("check", "--read-data", check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with env.open() as v:
        v.restore(final, tmp_path / "final")
        v.restore(first, tmp_path / "first")
    same_tree(src, tmp_path / "final" / "src")
    same_tree(reference / "src", tmp_path / "first" / "src")
    assert os.listdir(tmp_path / "final")
