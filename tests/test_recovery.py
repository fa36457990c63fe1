"""Keys that cannot be lost: passphrases, guardians, and recovery on a fresh machine from providers alone."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from freehold.crypto import VaultKeys
from freehold.errors import GuardianShareError, UsageError, VaultNotFound, WrongPassphrase
from freehold.keys import KdfParams
from freehold.vault import Vault

from .conftest import PASS, Env, make_env, same_tree, write_tree

WEAK = KdfParams.weak(64)


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, Path, str]:
    root = tmp_path_factory.mktemp("recovery")
    e = make_env(root)
    src = write_tree(root / "src", small=60, big=2_000_000)
    with e.init() as v:
        v.backup([str(src)])
        (src / "later.txt").write_text("a second snapshot")
        sid, _, _ = v.backup([str(src)])
    return e, src, sid


def _fresh_home(tmp_path: Path) -> Path:
    return tmp_path / "fresh-home"


@pytest.mark.parametrize("which", range(5))
def test_recover_from_each_single_provider_with_passphrase(vault: tuple[Env, Path, str], tmp_path: Path,
                                                           which: int) -> None:
    e, src, sid = vault
    home = _fresh_home(tmp_path)
    with Vault.recover([e.urls[which]], passphrase=PASS, home=home) as v:
        assert len(v.snapshots()) == 2
        assert [p.url for p in v.info().providers] == e.urls  # the full provider list is back
        v.restore("latest", tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    state = json.loads((home / "vault.json").read_text())
    assert len(state["providers"]) == 5
    with Vault.open(PASS, home=home) as v:  # and it is now an ordinary local configuration
        assert v.snapshot("latest")[0] == sid


def test_recover_after_home_deleted_with_other_providers_gone(tmp_path: Path) -> None:
    e = make_env(tmp_path / "v")
    src = write_tree(tmp_path / "src", small=30, big=500_000)
    with e.init() as v:
        v.backup([str(src)])
    shutil.rmtree(e.home)  # the laptop is gone
    shutil.rmtree(e.providers[0])
    shutil.rmtree(e.providers[3])
    with pytest.raises(VaultNotFound):
        Vault.open(PASS, home=e.home)
    with Vault.recover([e.urls[2]], passphrase=PASS, home=e.home) as v:
        v.restore("latest", tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")


def test_recover_errors_are_clear_and_leave_nothing(vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    e, _, _ = vault
    home = _fresh_home(tmp_path)
    with pytest.raises(WrongPassphrase):
        Vault.recover([e.urls[0]], passphrase="nope", home=home)
    with pytest.raises(UsageError):
        Vault.recover([e.urls[0]], home=home)  # neither passphrase nor shares
    with pytest.raises(VaultNotFound):
        empty = tmp_path / "empty"
        empty.mkdir()
        Vault.recover([empty.as_uri()], passphrase=PASS, home=home)
    assert not (home / "vault.json").exists()
    with Vault.recover([e.urls[1]], passphrase=PASS, home=home):
        pass
    with pytest.raises(UsageError, match="already holds"):
        Vault.recover([e.urls[1]], passphrase=PASS, home=home)


def test_guardian_shares_recover_without_passphrase(vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    e, src, _ = vault
    with e.open() as v:
        shares = v.guardian_shares(3, 5)
    assert len(shares) == 5
    for n, combo in enumerate(itertools.combinations(range(5), 3)):
        if n % 3:  # 4 of the 10 threshold subsets, each recovering a whole vault
            continue
        home = tmp_path / f"home{n}"
        with Vault.recover([e.urls[n % 5]], shares=[shares[i] for i in combo], home=home) as v:
            assert len(v.snapshots()) == 2
    for combo in itertools.combinations(range(5), 2):
        home = tmp_path / "too-few"
        with pytest.raises(GuardianShareError):
            Vault.recover([e.urls[0]], shares=[shares[i] for i in combo], home=home)
        assert not (home / "vault.json").exists()
    home = tmp_path / "restore-home"
    with Vault.recover([e.urls[4]], shares=shares[2:], home=home) as v:
        v.add_key("a new passphrase", WEAK)
        v.restore("latest", tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    with Vault.open("a new passphrase", home=home):
        pass


def test_guardian_shares_of_another_vault_or_wrong_passphrase(vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    e, _, _ = vault
    other = make_env(tmp_path / "other")
    with other.init() as ov:
        foreign = ov.guardian_shares(2, 3)
    with e.open() as v:
        protected = v.guardian_shares(2, 3, passphrase="guardian secret")
        mine = v.guardian_shares(2, 3)
    home = tmp_path / "h"
    with pytest.raises(GuardianShareError, match="another vault"):
        Vault.recover([e.urls[0]], shares=foreign[:2], home=home)
    with pytest.raises(GuardianShareError, match="passphrase"):
        Vault.recover([e.urls[0]], shares=protected[:2], share_passphrase="wrong", home=home)
    with pytest.raises(GuardianShareError):
        Vault.recover([e.urls[0]], shares=[mine[0], foreign[1]], home=home)  # mixed sets
    words = mine[0].split()
    words[5] = "zzzz" if words[5] != "zzzz" else "yyyy"
    with pytest.raises(GuardianShareError):
        Vault.recover([e.urls[0]], shares=[" ".join(words), mine[1]], home=home)
    assert not (home / "vault.json").exists()
    with Vault.recover([e.urls[0]], shares=protected[1:], share_passphrase="guardian secret", home=home) as v:
        assert v.snapshots()


def test_passphrase_change_and_several_keys_rewrite_only_key_objects(tmp_path: Path) -> None:
    e = make_env(tmp_path / "v")
    src = write_tree(tmp_path / "src", small=10)
    with e.init() as v:
        v.backup([str(src)])

    def not_keys() -> dict[str, tuple[int, int]]:
        return {str(f): (f.stat().st_size, f.stat().st_mtime_ns) for _, f in e.objects()
                if "/keys/" not in str(f) and "/configs/" not in str(f) and not str(f).endswith("/config")}

    before = not_keys()
    with e.open() as v:
        v.change_passphrase("second", WEAK)
    with pytest.raises(WrongPassphrase):
        Vault.open(PASS, home=e.home)
    with Vault.open("second", home=e.home) as v:
        extra = v.add_key("third", WEAK)
        assert len(v.key_objects()) == 2
    with Vault.open("third", home=e.home) as v:
        v.remove_key(extra.id[:10])
        with pytest.raises(UsageError, match="last key"):
            v.remove_key(v.key_objects()[0].id)
    with pytest.raises(WrongPassphrase):
        Vault.open("third", home=e.home)
    assert not_keys() == before  # no data, index or snapshot object was touched


def test_threat_model_secrets_never_leave_in_clear(tmp_path: Path) -> None:
    """What a provider or a laptop thief holds never contains the master secret, a subkey or the
    passphrase; without the passphrase nothing opens."""
    e = make_env(tmp_path / "v")
    src = write_tree(tmp_path / "src", small=10)
    with e.init() as v:
        v.backup([str(src)])
        master = v._master
        assert master is not None
        sub = VaultKeys.derive(master)
        secrets_ = [master, sub.metadata, sub.data_root, sub.chunk_id, sub.object_name, PASS.encode()]
    assert master is not None
    stolen = [f for _, f in e.objects()] + [f for f in e.home.rglob("*") if f.is_file()]
    for f in stolen:
        data = f.read_bytes()
        for s in secrets_:
            assert s not in data, f"{f} holds a secret"
    with pytest.raises(WrongPassphrase):
        Vault.open("guess", home=e.home)
