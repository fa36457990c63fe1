"""A vault written by format version 1 stays readable (tests/data/vault-v1, never regenerated).

The stored provider objects were written by the format-1 writer (tests/data/make_vault_v1.py).
Today's code must recover the vault from one provider on a fresh machine, restore both snapshots
exactly as expected.json says (content, mode, mtime, symlink targets), find it healthy with
`check --read-data`, and do all that with two of the five providers gone: through the Python API
and through the command line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

import freehold
from freehold.errors import WrongPassphrase
from freehold.vault import Vault

from .stored_vaults import SRC, V1, V1_AT, assert_restored, run_cli, v1_placed

FIXTURE = V1
AT = V1_AT
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected.json").read_text())
PASSPHRASE = (FIXTURE / "passphrase.txt").read_text().rstrip("\n")
SNAPSHOTS: list[dict[str, Any]] = EXPECTED["snapshots"]
PROVIDERS = [f"p{i}" for i in range(1, EXPECTED["n"] + 1)]


def url(pid: str) -> str:
    return (AT / pid).as_uri()


@pytest.fixture
def stored() -> Iterator[Path]:
    """The fixture's providers at their recorded place (one test at a time: the path is fixed)."""
    with v1_placed() as at:
        yield at


def assert_snapshots(v: Vault) -> None:
    snaps = dict(v.snapshots())
    assert sorted(snaps) == sorted(s["id"] for s in SNAPSHOTS)
    for s in SNAPSHOTS:
        snap = snaps[s["id"]]
        assert list(snap.paths) == s["paths"]
        assert (snap.parent.hex() if snap.parent is not None else None) == s["parent"]
        assert (snap.files, snap.dirs, snap.size) == (s["files"], s["dirs"], s["size"])


def test_the_current_code_is_under_test() -> None:
    assert Path(freehold.__file__).resolve().is_relative_to(SRC), freehold.__file__


def test_the_fixture_is_intact() -> None:
    """Every stored object is the one the format-1 writer wrote, and nothing else is there."""
    objects = {str(f.relative_to(FIXTURE / "providers")): blake3.blake3(f.read_bytes()).hexdigest()
               for f in sorted((FIXTURE / "providers").rglob("*")) if f.is_file()}
    assert objects == EXPECTED["objects"]
    assert EXPECTED["format"] == 1 and EXPECTED["providers_at"] == str(AT)
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 6 * 2**20
    assert SNAPSHOTS[1]["parent"] == SNAPSHOTS[0]["id"]


def test_recover_and_restore_with_the_api(stored: Path, home: Path, tmp_path: Path) -> None:
    with Vault.recover([url("p3")], passphrase=PASSPHRASE, home=home) as v:
        assert_snapshots(v)
        v.restore(SNAPSHOTS[0]["id"], tmp_path / "r0")
    assert_restored(tmp_path / "r0", SNAPSHOTS[0])
    # The recovered configuration opens the vault again, as on any machine.
    with Vault.open(PASSPHRASE, home=home) as v:
        assert_snapshots(v)
        v.restore(SNAPSHOTS[1]["id"][:12], tmp_path / "r1")
        report = v.check(read_data=True)
    assert_restored(tmp_path / "r1", SNAPSHOTS[1])
    assert report.healthy, report.problems


def test_wrong_passphrase(stored: Path, home: Path) -> None:
    with pytest.raises(WrongPassphrase):
        Vault.recover([url("p3")], passphrase=PASSPHRASE + "x", home=home)
    assert not (home / "vault.json").exists()


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(home, PASSPHRASE, *args)


def test_recover_restore_and_check_with_the_cli(stored: Path, home: Path, tmp_path: Path) -> None:
    cli(home, "recover", "--from", url("p3"))
    listed = json.loads(cli(home, "snapshots", "--json").stdout)
    assert sorted(s["id"] for s in listed) == sorted(s["id"] for s in SNAPSHOTS)
    for i, s in enumerate(SNAPSHOTS):
        cli(home, "restore", s["id"][:12], "--target", str(tmp_path / f"r{i}"))
        assert_restored(tmp_path / f"r{i}", s)
    report = json.loads(cli(home, "check", "--read-data", "--json").stdout)
    assert report["healthy"] and report["read_data"] and not report["problems"], report
    assert report["snapshots"] == len(SNAPSHOTS)


@pytest.mark.parametrize("gone", [("p1", "p2"), ("p4", "p5"), ("p2", "p5")], ids="-".join)
def test_two_providers_lost(stored: Path, home: Path, tmp_path: Path, gone: tuple[str, str]) -> None:
    for pid in gone:
        shutil.rmtree(AT / pid)
    with Vault.recover([url("p3")], passphrase=PASSPHRASE, home=home) as v:
        assert_snapshots(v)
        for i, s in enumerate(SNAPSHOTS):
            v.restore(s["id"], tmp_path / f"r{i}")
            assert_restored(tmp_path / f"r{i}", s)
        assert not v.check().healthy  # the loss is reported, not hidden


def test_two_providers_lost_with_the_cli(stored: Path, home: Path, tmp_path: Path) -> None:
    for pid in ("p1", "p3"):
        shutil.rmtree(AT / pid)
    cli(home, "recover", "--from", url("p5"))
    for i, s in enumerate(SNAPSHOTS):
        cli(home, "restore", s["id"], "--target", str(tmp_path / f"r{i}"))
        assert_restored(tmp_path / f"r{i}", s)
