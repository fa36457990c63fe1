"""A vault written by format version 1.2 stays readable (tests/data/vault-v1.2, never regenerated).

The stored provider objects were written by the format-1.2 writer (commit 462bc15,
tests/data/make_vault_v1_2.py): a 3-of-5 vault of two snapshots of a tree holding everything
format 1.2 records (design.md §11-§12): owners 1234:2345, user.* xattrs, POSIX ACLs (as
system.posix_acl_* xattrs), hardlinks, a sparse file, a fifo, a char and a block device, atimes,
and a selection that left entries out (``Snapshot.excluded``). Today's code must recover it on a
fresh machine from its providers at whatever path they now live, read every node's ``meta`` as
the writer recorded it, restore both snapshots exactly as expected.json says (content, mode,
times, owners, xattrs, link groups, device numbers, holes: compared with os.lstat and
os.getxattr), find it healthy with ``check --read-data``, and do that with two of the five
providers gone. Restoring owners and device nodes needs root: those tests are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

import freehold
from freehold.vault import Vault

from .stored_vaults import SRC, StoredVault, files_below
from .stored_vaults import assert_restored_with_meta as assert_restored

STORED = StoredVault("vault-v1.2")
FIXTURE = STORED.dir
EXPECTED = STORED.expected
OWNER = STORED.owner
SNAPSHOTS = STORED.snapshots
PROVIDERS = STORED.providers
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="restoring owners and device nodes needs root")


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture
def moved(tmp_path: Path) -> Iterator[Path]:
    """The fixture's providers copied to a path of their own, not the one the config records."""
    with STORED.moved(tmp_path) as root:
        yield root


def recorded(node: Any) -> dict[str, Any]:
    m = node.meta
    assert m is not None, node
    return {"type": node.type, "mode": node.mode, "mtime": node.mtime, "size": node.size,
            "uid": m.uid, "gid": m.gid, "user": m.user, "group": m.group, "atime": m.atime,
            "nlink": m.nlink, "rdev": m.rdev, "sparse": m.sparse, "torn": m.torn,
            "xattrs": {os.fsdecode(x.n): x.v.hex() for x in m.xattrs}}


# ------------------------------------------------------------------ the stored fixture itself

def test_the_current_code_is_under_test() -> None:
    assert Path(freehold.__file__).resolve().is_relative_to(SRC), freehold.__file__


def test_the_fixture_is_intact() -> None:
    """Every stored object is the one the format-1.2 writer wrote, nothing else is there, and the
    whole fixture stays under 3 MiB."""
    objects = {str(f.relative_to(FIXTURE / "providers")): blake3.blake3(f.read_bytes()).hexdigest()
               for f in sorted((FIXTURE / "providers").rglob("*")) if f.is_file()}
    assert objects == EXPECTED["objects"]
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 3 * 2**20
    assert EXPECTED["format"] == "1.2"
    assert SNAPSHOTS[1]["parent"] == SNAPSHOTS[0]["id"] and SNAPSHOTS[0]["parent"] is None
    assert all(s["excluded"] > 0 and s["torn"] == [] == s["skipped"] for s in SNAPSHOTS)


def test_the_1_2_fields_read_as_written(moved: Path, home: Path) -> None:
    """Snapshot.excluded/torn/skipped and every node's meta (uid, gid, names, atime, nlink, rdev,
    sparse, torn, xattrs) decode to what the 1.2 writer recorded. Needs no root."""
    with Vault.recover(STORED.urls(moved)[::-1], passphrase=OWNER, home=home) as v:
        snaps = dict(v.snapshots())
        assert sorted(snaps) == sorted(s["id"] for s in SNAPSHOTS)
        for s in SNAPSHOTS:
            snap = snaps[s["id"]]
            assert list(snap.paths) == s["paths"]
            assert (snap.parent.hex() if snap.parent is not None else None) == s["parent"]
            assert (snap.files, snap.dirs, snap.size) == (s["files"], s["dirs"], s["size"])
            assert (snap.excluded, list(snap.torn), list(snap.skipped)) == (s["excluded"], s["torn"], s["skipped"])
            assert {path: recorded(node) for path, node in v.ls(s["id"])} == s["meta"]


# ------------------------------------------------------------------ recovery at new paths

@needs_root
def test_recover_at_new_paths_and_restore_with_the_api(moved: Path, home: Path, tmp_path: Path) -> None:
    """All five providers at new paths, given in reverse order: each is found by its marker."""
    with Vault.recover(STORED.urls(moved)[::-1], passphrase=OWNER, home=home) as v:
        assert not v.last_outcome.down, v.last_outcome
        STORED.restore_all(v, tmp_path)
    with Vault.open(OWNER, home=home) as v:  # the recovered configuration opens it again
        v.restore(SNAPSHOTS[1]["id"][:12], tmp_path / "again")
    assert_restored(tmp_path / "again", SNAPSHOTS[1])


def test_check_read_data_is_healthy(moved: Path, home: Path) -> None:
    with Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home) as v:
        report = v.check(read_data=True)
        info = v.info()
    assert report.healthy and not report.problems, report.problems
    assert report.snapshots == len(SNAPSHOTS) and report.packs == EXPECTED["packs"]
    assert report.read_packs == EXPECTED["packs"]
    assert (info.k, info.n, info.generation) == (EXPECTED["k"], EXPECTED["n"], EXPECTED["generation"])
    assert [(p.id, p.url, p.jurisdiction, p.marker) for p in info.providers] == \
        [(e["id"], e["url"], e["jurisdiction"], e["marker"]) for e in EXPECTED["providers"]]
    assert files_below(moved) == set(EXPECTED["objects"])  # check found nothing to heal


@needs_root
@pytest.mark.parametrize("gone", [("p1", "p2"), ("p4", "p5"), ("p2", "p5")], ids="-".join)
def test_two_providers_lost(moved: Path, home: Path, tmp_path: Path, gone: tuple[str, str]) -> None:
    for pid in gone:
        shutil.rmtree(moved / pid)
    left = [pid for pid in PROVIDERS if pid not in gone]
    with Vault.recover(STORED.urls(moved, left), passphrase=OWNER, home=home) as v:
        assert sorted(sid for sid, _ in v.snapshots()) == sorted(s["id"] for s in SNAPSHOTS)
        STORED.restore_all(v, tmp_path)


# ------------------------------------------------------------------ the command line

@needs_root
def test_recover_restore_and_check_with_the_cli(moved: Path, home: Path, tmp_path: Path) -> None:
    STORED.cli(home, "recover", *[a for u in STORED.urls(moved) for a in ("--from", u)])
    for i, s in enumerate(SNAPSHOTS):
        STORED.cli(home, "restore", s["id"], "--target", str(tmp_path / f"r{i}"))
        assert_restored(tmp_path / f"r{i}", s)
    report = json.loads(STORED.cli(home, "check", "--read-data", "--json").stdout)
    assert report["healthy"] and report["read_data"] and not report["problems"], report
