"""forget and prune (design §15a): space comes back, nothing a live snapshot needs goes, and a
provider that missed a deletion cannot bring forgotten or replaced objects back."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from freehold import retention
from freehold.api import PruneOptions
from freehold.errors import IntegrityError, LockedError, UsageError

from .conftest import Env, same_tree

MiB = 1024 * 1024


def _history(e: Env, src: Path, steps: int, seed: int = 7) -> list[tuple[str, dict[str, bytes]]]:
    """``steps`` backups of a tree that changes between them: (snapshot id, file contents)."""
    rng = random.Random(seed)
    src.mkdir(exist_ok=True)
    out = []
    with e.open() as v:
        for step in range(steps):
            for j in range(3):
                (src / f"f{step}-{j}.bin").write_bytes(rng.randbytes(rng.randint(100_000, 600_000)))
            if step % 2 and (old := sorted(src.glob("f*"))):
                old[0].unlink()
            sid, _, _ = v.backup([str(src)])
            out.append((sid, {p.name: p.read_bytes() for p in src.iterdir()}))
    return out


def _stored(e: Env) -> int:
    return sum(f.stat().st_size for _, f in e.objects() if "/data/" in str(f))


def _restore_equals(e: Env, sid: str, files: dict[str, bytes], out: Path) -> None:
    with e.open() as v:
        v.restore(sid, out)
    got = {p.name: p.read_bytes() for p in (out / "src").iterdir()}
    assert got == files


def test_forget_half_then_prune_reclaims_and_keeps_the_rest(env: Env, tmp_path: Path) -> None:
    env.init().close()
    hist = _history(env, tmp_path / "src", 6)
    before = _stored(env)
    with env.open() as v:
        rep = v.forget(ids=[sid for sid, _ in hist[:3]])
        assert len(rep.removed) == 3
        pr = v.prune()
        assert pr.freed_bytes > 0 and pr.deleted_packs > 0
        assert {sid for sid, _ in v.snapshots()} == {sid for sid, _ in hist[3:]}
        assert v.check().healthy
    assert _stored(env) < before
    for i, (sid, files) in enumerate(hist[3:]):
        _restore_equals(env, sid, files, tmp_path / f"out{i}")
    # storage is within reach of what the live snapshots need (n/k overhead plus padding)
    with env.open() as v:
        s = v.stats()
        again = v.prune()
    assert s["overhead_ratio"] < 5 / 3 * 1.25, s
    # a prune right after a prune has nothing to do: padding and trailers are not "unused"
    # (they were, and small packs were repacked on every run, found by the stored 1.3 vault)
    assert again.repacked == again.dropped == again.new_packs == 0, again


def test_prune_dry_run_changes_nothing(env: Env, tmp_path: Path) -> None:
    env.init().close()
    hist = _history(env, tmp_path / "src", 3)
    with env.open() as v:
        v.forget(ids=[hist[0][0]])
    names = sorted(str(f) for _, f in env.objects())
    with env.open() as v:
        rep = v.prune(PruneOptions(dry_run=True))
    assert rep.dry_run and rep.dropped + rep.repacked > 0
    assert sorted(str(f) for _, f in env.objects()) == names


def test_forget_refuses_without_a_rule(env: Env, tmp_path: Path) -> None:
    env.init().close()
    _history(env, tmp_path / "src", 2)
    with env.open() as v, pytest.raises(UsageError):
        v.forget(retention.KeepRules())


def test_forget_by_rules_keeps_last(env: Env, tmp_path: Path) -> None:
    env.init().close()
    hist = _history(env, tmp_path / "src", 4)
    with env.open() as v:
        rep = v.forget(retention.KeepRules(last=2))
        assert {s for s, _, _ in rep.kept} == {hist[2][0], hist[3][0]}
        assert [s for s, _ in v.snapshots()] == [hist[2][0], hist[3][0]]


def test_forgotten_snapshot_does_not_come_back_from_a_provider_that_missed_it(env: Env, tmp_path: Path) -> None:
    env.init().close()
    hist = _history(env, tmp_path / "src", 3)
    gone = hist[0][0]
    away = tmp_path / "away"
    shutil.move(env.providers[4], away)          # provider 5 is down during forget and prune
    env.providers[4].mkdir()
    with env.open() as v:
        v.forget(ids=[gone])
        v.prune()
    shutil.rmtree(env.providers[4])
    shutil.move(away, env.providers[4])           # ... and comes back with its old copies
    assert (env.providers[4] / "snapshots" / gone).exists()
    with env.open() as v:
        assert gone not in {s for s, _ in v.snapshots()}
        (tmp_path / "src" / "new.bin").write_bytes(b"new")
        v.backup([str(tmp_path / "src")])          # heals: must not copy the snapshot back
        assert gone not in {s for s, _ in v.snapshots()}
        v.check()
    assert not any((p / "snapshots" / gone).exists() for p in env.providers)
    for i, (sid, files) in enumerate(hist[1:]):
        _restore_equals(env, sid, files, tmp_path / f"out{i}")


def test_prune_refuses_while_data_is_missing(env: Env, tmp_path: Path) -> None:
    env.init().close()
    _history(env, tmp_path / "src", 2)
    for p in env.providers[:3]:  # three of five gone: some packs below k
        shutil.rmtree(p / "data")
        (p / "data").mkdir()
    with env.open() as v, pytest.raises(IntegrityError):
        v.prune()


def test_two_prunes_exclude_each_other(env: Env, tmp_path: Path) -> None:
    env.init().close()
    _history(env, tmp_path / "src", 2)
    seen: list[BaseException] = []

    def second_prune(stage: str, done: int, total: int) -> None:
        if not seen:
            with env.open() as other:
                try:
                    other.prune()
                except LockedError as exc:
                    seen.append(exc)
                else:
                    seen.append(AssertionError("a second prune ran beside the first"))

    with env.open() as v:
        v.prune(progress=second_prune)
    assert seen and isinstance(seen[0], LockedError), seen
    assert "freehold unlock" in str(seen[0])
    with env.open() as v:  # the first released its lock
        v.prune()
        assert v.locks() == []


class _PruneMidway:
    """A progress sink that runs ``action`` once, in the middle of a backup's walk."""

    def __init__(self, action) -> None:  # type: ignore[no-untyped-def]
        self.action = action
        self.done = False

    def scanned(self, files: int, size: int) -> None:
        pass

    def advance(self, size: int) -> None:
        if not self.done:
            self.done = True
            self.action()

    def warn(self, message: str) -> None:
        pass

    def file_done(self, files: int = 1) -> None:
        pass


def _reuse_setup(env: Env, tmp_path: Path) -> tuple[Path, bytes]:
    """A blob used by a forgotten snapshot only, about to be reused by the next backup."""
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    keep = random.Random(1).randbytes(300_000)
    (src / "a.bin").write_bytes(keep)
    with env.open() as v:
        first, _, _ = v.backup([str(src)])
    (src / "a.bin").unlink()
    (src / "b.bin").write_bytes(b"b" * 1000)
    with env.open() as v:
        v.backup([str(src)])
        v.forget(ids=[first])
    (src / "a.bin").write_bytes(keep)
    return src, keep


def test_prune_during_a_backup_defers_and_the_backup_revives(env: Env, tmp_path: Path) -> None:
    """A backup has read the index; a prune runs and retires the pack holding a blob the backup
    then reuses. The prune sees the backup's lock and defers deleting; the backup lists the pack
    again before its snapshot; a later prune keeps it."""
    src, keep = _reuse_setup(env, tmp_path)
    (src / "c.bin").write_bytes(random.Random(2).randbytes(200_000))  # read first, triggers the prune
    reports = []
    with env.open() as backup_vault, env.open() as prune_vault:
        sink = _PruneMidway(lambda: reports.append(prune_vault.prune(PruneOptions(clock_slack=0))))
        sid, _, _ = backup_vault.backup([str(src)], sink)
    assert reports and reports[0].dropped >= 1 and reports[0].deferred_packs >= 1
    assert reports[0].deleted_packs == 0
    with env.open() as v:
        again = v.prune()
        out = tmp_path / "out"
        v.restore(sid, out)
        assert v.check().healthy
    assert again.deleted_packs >= 1  # the deferred packs nothing revived go now; the revived one stays
    assert (out / "src" / "a.bin").read_bytes() == keep
    same_tree(src, out / "src")


def test_backup_whose_lock_was_lost_fails_instead_of_writing_a_broken_snapshot(env: Env, tmp_path: Path) -> None:
    """Locks are not the only protection: with the backup's lock deleted (a provider lost it,
    or a user ran 'unlock --all'), the prune deletes at once, and the backup, which reused a
    blob of a deleted pack, refuses to write its snapshot."""
    from freehold.errors import ConflictError

    src, _ = _reuse_setup(env, tmp_path)
    (src / "c.bin").write_bytes(random.Random(2).randbytes(200_000))

    def prune_without_locks() -> None:
        for p in env.providers:
            shutil.rmtree(p / "locks", ignore_errors=True)
        with env.open() as pv:
            pv.prune()

    with env.open() as backup_vault:
        before = {s for s, _ in backup_vault.snapshots()}
        with pytest.raises(ConflictError):
            backup_vault.backup([str(src)], _PruneMidway(prune_without_locks))
        assert {s for s, _ in backup_vault.snapshots()} == before
    with env.open() as v:  # run again: stores the blob anew
        sid, _, _ = v.backup([str(src)])
        out = tmp_path / "out"
        v.restore(sid, out)
    same_tree(src, out / "src")


def test_two_machines_backing_up_the_same_data_at_once_are_deduplicated_by_prune(env: Env, tmp_path: Path) -> None:
    """The issue: two machines backing up the same data at once stored it twice. Prune keeps one
    copy of each blob and drops or rewrites the packs holding the other."""
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(9)
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(rng.randbytes(2 * MiB))
    other_home = tmp_path / "other-home"
    from freehold.vault import Vault

    from .conftest import PASS

    Vault.recover([env.urls[0]], passphrase=PASS, home=other_home).close()
    ids = []

    def second_machine() -> None:
        with Vault.open(PASS, home=other_home) as other:
            ids.append(other.backup([str(src)]).id)

    with env.open() as v:
        ids.append(v.backup([str(src)], _PruneMidway(second_machine)).id)
    doubled = _stored(env)
    total = sum(f.stat().st_size for f in src.iterdir())
    assert doubled > 1.8 * total * 5 / 3, "both machines stored the data"
    with env.open() as v:
        rep = v.prune()
        assert rep.freed_bytes > 0.8 * total * 5 / 3
        for i, sid in enumerate(ids):
            v.restore(sid, tmp_path / f"out{i}")
            same_tree(src, tmp_path / f"out{i}" / "src")
    assert _stored(env) < 1.2 * total * 5 / 3


def test_prune_copies_only_authentic_blobs_and_decodes_around_a_damaged_share(env: Env, tmp_path: Path) -> None:
    """Repacking copies sealed blobs as they are, once authenticated; a data share that serves
    garbage makes that group be decoded from the other shares instead, never copied."""
    env.init().close()
    hist = _history(env, tmp_path / "src", 4)
    with env.open() as v:
        v.forget(ids=[hist[0][0], hist[1][0]])
    for p in env.providers:  # every share 0 damaged, wherever it is
        for f in p.glob("data/*/*.0"):
            b = bytearray(f.read_bytes())
            for at in range(100, len(b), 4096):
                b[at] ^= 0xFF
            f.write_bytes(bytes(b))
    with env.open() as v:
        rep = v.prune(PruneOptions(max_unused=0.0))
        assert rep.repacked + rep.dropped > 0
    for i, (sid, files) in enumerate(hist[2:]):
        _restore_equals(env, sid, files, tmp_path / f"out{i}")


def test_an_index_rewritten_with_the_same_records_in_the_same_instant_is_not_retired(
        env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the two-machines test: a prune that kept exactly the packs of one old index
    object, in the same second it was written, made an object of the same name (content-
    addressed), then retired that name, and lost the packs from the index. New index objects
    never take a retired name."""
    import freehold.store as store_mod

    fixed = store_mod.datetime(2026, 12, 2, 4, 0, 0, tzinfo=store_mod.UTC)

    class Frozen(store_mod.datetime):  # type: ignore[misc, valid-type]
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return fixed

    monkeypatch.setattr(store_mod, "datetime", Frozen)
    env.init().close()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(random.Random(3).randbytes(6 * MiB))  # large: no pack is worth rewriting
    from freehold.vault import Vault

    from .conftest import PASS

    other_home = tmp_path / "other-home"
    Vault.recover([env.urls[0]], passphrase=PASS, home=other_home).close()
    ids: list[str] = []

    def second_machine() -> None:  # the same data at the same time: same records, another pack
        with Vault.open(PASS, home=other_home) as other:
            ids.append(other.backup([str(src)]).id)

    with env.open() as v:
        ids.append(v.backup([str(src)], _PruneMidway(second_machine)).id)
    with env.open() as v:
        rep = v.prune()
        assert rep.dropped >= 1 and rep.repacked == 0  # kept: exactly one old index object's packs
        for i, sid in enumerate(ids):
            v.restore(sid, tmp_path / f"out{i}")
            same_tree(src, tmp_path / f"out{i}" / "src")


def test_small_packs_are_not_repacked_again_and_again(env: Env, tmp_path: Path) -> None:
    """A small backup's packs are mostly padding (every pack is at least 64 KiB, design §8): that
    padding is not "unused", or every prune would rewrite them (found by the stored 1.3 vault)."""
    env.init().close()
    src = tmp_path / "small"
    src.mkdir()
    with env.open() as v:
        for i in range(3):
            (src / f"note{i}.txt").write_text(f"note {i} " * 50)
            v.backup([str(src)])
        v.forget(ids=[v.snapshots()[0][0]])
        v.prune()
        again = v.prune()
        third = v.prune()
    assert again.repacked == third.repacked == 0 and again.new_packs == third.new_packs == 0, (again, third)
