"""A vault written by format version 1.3 stays readable (tests/data/vault-v1.3, never regenerated).

The stored provider objects were written by the format-1.3 writer (commit 8044013,
tests/data/make_vault_v1_3.py): a 3-of-5 vault that was backed up three times, had its first
snapshot forgotten and was pruned (deletion records ``deletions/<hex>``: the snapshot gone, the
old index objects gone, six packs retired and their shares deleted), then backed up degraded
(p5 away: a nil share in each new pack) and repaired by a repair that died between its index
object and its deletion record (two live index objects list the same packs: the merge of
design §10), then maintained (the ``maintenance`` record); its config holds provider prices and a
retention policy. ``missed/p2`` holds what p2 had before the deletions and lost by them, as a
provider that was down during forget and prune would still hold it.

Today's code must recover it on a fresh machine from its providers at whatever path they now
live, list the snapshots without the forgotten one, read the 1.3 records as written, restore
every remaining snapshot exactly as expected.json says (content and metadata), find it healthy
with ``check --read-data``, keep honouring the deletion records when a provider brings the deleted
objects back, and go on working: new backups, ``maintain`` by the stored retention policy, a
prune. Restoring owners needs root: those tests are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import freehold
from freehold import formats
from freehold.api import PruneOptions
from freehold.crypto import KIND_INDEX
from freehold.errors import FreeholdError
from freehold.store import maintenance
from freehold.store.metadata import INDEX_PREFIX
from freehold.vault import Vault

from .stored_vaults import SRC, StoredVault, assert_restored_with_meta, files_below, object_hashes

STORED = StoredVault("vault-v1.3")
FIXTURE = STORED.dir
EXPECTED = STORED.expected
OWNER = STORED.owner
SNAPSHOTS = STORED.snapshots
FORGOTTEN: str = EXPECTED["forgotten"]["id"]
PROVIDERS = STORED.providers
MISSED = FIXTURE / "missed" / EXPECTED["missed"]["provider"]
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="restoring owners needs root")


# ------------------------------------------------------------------ fixtures and helpers

@pytest.fixture
def moved(tmp_path: Path) -> Iterator[Path]:
    """The fixture's providers copied to a path of their own, not the one the config records."""
    with STORED.moved(tmp_path) as root:
        yield root


def put_back_what_p2_missed(moved: Path) -> list[str]:
    """p2 comes back with the copies it held before forget and prune (it was down meanwhile)."""
    names = sorted(EXPECTED["missed"]["objects"])
    for name in names:
        (moved / "p2" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(MISSED / name, moved / "p2" / name)
    return names


def index_objects(v: Vault) -> dict[str, formats.IndexFile]:
    """Every live index object, decoded by today's code."""
    op = v._op()
    out = {}
    for name in op.live_listing(INDEX_PREFIX).names:
        hexname = name[len(INDEX_PREFIX):]
        _, plain = op.objects.read(INDEX_PREFIX, hexname, KIND_INDEX, "index object")
        out[hexname] = formats.decode(plain, formats.IndexFile, "index object")
    return out


# ------------------------------------------------------------------ the stored fixture itself

def test_the_current_code_is_under_test() -> None:
    assert Path(freehold.__file__).resolve().is_relative_to(SRC), freehold.__file__


def test_the_fixture_is_intact() -> None:
    """Every stored object is the one the format-1.3 writer wrote, nothing else is there, and the
    whole fixture stays under 3 MiB."""
    assert object_hashes(FIXTURE / "providers") == EXPECTED["objects"]
    assert object_hashes(MISSED) == EXPECTED["missed"]["objects"]
    assert sum(f.stat().st_size for f in FIXTURE.rglob("*") if f.is_file()) < 3 * 2**20
    assert EXPECTED["format"] == "1.3" and EXPECTED["writer"] == "8044013"
    assert SNAPSHOTS[0]["parent"] == FORGOTTEN
    assert [s["parent"] for s in SNAPSHOTS[1:]] == [s["id"] for s in SNAPSHOTS[:-1]]
    assert [s["degraded"] for s in SNAPSHOTS] == [False, False, True]


def test_the_fixture_holds_every_1_3_object() -> None:
    """Deletion records, the maintenance record, index objects repeating a pack, the forgotten
    snapshot absent, the retired packs' shares deleted: on every provider."""
    reasons = sorted(d["reason"] for d in EXPECTED["deletions"])
    assert reasons == ["forget", "prune"]
    names = files_below(FIXTURE / "providers")
    retired = set(EXPECTED["retired_packs"])
    for pid in PROVIDERS:
        assert {f"{pid}/deletions/{d['name']}" for d in EXPECTED["deletions"]} <= names
        assert f"{pid}/maintenance" in names
        assert f"{pid}/snapshots/{FORGOTTEN}" not in names
        assert not [n for n in names if n.startswith(f"{pid}/data/") and n.split("/")[-1][:64] in retired]
        assert len([n for n in names if n.startswith(f"{pid}/index/")]) == len(EXPECTED["index_objects"])
    assert EXPECTED["merged_packs"] and all(o["time"] for o in EXPECTED["index_objects"])
    assert f"snapshots/{FORGOTTEN}" in EXPECTED["missed"]["objects"]


def test_the_1_3_records_read_as_written(moved: Path, home: Path) -> None:
    """Today's code decodes the deletion records, the maintenance record, index objects with
    ``time``, the provider prices and the retention policy as the 1.3 writer wrote them. No root."""
    with Vault.recover(STORED.urls(moved)[::-1], passphrase=OWNER, home=home) as v:
        assert [sid for sid, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS]   # the forgotten one stays gone
        with pytest.raises(FreeholdError):
            v.snapshot(FORGOTTEN)
        for sid, snap in v.snapshots():
            s = next(e for e in SNAPSHOTS if e["id"] == sid)
            assert (snap.parent.hex() if snap.parent else None, snap.files, snap.dirs, snap.size) == \
                (s["parent"], s["files"], s["dirs"], s["size"])
        info = v.info()
        assert info.generation == EXPECTED["generation"]
        assert [(p.id, p.url, p.jurisdiction, p.marker, p.price, p.draining) for p in info.providers] == \
            [(e["id"], e["url"], e["jurisdiction"], e["marker"], e["price"], e["draining"])
             for e in EXPECTED["providers"]]
        assert v.retention_policy() == formats.Retention(**EXPECTED["retention"])
        op = v._op()
        gone = op.load_deletions()
        got = [{"name": name, "time": rec.time, "host": rec.host, "reason": rec.reason,
                "snapshots": list(rec.snapshots), "index": list(rec.index), "packs": [p.hex() for p in rec.packs]}
               for name, rec in sorted(gone.records.items())]
        assert got == EXPECTED["deletions"]
        assert FORGOTTEN in gone.snapshots and {p.hex() for p in gone.packs} == set(EXPECTED["retired_packs"])
        record = maintenance.newest(op.replicas, v._store.keys.metadata)
        assert record is not None
        assert (record.time, record.host, record.period_days, record.subset, record.subsets) == \
            tuple(EXPECTED["maintenance"][k] for k in ("time", "host", "period_days", "subset", "subsets"))
        idx = index_objects(v)
        assert {name: (f.time, {r.id.hex(): [s.p if s else None for s in r.shares] for r in f.packs})
                for name, f in idx.items()} == \
            {o["name"]: (o["time"], o["packs"]) for o in EXPECTED["index_objects"]}
        # The merge: a recorded share beats nil, whichever index object it is in.
        packs = {rec.id.hex(): rec for rec in v.packs()}
        assert sorted(packs) == EXPECTED["pack_ids"]
        for pid in EXPECTED["merged_packs"]:
            assert all(s is not None for s in packs[pid].shares), packs[pid]
            assert sum(pid in o["packs"] for o in EXPECTED["index_objects"]) == 2


# ------------------------------------------------------------------ restore and check

@needs_root
def test_recover_at_new_paths_and_restore_every_snapshot(moved: Path, home: Path, tmp_path: Path) -> None:
    """All five providers at new paths, given in reverse order; every remaining snapshot
    restored byte- and metadata-exact, the forgotten one refused."""
    with Vault.recover(STORED.urls(moved)[::-1], passphrase=OWNER, home=home) as v:
        assert not v.last_outcome.down, v.last_outcome
        STORED.restore_all(v, tmp_path)
        with pytest.raises(FreeholdError):
            v.restore(FORGOTTEN, tmp_path / "forgotten")
    assert not (tmp_path / "forgotten").exists() or not any((tmp_path / "forgotten").iterdir())
    with Vault.open(OWNER, home=home) as v:  # the recovered configuration opens it again
        v.restore(SNAPSHOTS[-1]["id"][:12], tmp_path / "again")
    assert_restored_with_meta(tmp_path / "again", SNAPSHOTS[-1])


def test_check_read_data_is_healthy(moved: Path, home: Path) -> None:
    with Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home) as v:
        report = v.check(read_data=True)
    assert report.healthy and not report.problems, report.problems
    assert report.snapshots == len(SNAPSHOTS) and report.packs == EXPECTED["packs"]
    assert report.read_packs == EXPECTED["packs"]
    assert report.orphans.packs == 0 and report.orphans.retired_packs == 0, report.orphans
    assert files_below(moved) == set(EXPECTED["objects"])  # check found nothing to heal


@needs_root
@pytest.mark.parametrize("gone", [("p1", "p2"), ("p4", "p5"), ("p2", "p5")], ids="-".join)
def test_two_providers_lost(moved: Path, home: Path, tmp_path: Path, gone: tuple[str, str]) -> None:
    for pid in gone:
        shutil.rmtree(moved / pid)
    left = [pid for pid in PROVIDERS if pid not in gone]
    with Vault.recover(STORED.urls(moved, left), passphrase=OWNER, home=home) as v:
        assert [sid for sid, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS]
        STORED.restore_all(v, tmp_path)


# ------------------------------------------------------------------ the deletion records hold

def test_a_provider_that_missed_the_deletions_brings_nothing_back(moved: Path, home: Path, tmp_path: Path) -> None:
    """p2 returns with the forgotten snapshot, the index objects prune replaced and shares of the
    retired packs: the 1.3 deletion records keep them gone. Check deletes the gone copies without
    healing them onto others, prune deletes the retired shares, and the vault ends as stored."""
    back = put_back_what_p2_missed(moved)
    assert f"snapshots/{FORGOTTEN}" in back and any(n.startswith("index/") for n in back)
    with Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home) as v:
        assert [sid for sid, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS]
        assert sorted(rec.id.hex() for rec in v.packs()) == EXPECTED["pack_ids"]   # retired ones not loaded
        assert set(index_objects(v)) == {o["name"] for o in EXPECTED["index_objects"]}
        report = v.check()
        assert report.exit_code in (0, 1) and not report.lost, report.problems
        for pid in PROVIDERS:
            assert not (moved / pid / "snapshots" / FORGOTTEN).exists(), pid
        assert report.orphans.retired_packs == len([n for n in back if n.startswith("data/")]), report.orphans
        pruned = v.prune()
        assert pruned.deleted_packs >= report.orphans.retired_packs and pruned.deferred_packs == 0, pruned
        assert [sid for sid, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS]
        assert v.check(read_data=True).healthy
    left = files_below(moved)
    assert not {f"p2/{n}" for n in back} & left, sorted({f"p2/{n}" for n in back} & left)
    kept = ("snapshots", "ids", "keys")
    assert {n for n in left if n.split("/")[1] in kept} == {n for n in EXPECTED["objects"] if n.split("/")[1] in kept}
    assert {n for n in EXPECTED["objects"] if "/deletions/" in n} <= left   # records are never deleted


# ------------------------------------------------------------------ the vault goes on working

def test_a_new_backup_maintain_by_the_stored_policy_and_prune(moved: Path, home: Path, tmp_path: Path) -> None:
    """Today's code backs up into the stored vault (five snapshots of a new tree), ``maintain``
    forgets by the retention policy the 1.3 writer stored (per host and paths: keep last 3, daily 7,
    weekly 4, which with restic's rules also keeps the oldest of a group while a count is not
    reached: of the new five the second goes, the stored three all stay) and prunes the data only
    that snapshot held, a second prune finds nothing to drop, and everything left restores."""
    src = tmp_path / "new"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"written by today's code into a 1.3 vault\n")
    new: list[str] = []
    with Vault.recover(STORED.urls(moved), passphrase=OWNER, home=home) as v:
        for i in range(5):
            if i == 1:
                (src / "sub" / "second-only.bin").write_bytes(os.urandom(200_000))
            if i == 2:
                (src / "sub" / "second-only.bin").unlink()
            (src / "step.txt").write_bytes(b"step %d\n" % i)
            sid, _, _ = v.backup([str(src)])
            new.append(sid)
        assert [s for s, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS] + new
        rep = v.maintain(take_over=True)
        assert rep.exit_code == 0, rep
        assert rep.forget is not None and [s for s, _ in rep.forget.removed] == [new[1]], rep.forget
        assert rep.prune is not None and rep.prune.deleted_packs > 0 and not rep.prune.deferred_packs, rep.prune
        again = v.prune(PruneOptions())   # nothing left to do (padding is not "unused": test_prune)
        assert again.dropped == again.repacked == again.new_packs == 0 and again.orphans == 0, again
        assert not again.deferred_packs, again
        assert [s for s, _ in v.snapshots()] == [s["id"] for s in SNAPSHOTS] + new[:1] + new[2:]
        report = v.check(read_data=True)
        assert report.healthy, report.problems
        gone = v._op().load_deletions()
        assert {FORGOTTEN, new[1]} <= gone.snapshots
        v.restore(new[-1], tmp_path / "out")
        if ROOT:
            for i, s in enumerate(SNAPSHOTS):
                v.restore(s["id"], tmp_path / f"r{i}")
                assert_restored_with_meta(tmp_path / f"r{i}", s)
    restored = tmp_path / "out" / "new"
    assert sorted(p.name for p in restored.rglob("*")) == ["a.txt", "step.txt", "sub"]
    assert (restored / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    assert (restored / "step.txt").read_bytes() == b"step 4\n"
    assert not any((moved / pid / "snapshots" / new[1]).exists() for pid in PROVIDERS)


# ------------------------------------------------------------------ the command line

@needs_root
def test_recover_list_restore_and_check_with_the_cli(moved: Path, home: Path, tmp_path: Path) -> None:
    STORED.cli(home, "recover", *[a for u in STORED.urls(moved) for a in ("--from", u)])
    listed = json.loads(STORED.cli(home, "snapshots", "--json").stdout)
    assert [s["id"] for s in listed] == [s["id"] for s in SNAPSHOTS]
    for i, s in enumerate(SNAPSHOTS):
        STORED.cli(home, "restore", s["id"], "--target", str(tmp_path / f"r{i}"))
        assert_restored_with_meta(tmp_path / f"r{i}", s)
    report = json.loads(STORED.cli(home, "check", "--read-data", "--json").stdout)
    assert report["healthy"] and report["read_data"] and not report["problems"], report
