"""Provider faults during backup and restore: injected (FaultyProvider) and real (SeaweedFS stopped,
paused with SIGSTOP), over a vault mixing S3 buckets and local directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from freehold.errors import ProviderUnavailable, QuorumError
from freehold.keys import KdfParams
from freehold.providers import Provider
from freehold.testing.faults import FaultyProvider
from freehold.testing.seaweed import SeaweedServer
from freehold.vault import ProviderSpec, Vault, Wrap

from .conftest import PASS, WEED, Env, needs_weed, same_tree, write_tree


def _faults(**faults: dict[str, object]) -> tuple[Wrap, dict[str, FaultyProvider]]:
    """A provider hook for Vault.open that puts a FaultyProvider around the named providers."""
    wrapped: dict[str, FaultyProvider] = {}

    def wrap(pid: str, prov: Provider) -> Provider:
        if pid in faults:
            wrapped[pid] = FaultyProvider(prov, seed=7, **faults[pid])  # type: ignore[arg-type]
            return wrapped[pid]
        return prov

    return wrap, wrapped


def test_backup_with_provider_down_fails_cleanly_unless_degraded(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=40, big=3_000_000)
    with env.init() as v:
        first, _, _ = v.backup([str(src)])
    (src / "new.bin").write_bytes(b"fresh data " * 200_000)
    wrap, _ = _faults(p2={"down": True})
    with env.open(wrap=wrap) as v:
        with pytest.raises(ProviderUnavailable, match=r"p2.*--degraded"):
            v.backup([str(src)])
        assert [s for s, _ in v.snapshots()] == [first]  # nothing half-made is visible
        before = {r.id for r in v.packs()}
        sid, _, _ = v.backup([str(src)], degraded=True)
        new = [r for r in v.packs() if r.id not in before]
        assert new and all(sum(s is None for s in r.shares) == 1 for r in new)
        assert all(s.p != "p2" for r in new for s in r.shares if s is not None)
    with env.open() as v:  # p2 is back: check names the shares the degraded backup could not write
        report = v.check()
        kinds = {p.kind for p in report.problems}
        assert kinds == {"missing-share", "missing-replica"}, report.problems
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    with env.open() as v:  # the next backup heals the snapshot replicas; the missing shares remain
        v.backup([str(src)])
        assert {p.kind for p in v.check().problems} == {"missing-share"}


def test_degraded_backup_needs_k_plus_one(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=5)
    env.init().close()
    wrap, _ = _faults(p1={"down": True}, p4={"down": True})
    with env.open(wrap=wrap) as v:
        with pytest.raises(QuorumError, match="k\\+1"):
            v.backup([str(src)], degraded=True)
        assert v.snapshots() == []


def test_restore_races_slow_provider_and_survives_garbage(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=60, big=6_000_000)
    with env.init() as v:
        sid, _, _ = v.backup([str(src)])
    with env.open() as v:
        # The providers holding the first two data shares of the biggest pack: one slow, one lying.
        rec = max(v.packs(), key=lambda r: r.len)
        slow, liar = rec.shares[0].p, rec.shares[1].p  # type: ignore[union-attr]
    wrap, faulty = _faults(**{slow: {}, liar: {}})
    with env.open(wrap=wrap, hedge_after=0.2) as v:
        faulty[slow].delay["get"] = 30.0  # only now: unlocking reads key objects from every provider
        faulty[liar].corrupt = 1.0
        v.restore(sid, tmp_path / "out")
        assert v.last_outcome.fallback_reads > 0
        assert faulty[liar].corrupted > 0
    same_tree(src, tmp_path / "out" / "src")


# -- real S3 (SeaweedFS) ------------------------------------------------------------------------------

S3_FAST = {"connect_timeout": 1, "read_timeout": 2, "attempts": 2}


@pytest.fixture
def second_seaweed(tmp_path: Path, s3_env: SeaweedServer) -> SeaweedServer:
    """A second, independent S3 server that tests may stop or pause."""
    server = SeaweedServer(tmp_path / "weed2", binary=WEED)
    server.start()
    server.create_bucket("other")
    yield server  # type: ignore[misc]
    server.stop(grace=0.5)


def _mixed_specs(tmp_path: Path, a: SeaweedServer, b: SeaweedServer) -> list[ProviderSpec]:
    for bucket in ("fh-1", "fh-2"):
        a.create_bucket(bucket)
    local = []
    for i in (1, 2):
        d = tmp_path / f"disk{i}"
        d.mkdir()
        local.append(d)
    return [
        ProviderSpec(a.url("fh-1", "vault", **S3_FAST), "DE", "seaweed-a", "s3a1"),
        ProviderSpec(a.url("fh-2", "", **S3_FAST), "FR", "seaweed-a2", "s3a2"),
        ProviderSpec(b.url("other", "v", **S3_FAST), "NL", "seaweed-b", "s3b"),
        ProviderSpec(local[0].as_uri(), "DE", "self", "disk1"),
        ProviderSpec(local[1].as_uri(), "CH", "self2", "disk2"),
    ]


@needs_weed
def test_mixed_s3_and_local_vault_with_real_server_faults(tmp_path: Path, s3_env: SeaweedServer,
                                                         second_seaweed: SeaweedServer) -> None:
    home = tmp_path / "home"
    src = write_tree(tmp_path / "src", small=80, big=5_000_000)
    specs = _mixed_specs(tmp_path, s3_env, second_seaweed)
    with Vault.init(specs, 3, 5, PASS, home=home, kdf=KdfParams.weak(64)) as v:
        first, _, _ = v.backup([str(src)])
        assert v.check(read_data=True).healthy
        held = {s.id: s.bytes for s in v.provider_status()}
        assert all(b > 0 for b in held.values()), held
    with Vault.open(PASS, home=home) as v:
        v.restore(first, tmp_path / "out1")
    same_tree(src, tmp_path / "out1" / "src")

    # Server B paused (SIGSTOP): reads from it time out; the restore races the other shares.
    second_seaweed.pause()
    try:
        with Vault.open(PASS, home=home, hedge_after=0.3) as v:
            v.restore(first, tmp_path / "out2")
    finally:
        second_seaweed.resume()
    same_tree(src, tmp_path / "out2" / "src")

    # Server B stopped: a backup fails cleanly by default, and proceeds with --degraded (4 of 5 up).
    (src / "more.bin").write_bytes(b"x" * 3_000_000)
    second_seaweed.stop(grace=0.5)
    with Vault.open(PASS, home=home) as v:
        with pytest.raises(ProviderUnavailable, match="s3b"):
            v.backup([str(src)])
        sid, _, _ = v.backup([str(src)], degraded=True)
        assert "s3b" in v.last_outcome.down
    with Vault.open(PASS, home=home) as v:
        v.restore(sid, tmp_path / "out3")
        report = v.check()
        assert any(p.provider == "s3b" for p in report.problems)
    same_tree(src, tmp_path / "out3" / "src")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs: a provider whose disk fills up (needs root to mount)."""
    import subprocess

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root?)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_is_a_clear_error_and_loses_nothing(env: Env, tiny_disk: Path, tmp_path: Path) -> None:
    env.providers[4].rmdir()
    env.providers[4] = tiny_disk
    src = write_tree(tmp_path / "src", small=20)
    with env.init() as v:
        first, _, _ = v.backup([str(src)])
    (src / "big.bin").write_bytes(os.urandom(20_000_000))  # incompressible: far more than 3 MiB a share
    proc = env.cli("backup", str(src), check=False)
    assert proc.returncode == 7 and "no space left" in proc.stderr and "Traceback" not in proc.stderr
    with env.open() as v:
        assert [s for s, _ in v.snapshots()] == [first]
        v.restore(first, tmp_path / "out")
        # degraded: the full provider is dropped mid-backup and the other four take the shares
        sid, _, _ = v.backup([str(src)], degraded=True)
        v.restore(sid, tmp_path / "out2")
    same_tree(src, tmp_path / "out2" / "src")


@needs_weed
def test_recover_from_a_single_s3_provider_on_a_fresh_machine(tmp_path: Path, s3_env: SeaweedServer) -> None:
    """Issue 5 on S3: an empty FREEHOLD_HOME, one S3 provider's address, credentials from the
    environment, and a passphrase (then guardian shares) rebuild everything."""
    for bucket in ("rec-1", "rec-2", "rec-3"):
        s3_env.create_bucket(bucket)
    disks = [tmp_path / "d1", tmp_path / "d2"]
    for d in disks:
        d.mkdir()
    urls = [s3_env.url(b, "vault", **S3_FAST) for b in ("rec-1", "rec-2", "rec-3")] + [d.as_uri() for d in disks]
    src = write_tree(tmp_path / "src", small=30, big=1_000_000)
    home = tmp_path / "laptop"
    with Vault.init([ProviderSpec(u) for u in urls], 3, 5, PASS, home=home, kdf=KdfParams.weak(64)) as v:
        v.backup([str(src)])
        shares = v.guardian_shares(2, 3)
    for which, (unlock, new_home) in enumerate([({"passphrase": PASS}, tmp_path / "fresh1"),
                                                ({"shares": shares[1:]}, tmp_path / "fresh2")]):
        with Vault.recover([urls[which]], home=new_home, **unlock) as v:  # type: ignore[arg-type]
            assert len(v.info().providers) == 5
            v.restore("latest", tmp_path / f"out{which}")
        same_tree(src, tmp_path / f"out{which}" / "src")


@needs_weed
def test_s3_provider_whose_volume_fills_up(tmp_path: Path, s3_env: SeaweedServer, tiny_disk: Path) -> None:
    """A real SeaweedFS whose disk (a small tmpfs) fills during a backup: SeaweedFS answers 500,
    the provider retries, then the backup fails naming the provider; nothing earlier is lost, and
    a degraded backup goes on with the other four."""
    import subprocess

    subprocess.run(["mount", "-o", "remount,size=48m", str(tiny_disk)], check=True)
    full = SeaweedServer(tiny_disk / "weed", binary=WEED, extra_args=("-volume.minFreeSpace=1MiB",))
    full.start()
    try:
        full.create_bucket("full")
        disks = []
        for i in range(4):
            (tmp_path / f"d{i}").mkdir()
            disks.append(tmp_path / f"d{i}")
        specs = [ProviderSpec(d.as_uri(), name=f"disk{i}") for i, d in enumerate(disks)]
        specs.append(ProviderSpec(full.url("full", "v", **S3_FAST), name="s3full"))
        src = write_tree(tmp_path / "src", small=10)
        home = tmp_path / "home"
        with Vault.init(specs, 3, 5, PASS, home=home, kdf=KdfParams.weak(64)) as v:
            first, _, _ = v.backup([str(src)])
        (src / "big.bin").write_bytes(os.urandom(160_000_000))  # 1/3 of it per share: more than 48 MiB
        with Vault.open(PASS, home=home) as v:
            with pytest.raises(ProviderUnavailable, match="s3full"):
                v.backup([str(src)])
            assert [s for s, _ in v.snapshots()] == [first]
            sid, _, _ = v.backup([str(src)], degraded=True)
            v.restore(sid, tmp_path / "out")
        same_tree(src, tmp_path / "out" / "src")
    finally:
        full.stop(grace=0.5)
