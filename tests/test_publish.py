"""Publishing on IPFS (format 1.4 Part A.2): ``freehold publish``, ``published`` and ``gateway``.

The CIDs and CAR files are checked byte for byte against the IPFS reference importer (npm's
``ipfs-unixfs-importer``, :mod:`freehold.testing.jsref`) on the same input; the gateway is
checked to serve every block of what was published, verified against its CID, to keep serving
it when a provider is gone, and to refuse a record whose CID the vault's content does not have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freehold import formats
from freehold.api import NftInfo
from freehold.gateway import Gateway
from freehold.jobs import publish_local
from freehold.keys import KdfParams
from freehold.store import grants, utc_stamp
from freehold.testing import jsref
from freehold.testing.seaweed import SeaweedServer
from freehold.unixfs import PROFILES, cid_str, import_file, parse_cid, read_car, verify_block
from freehold.unixfs.dagpb import HAMT_SHARD, decode_node, decode_unixfs
from freehold.vault import ProviderSpec, Vault

from .conftest import PASS, Env, make_env, needs_weed
from .people import export_file, gateway_get, start_gateway

pytestmark = pytest.mark.skipif(not jsref.tools_available(),
                                reason="node and npm are needed for the reference importer")

V1, V0 = "unixfs-v1-2025", "unixfs-v0-2015"
BIG = 3 * 1024 * 1024 + 12_345


def _inputs(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    small = root / "note.txt"
    small.write_bytes(b"hello world\n")                       # 12 bytes
    big = root / "big.bin"
    big.write_bytes(os.urandom(BIG))
    tree = root / "Bücher"
    (tree / "日本" / "データ").mkdir(parents=True)
    (tree / "leer").mkdir()
    (tree / "Zürich–visit ✓.txt").write_text("non-ASCII names " * 100)
    (tree / "日本" / "データ" / "scan.bin").write_bytes(os.urandom(1_300_000))
    (tree / "日本" / "empty").write_bytes(b"")
    (tree / "a.txt").write_bytes(b"a" * 5000)
    return {"small": small, "big": big, "dir": tree}


@dataclass
class Published:
    env: Env
    inputs: dict[str, Path]
    results: dict[tuple[str, str], dict[str, Any]]     # (input, profile) -> publish --json
    cars: dict[tuple[str, str], Path]
    refs: dict[tuple[str, str], dict[str, Any]]        # the reference's result, with its CAR


@pytest.fixture(scope="module")
def pub(tmp_path_factory: pytest.TempPathFactory) -> Published:
    root = tmp_path_factory.mktemp("publish")
    env = make_env(root / "vault")
    env.init().close()
    inputs = _inputs(root / "in")
    results, cars, refs = {}, {}, {}
    for name, path in inputs.items():
        for profile in (V1, V0):
            car = root / f"{name}-{profile}.car"
            proc = env.cli("publish", str(path), "--profile", profile, "--car", str(car), "--json")
            results[name, profile] = json.loads(proc.stdout)
            cars[name, profile] = car
            refs[name, profile] = jsref.reference_import(path, profile, car_out=root / f"{name}-{profile}.ref.car")
    return Published(env, inputs, results, cars, refs)


CASES = [(name, profile) for name in ("small", "big", "dir") for profile in (V1, V0)]


@pytest.mark.parametrize(("name", "profile"), CASES)
def test_cid_and_car_are_the_reference_importers(pub: Published, name: str, profile: str) -> None:
    res, ref = pub.results[name, profile], pub.refs[name, profile]
    assert res["cid"] == ref["root"]
    assert res["uri"] == f"ipfs://{ref['root']}"
    assert res["profile"] == profile and res["backed_up"] is True
    assert res["kind"] == ("dir" if name == "dir" else "file")
    assert pub.cars[name, profile].read_bytes() == ref["car"].read_bytes()
    assert res["car_bytes"] == pub.cars[name, profile].stat().st_size


def test_a_folder_big_enough_to_be_a_hamt_shard(pub: Published, tmp_path: Path) -> None:
    """1300 entries with 200-byte names: over the 256 KiB threshold of both profiles, so the
    root is a HAMT shard."""
    big = tmp_path / "many"
    big.mkdir()
    for i in range(1300):
        (big / f"{i:05d}-{'long name ' * 19}.txt").write_text(str(i))
    for profile in (V1, V0):
        car = tmp_path / f"many-{profile}.car"
        res = json.loads(pub.env.cli("publish", str(big), "--profile", profile, "--car", str(car), "--json").stdout)
        ref = jsref.reference_import(big, profile, car_out=tmp_path / f"ref-{profile}.car")
        assert res["cid"] == ref["root"]
        assert car.read_bytes() == ref["car"].read_bytes()
        msg = decode_unixfs(decode_node(dict(read_car(car.read_bytes())[1])[parse_cid(res["cid"])])[0])
        assert msg.type == HAMT_SHARD


def test_text_output_prints_the_cid_and_uri(pub: Published) -> None:
    proc = pub.env.cli("publish", str(pub.inputs["small"]))
    cid = pub.refs["small", V1]["root"]
    assert proc.stdout.splitlines() == [cid, f"ipfs://{cid}"]


def test_published_lists_every_record(pub: Published) -> None:
    listed = json.loads(pub.env.cli("published", "--json").stdout)
    by_id = {r["id"]: r for r in listed}
    for (name, profile), res in pub.results.items():
        rec = by_id[res["id"]]
        assert (rec["cid"], rec["profile"], rec["snapshot"], rec["path"], rec["kind"]) == (
            res["cid"], profile, res["snapshot"], res["path"], res["kind"])
        assert rec["size"] == (BIG if name == "big" else res["size"])
    assert pub.results["big", V1]["size"] == BIG
    snaps = json.loads(pub.env.cli("snapshots", "--json").stdout)
    assert all("published" in s["tags"] for s in snaps)


def test_snapshot_path_publishes_what_the_local_path_published(pub: Published) -> None:
    for name, profile in [("big", V1), ("dir", V0)]:
        res = pub.results[name, profile]
        for spec in (f"{res['snapshot']}:{res['path']}", f"{res['snapshot'][:8]}:{pub.inputs[name]}"):
            again = json.loads(pub.env.cli("publish", spec, "--profile", profile, "--json").stdout)
            assert again["cid"] == res["cid"] and again["backed_up"] is False
            assert again["snapshot"] == res["snapshot"]


def test_nft_metadata_names_the_asset_and_has_the_reference_cid(pub: Published, tmp_path: Path) -> None:
    car = tmp_path / "nft.car"
    res = json.loads(pub.env.cli("publish", str(pub.inputs["big"]), "--nft", "--name", "Mona Lisa ✓",
                                 "--description", 'a "quoted"\nline', "--car", str(car), "--json").stdout)
    meta = json.loads(res["nft_json"])
    assert list(meta) == ["name", "description", "image"]
    assert meta == {"name": "Mona Lisa ✓", "description": 'a "quoted"\nline', "image": f"ipfs://{res['cid']}"}
    assert res["cid"] == pub.refs["big", V1]["root"]
    raw = res["nft_json"].encode("utf-8")
    assert not raw.endswith(b"\n")
    (tmp_path / "meta.json").write_bytes(raw)
    assert res["nft_cid"] == jsref.reference_import(tmp_path / "meta.json", V1)["root"]
    roots, blocks = read_car(car.read_bytes())
    got = dict(blocks)
    assert roots == [parse_cid(res["cid"]), parse_cid(res["nft_cid"])]
    assert got[parse_cid(res["nft_cid"])] == raw
    assert export_file(got, parse_cid(res["cid"])) == pub.inputs["big"].read_bytes()
    default = json.loads(pub.env.cli("publish", str(pub.inputs["small"]), "--nft", "--json").stdout)
    assert json.loads(default["nft_json"])["name"] == "note.txt"
    listed = {r["id"]: r for r in json.loads(pub.env.cli("published", "--json").stdout)}
    assert listed[res["id"]]["nft_cid"] == res["nft_cid"] and listed[res["id"]]["name"] == "Mona Lisa ✓"


def test_errors_are_clear(pub: Published, tmp_path: Path) -> None:
    env, small = pub.env, str(pub.inputs["small"])
    existing = tmp_path / "there.car"
    existing.write_bytes(b"keep me")
    cases = [
        (["publish", small, "--profile", "unixfs-v2"], 2, "unknown profile 'unixfs-v2'"),
        (["publish", small, "--name", "x"], 2, "add --nft"),
        (["publish", str(tmp_path / "nope.txt")], 2, "no such file or folder"),
        (["publish", "latest:no/such/file"], 2, "is not in snapshot"),
        (["publish", "ffffffffff:note.txt"], 5, "no snapshot 'ffffffffff'"),
        (["publish", small, "--car", str(existing)], 2, "exists"),
    ]
    before = len(json.loads(env.cli("published", "--json").stdout))
    for args, code, text in cases:
        proc = env.cli(*args, check=False)
        assert proc.returncode == code, (args, proc.stderr)
        assert text in proc.stderr and proc.stderr.startswith("freehold: error:"), (args, proc.stderr)
    assert existing.read_bytes() == b"keep me"
    assert len(json.loads(env.cli("published", "--json").stdout)) == before
    os.symlink(small, tmp_path / "link")
    proc = env.cli("publish", str(tmp_path / "link"), check=False)
    assert proc.returncode == 2 and "symlinks are refused" in proc.stderr


# ---------------------------------------------------------------------------------- the local fast path


def _settled(path: Path, content: bytes) -> Path:
    """A file written an hour ago, as far as its mtime says (older than publish_local.RACY_NS)."""
    path.write_bytes(content)
    old = time.time_ns() - 3600 * 10**9
    os.utime(path, ns=(old, old))
    return path


def _stored(v: Vault, snapshot: str, name: str, where: Path) -> Path:
    """The file a snapshot holds, restored under ``where``."""
    v.restore(snapshot, where)
    found = [p for p in where.rglob(name) if p.is_file()]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize(("name", "profile"), [(n, p) for n in ("small", "big") for p in (V1, V0)])
def test_a_local_file_dag_is_computed_from_the_file_while_it_is_backed_up(
        pub: Published, tmp_path: Path, name: str, profile: str) -> None:
    """The local path is taken, and gives the reference's CID and CAR, and the vault path's."""
    src = _settled(tmp_path / pub.inputs[name].name, pub.inputs[name].read_bytes())
    ref = pub.refs[name, profile]
    with pub.env.open() as v:
        before = publish_local.TALLY.local
        res = v.publish(str(src), profile=profile, car=tmp_path / "fast.car")
        assert publish_local.TALLY.local == before + 1, publish_local.TALLY
        assert res.cid == ref["root"] and res.backed_up and res.kind == "file"
        assert res.size == src.stat().st_size and res.blocks == ref["blocks"]
        fast = (tmp_path / "fast.car").read_bytes()
        assert fast == ref["car"].read_bytes() and res.car_bytes == len(fast)
        again = v.publish(f"{res.snapshot}:{res.path}", profile=profile, car=tmp_path / "vault.car")
        assert publish_local.TALLY.local == before + 1           # SNAPSHOT:PATH: always the vault
        assert again.cid == res.cid and (tmp_path / "vault.car").read_bytes() == fast
        assert not list(tmp_path.glob(".*.tmp"))                 # no temp CAR left behind
        # with --nft: the metadata's blocks after the asset's, as the vault path writes them
        nft = NftInfo("a ✓ name", "described")
        res = v.publish(str(src), profile=profile, car=tmp_path / "nft-fast.car", nft=nft)
        assert publish_local.TALLY.local == before + 2
        again = v.publish(f"{res.snapshot}:{res.path}", profile=profile, car=tmp_path / "nft-vault.car", nft=nft)
        assert (res.cid, res.nft_cid, res.nft_json) == (again.cid, again.nft_cid, again.nft_json)
        assert (tmp_path / "nft-fast.car").read_bytes() == (tmp_path / "nft-vault.car").read_bytes()
        assert json.loads(res.nft_json)["name"] == "a ✓ name"
    listed = {r["id"]: r for r in json.loads(pub.env.cli("published", "--json").stdout)}
    assert listed[res.id]["cid"] == ref["root"] and listed[res.id]["size"] == src.stat().st_size


def test_a_file_modified_just_now_takes_the_vault_path(pub: Published, tmp_path: Path) -> None:
    """Two writes within one timestamp tick could leave its stat unchanged: not trusted."""
    src = tmp_path / "fresh.bin"
    src.write_bytes(os.urandom(300_000))
    with pub.env.open() as v:
        local, vault = publish_local.TALLY.local, publish_local.TALLY.vault
        res = v.publish(str(src))
        assert (publish_local.TALLY.local, publish_local.TALLY.vault) == (local, vault + 1)
        assert "less than 2 s ago" in publish_local.TALLY.why
    assert res.cid == jsref.reference_import(src, V1)["root"]


def _check_records_what_the_vault_holds(pub: Published, tmp_path: Path, res: Any, car: Path, old: bytes,
                                        new: bytes) -> None:
    with pub.env.open() as v:
        stored = _stored(v, res.snapshot, "moving.bin", tmp_path / "restored")
    assert stored.read_bytes() in (old, new)
    ref = jsref.reference_import(stored, V1, car_out=tmp_path / "stored.ref.car")
    assert res.cid == ref["root"]
    assert car.read_bytes() == ref["car"].read_bytes()
    with pub.env.open() as v, Gateway(v.published_blocks(), port=0) as gw:
        _serves_file(gw, res.cid, stored.read_bytes())
        assert not gw.source.warnings                            # type: ignore[attr-defined]


def test_a_file_rewritten_during_its_local_read_falls_back_to_the_vault(
        pub: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewritten (same size, other bytes, a new mtime) after the local read, before its stat
    check: the local DAG is not used, and the record is the CID of what the backup stored."""
    old, new = os.urandom(BIG), os.urandom(BIG)
    src = _settled(tmp_path / "moving.bin", old)
    rewritten: list[Path] = []

    def rewrite(path: Path) -> None:
        with open(path, "r+b") as f:
            f.write(new)
        rewritten.append(path)

    monkeypatch.setattr(publish_local, "after_read", rewrite)
    car = tmp_path / "moving.car"
    with pub.env.open() as v:
        local, vault = publish_local.TALLY.local, publish_local.TALLY.vault
        res = v.publish(str(src), car=car)
        assert rewritten == [src]
        assert (publish_local.TALLY.local, publish_local.TALLY.vault) == (local, vault + 1)
        assert "changed while it was read" in publish_local.TALLY.why
    assert src.read_bytes() == new and src.stat().st_size == BIG
    _check_records_what_the_vault_holds(pub, tmp_path, res, car, old, new)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_file_rewritten_after_its_local_read_before_the_backup_falls_back(
        pub: Published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The local read saw one unchanging file, the backup another: the backup's node does not
    have the stat read locally, so the vault path is taken and records the new content's CID."""
    old, new = os.urandom(BIG), os.urandom(BIG)
    src = _settled(tmp_path / "moving.bin", old)
    real_start = publish_local.start

    def start_then_rewrite(*args: Any, **kw: Any) -> publish_local.LocalPublish | None:
        job = real_start(*args, **kw)
        assert job is not None
        job.wait()                                              # the local read and its check done
        with open(src, "r+b") as f:
            f.write(new)
        return job

    monkeypatch.setattr(publish_local, "start", start_then_rewrite)
    car = tmp_path / "moving.car"
    with pub.env.open() as v:
        local, vault = publish_local.TALLY.local, publish_local.TALLY.vault
        res = v.publish(str(src), car=car)
        assert (publish_local.TALLY.local, publish_local.TALLY.vault) == (local, vault + 1)
        assert "node does not have" in publish_local.TALLY.why
    assert res.cid == jsref.reference_import(src, V1)["root"] != jsref.reference_import(
        _settled(tmp_path / "old.bin", old), V1)["root"]
    _check_records_what_the_vault_holds(pub, tmp_path, res, car, old, new)


# ---------------------------------------------------------------------------------- the gateway


def _serves_file(gw: Gateway, cid: str, content: bytes) -> int:
    """Every block of the file's DAG fetched raw and verified; its CAR re-read reproduces it."""
    status, body = gateway_get(gw.url, gw.token, cid, "car")
    assert status == 200, body
    roots, blocks = read_car(body)            # each block verified against its CID as it is read
    got = dict(blocks)
    assert roots == [parse_cid(cid)]
    assert export_file(got, parse_cid(cid)) == content
    for block_cid, data in got.items():
        status, raw = gateway_get(gw.url, gw.token, cid_str(block_cid), "raw")
        assert status == 200 and raw == data
        verify_block(block_cid, raw)
    return len(got)


def test_gateway_serves_every_block_of_what_was_published(pub: Published) -> None:
    with pub.env.open() as v, Gateway(v.published_blocks(), port=0) as gw:
        for profile in (V1, V0):
            n = _serves_file(gw, pub.results["big", profile]["cid"], pub.inputs["big"].read_bytes())
            assert n == pub.refs["big", profile]["blocks"]
            assert _serves_file(gw, pub.results["small", profile]["cid"], b"hello world\n") == 1
            status, body = gateway_get(gw.url, gw.token, pub.results["dir", profile]["cid"], "car")
            _, blocks = read_car(body)
            assert status == 200 and len(dict(blocks)) == pub.refs["dir", profile]["blocks"]
        source = gw.source
        assert not source.warnings                           # type: ignore[attr-defined]
        # leaves are not kept: what is in memory is the interior blocks only
        assert sum(map(len, source._inner.values())) < 20_000  # type: ignore[attr-defined]
        status, _ = gateway_get(gw.url, gw.token, "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e", "raw")
        assert status == 404


def _forge(v: Vault, **fields: Any) -> str:
    """A publishing record written as the vault writes them (sealed with its metadata key)."""
    rec = formats.Published(v=1, time=utc_stamp(), **fields)
    op = v._op()
    return grants.write_published(op.replicas, v._store.keys.metadata, rec, op.packs.metadata_quorum())


def test_content_outlives_a_provider_and_forged_records_are_refused(tmp_path: Path) -> None:
    env = make_env(tmp_path / "v")
    env.init().close()
    src = tmp_path / "photo.bin"
    src.write_bytes(os.urandom(1_700_000))
    res = json.loads(env.cli("publish", str(src), "--json").stdout)
    forged_cid = next(iter(import_file([b"not what the vault holds"], PROFILES[V1]))).cid
    with env.open() as v:
        good = _forge(v, cid=parse_cid(res["cid"]), profile=V1, snapshot=res["snapshot"], path=res["path"],
                      kind="file", size=src.stat().st_size)
        bad = _forge(v, cid=forged_cid, profile=V1, snapshot=res["snapshot"], path=res["path"], kind="file")
    shutil.rmtree(env.providers[0])                          # one provider of five gone entirely
    with env.open() as v:
        source = v.published_blocks()
        with Gateway(source, port=0) as gw:
            assert _serves_file(gw, res["cid"], src.read_bytes()) == 3
            status, _ = gateway_get(gw.url, gw.token, cid_str(forged_cid), "raw")
            assert status == 404
        assert sorted(source.served) == sorted([res["id"], good]) and source.refused == [bad]
        assert any(bad[:12] in w and "not served" in w for w in source.warnings), source.warnings
    proc, url, token, lines = start_gateway(env.cli_env())
    try:
        assert any("not served" in line and bad[:12] in line for line in lines), lines
        assert any(line.startswith("Serving 2 published record(s) (1 refused") for line in lines), lines
        req = urllib.request.Request(f"{url}/ipfs/{res['cid']}?format=raw",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            root = resp.read()
        verify_block(parse_cid(res["cid"]), root)
        with pytest.raises(urllib.error.HTTPError) as no_token:
            urllib.request.urlopen(f"{url}/ipfs/{res['cid']}?format=raw", timeout=30)
        assert no_token.value.code == 401
    finally:
        proc.terminate()
        proc.wait(10)
    public = subprocess.Popen([sys.executable, "-m", "freehold.cli", "gateway", "--port", "0", "--public", "--json"],
                              env=env.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert public.stdout is not None
        ready = json.loads(public.stdout.readline())
        assert ready["token"] is None and sorted(ready["served"]) == sorted([res["id"], good])
        assert ready["refused"] == [bad]
        with urllib.request.urlopen(f"{ready['url']}/ipfs/{res['cid']}?format=raw", timeout=30) as resp:
            verify_block(parse_cid(res["cid"]), resp.read())
    finally:
        public.terminate()
        public.wait(10)


@needs_weed
def test_publish_and_fetch_over_s3(tmp_path: Path, s3_env: SeaweedServer) -> None:
    buckets = [f"pub-{i}-{os.urandom(3).hex()}" for i in range(3)]
    for b in buckets:
        s3_env.create_bucket(b)
    fast = {"connect_timeout": 1, "read_timeout": 5, "attempts": 2}
    specs = [ProviderSpec(s3_env.url(b, "vault", **fast)) for b in buckets]
    env = Env(tmp_path, tmp_path / "home", [], 2, 3)
    Vault.init(specs, 2, 3, PASS, home=env.home, kdf=KdfParams.weak(64)).close()
    src = tmp_path / "paper.pdf"
    src.write_bytes(os.urandom(2_500_000))
    res = json.loads(env.cli("publish", str(src), "--json").stdout)
    assert res["cid"] == jsref.reference_import(src, V1)["root"]
    with env.open() as v, Gateway(v.published_blocks(), port=0) as gw:
        assert _serves_file(gw, res["cid"], src.read_bytes()) == 4


def test_publish_with_a_provider_down_needs_degraded(env: Env, tmp_path: Path) -> None:
    """As a backup: with a provider gone, publish refuses unless --degraded, then needs k+1."""
    import shutil as _shutil

    env.init().close()
    f = tmp_path / "poster.txt"
    f.write_bytes(b"a poster for the open day\n" * 100)
    _shutil.rmtree(env.providers[4])
    env.providers[4].write_text("the disk is gone")
    r = env.cli("publish", str(f), check=False)
    assert r.returncode != 0
    r = env.cli("publish", str(f), "--degraded", "--json")
    got = json.loads(r.stdout)
    assert got["cid"] == jsref.reference_import(f, "unixfs-v1-2025")["root"]
    assert [p["cid"] for p in json.loads(env.cli("published", "--json").stdout)] == [got["cid"]]
