"""Upkeep through the command line: interrupted backups keep their work, forget/prune/locks/unlock,
stats, maintain and its timer, the overdue warning."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from freehold.api import PruneOptions
from freehold.providers.local import TMP_PREFIX

from .conftest import Env

MiB = 1024 * 1024


def _written(e: Env, prefix: str) -> list[Path]:
    """The objects under ``prefix`` on every provider whose writes are done: not the temporary
    files a write in progress has not renamed yet (CI killed a backup on seeing one under index/,
    and the rerun found no checkpoint)."""
    return [f for prov, f in e.objects()
            if f.relative_to(prov).parts[0] == prefix and not f.name.startswith(TMP_PREFIX)]


def _shares(e: Env) -> int:
    return len(_written(e, "data"))


def _share_bytes(e: Env) -> int:
    return sum(f.stat().st_size for f in _written(e, "data"))


def _big_source(root: Path, files: int = 12, size: int = 6 * MiB) -> Path:
    rng = random.Random(13)
    root.mkdir()
    for i in range(files):
        (root / f"part{i:02}.bin").write_bytes(rng.randbytes(size))
    return root


def _index_objects(e: Env) -> int:
    """Index objects written on the first provider."""
    return sum(1 for f in _written(e, "index") if f.is_relative_to(e.providers[0]))


def _interrupt_backup(e: Env, src: Path, sig: int, after_shares: int, checkpoints: int = 0) -> int:
    """Start a CLI backup, send ``sig`` once ``after_shares`` share objects and ``checkpoints`` new
    index objects exist; its exit code."""
    before = _index_objects(e)
    proc = subprocess.Popen([sys.executable, "-m", "freehold.cli", "backup", str(src)], env=e.cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and (
            _shares(e) < after_shares or _index_objects(e) - before < checkpoints):
        time.sleep(0.01)
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    return proc.returncode


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_backup_keeps_its_work(env: Env, tmp_path: Path, sig: int) -> None:
    """The issue: five interrupted backups of the same data kept almost none of their work. With
    checkpoints every 4 packs and on interruption, the second run uploads only what is left."""
    env.init().close()
    src = _big_source(tmp_path / "src")
    # About six packs' shares. A SIGKILL keeps only what a checkpoint indexed, so it waits for the
    # first one too (killed before it, a run keeps nothing by design: checkpoints every 4 packs or
    # 30 s); Ctrl-C indexes the packs done when it lands, so it does not wait.
    code = _interrupt_backup(env, src, sig, after_shares=5 * 6, checkpoints=int(sig == signal.SIGKILL))
    assert code != 0
    stored_first = _share_bytes(env)
    assert stored_first > 0
    run = json.loads(env.cli("backup", str(src), "--json").stdout)
    total = sum(f.stat().st_size for f in src.iterdir())
    # The rerun reads everything but stores only what the first run had not indexed.
    assert run["new_bytes"] < total - 3 * 16 * MiB, (run["new_bytes"], total)
    with env.open() as v:
        rep = v.prune(PruneOptions(safety_window=0))
        s = v.stats()
        assert v.check().healthy
    # Whatever the killed run stored but never indexed is in no index: retired now, gone the next time.
    with env.open() as v:
        v.prune(PruneOptions(safety_window=0))
        s = v.stats()
    assert s["stored_bytes"] < 5 / 3 * total * 1.2, (s, rep)


def test_killed_backup_leaves_a_stale_lock_that_unlock_removes(env: Env, tmp_path: Path) -> None:
    env.init().close()
    src = _big_source(tmp_path / "src", files=6)
    _interrupt_backup(env, src, signal.SIGKILL, after_shares=5)
    locks = json.loads(env.cli("locks", "--json").stdout)
    assert len(locks) == 1 and locks[0]["op"] == "backup" and locks[0]["host"] == socket.gethostname()
    assert "gone" in locks[0]["stale"]  # its process is gone on this very host
    out = env.cli("unlock").stdout
    assert "removed 1 lock" in out
    assert json.loads(env.cli("locks", "--json").stdout) == []


def test_forget_and_prune_through_the_cli(env: Env, tmp_path: Path) -> None:
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(5)
    ids = []
    for i in range(4):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(400_000))
        ids.append(env.cli("backup", str(src)).stdout.split()[-1])
    dry = json.loads(env.cli("forget", "--keep-last", "2", "--dry-run", "--json").stdout)
    assert {r["id"] for r in dry["remove"]} == set(ids[:2])
    assert len(json.loads(env.cli("snapshots", "--json").stdout)) == 4
    refused = env.cli("forget", check=False)
    assert refused.returncode == 2 and "refusing" in refused.stdout + refused.stderr
    done = json.loads(env.cli("forget", "--keep-last", "2", "--prune", "--json").stdout)
    assert done["prune"]["deleted_packs"] >= 1
    assert {s["id"] for s in json.loads(env.cli("snapshots", "--json").stdout)} == set(ids[2:])
    text = env.cli("prune", "--max-unused", "0%").stdout
    assert "snapshots need" in text
    bad = env.cli("prune", "--max-unused", "lots", check=False)
    assert bad.returncode == 2 and "percentage" in bad.stdout + bad.stderr
    env.cli("restore", ids[2], "--target", str(tmp_path / "out"))
    assert (tmp_path / "out" / "src" / "f2.bin").read_bytes() == (src / "f2.bin").read_bytes()


def test_stats_dedup_ratio_is_one_for_new_data_and_prices_show(env: Env, tmp_path: Path) -> None:
    """The issue: tree blobs counted as unique but not as logical put the ratio below 1."""
    env.init().close()
    src = tmp_path / "src"
    for d in range(20):
        (src / f"d{d}").mkdir(parents=True)
        (src / f"d{d}" / "f").write_bytes(random.Random(d).randbytes(20_000))
    env.cli("backup", str(src))
    s = json.loads(env.cli("stats", "--json").stdout)
    assert s["dedup_ratio"] == pytest.approx(1.0, abs=1e-9) and s["tree_bytes"] > 0
    env.cli("provider", "price", "p1", "12.5")
    s = json.loads(env.cli("stats", "--json").stdout)
    p1 = s["providers"]["p1"]
    assert p1["price_per_tb_month"] == 12.5
    assert p1["cost_per_month"] == pytest.approx(p1["bytes"] / 1e12 * 12.5)
    assert "cost/month" in env.cli("stats").stdout
    assert env.cli("provider", "price", "nope", "1", check=False).returncode == 2
    (tmp_path / "p6").mkdir()
    added = json.loads(env.cli("provider", "add", "p6", (tmp_path / "p6").as_uri(), "--price-per-tb-month", "3",
                               "--json").stdout)
    assert added["price"] == 3.0
    assert json.loads(env.cli("stats", "--json").stdout)["providers"]["p6"]["price_per_tb_month"] == 3.0


def test_maintain_timer_lines(env: Env, tmp_path: Path) -> None:
    env.init().close()
    pf = tmp_path / "pass"
    pf.write_text("x")
    text = env.cli("maintain", "--print-timer", "--passphrase-file", str(pf)).stdout
    assert "OnCalendar=daily" in text and "Persistent=true" in text and " maintain --passphrase-file " in text
    assert str(pf.resolve()) in text and f"FREEHOLD_HOME={env.home}" in text
    cron = [line for line in text.splitlines() if line.startswith("17 3 * * * ")]
    assert cron, text
    xdg = tmp_path / "xdg"
    env.cli("maintain", "--install-timer", env_override={**env.cli_env(), "XDG_CONFIG_HOME": str(xdg)})
    unit = (xdg / "systemd" / "user" / "freehold-maintain.timer").read_text()
    assert "OnCalendar=daily" in unit
    assert "ExecStart=" in (xdg / "systemd" / "user" / "freehold-maintain.service").read_text()


def test_maintain_runs_records_and_rotates(env: Env, tmp_path: Path) -> None:
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(300_000))
    env.cli("backup", str(src))
    first = json.loads(env.cli("maintain", "--period", "4", "--json").stdout)
    assert first["exit_code"] == 0 and first["subset"] == "1/4"
    second = json.loads(env.cli("maintain", "--json").stdout)
    assert second["subset"] == "2/4"
    assert all((p / "maintenance").exists() for p in env.providers)


def test_maintain_refuses_on_a_second_host_and_takes_over(env: Env, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    env.init().close()
    with env.open() as v:
        v.maintain()
    monkeypatch.setattr(socket, "gethostname", lambda: "other-machine")
    from freehold.errors import UsageError

    with env.open() as v:
        with pytest.raises(UsageError, match="maintainer"):
            v.maintain()
        rep = v.maintain(take_over=True)
    assert rep.host == "other-machine"


def test_every_command_warns_when_maintenance_is_overdue(env: Env, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    env.init().close()
    import freehold.vault_upkeep as upkeep

    monkeypatch.setattr(upkeep, "utc_stamp", lambda: "2026-01-01T00:00:00+00:00")
    with env.open() as v:
        v.maintain()
    proc = env.cli("snapshots")
    assert "maintenance is overdue" in proc.stderr and socket.gethostname() in proc.stderr
    env.cli("maintain")
    assert "overdue" not in env.cli("snapshots").stderr


def test_retention_policy_is_applied_by_forget_policy_and_by_maintain(env: Env, tmp_path: Path) -> None:
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    refused = env.cli("forget", "--policy", check=False)
    assert refused.returncode == 2 and "no retention policy" in refused.stdout + refused.stderr
    for i in range(3):
        (src / f"f{i}").write_bytes(os.urandom(200_000))
        env.cli("backup", str(src))
    env.cli("retention", "set", "--keep-last", "2")
    dry = json.loads(env.cli("forget", "--policy", "--dry-run", "--json").stdout)
    assert len(dry["keep"]) == 2 and len(dry["remove"]) == 1
    (src / "f3").write_bytes(os.urandom(200_000))
    env.cli("backup", str(src))
    rep = json.loads(env.cli("maintain", "--json").stdout)
    assert len(rep["forgotten"]) == 2 and rep["prune"]["deleted_packs"] >= 1 and rep["exit_code"] == 0
    assert len(json.loads(env.cli("snapshots", "--json").stdout)) == 2
