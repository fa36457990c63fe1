"""Issue 11's findings, each as its own test: one hostile or careless provider (or user) must cost
availability only, never correctness, secrecy, the user's policy or a revocation."""

from __future__ import annotations

import os
import shutil
import threading
import unicodedata
from pathlib import Path

import msgspec
import pytest

from freehold import api, formats, keys
from freehold.errors import (
    ConflictError,
    IntegrityError,
    QuorumError,
    UsageError,
    WrongPassphrase,
)
from freehold.providers import Provider
from freehold.store.configs import CONFIG_NAME
from freehold.store.packs import MIN_PACK, padme
from freehold.testing.faults import FaultyProvider
from freehold.vault import ProviderSpec, Vault

from .conftest import PASS, Env, make_env, same_tree, write_tree

WEAK = keys.KdfParams.weak(64)


def _vault(tmp_path: Path, name: str = "v", small: int = 12) -> tuple[Env, Path, str]:
    e = make_env(tmp_path / name)
    src = write_tree(tmp_path / f"{name}-src", small=small, big=200_000)
    with e.init() as v:
        sid, _, _ = v.backup([str(src)])
    return e, src, sid


def _names(prov: Path, prefix: str) -> list[str]:
    return sorted(str(f.relative_to(prov)) for f in (prov / prefix).rglob("*") if f.is_file()) \
        if (prov / prefix).exists() else []


def _restored(e: Env, tmp_path: Path, src: Path, passphrase: str = PASS) -> None:
    out = tmp_path / f"out-{os.urandom(4).hex()}"
    with Vault.open(passphrase, home=e.home) as v:
        v.restore("latest", out)
    same_tree(src, out / src.name)


def _faults(**faults: dict[str, object]) -> tuple[object, dict[str, FaultyProvider]]:
    wrapped: dict[str, FaultyProvider] = {}

    def wrap(pid: str, prov: Provider) -> Provider:
        wrapped[pid] = FaultyProvider(prov, **faults.get(pid, {}))  # type: ignore[arg-type]
        return wrapped[pid]

    return wrap, wrapped


# 1 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("stray", ["garbage", "empty", "foreign"])
@pytest.mark.parametrize("prefix", ["index", "snapshots"])
def test_1_a_stray_object_on_one_provider_bricks_nothing(tmp_path: Path, stray: str, prefix: str) -> None:
    e, src, sid = _vault(tmp_path)
    if stray == "foreign":
        other, _, _ = _vault(tmp_path, "other", small=3)
        name = _names(other.providers[0], prefix)[0]
        data = (other.providers[0] / name).read_bytes()
    else:
        name = f"{prefix}/{os.urandom(32).hex()}"
        data = os.urandom(500) if stray == "garbage" else b""
    (e.providers[0] / name).write_bytes(data)
    with e.open() as v:
        warned = list(v.last_outcome.warnings)  # opening loads the index
        assert [s for s, _ in v.snapshots()] == [sid]
        warned += v.last_outcome.warnings
        assert any(name in w and "p1" in w for w in warned), warned
        report = v.check()
    assert ("stray-object", "p1", name) in {(p.kind, p.provider, p.object) for p in report.problems}
    _restored(e, tmp_path, src)
    proc = e.cli("snapshots")
    assert sid[:12] in proc.stdout and "Traceback" not in proc.stderr


def test_1_a_provider_directory_that_is_another_vaults(tmp_path: Path) -> None:
    e, src, sid = _vault(tmp_path)
    other, _, _ = _vault(tmp_path, "other", small=3)
    shutil.rmtree(e.providers[1])
    os.symlink(other.providers[1], e.providers[1])
    with e.open() as v:
        assert [s for s, _ in v.snapshots()] == [sid]
        report = v.check()
    assert {p.provider for p in report.problems if p.kind in ("stray-object", "missing-share")} == {"p2"}
    assert not report.healthy
    _restored(e, tmp_path, src)


# 2 -----------------------------------------------------------------------------------------------

def _first_key(prov: Path) -> Path:
    return prov / _names(prov, "keys")[0]


def test_2_one_damaged_key_object_copy_does_not_lock_the_owner_out(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    path = _first_key(e.providers[0])
    kf = formats.decode(path.read_bytes(), formats.KeyFile, "key")
    # Still a well-formed key object, so it parses; but its salt no longer derives the right key.
    path.write_bytes(formats.encode(msgspec.structs.replace(kf, salt=bytes(16))))
    with e.open() as v:
        report = v.check()
    assert ("damaged-replica", "p1", str(path.relative_to(e.providers[0]))) in {
        (p.kind, p.provider, p.object) for p in report.problems}
    assert path.read_bytes() == _first_key(e.providers[1]).read_bytes()  # healed
    _restored(e, tmp_path, src)


def test_2_one_damaged_config_copy_does_not_lock_the_owner_out(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    cfg = e.providers[0] / CONFIG_NAME
    data = bytearray(cfg.read_bytes())
    data[30] ^= 1
    cfg.write_bytes(bytes(data))
    shutil.rmtree(e.home)  # a fresh machine, told of p1 first
    with Vault.recover(e.urls[:2], passphrase=PASS, home=e.home) as v:
        assert any("p1" in w and "config" in w for w in v.last_outcome.warnings), v.last_outcome.warnings
        report = v.check()
        assert ("damaged-replica", "p1", CONFIG_NAME) in {(p.kind, p.provider, p.object) for p in report.problems}
        assert v.check().healthy
    assert cfg.read_bytes() == (e.providers[1] / CONFIG_NAME).read_bytes()
    _restored(e, tmp_path, src)


# 3 -----------------------------------------------------------------------------------------------

def test_3_recovery_by_guardians_with_the_laptop_and_two_providers_gone(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    with e.open() as v:
        shares = v.guardian_shares(3, 5)
    shutil.rmtree(e.home)
    shutil.rmtree(e.providers[0])
    shutil.rmtree(e.providers[3])
    files = []
    for i in (0, 2, 4):
        f = tmp_path / f"share{i}.txt"
        f.write_text(shares[i])
        files += ["--share-file", str(f)]
    env = {**e.cli_env(), "FREEHOLD_NEW_PASSPHRASE": "everyday"}
    proc = e.cli("recover", "--from", e.urls[2], *files, env_override=env)
    assert "Recovered vault" in proc.stdout
    out = tmp_path / "out"
    with Vault.open("everyday", home=e.home) as v:
        v.restore("latest", out)
    same_tree(src, out / src.name)


def test_3_failed_recovery_leaves_nothing_behind(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    other, _, _ = _vault(tmp_path, "other", small=2)
    with other.open() as v:
        foreign = v.guardian_shares(2, 3)
    home = tmp_path / "fresh"
    with pytest.raises(Exception, match=r"another vault|do not open"):
        Vault.recover([e.urls[0]], shares=foreign[:2], home=home, new_passphrase="x")
    assert not home.exists() or not any(home.rglob("*"))


def test_3_passphrase_change_with_a_provider_down_is_honest(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    wrap, faulty = _faults()
    with e.open(wrap=wrap) as v:
        faulty["p3"].down = True
        change = v.change_passphrase("second", WEAK)
    assert "p3" in change.outcome.missed and change.pending == ["p3"]
    for attempt in range(2):  # with p3 down, then with it back (its stale copy of the old key)
        with pytest.raises(WrongPassphrase):
            Vault.open(PASS, home=e.home)
        with Vault.open("second", home=e.home) as v:
            if attempt == 1:
                report = v.check()
                assert ("revoked-key-present", "p3") in {(p.kind, p.provider) for p in report.problems}
                assert v.check().healthy
    _restored(e, tmp_path, src, "second")


def test_3_a_key_change_below_quorum_fails_and_changes_nothing(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    wrap, faulty = _faults()
    with e.open(wrap=wrap) as v:
        for pid in ("p1", "p2", "p3"):
            faulty[pid].down = True
        with pytest.raises(QuorumError):
            v.add_key("second", WEAK)
    with pytest.raises(WrongPassphrase):
        Vault.open("second", home=e.home)
    assert all(len(_names(p, "keys")) == 1 for p in e.providers)


# 4 -----------------------------------------------------------------------------------------------

def _jurisdiction_env(tmp_path: Path) -> tuple[Env, list[ProviderSpec]]:
    e = make_env(tmp_path / "j", n=7)
    e.n = 5
    where = ["DE", "FR", "DE", "FR", "DE", "US", "US"]
    specs = [ProviderSpec(u, jurisdiction=j) for u, j in zip(e.urls, where, strict=True)]
    return e, specs


def test_4_a_replayed_old_config_cannot_revert_the_policy(tmp_path: Path) -> None:
    e, specs = _jurisdiction_env(tmp_path)
    Vault.init(specs, 3, 5, PASS, home=e.home, kdf=WEAK).close()
    old = (e.providers[0] / CONFIG_NAME).read_bytes()
    with e.open() as v:
        v.set_policy(formats.Policy(allow=["DE", "FR"]))
    for hostile in (e.providers[0], e.providers[5]):  # two of seven replay the old config
        (hostile / CONFIG_NAME).write_bytes(old)
    src = write_tree(tmp_path / "src", small=20, big=300_000)
    with e.open() as v:
        assert v.info().policy.allow == ["DE", "FR"]
        v.backup([str(src)])
        assert all(s.p in {"p1", "p2", "p3", "p4", "p5"} for r in v.packs() for s in r.shares if s)
    assert (e.providers[0] / CONFIG_NAME).read_bytes() != old  # healed
    # A fresh machine whose first --from provider serves the stale config takes the newest one.
    (e.providers[0] / CONFIG_NAME).write_bytes(old)
    with Vault.recover([e.urls[0]], passphrase=PASS, home=tmp_path / "fresh") as v:
        assert v.info().policy.allow == ["DE", "FR"]


def _p6_added_later(tmp_path: Path) -> tuple[Env, Path, bytes, Path]:
    """A 3-of-5 vault, a sixth provider added, a backup: (env, p6's dir, the config before, source)."""
    e = make_env(tmp_path / "v", n=6)
    e.n = 5
    e.providers, extra = e.providers[:5], e.providers[5]
    e.init().close()
    old = (e.providers[0] / CONFIG_NAME).read_bytes()
    src = write_tree(tmp_path / "src", small=30, big=2_000_000)
    with e.open() as v:
        v.add_provider(ProviderSpec(extra.as_uri(), name="p6"))
        v.backup([str(src)])
        for i in range(20):  # placement is random: each pack leaves out one of the six providers
            if "p6" in {s.p for r in v.packs() for s in r.shares if s}:
                break
            (src / f"more{i}").write_bytes(os.urandom(100_000))
            v.backup([str(src)])
        assert "p6" in {s.p for r in v.packs() for s in r.shares if s}
    return e, extra, old, src


def test_4_providers_added_later_do_not_disappear_under_a_replay(tmp_path: Path) -> None:
    e, _, old, src = _p6_added_later(tmp_path)
    for hostile in e.providers[:2]:
        (hostile / CONFIG_NAME).write_bytes(old)
    with e.open() as v:
        assert [p.id for p in v.info().providers][-1] == "p6"
        first = v.check(read_data=True)
        assert {(p.kind, p.provider, p.healed) for p in first.problems} == {
            ("stale-replica", "p1", True), ("stale-replica", "p2", True)}
        assert v.check(read_data=True).healthy
    _restored(e, tmp_path, src)


def test_4_a_rollback_on_every_provider_is_refused(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    old = (e.providers[0] / CONFIG_NAME).read_bytes()
    with e.open() as v:
        v.set_policy(formats.Policy(max_per_operator=5))
    for p in e.providers:
        (p / CONFIG_NAME).write_bytes(old)
    with e.open() as v:  # the local cache still holds the newest: it wins and heals the providers
        assert v.info().policy.max_per_operator == 5
    for p in e.providers:  # every provider rolled back to its state before the change
        (p / CONFIG_NAME).write_bytes(old)
        shutil.rmtree(p / "configs")
    shutil.rmtree(e.home / "cache")  # and now nothing newer is reachable: refused, not believed
    with pytest.raises(IntegrityError, match="replaying an old config"):
        e.open()
    proc = e.cli("snapshots", check=False)
    assert proc.returncode == 6 and "replaying an old config" in proc.stderr


# 5 -----------------------------------------------------------------------------------------------

def test_5_revocation_sticks_when_a_provider_was_away_or_replays(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    with e.open() as v:
        kid = v.add_key("second", WEAK).id
    saved = (e.providers[0] / "keys" / kid).read_bytes()
    away = e.providers[4].with_name("away")
    e.providers[4].rename(away)  # unmounted
    with e.open() as v:
        change = v.remove_key(kid)
    assert change.pending == ["p5"]
    away.rename(e.providers[4])  # back, with its copy of the revoked key
    (e.providers[0] / "keys" / kid).write_bytes(saved)  # and another provider replays it
    with pytest.raises(WrongPassphrase, match=r"revoked|wrong"):
        Vault.open("second", home=e.home)
    with pytest.raises(WrongPassphrase):
        Vault.recover([e.urls[4]], passphrase="second", home=tmp_path / "fresh")
    with e.open() as v:
        assert kid not in {k.id for k in v.key_objects()}
        v.check()
    assert not any((p / "keys" / kid).exists() for p in e.providers)


def test_5_planted_key_objects_cost_nothing_and_are_not_listed(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    e, _, _ = _vault(tmp_path)
    vault_id = formats.decode(_first_key(e.providers[0]).read_bytes(), formats.KeyFile, "k").vault_id
    expensive = formats.encode(formats.KeyFile(v=1, kdf="argon2id", t=64, m=4 * 1024 * 1024, p=4,
                                               salt=bytes(16), vault_id=vault_id, wrapped=b"x" * 60))
    for i in range(3):  # beyond the limits: refused before any work
        for hostile in e.providers[:2]:
            (hostile / "keys" / f"{i:032x}").write_bytes(expensive)
    for i in range(6):  # in range, wrapping secrets of the attacker's choosing
        forged = keys.wrap(os.urandom(32), b"attacker", vault_id, keys.KdfParams(t=1, m=8, p=1))
        for hostile in e.providers[:2]:
            (hostile / "keys" / f"f{i:031x}").write_bytes(forged)
    calls: list[int] = []
    real = keys.unwrap

    def counting(kf: formats.KeyFile, passphrase: bytes) -> bytes:
        calls.append(kf.t * kf.m)
        return real(kf, passphrase)

    monkeypatch.setattr(keys, "unwrap", counting)
    with e.open() as v:
        assert len(calls) == 1  # the key this machine knows, first
        assert len(v.key_objects()) == 1
    calls.clear()
    # A fresh machine told of a hostile provider and an honest one: the key object held by more
    # providers is tried first (a planted one is on at most n-k of them).
    with Vault.recover([e.urls[0], e.urls[2]], passphrase=PASS, home=tmp_path / "fresh") as v:
        assert len(calls) == 1 and all(c <= keys.STRICT.cost for c in calls)
        assert any("skipped" in w for w in v.last_outcome.warnings)
    calls.clear()
    with pytest.raises(WrongPassphrase):  # the attacker's passphrase opens its own secrets, never the vault
        Vault.recover([e.urls[0]], passphrase="attacker", home=tmp_path / "fresh2")
    assert len(calls) <= 1 + 4 * 3  # bounded: at most MAX_UNKNOWN key objects, MAX_VERSIONS copies each


# 6 -----------------------------------------------------------------------------------------------

def test_6_check_surveys_and_heals_every_replicated_kind(tmp_path: Path) -> None:
    e, _, sid = _vault(tmp_path)
    index = _names(e.providers[2], "index")[0]
    snap = f"snapshots/{sid}"
    key = _names(e.providers[4], "keys")[0]
    (e.providers[2] / index).unlink()
    (e.providers[3] / snap).write_bytes(os.urandom(200))
    (e.providers[4] / key).unlink()
    (e.providers[1] / CONFIG_NAME).unlink()
    with e.open() as v:
        report = v.check()
        found = {(p.kind, p.provider, p.object) for p in report.problems}
        assert {("missing-replica", "p3", index), ("damaged-replica", "p4", snap),
                ("missing-replica", "p5", key), ("stale-replica", "p2", CONFIG_NAME)} <= found, found
        assert not report.healthy
        assert all(p.healed for p in report.problems), report.problems
        assert v.check().problems == []
    for name in (index, snap, key, CONFIG_NAME):
        copies = {(p / name).read_bytes() for p in e.providers}
        assert len(copies) == 1, name


def test_6_missing_shares_name_their_provider(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    (src / "more.bin").write_bytes(os.urandom(300_000))
    wrap, faulty = _faults()
    with e.open(wrap=wrap) as v:
        faulty["p2"].down = True
        v.backup([str(src)], degraded=True)
    with e.open() as v:
        missing = [p for p in v.check().problems if p.kind == api.MISSING_SHARE]
    assert missing and all(p.provider == "p2" for p in missing)


# 7 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alias", ["trailing-slash", "dot-dot", "symlink", "nested"])
def test_7_one_disk_counted_twice_is_refused_before_anything_is_written(tmp_path: Path, alias: str) -> None:
    e = make_env(tmp_path / "v")
    d1 = e.providers[0]
    urls = list(e.urls)
    if alias == "trailing-slash":
        urls[1] = d1.as_uri() + "/"
    elif alias == "dot-dot":
        urls[1] = (e.providers[1] / ".." / d1.name).as_uri()
    elif alias == "symlink":
        link = tmp_path / "link"
        os.symlink(d1, link)
        urls[1] = link.as_uri()
    else:
        (d1 / "sub").mkdir()
        urls[1] = (d1 / "sub").as_uri()
    with pytest.raises(UsageError, match=r"same storage|inside"):
        Vault.init([ProviderSpec(u) for u in urls], 3, 5, PASS, home=e.home, kdf=WEAK)
    assert not any(f.is_file() for p in e.providers for f in p.rglob("*"))
    assert not (e.home / "vault.json").exists()


def test_7_the_same_storage_under_another_address_is_caught_by_its_marker(tmp_path: Path) -> None:
    e = make_env(tmp_path / "v")

    class Elsewhere:  # what a bind mount or a second DNS name of one server looks like
        def __init__(self, inner: Provider) -> None:
            self.inner = inner
            self.info = inner.info
            self.location = ("file", "/somewhere/else")

        def __getattr__(self, attr: str) -> object:
            return getattr(self.inner, attr)

    from freehold.providers.local import LocalProvider

    def wrap(pid: str, prov: Provider) -> Provider:
        return Elsewhere(LocalProvider(e.providers[0])) if pid == "p2" else prov  # type: ignore[return-value]

    with pytest.raises(UsageError, match="same storage"):
        Vault.init([ProviderSpec(u) for u in e.urls], 3, 5, PASS, home=e.home, kdf=WEAK, wrap=wrap)
    assert not any(f.is_file() for p in e.providers for f in p.rglob("*"))  # the markers were taken back


def test_7_provider_add_refuses_an_alias(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    with e.open() as v, pytest.raises(UsageError, match=r"same storage|inside"):
        v.add_provider(ProviderSpec(e.providers[2].as_uri() + "/", name="again"))


# 8 -----------------------------------------------------------------------------------------------

def test_8_a_change_from_a_machine_that_did_not_see_the_latest_is_refused(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    laptop2 = tmp_path / "laptop2"
    Vault.recover([e.urls[0]], passphrase=PASS, home=laptop2).close()
    extra = [tmp_path / "x1", tmp_path / "x2"]
    for d in extra:
        d.mkdir()
    with e.open() as a, Vault.open(PASS, home=laptop2) as b:
        b.add_provider(ProviderSpec(extra[1].as_uri(), name="x2"))
        with pytest.raises(ConflictError, match="run the command again"):
            a.add_provider(ProviderSpec(extra[0].as_uri(), name="x1"))
    assert not (extra[0] / CONFIG_NAME).exists()  # the refused provider was not made a member
    with e.open() as a:  # retried: both providers are there
        a.add_provider(ProviderSpec(extra[0].as_uri(), name="x1"))
        assert [p.id for p in a.info().providers][-2:] == ["x2", "x1"]


def test_8_two_concurrent_changes_never_both_succeed(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    laptop2 = tmp_path / "laptop2"
    Vault.recover([e.urls[0]], passphrase=PASS, home=laptop2).close()
    barrier = threading.Barrier(2, timeout=30)

    class Gate:
        """Holds a machine's claim writes until both machines have reached theirs."""

        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.first = True
            self.open = threading.Event()

        def enter(self) -> None:
            with self.lock:
                first, self.first = self.first, False
            if first:
                barrier.wait()
                self.open.set()
            else:
                self.open.wait(30)

    class AtTheClaim:
        def __init__(self, inner: Provider, gate: Gate) -> None:
            self.inner = inner
            self.gate = gate
            self.info = inner.info
            self.location = inner.location  # type: ignore[attr-defined]

        def put_new(self, name: str, data: bytes) -> bool:
            if name.startswith("configs/"):
                self.gate.enter()
            return self.inner.put_new(name, data)  # type: ignore[attr-defined]

        def __getattr__(self, attr: str) -> object:
            return getattr(self.inner, attr)

    def wrapper() -> object:
        gate = Gate()
        return lambda pid, prov: AtTheClaim(prov, gate)

    outcomes: dict[str, object] = {}
    dirs = {"A": tmp_path / "a-new", "B": tmp_path / "b-new"}
    for d in dirs.values():
        d.mkdir()

    def run(who: str, home: Path) -> None:
        try:
            with Vault.open(PASS, home=home, wrap=wrapper()) as v:  # type: ignore[arg-type]
                v.add_provider(ProviderSpec(dirs[who].as_uri(), name=f"new{who}"))
            outcomes[who] = "ok"
        except Exception as exc:
            outcomes[who] = exc

    threads = [threading.Thread(target=run, args=("A", e.home)), threading.Thread(target=run, args=("B", laptop2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    kinds = sorted(type(o).__name__ if o != "ok" else "ok" for o in outcomes.values())
    assert kinds == ["ConflictError", "ok"], outcomes
    loser = next(w for w, o in outcomes.items() if o != "ok")
    home = e.home if loser == "A" else laptop2
    with Vault.open(PASS, home=home) as v:  # retried, it succeeds: the provider is not "taken"
        v.add_provider(ProviderSpec(dirs[loser].as_uri(), name=f"new{loser}"))
        assert {p.id for p in v.info().providers} >= {"newA", "newB"}


# 9 -----------------------------------------------------------------------------------------------

def test_9_a_small_new_files_size_is_not_public(tmp_path: Path) -> None:
    sizes = []
    for size in (4_321, 3_000):
        e, src, _ = _vault(tmp_path, f"v{size}")
        before = {str(f) for _, f in e.objects()}
        (src / "new.txt").write_bytes(os.urandom(size))
        with e.open() as v:
            v.backup([str(src)])
        new = sorted(f.stat().st_size for _, f in e.objects() if str(f) not in before and "/data/" in str(f))
        sizes.append(new)
        with e.open() as v:
            assert all(r.len >= MIN_PACK and r.len == padme(r.len) for r in v.packs())
    assert sizes[0] == sizes[1]  # 4,321 and 3,000 bytes of new data: the same share sizes


# 10 ----------------------------------------------------------------------------------------------

def test_10_a_vault_used_for_many_calls_behaves_like_many_processes(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    wrap, faulty = _faults()
    with e.open(wrap=wrap) as v:
        for i in range(6):
            (src / f"new{i}.bin").write_bytes(os.urandom(50_000))
            faulty["p2"].down = i % 2 == 0
            v.backup([str(src)], degraded=True)
            assert v.last_outcome.down == (["p2"] if i % 2 == 0 else [])
            faulty["p2"].down = False
            kid = v.add_key(f"extra{i}", WEAK).id
            assert v.last_outcome.down == [] and v.last_outcome.missed == []
            assert all((p / "keys" / kid).exists() for p in e.providers), i
            v.remove_key(kid)
            assert v.snapshots() and v.last_outcome.down == []
        report = v.check()
    assert {p.kind for p in report.problems} <= {"missing-share", "missing-replica"}
    assert all(p.healed for p in report.problems if p.kind == "missing-replica")


# 11 ----------------------------------------------------------------------------------------------

def test_11_passphrases_are_normalised(tmp_path: Path) -> None:
    nfc = unicodedata.normalize("NFC", "café ünïcødé")
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfc != nfd
    e = make_env(tmp_path / "v")
    Vault.init([ProviderSpec(u) for u in e.urls], 3, 5, nfc, home=e.home, kdf=WEAK).close()
    Vault.open(nfd, home=e.home).close()
    with pytest.raises(UsageError, match="empty"):
        Vault.open("", home=e.home)
    proc = e.cli("snapshots", env_override={**e.cli_env(), "FREEHOLD_PASSPHRASE": ""}, check=False)
    assert proc.returncode == 2 and "empty" in proc.stderr


def test_11_a_one_of_n_guardian_split_is_refused(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    with e.open() as v, pytest.raises(UsageError, match="threshold of 1"):
        v.guardian_shares(1, 1)


def test_11_the_newest_snapshot_deleted_everywhere_is_noticed(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    (src / "more.txt").write_text("more")
    with e.open() as v:
        newest, _, _ = v.backup([str(src)])
    for p in e.providers:
        (p / "snapshots" / newest).unlink()
    shutil.rmtree(e.home / "cache")
    with e.open() as v:
        v.snapshots()
        assert any(newest[:12] in w for w in v.last_outcome.warnings)
        assert any(p.kind == "missing-snapshot" for p in v.check().problems)


def test_11_a_stalled_provider_costs_a_hedge_delay_not_a_timeout(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    release = threading.Event()

    class Stalled:
        inline = False  # a remote provider that stopped answering: asked on the pool, and hedged

        def __init__(self, inner: Provider) -> None:
            self.inner = inner
            self.info = inner.info
            self.location = inner.location  # type: ignore[attr-defined]

        def get(self, *a: object) -> bytes:
            release.wait()
            return self.inner.get(*a)  # type: ignore[arg-type]

        def list(self, prefix: str = ""):  # type: ignore[no-untyped-def]
            release.wait()
            return self.inner.list(prefix)

        def __getattr__(self, attr: str) -> object:
            return getattr(self.inner, attr)

    def wrap(pid: str, prov: Provider) -> Provider:
        return Stalled(prov) if pid == "p5" else prov  # type: ignore[return-value]

    done = threading.Event()
    out = tmp_path / "out"

    failed: list[BaseException] = []

    def work() -> None:
        try:
            with e.open(wrap=wrap, hedge_after=0.2) as v:
                v.snapshots()
                v.restore("latest", out)
        except BaseException as exc:
            failed.append(exc)
        done.set()

    t = threading.Thread(target=work, daemon=True)
    t.start()
    finished = done.wait(60)  # a liveness bound, not a timing: the stalled provider never answers
    release.set()
    t.join(30)
    assert finished, "a stalled provider blocked open, listing or restore"
    assert not failed, failed
    same_tree(src, out / src.name)


def test_3_providers_moved_to_new_paths_are_found_by_their_identity_markers(tmp_path: Path) -> None:
    e, src, _ = _vault(tmp_path)
    moved = [tmp_path / "mnt" / f"disk{i}" for i in range(5)]
    (tmp_path / "mnt").mkdir()
    for old, new in zip(e.providers, moved, strict=True):
        old.rename(new)
    shutil.rmtree(e.home)  # a new machine, where the disks are mounted elsewhere
    with Vault.recover([m.as_uri() for m in moved], passphrase=PASS, home=e.home) as v:
        assert len(v.info().providers) == 5
    _restored(e, tmp_path, src)  # and later opens reach them at their new paths
    with e.open() as v:
        assert v.check().healthy


def test_4_shares_on_a_provider_the_config_does_not_name_are_no_crash(tmp_path: Path) -> None:
    """Every provider rolled back to a config from before p6 was added, on a machine that never saw
    the newer one: the stale config is all there is. Restore still works (p6's shares are decoded
    around) and check names the provider the config does not know, instead of a KeyError."""
    e, extra, old, src = _p6_added_later(tmp_path)
    for p in [*e.providers, extra]:
        (p / CONFIG_NAME).write_bytes(old)
        shutil.rmtree(p / "configs", ignore_errors=True)
    shutil.rmtree(e.home)
    with Vault.recover([e.urls[0]], passphrase=PASS, home=e.home) as v:
        assert [p.id for p in v.info().providers] == ["p1", "p2", "p3", "p4", "p5"]
        v.restore("latest", tmp_path / "out")
        kinds = {(p.kind, p.provider) for p in v.check(read_data=True).problems}
    same_tree(src, tmp_path / "out" / src.name)
    assert ("unknown-provider", "p6") in kinds


def test_8_a_change_whose_writer_stopped_after_winning_its_claim_is_finished_by_the_next(tmp_path: Path) -> None:
    e, _, _ = _vault(tmp_path)
    with e.open() as v:
        v.set_policy(formats.Policy(max_per_operator=7))  # generation 2, everywhere
    before = {p: (p / CONFIG_NAME).read_bytes() for p in e.providers}
    laptop2 = tmp_path / "laptop2"
    with Vault.recover([e.urls[0]], passphrase=PASS, home=laptop2) as v:
        v.set_policy(formats.Policy(max_per_operator=6))  # generation 3, by another machine ...
    for p, old in before.items():  # ... as if its writer had died after the claims, before `config`
        (p / CONFIG_NAME).write_bytes(old)
    with e.open() as v:  # readers see generation 2 (3 was never reported done) ...
        assert v.info().policy.max_per_operator == 7
        with pytest.raises(ConflictError):  # ... a writer adopts the decided change and says retry
            v.set_policy(formats.Policy(max_per_operator=5))
    with e.open() as v:
        assert v.info().policy.max_per_operator == 6
        v.set_policy(formats.Policy(max_per_operator=5))
        assert v.info().generation == 4
