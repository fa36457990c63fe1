"""Local state (docs/design.md §16) under sharing and read-only homes: any number of commands may
share one FREEHOLD_HOME, read-only commands write nothing there unless something really changed,
and a home that cannot be written leaves them working."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from freehold import state
from freehold.keys import KdfParams

from .conftest import PASS, Env, make_env, write_tree

# Commands that only read: their second run must leave the home exactly as it was.
READ_ONLY = [["snapshots"], ["ls", "latest"], ["check"], ["stats"], ["provider", "list"], ["keys", "list"],
             ["policy", "show"], ["version"], ["snapshots", "--json"], ["ls", "latest", "--json"]]


def _vault(tmp_path: Path) -> tuple[Env, Path]:
    env = make_env(tmp_path)
    src = write_tree(tmp_path / "src", small=20, big=300_000)
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    return env, src


def _listing(home: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry below the home: (inode, mtime ns, size). A rewrite by rename changes the inode."""
    out = {}
    for p in [home, *sorted(home.rglob("*"))]:
        st = p.lstat()
        out[str(p.relative_to(home))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def test_sixty_commands_sharing_one_home_all_succeed(tmp_path: Path) -> None:
    env, _ = _vault(tmp_path)
    shutil.rmtree(env.home / "cache")  # they all fill the cache at once, too
    with ThreadPoolExecutor(8) as pool:
        procs = list(pool.map(lambda _: env.cli("snapshots", "--json", check=False), range(60)))
    failed = [(p.returncode, p.stderr) for p in procs if p.returncode != 0]
    assert not failed, failed
    assert all(len(json.loads(p.stdout)) == 1 for p in procs)
    assert not [p for p in env.home.rglob("*.tmp")], "a temporary file was left behind"


def test_read_only_commands_leave_the_home_unchanged(tmp_path: Path) -> None:
    env, _ = _vault(tmp_path)
    vault_json = (env.home / state.STATE_FILE).stat()
    for args in READ_ONLY:  # the first runs may fill the cache, and only that
        env.cli(*args)
    again = (env.home / state.STATE_FILE).stat()
    assert (again.st_ino, again.st_mtime_ns) == (vault_json.st_ino, vault_json.st_mtime_ns)
    before = _listing(env.home)
    for args in READ_ONLY:
        env.cli(*args)
        assert _listing(env.home) == before, f"freehold {' '.join(args)} changed the home"


# -- a home that cannot be written --------------------------------------------------------------------

def _read_only_runner(home: Path) -> list[str] | None:
    """A command prefix under which ``home`` really cannot be written, or None. As root, file
    modes do not stop writes: a read-only bind mount in a private mount namespace does (and
    vanishes with the command); failing that, modes with the capabilities that bypass them
    dropped. Whichever is chosen is verified by trying to write."""
    for d in [home, *home.rglob("*")]:
        d.chmod((d.stat().st_mode & 0o777) & ~0o222)
    candidates: list[list[str]] = []
    if os.geteuid() != 0:
        candidates.append([])
    if shutil.which("unshare"):
        candidates.append(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount --bind -o ro "$0" "$0" && exec "$@"', str(home)])
    if shutil.which("setpriv"):
        candidates.append(["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"])
    for prefix in candidates:
        probe = subprocess.run([*prefix, sys.executable, "-c",
                                f"open({str(home / 'probe')!r}, 'w')"], capture_output=True)
        if probe.returncode != 0 and not (home / "probe").exists():
            return prefix
        (home / "probe").unlink(missing_ok=True)
    return None


def test_a_read_only_home_still_runs_read_only_commands(tmp_path: Path) -> None:
    env, _ = _vault(tmp_path)
    shutil.rmtree(env.home / "cache")  # nothing cached: every cache write fails, silently
    prefix = _read_only_runner(env.home)
    try:
        if prefix is None:
            pytest.skip("no way to make a directory read-only for this user here")
        before = _listing(env.home)
        for args in [["snapshots"], ["ls", "latest"], ["stats"], ["check"], ["keys", "list"], ["version"]]:
            proc = env.cli(*args, prefix=prefix, check=False)
            assert proc.returncode == 0, (args, proc.stderr)
            assert "warning" not in proc.stderr and "error" not in proc.stderr, (args, proc.stderr)
        assert "src/d0/e0/f0.txt" in env.cli("ls", "latest", prefix=prefix).stdout
        assert _listing(env.home) == before
    finally:
        for d in [env.home, *env.home.rglob("*")]:
            d.chmod(d.stat().st_mode | 0o200)


# -- concurrent updates of vault.json -----------------------------------------------------------------

def _record_after(home: str, key_id: str, barrier: object) -> None:
    from freehold.vault import Vault

    v = Vault.open(PASS, home=Path(home))
    try:
        barrier.wait()  # type: ignore[attr-defined]  # every process holds the same stale state now
        v.key_id = key_id
        v.sync_state()
    finally:
        v.close()


def test_concurrent_updates_of_vault_json_lose_nothing(tmp_path: Path) -> None:
    env, _ = _vault(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6)
    procs = [ctx.Process(target=_record_after, args=(str(env.home), f"{i:032x}", barrier)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    recorded = state.read(env.home).key_ids
    assert {f"{i:032x}" for i in range(6)} <= set(recorded), recorded


def test_a_stale_command_keeps_what_a_backup_recorded(tmp_path: Path) -> None:
    env, src = _vault(tmp_path)
    stale = env.open()          # opened before the backup below: holds the old last_snapshot
    with env.open() as v:
        sid, _, _ = v.backup([str(src)])
    assert state.read(env.home).last_snapshot == sid
    stale.add_key("another passphrase", kdf=KdfParams.weak(64))  # a config change: vault.json rewritten
    stale.close()
    after = state.read(env.home)
    assert after.last_snapshot == sid, "the stale command's write lost the backup's last_snapshot"
    assert after.config_generation >= 2


def test_init_refuses_a_home_that_got_a_vault_meanwhile(tmp_path: Path) -> None:
    env, _ = _vault(tmp_path)
    local = state.read(env.home)
    with pytest.raises(Exception, match="already holds a vault"):
        state.create(env.home, local)
    assert (env.home / state.LOCK_FILE).exists()
