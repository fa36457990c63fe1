"""check (design §15b): pack classification, exit codes 0 / 1 / 13 through the CLI, the --json
schema, --read-data-subset as restic's, and share objects no index lists counted apart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from freehold.errors import UsageError
from freehold.jobs.health import parse_subset

from .conftest import Env, write_tree


def _env(root: Path, providers: int = 5) -> Env:
    dirs = [root / f"prov{i}" for i in range(1, providers + 1)]
    for d in dirs:
        d.mkdir(parents=True)
    return Env(root, root / "home", dirs, 3, 5)


def _share_files(e: Env, pack_hex: str) -> list[Path]:
    return sorted(f for p in e.providers for f in (p / "data" / pack_hex[:2]).glob(f"{pack_hex}.*"))


@pytest.fixture
def vault(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Env, list[str]]:
    monkeypatch.setattr("freehold.vault.PACK_SIZE", 256 * 1024)  # several packs
    e = _env(tmp_path)
    # 16 MB: at least four chunks (at most 4 MiB each) whatever the vault's chunker seed, so at
    # least four packs (4 MB gave three packs now and then)
    src = write_tree(tmp_path / "src", small=40, big=16_000_000)
    with e.init() as v:
        v.backup([str(src)])
        packs = [r.id.hex() for r in v.packs()]
    assert len(packs) >= 4
    return e, packs


def test_exit_codes_0_1_13_and_json(vault: tuple[Env, list[str]]) -> None:
    e, packs = vault
    ok = e.cli("check", "--json")
    data = json.loads(ok.stdout)
    assert data["healthy"] and data["exit_code"] == 0 and not data["lost"] and data["unhealthy_packs"] == []
    assert data["orphans"]["packs"] == 0
    files = _share_files(e, packs[0])
    files[0].unlink()  # one share gone: at risk, repairable
    proc = e.cli("check", "--json", check=False)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["exit_code"] == 1 and not data["lost"]
    [pack] = data["unhealthy_packs"]
    assert pack["id"] == packs[0] and pack["state"] == "at-risk" and (pack["good"], pack["k"], pack["n"]) == (4, 3, 5)
    assert sorted(s["state"] for s in pack["shares"]) == ["good"] * 4 + ["missing"]
    text = e.cli("check", check=False).stdout
    assert "1 pack(s) at-risk" in text and "freehold repair" in text
    for f in files[1:3]:  # two more: below k, lost
        f.unlink()
    proc = e.cli("check", "--json", check=False)
    assert proc.returncode == 13, proc.stderr
    data = json.loads(proc.stdout)
    assert data["lost"] and data["exit_code"] == 13
    assert [p["state"] for p in data["unhealthy_packs"]] == ["lost"]
    assert any(p["kind"] == "lost-pack" and packs[0][:12] in p["detail"] for p in data["problems"])
    assert "Data is lost" in e.cli("check", check=False).stdout
    repair = e.cli("repair", "--json", check=False)  # repair cannot save it, and says so
    assert repair.returncode == 13 and json.loads(repair.stdout)["lost"] == [packs[0]]


def test_a_blob_in_no_index_is_13_unless_repair_can_index_it(vault: tuple[Env, list[str]]) -> None:
    e, _ = vault
    for p in e.providers:
        shutil.rmtree(p / "index")
    shutil.rmtree(e.home / "cache")
    proc = e.cli("check", "--json", check=False)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["orphans"]["indexable"] >= 4  # repair rebuilds the index
    assert any(p["kind"] == "missing-blob" for p in data["problems"])
    for p in e.providers:
        shutil.rmtree(p / "data")
    assert e.cli("check", check=False).returncode == 13


def test_read_data_subsets_cover_every_pack(vault: tuple[Env, list[str]]) -> None:
    e, packs = vault
    victim = _share_files(e, packs[0])[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    assert e.cli("check", check=False).returncode == 0  # presence and size cannot see it
    t = 3
    read = 0
    found = []
    for n in range(1, t + 1):
        proc = e.cli("check", "--read-data-subset", f"{n}/{t}", "--json", check=False)
        out = json.loads(proc.stdout)
        read += out["read_packs"]
        found.append(proc.returncode == 1)
        assert proc.returncode == (1 if bytes.fromhex(packs[0])[0] % t == n - 1 else 0)
    assert read == len(packs) and found.count(True) == 1
    proc = e.cli("check", "--read-data-subset", "100%", "--json", check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["read_packs"] == len(packs)
    bad = e.cli("check", "--read-data-subset", "0/3", check=False)
    assert bad.returncode == 2 and "n/t" in bad.stderr


def test_subset_parsing() -> None:
    ids = [bytes([i]) + bytes(31) for i in range(256)]
    parts = [parse_subset(f"{n}/12")(ids) for n in range(1, 13)]
    assert set().union(*parts) == set(ids) and sum(len(p) for p in parts) == 256
    assert len(parse_subset("5%")(ids)) == 13
    assert len(parse_subset("100%")(ids)) == 256
    for bad in ("0%", "101%", "x%", "0/3", "4/3", "1/0", "abc", "1/"):
        with pytest.raises(UsageError):
            parse_subset(bad)


def test_orphans_are_counted_not_problems(vault: tuple[Env, list[str]], tmp_path: Path) -> None:
    e, packs = vault
    # A crashed backup's pack: share objects of a pack no index lists (copied under a new id).
    for f in _share_files(e, packs[1])[:2]:
        fake = "ab" + packs[1][2:]
        dest = f.parents[1] / fake[:2] / f"{fake}.{f.name.split('.')[1]}"
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(f, dest)
    (e.providers[0] / "data" / "zz").mkdir()
    (e.providers[0] / "data" / "zz" / "not-a-share").write_bytes(b"x")
    proc = e.cli("check", "--json")
    data = json.loads(proc.stdout)
    assert data["healthy"] and data["orphans"]["packs"] == 1 and data["orphans"]["shares"] == 2
    assert data["orphans"]["indexable"] == 0 and data["orphans"]["bytes"] > 0
    assert data["orphans"]["unknown"] == ["p1: data/zz/not-a-share"]


def test_draining_and_misplaced_packs_are_at_risk(tmp_path: Path) -> None:
    e = _env(tmp_path, providers=6)
    e.init().close()
    src = write_tree(tmp_path / "src", small=10, big=500_000)
    e.cli("backup", str(src))
    with e.open() as v:
        holders = {s.p for r in v.packs() for s in r.shares if s}
    victim = sorted(holders)[0]
    with e.open() as v:
        v._change_config(v._op(), lambda c: type(c)(**{
            **{f: getattr(c, f) for f in c.__struct_fields__},
            "providers": [type(p)(**{**{f: getattr(p, f) for f in p.__struct_fields__}, "draining": p.id == victim})
                          for p in c.providers]}))
    proc = e.cli("check", "--json", check=False)
    data = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert any(p["kind"] == "draining-share" and p["provider"] == victim for p in data["problems"])
    assert all(h["state"] == "at-risk" for h in data["unhealthy_packs"]) and data["unhealthy_packs"]
    e.cli("repair")
    assert e.cli("check", check=False).returncode == 0
