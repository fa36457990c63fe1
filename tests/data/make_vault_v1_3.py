"""Make tests/data/vault-v1.3: a small vault written by the format-1.3 writer, stored for good.

This script was run ONCE, as root, with the format-1.3 writer (the source of commit 8044013, the
release of format 1.3, extracted read-only at /tmp/frozen-8044013) first on the path:

    PYTHONPATH=/tmp/frozen-8044013/src .venv/bin/python tests/data/make_vault_v1_3.py

It must never be run again over tests/data/vault-v1.3 (it refuses to): the stored objects are the
point, because they were written by the code of format version 1.3, and every later version must
still read them (docs/design.md: "Once released, a format version stays readable"). Kept so that
anyone can see exactly how the fixture was made, and make a scratch one with ``--out``.

Format 1.3 added deleting, repairing and maintaining (docs/proposed/format-1.3.md, design.md §10,
§10a, §15a, §15b). What it does:
1. builds a deterministic source tree at SOURCE (a 400 KiB pseudo-random file only the first
   snapshot holds, a 300 KiB one all hold, a compressible log, small text files, an empty file, a
   hardlink pair, a symlink, an owner 1234:2345, user.* xattrs, every atime and mtime fixed in ns);
2. ``Vault.init`` 3-of-5 over five local-directory providers at PROVIDERS/p1..p5 (jurisdictions
   DE, FR, DE, FR, NL), Argon2id at KdfParams.weak(64); then two config changes of 1.3:
   ``set_price`` (``ProviderEntry.price``) of p1 and p4, and ``set_retention``
   (``Policy.retention``: keep last 3, daily 7, weekly 4);
3. backs the tree up three times, changing it between (snapshots 1, 2, 3: index objects with
   ``time``); the first snapshot alone holds ``data/only-in-one.bin``;
4. ``forget`` of snapshot 1 (a deletion record, reason "forget", naming it), then ``prune``
   (a deletion record, reason "prune", retiring the old index objects and the packs no remaining
   snapshot needs or that it rewrote; their shares deleted now, no lock being live);
5. with p5 away (its directory moved off), a degraded backup (snapshot 4): its packs record share
   4 as nil; p5 put back; then ``repair``, interrupted (as by a SIGKILL) between writing the index
   object with the repaired records and writing the deletion record that retires the old one: the
   vault is left with two live index objects listing the same packs, the old one with a nil share
   and the new one with it recorded (the merge of design §10); a second ``repair`` finds
   nothing to do (the merged records are healthy) and leaves both;
6. ``maintain`` (period 10 days): check of subset 1/10, forget by the retention policy (nothing
   goes: three snapshots remain, all kept by last 3), no prune; the ``maintenance`` record;
7. before step 4, a copy of provider p2 was taken: the objects it held then that the deletions
   removed (the forgotten snapshot, the replaced index objects, the shares of the retired packs)
   are stored apart under OUT/missed/p2, as a provider that was down during forget and prune
   would have kept them;
8. restores every live snapshot with the same writer and checks every entry against the source,
   ``check --read-data`` healthy, and stores under OUT: providers/p1..p5 (every object, byte for
   byte), missed/, expected.json and passphrase.txt.

Needs root (chown, O_NOATIME).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import blake3

PROVIDERS = Path("/tmp/freehold-fixture-v1.3-gen")   # recorded in the sealed config (as written)
SOURCE = Path("/tmp/freehold-fixture-v1.3-src/srv")   # recorded in the snapshots' paths
PASSPHRASE = ("format one point three, kept forever: freehold fixture v1.3 \u00e5ngstr\u00f6m "
              "\u2014 forget, prune, repair")
JURISDICTIONS = ["DE", "FR", "DE", "FR", "NL"]
PRICES = {"p1": 4.5, "p4": 12.25}                     # per TB-month, the user's currency
K, N = 3, 5
PERIOD_DAYS = 10
T0 = 1_690_000_000_000_000_000                        # 2023-07-22T04:26:40Z, in ns
UID, GID = 1234, 2345                                 # no user or group of these ids exists here
HERE = Path(__file__).resolve().parent
NOATIME = getattr(os, "O_NOATIME", 0)
MISSED = "p2"                                         # the provider whose pre-deletion copies are kept


def stream(seed: bytes, size: int) -> bytes:
    """Deterministic pseudo-random bytes (BLAKE3's XOF)."""
    return blake3.blake3(seed).digest(length=size)


def all_entries(root: Path) -> list[str]:
    out = [""]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return out


def set_times(root: Path, times: dict[str, tuple[int, int]]) -> None:
    """Fixed (atime, mtime) for entries; directories last, deepest first."""
    entries = sorted(times, key=lambda rel: (rel.count("/"), rel), reverse=True)
    isdir = {rel: (root / rel).is_dir() and not (root / rel).is_symlink() for rel in entries}
    for rel in [e for e in entries if not isdir[e]] + [e for e in entries if isdir[e]]:
        os.utime(root / rel if rel else root, ns=times[rel], follow_symlinks=False)


def fix_times(root: Path, step: int) -> None:
    base = T0 + step * 86_400 * 10**9
    times = {}
    for i, rel in enumerate(all_entries(root)):
        mtime = base + i * 2_000_000_011 + 987_654
        times[rel] = (mtime + 3_600_000_000_007 + i, mtime)      # atime an hour after mtime
    set_times(root, times)


def build_source(root: Path) -> None:
    if root.parent.exists():
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    files: dict[str, tuple[bytes, int]] = {
        "README.txt": (b"Freehold fixture, format version 1.3: forget, prune, repair, maintain.\n"
                       b"Do not regenerate.\n", 0o644),
        "empty.txt": (b"", 0o644),
        "data/only-in-one.bin": (stream(b"freehold fixture v1.3 forgotten", 400 * 1024 + 13), 0o640),
        "data/kept.bin": (stream(b"freehold fixture v1.3 kept", 300 * 1024 + 31), 0o644),
        "data/app.log": (b"".join(b"2023-07-22 04:%02d:%02d host=delta op=put key=/k/%06d ok\n"
                                  % (i // 60 % 60, i % 60, i) for i in range(20_000)), 0o644),
        "data/notes.txt": (b"notes with an extended attribute\n", 0o600),
        "links/a": (stream(b"freehold fixture v1.3 hardlink", 3000), 0o644),
        "project/plan.txt": (b"plan, first version\n", 0o664),
    }
    for d in ("data", "links", "project"):
        (root / d).mkdir()
        os.chmod(root / d, 0o755)
    for rel, (data, mode) in files.items():
        (root / rel).write_bytes(data)
        os.chmod(root / rel, mode)
    os.link(root / "links/a", root / "links/b")
    os.symlink("data/notes.txt", root / "notes-link")
    os.chown(root / "project", UID, GID)
    os.chown(root / "project/plan.txt", UID, GID)
    os.chmod(root / "project", 0o2775)
    os.setxattr(root / "data/notes.txt", "user.comment", b"kept by format 1.3")
    os.setxattr(root / "project", "user.purpose", b"a directory's own xattr")
    fix_times(root, 0)


def change_source(root: Path, step: int) -> None:
    """Between backups: step 1 drops only-in-one.bin and rewrites the plan; step 2 adds a file and
    changes an xattr; step 3 (the degraded backup) appends to the log and adds a file."""
    if step == 1:
        (root / "data/only-in-one.bin").unlink()
        (root / "project/plan.txt").write_bytes(b"plan, second version: a little longer\n")
    elif step == 2:
        (root / "data/added.txt").write_bytes(b"added before the third backup\n")
        os.chown(root / "data/added.txt", GID, UID)
        os.chmod(root / "data/added.txt", 0o600)
        os.setxattr(root / "data/notes.txt", "user.comment", b"changed before the third backup")
    elif step == 3:
        with open(root / "data/app.log", "ab") as f:
            f.write(b"".join(b"2023-07-25 11:%02d:%02d host=delta op=get key=/k/%06d ok\n"
                             % (i // 60 % 60, i % 60, i) for i in range(2_000)))
        (root / "links/c.txt").write_bytes(stream(b"freehold fixture v1.3 fourth", 20_000))
    fix_times(root, step)


TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
         stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev"}


def read_quietly(path: Path) -> bytes:
    """A file's bytes, leaving its atime alone (O_NOATIME: we are root)."""
    fd = os.open(path, os.O_RDONLY | NOATIME)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def describe(root: Path, prefix: str) -> list[dict[str, Any]]:
    """Every entry under root (root included, as ``prefix``): what a restore must reproduce, as
    expected.json records it (the shape of vault-v1.2's). Every lstat is taken first."""
    rels = all_entries(root)
    stats = {rel: (root / rel if rel else root).lstat() for rel in rels}
    groups: dict[tuple[int, int], str] = {}
    for rel in rels:
        st = stats[rel]
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            groups.setdefault((st.st_dev, st.st_ino), f"{prefix}/{rel}")
    out = []
    for rel in rels:
        p, st = (root / rel if rel else root), stats[rel]
        kind = TYPES[stat.S_IFMT(st.st_mode)]
        entry: dict[str, Any] = {"path": f"{prefix}/{rel}" if rel else prefix, "type": kind,
                                 "mode": stat.S_IMODE(st.st_mode), "mtime_ns": st.st_mtime_ns,
                                 "uid": st.st_uid, "gid": st.st_gid}
        if kind not in ("dir", "symlink"):
            entry["atime_ns"] = st.st_atime_ns
        if kind == "symlink":
            target = os.fsencode(os.readlink(p))
            entry.update(size=len(target), target=os.fsdecode(target), blake3=blake3.blake3(target).hexdigest())
        elif kind == "file":
            data = read_quietly(p)
            entry.update(size=len(data), blake3=blake3.blake3(data).hexdigest(), nlink=st.st_nlink,
                         sparse=st.st_blocks * 512 < st.st_size)
            if st.st_nlink > 1:
                entry["link"] = groups[(st.st_dev, st.st_ino)]
        entry["xattrs"] = {n: os.getxattr(p, n, follow_symlinks=False).hex()
                           for n in sorted(os.listxattr(p, follow_symlinks=False))}
        out.append(entry)
    return out


def files_under(root: Path) -> dict[str, bytes]:
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def provider_objects(providers: list[Path]) -> dict[str, str]:
    objects: dict[str, str] = {}
    for p in providers:
        for f in sorted(p.rglob("*")):
            if f.is_file():
                assert not f.name.startswith("."), f"temporary file left behind: {f}"
                objects[str(f.relative_to(p.parent))] = blake3.blake3(f.read_bytes()).hexdigest()
    return objects


class Crash(BaseException):
    """Stands for a SIGKILL: raised where the process would die, caught by nothing but main."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "vault-v1.3")
    args = ap.parse_args()
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()):
        print(f"refusing: {out} already holds a fixture; it pins format 1.3 and is never regenerated",
              file=sys.stderr)
        return 2

    import freehold
    import freehold.store
    from freehold import formats
    from freehold.api import PruneOptions
    from freehold.crypto import KIND_INDEX
    from freehold.keys import KdfParams
    from freehold.store.metadata import INDEX_PREFIX
    from freehold.vault import ProviderSpec, Vault

    revision = getattr(formats, "FORMAT_REVISION", None)
    print(f"writer: {Path(freehold.__file__).parent} (format revision {revision})")
    if revision != "1.3" or formats.FORMAT_VERSION != 1:
        print("refusing: this writer does not write format 1.3", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("refusing: needs root (chown, O_NOATIME)", file=sys.stderr)
        return 2

    build_source(SOURCE)
    if PROVIDERS.exists():
        shutil.rmtree(PROVIDERS)
    providers = [PROVIDERS / f"p{i}" for i in range(1, N + 1)]
    for p in providers:
        p.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="freehold-fixture-v1.3-"))
    home = work / "home"
    specs = [ProviderSpec(p.as_uri(), jurisdiction=j) for p, j in zip(providers, JURISDICTIONS, strict=True)]
    Vault.init(specs, K, N, PASSPHRASE, home=home, kdf=KdfParams.weak(64)).close()
    retention = formats.Retention(last=3, daily=7, weekly=4)
    with Vault.open(PASSPHRASE, home=home) as v:
        for pid, price in PRICES.items():
            v.set_price(pid, price)
        v.set_retention(retention)
        assert v.retention_policy() == retention

    snapshots: list[dict[str, Any]] = []

    def backup(degraded: bool = False) -> None:
        before = describe(SOURCE, SOURCE.name)
        with Vault.open(PASSPHRASE, home=home) as v:
            sid, snap, _ = v.backup([str(SOURCE)], degraded=degraded)
        entries = describe(SOURCE, SOURCE.name)
        assert entries == before, "the backup changed the source (an atime?)"
        assert snap.skipped == [] and snap.torn == [], snap
        snapshots.append({"id": sid, "paths": list(snap.paths),
                          "parent": snap.parent.hex() if snap.parent is not None else None,
                          "files": snap.files, "dirs": snap.dirs, "size": snap.size,
                          "degraded": degraded, "entries": entries})
        print(f"snapshot {sid[:12]}: {snap.files} files, {snap.dirs} dirs, {snap.size} bytes")

    backup()
    change_source(SOURCE, 1)
    backup()
    change_source(SOURCE, 2)
    backup()

    before_deletions = files_under(PROVIDERS / MISSED)
    forgotten = snapshots.pop(0)
    with Vault.open(PASSPHRASE, home=home) as v:
        packs_before = {rec.id.hex() for rec in v.packs()}
        rep = v.forget(ids=[forgotten["id"]])
        assert [sid for sid, _ in rep.removed] == [forgotten["id"]], rep
        pr = v.prune(PruneOptions())
        assert pr.deleted_packs > 0 and pr.deferred_packs == 0 and pr.dropped + pr.repacked > 0, pr
        prune = {"packs": pr.packs, "kept": pr.kept, "repacked": pr.repacked, "dropped": pr.dropped,
                 "new_packs": pr.new_packs, "deleted_packs": pr.deleted_packs, "index_objects": pr.index_objects}
        packs_after = {rec.id.hex() for rec in v.packs()}
        assert {sid for sid, _ in v.snapshots()} == {s["id"] for s in snapshots}
    after_deletions = files_under(PROVIDERS / MISSED)
    missed = {name: data for name, data in before_deletions.items() if name not in after_deletions}
    assert f"snapshots/{forgotten['id']}" in missed, sorted(missed)
    assert any(n.startswith("index/") for n in missed) and any(n.startswith("data/") for n in missed), sorted(missed)
    print(f"forget and prune: {prune}; p2 lost {len(missed)} objects")

    # A degraded backup with p5 away, then a repair that dies between its two index steps.
    change_source(SOURCE, 3)
    away = work / "p5-away"
    shutil.move(providers[4], away)
    backup(degraded=True)
    shutil.move(away, providers[4])
    with Vault.open(PASSPHRASE, home=home) as v:
        nil = [rec.id.hex() for rec in v.packs() if any(s is None for s in rec.shares)]
        assert nil, "the degraded backup recorded every share"
    real_write_deletion = freehold.store.write_deletion

    def crash(objects: Any, rec: Any, into: Any, quorum: int) -> str:
        if rec.reason == "repair":
            raise Crash
        return real_write_deletion(objects, rec, into, quorum)

    freehold.store.write_deletion = crash  # type: ignore[assignment]
    try:
        with Vault.open(PASSPHRASE, home=home) as v:
            v.repair()
    except Crash:
        print("repair interrupted after writing its index object, before its deletion record")
    else:
        raise AssertionError("the repair did not reach its deletion record")
    finally:
        freehold.store.write_deletion = real_write_deletion  # type: ignore[assignment]
    with Vault.open(PASSPHRASE, home=home) as v:
        assert not v.locks(), v.locks()
        again = v.repair()
        assert not again.unrepaired and not again.lost and again.index_objects_written == 0, again
        merged = {rec.id.hex(): rec for rec in v.packs() if rec.id.hex() in nil}
        assert all(all(s is not None for s in rec.shares) for rec in merged.values()), merged

    with Vault.open(PASSPHRASE, home=home) as v:
        mrep = v.maintain(period_days=PERIOD_DAYS)
        assert mrep.exit_code == 0 and mrep.prune is None, mrep
        assert mrep.forget is not None and not mrep.forget.removed, mrep.forget
        maintain = {"subset": mrep.subset, "host": mrep.host}

    # The writer restores what it wrote (so expected.json is also what format 1.3 restores).
    with Vault.open(PASSPHRASE, home=home) as v:
        assert [sid for sid, _ in v.snapshots()] == [s["id"] for s in snapshots]
        for s in snapshots:
            target = work / f"restore-{s['id'][:12]}"
            stats = v.restore(s["id"], target)
            assert not getattr(stats, "failed", None), stats
            got = describe(target / SOURCE.name, SOURCE.name)
            assert got == s["entries"], [(a, b) for a, b in zip(got, s["entries"], strict=False) if a != b][:3]
        report = v.check(read_data=True)
        assert report.healthy, report.problems
        info = v.info()
        entries = [{"id": e.id, "url": e.url, "jurisdiction": e.jurisdiction, "operator": e.operator,
                    "marker": e.marker, "price": e.price, "draining": e.draining} for e in info.providers]
        assert {e["id"]: e["price"] for e in entries if e["price"]} == PRICES
        pack_ids = sorted(rec.id.hex() for rec in v.packs())
        generation = info.generation
        op = v._op()
        gone = op.load_deletions()
        deletions = [{"name": name, "time": rec.time, "host": rec.host, "reason": rec.reason,
                      "snapshots": list(rec.snapshots), "index": list(rec.index),
                      "packs": [p.hex() for p in rec.packs]} for name, rec in sorted(gone.records.items())]
        index_objects = []
        for name in op.live_listing(INDEX_PREFIX).names:
            hexname = name[len(INDEX_PREFIX):]
            _, plain = op.objects.read(INDEX_PREFIX, hexname, KIND_INDEX, "index object")
            idx = formats.decode(plain, formats.IndexFile, "index object")
            index_objects.append({"name": hexname, "time": idx.time,
                                  "packs": {r.id.hex(): [s.p if s is not None else None for s in r.shares]
                                            for r in idx.packs}})
        from freehold.store import maintenance
        record = maintenance.newest(op.replicas, v._store.keys.metadata)
        assert record is not None
        maint = {"time": record.time, "host": record.host, "period_days": record.period_days,
                 "subset": record.subset, "subsets": record.subsets}
    assert [d["reason"] for d in sorted(deletions, key=lambda d: d["time"])] == ["forget", "prune"], deletions
    retired = sorted({p for d in deletions for p in d["packs"]})
    assert retired and not set(retired) & set(pack_ids) and set(retired) <= packs_before - packs_after
    listing = [p for o in index_objects for p in o["packs"]]
    repeated = sorted({p for p in listing if listing.count(p) > 1})
    assert repeated and set(repeated) <= set(nil), (repeated, nil)
    assert all(o["time"] for o in index_objects)

    objects = provider_objects(providers)
    stored = sum(f.stat().st_size for p in providers for f in p.rglob("*") if f.is_file())
    assert stored < 4 * 2**20, f"the fixture would hold {stored} bytes"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PROVIDERS, out / "providers")
    assert provider_objects([out / "providers" / p.name for p in providers]) == objects
    for name, data in missed.items():
        (out / "missed" / MISSED / name).parent.mkdir(parents=True, exist_ok=True)
        (out / "missed" / MISSED / name).write_bytes(data)
    (out / "passphrase.txt").write_text(PASSPHRASE + "\n", encoding="utf-8")
    expected = {
        "format": "1.3", "k": K, "n": N, "providers_at": str(PROVIDERS), "source": str(SOURCE),
        "writer": "8044013", "generation": generation,
        "providers": entries, "packs": len(pack_ids), "pack_ids": pack_ids,
        "retention": {"last": retention.last, "daily": retention.daily, "weekly": retention.weekly},
        "forgotten": {k: forgotten[k] for k in ("id", "paths", "files", "dirs", "size")},
        "prune": prune, "retired_packs": retired, "deletions": deletions,
        "index_objects": index_objects, "merged_packs": repeated,
        "maintenance": maint, "maintain": maintain,
        "missed": {"provider": MISSED, "objects": {n: blake3.blake3(d).hexdigest() for n, d in sorted(missed.items())}},
        "snapshots": snapshots,
        "objects": objects,
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=False) + "\n")
    shutil.rmtree(work)
    shutil.rmtree(PROVIDERS)
    shutil.rmtree(SOURCE.parent)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {len(objects)} objects, {len(pack_ids)} packs, {len(missed)} missed, "
          f"{size / 2**20:.2f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
