"""A vault written by format version 1.1 stays readable (tests/data/vault-v1.1, never regenerated).

The stored provider objects were written by the format-1.1 writer (tests/data/make_vault_v1_1.py):
a 3-of-5 vault whose config went through generations 1..4 (a placement policy, a second key, that
key revoked), with identity markers, config claims and Padmé-padded packs. Today's code must
recover it on a fresh machine from its providers at whatever path they now live (found by their
identity markers), restore both snapshots exactly as expected.json says, find it healthy with
`check --read-data`, refuse the revoked passphrase, and do that with two of the five providers
gone: through the Python API and through the command line.

Also here: the format-1 fixture (tests/data/vault-v1) upgraded by today's code, whose first key
change turns its config into a 1.1 one without losing a byte.
"""

from __future__ import annotations

import json
import math
import shutil
import struct
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

import freehold
from freehold import formats
from freehold.api import REVOKED_KEY
from freehold.errors import WrongPassphrase
from freehold.keys import KdfParams
from freehold.store.packs import padme
from freehold.vault import Vault

from .stored_vaults import SRC, V1, StoredVault, assert_restored, v1_placed

STORED = StoredVault("vault-v1.1")
FIXTURE = STORED.dir
EXPECTED = STORED.expected
OWNER = STORED.owner
REVOKED = EXPECTED["passphrases"]["revoked"]
SNAPSHOTS = STORED.snapshots
PROVIDERS = STORED.providers

# The format-1 fixture, at the fixed path its config records (shared with test_fixture_v1.py).

V1_EXPECTED: dict[str, Any] = json.loads((V1 / "expected.json").read_text())
V1_PASSPHRASE = (V1 / "passphrase.txt").read_text().rstrip("\n")


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture
def moved(tmp_path: Path) -> Iterator[Path]:
    """The fixture's providers copied to a path of their own, not the one the config records."""
    with STORED.moved(tmp_path) as root:
        yield root


def assert_snapshots(v: Vault, expected: list[dict[str, Any]]) -> None:
    snaps = dict(v.snapshots())
    assert sorted(snaps) == sorted(s["id"] for s in expected)
    for s in expected:
        snap = snaps[s["id"]]
        assert list(snap.paths) == s["paths"]
        assert (snap.parent.hex() if snap.parent is not None else None) == s["parent"]
        assert (snap.files, snap.dirs, snap.size) == (s["files"], s["dirs"], s["size"])


def restore_all(v: Vault, expected: list[dict[str, Any]], where: Path) -> None:
    for i, s in enumerate(expected):
        v.restore(s["id"], where / f"r{i}")
        assert_restored(where / f"r{i}", s)


def local_urls(home: Path) -> dict[str, str]:
    """Where vault.json says this machine reaches each provider."""
    return {p["id"]: p["url"] for p in json.loads((home / "vault.json").read_text())["providers"]}


def plant_revoked_key(root: Path) -> Path:
    """Put the revoked key object back on every provider (as a provider that missed its
    deletion, or a hostile one, would serve it)."""
    kid = EXPECTED["revoked"][0]
    data = (FIXTURE / EXPECTED["revoked_key_object"]["path"]).read_bytes()
    for pid in PROVIDERS:
        (root / pid / "keys" / kid).write_bytes(data)
    return Path("keys") / kid


# ------------------------------------------------------------------ the stored fixture itself

def test_the_current_code_is_under_test() -> None:
    assert Path(freehold.__file__).resolve().is_relative_to(SRC), freehold.__file__


def test_the_fixture_is_intact() -> None:
    """Every stored object is the one the format-1.1 writer wrote, nothing else is there, and the
    whole fixture stays under 6 MiB."""
    objects = {str(f.relative_to(FIXTURE / "providers")): blake3.blake3(f.read_bytes()).hexdigest()
               for f in sorted((FIXTURE / "providers").rglob("*")) if f.is_file()}
    assert objects == EXPECTED["objects"]
    revoked = FIXTURE / EXPECTED["revoked_key_object"]["path"]
    assert blake3.blake3(revoked.read_bytes()).hexdigest() == EXPECTED["revoked_key_object"]["blake3"]
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 6 * 2**20
    assert EXPECTED["format"] == "1.1" and EXPECTED["generation"] == 4
    assert SNAPSHOTS[1]["parent"] == SNAPSHOTS[0]["id"] and SNAPSHOTS[0]["parent"] is None
    assert OWNER == EXPECTED["passphrases"]["owner"] != REVOKED


def test_the_fixture_holds_every_1_1_object() -> None:
    """On each provider: its identity marker (empty, named by the config), the config claims of
    generations 2..4, the owner's key object only (the revoked one was deleted)."""
    markers = {e["id"]: e["marker"] for e in EXPECTED["providers"]}
    assert len(set(markers.values())) == len(PROVIDERS)
    for pid in PROVIDERS:
        names = {o.split("/", 1)[1] for o in EXPECTED["objects"] if o.startswith(pid + "/")}
        assert {n for n in names if n.startswith("ids/")} == {f"ids/{markers[pid]}"}
        assert (FIXTURE / "providers" / pid / "ids" / markers[pid]).stat().st_size == 0
        assert {n for n in names if n.startswith("configs/")} == {f"configs/{g:012d}" for g in (2, 3, 4)}
        assert {n for n in names if n.startswith("keys/")} == {f"keys/{k}" for k in EXPECTED["keys"]}
        assert "config" in names
    assert not set(EXPECTED["keys"]) & set(EXPECTED["revoked"])


def test_pack_lengths_are_padme_padded() -> None:
    """Every share header (design §9) records a Padmé length of at least 64 KiB (§8, 1.1), and the
    share object is exactly its header and one stripe of that length."""
    shares = sorted((FIXTURE / "providers").glob("p*/data/*/*"))
    assert len(shares) == EXPECTED["packs"] * EXPECTED["n"]
    for share in shares:
        raw = share.read_bytes()
        magic, version, k, n, index = struct.unpack_from(">4sBBBB", raw, 0)
        length, stripe = struct.unpack_from(">QQ", raw, 8)
        assert (magic, version, k, n) == (b"FHSH", 1, EXPECTED["k"], EXPECTED["n"]), share
        assert index == int(share.suffix[1:]) and raw[24:56].hex() == share.stem, share
        assert length >= 65536 and length == padme(length), (share, length)
        assert stripe == math.ceil(length / k) and len(raw) == 64 + stripe, share


# ------------------------------------------------------------------ recovery at new paths

def test_recover_at_new_paths_and_restore_with_the_api(moved: Path, home: Path, tmp_path: Path) -> None:
    """All five providers at new paths, given in reverse order: each is found by its marker."""
    with Vault.recover(STORED.urls(moved)[::-1], passphrase=OWNER, home=home) as v:
        assert_snapshots(v, SNAPSHOTS)
        assert not v.last_outcome.down, v.last_outcome
        restore_all(v, SNAPSHOTS, tmp_path)
    assert local_urls(home) == dict(zip(PROVIDERS, STORED.urls(moved), strict=True))
    # The recovered configuration opens the vault again, as on any machine.
    with Vault.open(OWNER, home=home) as v:
        v.restore(SNAPSHOTS[1]["id"][:12], tmp_path / "again")
    assert_restored(tmp_path / "again", SNAPSHOTS[1])


def test_check_info_and_keys(moved: Path, home: Path) -> None:
    with Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home) as v:
        report = v.check(read_data=True)
        info = v.info()
        kept = [k.id for k in v.key_objects()]
        packs = v.packs()
    assert report.healthy and not report.problems, report.problems
    assert report.snapshots == len(SNAPSHOTS) and report.packs == EXPECTED["packs"]
    assert info.generation == EXPECTED["generation"]
    assert info.policy == formats.Policy(**EXPECTED["policy"])
    assert info.policy.allow == ["DE", "FR", "NL"] and info.policy.min_jurisdictions == 2
    assert (info.k, info.n) == (EXPECTED["k"], EXPECTED["n"])
    assert [(p.id, p.url, p.jurisdiction, p.operator, p.marker) for p in info.providers] == \
        [(e["id"], e["url"], e["jurisdiction"], e["operator"], e["marker"]) for e in EXPECTED["providers"]]
    assert kept == EXPECTED["keys"]
    assert len(packs) == EXPECTED["packs"] and all(r.len == padme(r.len) for r in packs)
    # check wrote nothing: it found nothing to heal.
    assert {str(f.relative_to(moved)) for f in moved.rglob("*") if f.is_file()} == set(EXPECTED["objects"])


def test_the_passphrase_is_stretched_in_nfc(moved: Path, home: Path) -> None:
    """1.1 stretches NFC(passphrase): the owner's passphrase typed decomposed still opens."""
    typed = unicodedata.normalize("NFD", OWNER)
    assert typed != OWNER
    with Vault.recover(STORED.urls(moved), passphrase=typed, home=home) as v:
        assert v.key_id == EXPECTED["keys"][0]


def test_the_revoked_passphrase_is_refused(moved: Path, home: Path, tmp_path: Path) -> None:
    with pytest.raises(WrongPassphrase):
        Vault.recover(STORED.urls(moved), passphrase=REVOKED, home=home)
    assert not (home / "vault.json").exists()
    Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home).close()
    with pytest.raises(WrongPassphrase):
        Vault.open(REVOKED, home=home)


def test_a_revoked_key_object_that_reappears_is_refused(moved: Path, home: Path, tmp_path: Path) -> None:
    """The revoked key object back on every provider: it unlocks the master secret, and the
    sealed config's `revoked` list refuses it; check reports it and deletes it everywhere."""
    name = plant_revoked_key(moved)
    fresh = tmp_path / "fresh-home"
    with pytest.raises(WrongPassphrase, match="revoked"):
        Vault.recover(STORED.urls(moved), passphrase=REVOKED, home=fresh)
    assert not (fresh / "vault.json").exists()
    Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home).close()
    with pytest.raises(WrongPassphrase):
        Vault.open(REVOKED, home=home)
    with Vault.open(OWNER, home=home) as v:
        report = v.check()
    assert {p.kind for p in report.problems} == {REVOKED_KEY}, report.problems
    assert not any((moved / pid / name).exists() for pid in PROVIDERS)


@pytest.mark.parametrize("gone", [("p1", "p2"), ("p4", "p5"), ("p2", "p5")], ids="-".join)
def test_two_providers_lost(moved: Path, home: Path, tmp_path: Path, gone: tuple[str, str]) -> None:
    for pid in gone:
        shutil.rmtree(moved / pid)
    left = [pid for pid in PROVIDERS if pid not in gone]
    with Vault.recover(STORED.urls(moved, left), passphrase=OWNER, home=home) as v:
        assert_snapshots(v, SNAPSHOTS)
        restore_all(v, SNAPSHOTS, tmp_path)
        assert v.info().generation == EXPECTED["generation"]
    assert {pid: u for pid, u in local_urls(home).items() if pid in left} == \
        dict(zip(left, STORED.urls(moved, left), strict=True))


# ------------------------------------------------------------------ the command line

def test_recover_restore_and_check_with_the_cli(moved: Path, home: Path, tmp_path: Path) -> None:
    STORED.cli(home, "recover", *[a for u in STORED.urls(moved) for a in ("--from", u)])
    assert local_urls(home) == dict(zip(PROVIDERS, STORED.urls(moved), strict=True))
    listed = json.loads(STORED.cli(home, "snapshots", "--json").stdout)
    assert sorted(s["id"] for s in listed) == sorted(s["id"] for s in SNAPSHOTS)
    for i, s in enumerate(SNAPSHOTS):
        STORED.cli(home, "restore", s["id"], "--target", str(tmp_path / f"r{i}"))
        assert_restored(tmp_path / f"r{i}", s)
    report = json.loads(STORED.cli(home, "check", "--read-data", "--json").stdout)
    assert report["healthy"] and report["read_data"] and not report["problems"], report


# ------------------------------------------------------------------ format 1 upgraded to 1.1

@pytest.fixture
def v1_stored() -> Iterator[Path]:
    """A copy of the format-1 fixture at its recorded place, under test_fixture_v1.py's lock."""
    with v1_placed() as at:
        yield at


def test_a_v1_vault_upgraded_by_a_key_change(v1_stored: Path, home: Path, tmp_path: Path) -> None:
    """A version-1 config (generation 0, no key list) becomes a 1.1 one at its first change
    (generation 1, both key objects listed); both passphrases open it and it restores exactly."""
    snapshots = V1_EXPECTED["snapshots"]
    new = "a second passphrase for the format-1 vault"
    with Vault.recover([(v1_stored / "p3").as_uri()], passphrase=V1_PASSPHRASE, home=home) as v:
        assert v.info().generation == 0
        old_key = v.key_id
        added = v.add_key(new, KdfParams.weak(64)).id
        assert v.info().generation == 1
        listed = {k.id: k.listed for k in v.key_objects()}
    assert listed == {old_key: True, added: True}
    for p in ("p1", "p2", "p3", "p4", "p5"):
        assert (v1_stored / p / "keys" / added).is_file()
        assert [f.name for f in (v1_stored / p / "configs").iterdir()] == [f"{1:012d}"]
    for i, passphrase in enumerate((V1_PASSPHRASE, new)):
        with Vault.open(passphrase, home=home) as v:
            assert v.info().generation == 1
            assert_snapshots(v, snapshots)
            restore_all(v, snapshots, tmp_path / f"open{i}")
    with Vault.recover([(v1_stored / "p5").as_uri()], passphrase=new, home=tmp_path / "fresh") as v:
        assert v.info().generation == 1
        report = v.check(read_data=True)
    assert report.healthy, report.problems
