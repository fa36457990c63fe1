"""Sharing, write-only keys and publishing end to end through the CLI, each on a vault spread
over a mix of real providers: local directories, S3 buckets on SeaweedFS and a js-ipfs node.

Every command runs as ``python -m freehold.cli`` in a subprocess. The recipient of a capability
runs ``freehold open`` with an empty FREEHOLD_HOME and no passphrase; the machine with a
write-only key has a home of its own and only that key's passphrase. After each main flow one
provider is broken (the S3 prefix emptied, a local directory removed, the IPFS node stopped) and
what the recipient, the owner or the gateway reads is shown to survive it (n - k).

One js-ipfs node serves the module and SeaweedFS the session; the tests skip only when npm or
SeaweedFS is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freehold.testing import jsref
from freehold.testing.jsipfs import JsIpfsNode, npm_available
from freehold.testing.seaweed import SeaweedServer
from freehold.unixfs import cid_str, parse_cid, read_car, verify_block

from .conftest import BUCKET_A, BUCKET_B, Env, needs_weed, same_tree
from .people import age_identity, export_file, gateway_get, ssh_identity, start_gateway

pytestmark = [
    needs_weed,
    pytest.mark.skipif(not npm_available(), reason="npm not found: cannot install js-ipfs"),
]

NAS_PASS = "nas machine passphrase"
V1 = "unixfs-v1-2025"
FAST_S3 = {"connect_timeout": 1, "read_timeout": 10, "attempts": 2}
FAST_IPFS = {"connect_timeout": 1, "attempts": 1}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsIpfsNode]:
    with JsIpfsNode(tmp_path_factory.mktemp("jsipfs")) as n:
        yield n


@pytest.fixture
def ipfs(node: JsIpfsNode) -> JsIpfsNode:
    """The module's node, running (a test before may have stopped it: start() reopens its repo)."""
    return node.start()


# -- a vault over mixed providers ----------------------------------------------------------------


@dataclass
class Mixed:
    env: Env                          # env.providers: the local directories
    urls: list[str]                   # every provider URL, in init order
    s3: list[tuple[str, str]]         # (bucket, prefix) of each S3 provider
    ipfs_prefix: str

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.env.cli(*args, "--json").stdout)


def _mixed(root: Path, seaweed: SeaweedServer, node: JsIpfsNode, *, local: int, buckets: list[str], k: int,
           fmt: int = 1) -> Mixed:
    tag = uuid.uuid4().hex[:8]
    dirs = [root / f"local{i}" for i in range(local)]
    for d in dirs:
        d.mkdir(parents=True)
    s3 = [(b, f"e2e-{tag}-{i}") for i, b in enumerate(buckets)]
    ipfs_prefix = f"e2e-{tag}"
    urls = [*(d.as_uri() for d in dirs), *(seaweed.url(b, p, **FAST_S3) for b, p in s3),
            node.url(ipfs_prefix, **FAST_IPFS)]
    env = Env(root, root / "owner-home", dirs, k, len(urls))
    m = Mixed(env, urls, s3, ipfs_prefix)
    out = m.cli_json("init", "--k", str(k), "--n", str(len(urls)), "--format", str(fmt), *urls)
    kinds = [u.split(":", 1)[0] for u in out["providers"]]
    assert kinds == ["file"] * local + ["s3"] * len(buckets) + ["ipfs"], out["providers"]
    return m


def _s3_client(seaweed: SeaweedServer) -> Any:
    import boto3

    creds = seaweed.client_env()
    return boto3.client("s3", endpoint_url=seaweed.endpoint, region_name=creds["AWS_DEFAULT_REGION"],
                        aws_access_key_id=creds["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=creds["AWS_SECRET_ACCESS_KEY"])


def _s3_keys(seaweed: SeaweedServer, bucket: str, prefix: str) -> list[str]:
    client = _s3_client(seaweed)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _empty_s3_prefix(seaweed: SeaweedServer, bucket: str, prefix: str) -> int:
    """Delete every object under the prefix; how many there were."""
    client = _s3_client(seaweed)
    keys = _s3_keys(seaweed, bucket, prefix)
    for key in keys:
        client.delete_object(Bucket=bucket, Key=key)
    assert _s3_keys(seaweed, bucket, prefix) == []
    return len(keys)


def _ipfs_names(node: JsIpfsNode, prefix: str) -> list[str]:
    return [e["Name"] for e in node.rpc("files/ls", ("arg", f"/{prefix}"))[0].get("Entries") or []]


def _stored_everywhere(m: Mixed, seaweed: SeaweedServer, node: JsIpfsNode) -> None:
    """Each provider of every kind holds objects of the vault."""
    for d in m.env.providers:
        assert any(f.is_file() for f in d.rglob("*")), f"nothing stored in {d}"
    for bucket, prefix in m.s3:
        assert _s3_keys(seaweed, bucket, prefix), f"nothing stored in s3://{bucket}/{prefix}"
    assert _ipfs_names(node, m.ipfs_prefix), "nothing stored on the IPFS node"


def _recipient_env(root: Path) -> tuple[dict[str, str], Path]:
    """A stranger's environment: an empty FREEHOLD_HOME, no passphrase (the AWS test identity
    stays: reading the S3 provider needs it)."""
    home = root / "recipient-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("FREEHOLD_PASSPHRASE", "FREEHOLD_NEW_PASSPHRASE")}
    env["FREEHOLD_HOME"] = str(home)
    return env, home


def _records(root: Path) -> Path:
    src = root / "records"
    (src / "health" / "scans").mkdir(parents=True)
    (src / "health" / "diagnosis.txt").write_text("blood pressure fine " * 400)
    (src / "health" / "scans" / "knee.bin").write_bytes(os.urandom(600_000))
    (src / "health" / "Zürich–visit ✓.txt").write_text("non-ascii name")
    (src / "health" / "empty").write_bytes(b"")
    (src / "taxes-outside.txt").write_text("income " * 1000)
    (src / "social").mkdir()
    (src / "social" / "posts.json").write_text('{"not shared": 1}' * 200)
    return src


# -- sharing ---------------------------------------------------------------------------------------


def test_share_to_age_and_ssh_keys_over_local_s3_and_ipfs(tmp_path: Path, s3_env: SeaweedServer,
                                                         ipfs: JsIpfsNode) -> None:
    """k=2 of n=3 (a local directory, an S3 prefix, an IPFS node): a live folder grant to an age
    key and an expiring one-file grant to an SSH key, read by a recipient who has no vault; the
    live grant follows a later backup; revocation ends a grant; with the S3 prefix emptied the
    recipient still restores everything shared."""
    m = _mixed(tmp_path / "v", s3_env, ipfs, local=1, buckets=[BUCKET_A], k=2)
    src = _records(tmp_path)
    m.env.cli("backup", str(src))
    _stored_everywhere(m, s3_env, ipfs)
    age_key, age_pub = age_identity(tmp_path)
    ssh_key, ssh_pub = ssh_identity(tmp_path)
    caps = tmp_path / "caps"
    caps.mkdir()
    live = m.cli_json("share", str(src / "health"), "--to", age_pub, "--live", "--label", "doctor",
                      "--out", str(caps / "health.cap"))
    assert live["path"] == "records/health" and live["live"] is True and live["blobs"] > 0
    knee = m.cli_json("share", "records/health/scans/knee.bin", "--to", ssh_pub, "--expires", "30d",
                      "--out", str(caps / "knee.cap"))
    assert knee["expires"] and knee["live"] is False
    listed = {g["id"]: g for g in m.cli_json("shares", "list")}
    assert listed[live["id"]]["live"] and listed[live["id"]]["label"] == "doctor"
    assert listed[knee["id"]]["expires"] and not listed[knee["id"]]["revoked"]

    renv, rhome = _recipient_env(tmp_path)

    def open_cap(cap: str, key: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return m.env.cli("open", str(caps / cap), "--identity", str(key), *args, env_override=renv, check=check)

    names = [e["path"] for e in json.loads(open_cap("health.cap", age_key, "ls", "--json").stdout)]
    assert names[0] == "health" and "health/scans/knee.bin" in names and "health/Zürich–visit ✓.txt" in names
    assert not any("social" in n or "taxes" in n for n in names)
    open_cap("health.cap", age_key, "restore", "--target", str(tmp_path / "out1"))
    same_tree(src / "health", tmp_path / "out1" / "health")
    cat = subprocess.run([sys.executable, "-m", "freehold.cli", "open", str(caps / "health.cap"), "--identity",
                          str(age_key), "cat", "health/diagnosis.txt"], env=renv, capture_output=True, check=True)
    assert cat.stdout == (src / "health" / "diagnosis.txt").read_bytes()
    knee_ls = json.loads(open_cap("knee.cap", ssh_key, "ls", "--json").stdout)
    assert [e["path"] for e in knee_ls] == ["knee.bin"]
    open_cap("knee.cap", ssh_key, "restore", "--target", str(tmp_path / "out-knee"))
    assert (tmp_path / "out-knee" / "knee.bin").read_bytes() == (src / "health" / "scans" / "knee.bin").read_bytes()
    wrong = open_cap("knee.cap", age_key, "ls", check=False)
    assert wrong.returncode == 2 and "not for this identity" in wrong.stderr, wrong.stderr
    assert list(rhome.iterdir()) == [], "the recipient's open wrote local state"

    # A live grant follows the next backup; the one-file grant is revoked and opens nothing more.
    (src / "health" / "new-result.txt").write_text("added after sharing")
    m.env.cli("backup", str(src))
    names = [e["path"] for e in json.loads(open_cap("health.cap", age_key, "ls", "--json").stdout)]
    assert "health/new-result.txt" in names
    revoked = m.cli_json("shares", "revoke", knee["id"][:10])
    assert revoked["id"] == knee["id"] and revoked["revoked"]
    states = {g["id"]: g["state"] for g in m.cli_json("shares", "list")}
    assert states[knee["id"]] == "revoked" and states[live["id"]] != "revoked", states
    gone = open_cap("knee.cap", ssh_key, "ls", check=False)
    assert gone.returncode == 7 and "no reachable provider" in gone.stderr, gone.stderr

    # One provider of three lost: every object under the S3 prefix deleted.
    bucket, prefix = m.s3[0]
    assert _empty_s3_prefix(s3_env, bucket, prefix) > 0
    open_cap("health.cap", age_key, "restore", "--target", str(tmp_path / "out2"))
    same_tree(src / "health", tmp_path / "out2" / "health")
    cat = subprocess.run([sys.executable, "-m", "freehold.cli", "open", str(caps / "health.cap"), "--identity",
                          str(age_key), "cat", "health/new-result.txt"], env=renv, capture_output=True, check=True)
    assert cat.stdout == b"added after sharing"
    assert list(rhome.iterdir()) == []


# -- write-only keys ---------------------------------------------------------------------------------


def test_write_only_machine_over_two_local_two_s3_and_ipfs(tmp_path: Path, s3_env: SeaweedServer,
                                                           ipfs: JsIpfsNode) -> None:
    """A format-2 vault, k=3 of n=5 (two local directories, a prefix in each of two S3 buckets,
    an IPFS node): the owner makes a write-only key; the machine sets up with it alone, backs up,
    and is refused (exit 2, naming the key) every read; the owner lists the machine's snapshot and
    restores it byte for byte, and shares a file of it. A local directory removed, the owner still
    restores, the machine still backs up (--degraded) and the recipient still reads."""
    m = _mixed(tmp_path / "v", s3_env, ipfs, local=2, buckets=[BUCKET_A, BUCKET_B], k=3, fmt=2)
    own = tmp_path / "owner-files"
    own.mkdir()
    (own / "letter.txt").write_text("owner only " * 300)
    (own / "photo.bin").write_bytes(os.urandom(400_000))
    m.env.cli("backup", str(own))
    key_file = tmp_path / "nas.key"
    proc = m.env.cli("keys", "add", "--write-only", "--label", "nas", "--out", str(key_file), "--json",
                     env_override={**m.env.cli_env(), "FREEHOLD_NEW_PASSPHRASE": NAS_PASS})
    assert json.loads(proc.stdout) == {"writer": "nas", "key_file": str(key_file)}
    assert key_file.stat().st_mode & 0o077 == 0

    nas = tmp_path / "nas"
    (nas / "camera").mkdir(parents=True)
    (nas / "camera" / "clip.bin").write_bytes(os.urandom(900_000))
    (nas / "copy-of-photo.bin").write_bytes((own / "photo.bin").read_bytes())
    (nas / "notes.txt").write_text("from the machine " * 100)
    machine_home = tmp_path / "nas-home"
    menv = {k: v for k, v in os.environ.items() if k != "FREEHOLD_NEW_PASSPHRASE"}
    menv.update(FREEHOLD_HOME=str(machine_home), FREEHOLD_PASSPHRASE=NAS_PASS)
    setup = json.loads(m.env.cli("init", "--write-key", str(key_file), "--json", env_override=menv).stdout)
    assert setup["writer"] == "nas" and Path(setup["home"]) == machine_home
    backed = json.loads(m.env.cli("backup", str(nas), "--json", env_override=menv).stdout)
    sid = backed["snapshot"]
    assert sid and backed["files"] == 3 and not backed["providers_down"]
    assert backed["new_bytes"] < 1_100_000, "the owner's photo was stored again (no deduplication)"
    for args in (["snapshots"], ["ls", "latest"], ["restore", "latest", "--target", str(tmp_path / "nope")],
                 ["share", "nas/notes.txt", "--to", "age1x", "--out", str(tmp_path / "no.cap")]):
        proc = m.env.cli(*args, env_override=menv, check=False)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert "write-only key 'nas'" in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "no.cap").exists()
    wrong = m.env.cli("snapshots", check=False, env_override={**menv, "FREEHOLD_HOME": str(m.env.home)})
    assert wrong.returncode != 0, "the machine's passphrase opened the owner's vault"

    snaps = {s["id"]: s for s in m.cli_json("snapshots")}
    assert sid in snaps and snaps[sid]["paths"] == [str(nas)] and snaps[sid]["files"] == 3
    text = m.env.cli("snapshots").stdout
    assert "by write-only key nas" in text, text
    m.env.cli("restore", sid, "--target", str(tmp_path / "restored"))
    same_tree(nas, tmp_path / "restored" / "nas")
    age_key, age_pub = age_identity(tmp_path)
    cap = tmp_path / "clip.cap"
    m.env.cli("share", "nas/camera/clip.bin", "--snapshot", sid, "--to", age_pub, "--out", str(cap))
    renv, _ = _recipient_env(tmp_path)

    # One provider of five lost: a local directory removed.
    shutil.rmtree(m.env.providers[0])
    m.env.cli("restore", sid, "--target", str(tmp_path / "restored2"))
    same_tree(nas, tmp_path / "restored2" / "nas")
    m.env.cli("open", str(cap), "--identity", str(age_key), "restore", "--target", str(tmp_path / "shared"),
              env_override=renv)
    assert (tmp_path / "shared" / "clip.bin").read_bytes() == (nas / "camera" / "clip.bin").read_bytes()
    (nas / "later.txt").write_text("written while a provider was gone")
    later = json.loads(m.env.cli("backup", "--degraded", str(nas), "--json", env_override=menv).stdout)
    assert later["snapshot"] and later["providers_down"], later
    m.env.cli("restore", later["snapshot"], "--target", str(tmp_path / "restored3"))
    same_tree(nas, tmp_path / "restored3" / "nas")


# -- publishing --------------------------------------------------------------------------------------


def _fetch_verified(url: str, token: str, cid: str, content: bytes) -> int:
    """The CAR of ``cid`` and then every block of it raw, each verified against its CID; the
    file rebuilt from the blocks is ``content``. The number of blocks."""
    status, body = gateway_get(url, token, cid, "car")
    assert status == 200, body[:300]
    roots, blocks = read_car(body)
    got = dict(blocks)
    assert roots == [parse_cid(cid)]
    for block_cid, data in got.items():
        verify_block(block_cid, data)
        status, raw = gateway_get(url, token, cid_str(block_cid), "raw")
        assert status == 200 and raw == data
        verify_block(block_cid, raw)
    assert export_file(got, parse_cid(cid)) == content
    return len(got)


@pytest.mark.skipif(not jsref.tools_available(), reason="node and npm are needed for the reference importer")
def test_publish_and_gateway_over_local_s3_and_ipfs(tmp_path: Path, s3_env: SeaweedServer,
                                                    ipfs: JsIpfsNode) -> None:
    """k=2 of n=3 (a local directory, an S3 prefix, an IPFS node): the CID and CAR of a published
    file are the reference importer's; the gateway serves its CAR and every raw block, each
    verified, only with the token; with the IPFS node stopped the running gateway and a new one
    still serve it all."""
    m = _mixed(tmp_path / "v", s3_env, ipfs, local=1, buckets=[BUCKET_B], k=2)
    src = tmp_path / "paper.bin"
    content = os.urandom(2_300_000)                      # three 1 MiB chunks under unixfs-v1-2025
    src.write_bytes(content)
    car = tmp_path / "paper.car"
    res = m.cli_json("publish", str(src), "--car", str(car))
    ref = jsref.reference_import(src, V1, car_out=tmp_path / "ref.car")
    assert res["cid"] == ref["root"] and res["profile"] == V1 and res["backed_up"] is True
    assert car.read_bytes() == ref["car"].read_bytes()
    _stored_everywhere(m, s3_env, ipfs)
    listed = [r for r in m.cli_json("published") if r["id"] == res["id"]]
    assert len(listed) == 1 and listed[0]["cid"] == res["cid"] and listed[0]["size"] == len(content)
    again = m.cli_json("publish", f"{res['snapshot']}:{res['path']}")      # the stored copy, same CID
    assert again["cid"] == res["cid"] and again["backed_up"] is False

    proc, url, token, _ = start_gateway(m.env.cli_env())
    try:
        assert _fetch_verified(url, token, res["cid"], content) == ref["blocks"]
        assert gateway_get(url, None, res["cid"], "raw")[0] == 401
        assert gateway_get(url, "not-the-token", res["cid"], "raw")[0] == 401
        # One provider of three lost: the IPFS node stopped under the running gateway.
        ipfs.stop()
        assert _fetch_verified(url, token, res["cid"], content) == ref["blocks"]
    finally:
        proc.terminate()
        proc.wait(10)
    proc, url, token, _ = start_gateway(m.env.cli_env())
    try:
        assert _fetch_verified(url, token, res["cid"], content) == ref["blocks"]
    finally:
        proc.terminate()
        proc.wait(10)
