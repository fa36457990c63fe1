"""The vault end to end over real local-directory providers (issue 2's list, one test or more each)."""

from __future__ import annotations

import itertools
import os
import random
import shutil
from pathlib import Path

import pytest

from freehold.errors import IntegrityError, SnapshotNotFound, UsageError, WrongPassphrase
from freehold.formats import SHARE_HEADER_LEN
from freehold.providers import Provider
from freehold.store.packs import DATA_PREFIX, MIN_PACK, share_name
from freehold.testing.faults import FaultyProvider
from freehold.vault import Vault

from .conftest import PASS, Env, make_env, same_tree, write_tree


def test_round_trip_tree_with_every_kind_of_entry(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=120, big=3_000_000)
    with env.init() as v:
        sid, snap, st = v.backup([str(src)])
        assert snap.files == st.files > 120 and st.skipped == []
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    restored = tmp_path / "out" / "src"
    assert os.readlink(restored / "link") == "d0/e0/f0.txt"
    assert os.readlink(restored / "dangling") == "/nonexistent/target"
    assert (restored / "tool.sh").stat().st_mode & 0o7777 == 0o751
    assert (restored / "one").stat().st_mtime_ns == 1_000_000_000_123_456_789
    assert (restored / "empty").stat().st_size == 0


def test_single_file_one_byte_and_empty(env: Env, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    one = tmp_path / "a" / "one"
    one.write_bytes(b"\x00")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with env.init() as v:
        sid, _, _ = v.backup([str(one), str(empty)])
        v.restore(sid, tmp_path / "out")
    assert (tmp_path / "out" / "one").read_bytes() == b"\x00"
    assert (tmp_path / "out" / "empty").read_bytes() == b""


def test_ten_thousand_small_files(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "many"
    for i in range(10_000):
        d = src / f"{i // 500:02d}"
        if i % 500 == 0:
            d.mkdir(parents=True)
        (d / f"{i}.txt").write_bytes(f"small file number {i}\n".encode() * (1 + i % 7))
    with env.init() as v:
        sid, snap, _ = v.backup([str(src)])
        assert snap.files == 10_000
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "many")
    # Packed: a handful of objects per provider, not thousands.
    for p in env.providers:
        assert len([f for f in (p / "data").rglob("*") if f.is_file()]) <= 3


def test_restore_of_one_path_and_ls(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=30)
    with env.init() as v:
        sid, _, _ = v.backup([str(src)])
        names = [p for p, _ in v.ls("latest")]
        assert "src/d1/e1/f1.txt" in names and "src/link" in names
        assert [p for p, _ in v.ls(sid[:8], "src/deep")][0] == "src/deep"
        v.restore("latest", tmp_path / "out", include="src/d1")
        with pytest.raises(UsageError):
            v.ls("latest", "src/nope")
        with pytest.raises(SnapshotNotFound):
            v.restore("0123456789ab", tmp_path / "x")
    assert sorted(os.listdir(tmp_path / "out" / "src")) == ["d1"]
    same_tree(src / "d1", tmp_path / "out" / "src" / "d1")


def _stored(env: Env) -> int:
    return sum(f.stat().st_size for _, f in env.objects())


def test_unchanged_second_backup_adds_under_one_percent(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=300, big=8_000_000)
    with env.init() as v:
        v.backup([str(src)])
        before = _stored(env)
        _, _, st = v.backup([str(src)])
    assert st.new_bytes == 0 and st.unchanged_files == st.files
    # Only the new trees, index and snapshot: one tree pack, padded to at least MIN_PACK (§8).
    assert _stored(env) - before < 0.01 * before + MIN_PACK * env.n / env.k


def test_files_cache_never_misses_a_change(env: Env, tmp_path: Path) -> None:
    """The files cache keys on size, mtime, ctime, inode and device: content rewritten with the
    size and mtime put back, a chmod, and a same-size file renamed over another are all seen."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("same-size", "chmod", "renamed", "untouched"):
        (src / name).write_bytes(name.encode() * 1000)
    with env.init() as v:
        v.backup([str(src)])
        st = os.stat(src / "same-size")
        (src / "same-size").write_bytes(b"X" * st.st_size)  # same size ...
        os.utime(src / "same-size", ns=(st.st_atime_ns, st.st_mtime_ns))  # ... and same mtime
        os.chmod(src / "chmod", 0o600)
        other = src / "other"
        other.write_bytes(b"Y" * (src / "renamed").stat().st_size)
        os.utime(other, ns=(0, (src / "renamed").stat().st_mtime_ns))
        os.replace(other, src / "renamed")
        sid, _, stats = v.backup([str(src)])
        assert stats.unchanged_files == 1
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    assert (tmp_path / "out" / "src" / "chmod").stat().st_mode & 0o777 == 0o600


def test_second_backup_without_files_cache_still_dedups(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=100, big=5_000_000)
    with env.init() as v:
        v.backup([str(src)])
        before = _stored(env)
    # Touching every file defeats the files cache: everything is re-read, nothing is re-stored.
    for dirpath, _, files in os.walk(src):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                os.utime(p)
    with env.open() as v:
        _, _, st = v.backup([str(src)])
    assert st.unchanged_files == 0 and st.new_bytes == 0
    # Only the new trees, index and snapshot: one tree pack, padded to at least MIN_PACK (§8).
    assert _stored(env) - before < 0.01 * before + MIN_PACK * env.n / env.k


def test_one_byte_change_in_100_mib_file_adds_about_one_chunk(env: Env, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    data = bytearray(random.Random(3).randbytes(100 * 2**20))
    big.write_bytes(data)
    with env.init() as v:
        v.backup([str(big)])
        before = _stored(env)
        data[len(data) // 2] ^= 0xFF
        big.write_bytes(data)
        _, _, st = v.backup([str(big)])
    # One chunk (about 1.25 MiB on average, 4 MiB at most) is new, maybe its neighbour; not the file.
    assert 0 < st.new_bytes <= 2 * 4 * 2**20
    assert _stored(env) - before < (2 * 4 * 2**20) * 5 / 3 + 200_000


def test_identical_content_across_files_is_stored_once(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    blob = random.Random(5).randbytes(3_000_000)
    for i in range(5):
        (src / f"copy{i}").write_bytes(blob)
    with env.init() as v:
        _, _, st = v.backup([str(src)])
    assert st.new_bytes == len(blob)


@pytest.fixture(scope="module")
def small_vault(tmp_path_factory: pytest.TempPathFactory) -> tuple[Env, Path, str]:
    """A 3-of-5 vault holding several packs (data spans 3 packs plus small files and trees)."""
    root = tmp_path_factory.mktemp("erasure")
    src = write_tree(root / "src", seed=9, small=200, big=40_000_000)
    e = make_env(root)
    with e.init() as v:
        sid, _, _ = v.backup([str(src)])
        assert len(v.packs()) >= 3
    pristine = root / "pristine"
    shutil.copytree(root, pristine, symlinks=True, ignore=shutil.ignore_patterns("pristine"))
    return e, src, sid


def _reset(e: Env) -> None:
    pristine = e.root / "pristine"
    for p in e.providers:
        shutil.rmtree(p, ignore_errors=True)
        shutil.copytree(pristine / p.name, p)
    shutil.rmtree(e.home / "cache", ignore_errors=True)


@pytest.mark.parametrize("lost", list(itertools.combinations(range(5), 2)))
def test_restore_with_any_two_providers_deleted(small_vault: tuple[Env, Path, str], tmp_path: Path,
                                               lost: tuple[int, int]) -> None:
    e, src, sid = small_vault
    _reset(e)
    for i in lost:
        shutil.rmtree(e.providers[i])
    with e.open() as v:
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")


def test_three_providers_lost_is_a_clear_error(small_vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    """With 2 of 5 shares left no pack can be decoded, but the code is systematic: a blob whose
    bytes all lie in a surviving data share is still read (and authenticated) from it. So the
    restore either fails outright, or restores such files byte-exact and names the rest (always
    the 40 MB file, which covers whole packs); never a wrong byte. (CI found the test assuming
    the first, about one vault in six.)"""
    e, src, sid = small_vault
    _reset(e)
    with e.open() as v:
        for i in (0, 1, 2):
            shutil.rmtree(e.providers[i])
        try:
            st = v.restore(sid, tmp_path / "out")
        except IntegrityError as exc:
            assert "shares" in str(exc) or "available" in str(exc), exc
            return
    failed = {p for p, _ in st.failed}
    assert "src/big.bin" in failed, st.failed
    assert all("cannot read its data" in why for _, why in st.failed), st.failed
    out = tmp_path / "out"
    for f in out.rglob("*"):
        rel = f.relative_to(out).as_posix()
        if f.is_file() and not f.is_symlink() and rel not in failed:
            assert f.read_bytes() == (src.parent / rel).read_bytes(), rel


@pytest.mark.parametrize("batch_blobs", [1, 2, 3, 1024])
def test_vault_with_no_readable_data_is_an_error(small_vault: tuple[Env, Path, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, batch_blobs: int) -> None:
    """Every pack share gone, the trees still in the local cache: nothing can be restored, and that is
    an error, not a restore "with every file failed". Found while reading the code for the test
    above: a batch whose blobs all lie in packs already found unreadable read nothing, and counted
    as a successful read. Small batches and a miss limit of one make every later batch such a
    batch."""
    import freehold.restore as restore_mod
    monkeypatch.setattr(restore_mod, "BATCH_BLOBS", batch_blobs)
    monkeypatch.setattr(restore_mod, "BAD_PACK_MISSES", 1)
    e, _, sid = small_vault
    _reset(e)
    with e.open() as v:
        v.ls(sid, "src")  # fetches the tree packs into the local cache, as a backup leaves them
        for p in e.providers:
            shutil.rmtree(p / DATA_PREFIX)
        with pytest.raises(IntegrityError):
            v.restore(sid, tmp_path / "out")


def test_healthy_restore_reads_little_more_than_restored_bytes(small_vault: tuple[Env, Path, str],
                                                              tmp_path: Path) -> None:
    e, _, sid = small_vault
    _reset(e)
    wrapped: dict[str, FaultyProvider] = {}

    def count(pid: str, prov: Provider) -> Provider:
        wrapped[pid] = FaultyProvider(prov)
        return wrapped[pid]

    with e.open(wrap=count) as v:
        before = sum(c.bytes_read for c in wrapped.values())  # what unlocking and the index took
        st = v.restore(sid, tmp_path / "out", include="src/big.bin")
        read = sum(c.bytes_read for c in wrapped.values()) - before
        assert v.last_outcome.fallback_reads == 0
    assert st.size == 40_000_000
    # Random data does not compress: the reads are the blobs plus envelopes, trees and alignment.
    assert read < 1.02 * st.size, read / st.size


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x40
    path.write_bytes(data)


def _share_paths(e: Env, v: Vault) -> list[tuple[str, Path]]:
    out = []
    urls = {p.id: Path(p.url.removeprefix("file://")) for p in v.info().providers}
    for rec in v.packs():
        for i, sh in enumerate(rec.shares):
            assert sh is not None
            out.append((sh.p, urls[sh.p] / share_name(rec.id, i)))
    return out


def test_flipped_byte_in_any_share_is_survived_and_named_by_check(small_vault: tuple[Env, Path, str],
                                                                 tmp_path: Path) -> None:
    e, src, sid = small_vault
    _reset(e)
    with e.open() as v:
        shares = _share_paths(e, v)
    rng = random.Random(11)
    # Each share of each pack in turn; restore must stay correct and check must name it.
    for n, (pid, path) in enumerate(shares):
        _reset(e)
        offset = rng.randrange(SHARE_HEADER_LEN, path.stat().st_size)
        _flip(path, offset)
        with e.open() as v:
            report = v.check(read_data=True)
            named = [(p.provider, p.object) for p in report.problems]
            assert named == [(pid, str(path.relative_to(path.parents[2])))], named
            if n % 3 == 0:  # restoring 3 x 45 MB per share would be slow; every third share
                out = tmp_path / f"out{n}"
                v.restore(sid, out)
                same_tree(src, out / "src")
    _reset(e)


def test_truncated_swapped_and_foreign_shares_never_decrypt_into_wrong_output(
        small_vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    e, src, sid = small_vault
    other = make_env(tmp_path / "other")
    with other.init() as ov:
        ov.backup([str(write_tree(tmp_path / "osrc", seed=77, small=10, big=2_000_000))])
        foreign = [f for _, f in other.objects() if DATA_PREFIX in str(f)]
    _reset(e)
    with e.open() as v:
        shares = _share_paths(e, v)
    by_provider: dict[str, list[Path]] = {}
    for pid, p in shares:
        by_provider.setdefault(pid, []).append(p)
    # truncate one share, swap two shares on one provider, and replace one with a foreign share:
    # three different providers damaged... but only two may be, so do it in two rounds.
    rounds = [
        lambda: os.truncate(shares[0][1], shares[0][1].stat().st_size // 2),
        lambda: _swap(*by_provider[shares[-1][0]][:2]),
        lambda: shutil.copyfile(foreign[0], by_provider[shares[-1][0]][0]),
    ]
    for i, damage in enumerate(rounds):
        _reset(e)
        damage()
        with e.open() as v:
            report = v.check(read_data=True)
            assert report.problems, f"round {i}: damage not detected"
            out = tmp_path / f"out{i}"
            v.restore(sid, out)
        same_tree(src, out / "src")
    _reset(e)


def _swap(a: Path, b: Path) -> None:
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def test_damaged_metadata_replicas_are_skipped(small_vault: tuple[Env, Path, str], tmp_path: Path) -> None:
    e, src, sid = small_vault
    _reset(e)
    # Corrupt the snapshot and index replicas on two providers, and swap snapshot for index on another.
    for p in e.providers[:2]:
        for f in list((p / "snapshots").iterdir()) + list((p / "index").iterdir()):
            _flip(f, 40)
    with e.open() as v:
        v.restore(sid, tmp_path / "out")
    same_tree(src, tmp_path / "out" / "src")
    _reset(e)


def test_confidentiality_no_plaintext_substring_and_no_names(env: Env, tmp_path: Path) -> None:
    src = tmp_path / "secret-folder-name"
    rng = random.Random(21)
    words = ["diagnosis", "patient", "confidential", "inheritance", "lawsuit", "account", "password"]
    plaintext = bytearray()
    for i in range(40):
        d = src / f"medical-records-{i % 4}"
        d.mkdir(parents=True, exist_ok=True)
        text = (" ".join(rng.choice(words) for _ in range(rng.randint(20, 2000))) + "\n").encode()
        (d / f"patient-{i}.txt").write_bytes(text)
        plaintext += text + b"\x00"
    rnd = rng.randbytes(300_000)
    (src / "scan.raw").write_bytes(rnd)
    plaintext += rnd
    with env.init() as v:
        v.backup([str(src)])
    windows = {bytes(plaintext[i:i + 16]) for i in range(len(plaintext) - 15)}
    names = {"secret-folder-name", "medical-records", "patient", "scan.raw", "txt"}
    n_objects = 0
    for prov, f in env.objects():
        n_objects += 1
        rel = str(f.relative_to(prov))
        assert not any(x in rel for x in names), rel
        data = f.read_bytes()
        hits = [i for i in range(len(data) - 15) if data[i:i + 16] in windows]
        assert not hits, f"{rel} holds plaintext at {hits[:3]}"
    assert n_objects >= 5 * 4


def test_cache_is_only_a_cache(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=60, big=1_000_000)
    with env.init() as v:
        sid, _, _ = v.backup([str(src)])
    shutil.rmtree(env.home / "cache")
    with env.open() as v:
        assert [s for s, _ in v.snapshots()] == [sid]
        v.restore("latest", tmp_path / "out")
        assert v.check(read_data=True).healthy
    same_tree(src, tmp_path / "out" / "src")
    # A damaged cache entry is detected and refetched, never trusted.
    for f in (env.home / "cache").rglob("*"):
        if f.is_file():
            _flip(f, 30)
    with env.open() as v:
        v.restore("latest", tmp_path / "out2")
    same_tree(src, tmp_path / "out2" / "src")


def test_wrong_passphrase_and_unknown_snapshot(env: Env, tmp_path: Path) -> None:
    with env.init() as v:
        v.backup([str(write_tree(tmp_path / "src", small=3))])
    with pytest.raises(WrongPassphrase):
        Vault.open("not the passphrase", home=env.home)
    with env.open() as v, pytest.raises(SnapshotNotFound):
        v.snapshot("ffffffffffff")


def test_init_refuses_bad_parameters_and_reuse(tmp_path: Path) -> None:
    e = make_env(tmp_path)
    from freehold.vault import ProviderSpec

    specs = [ProviderSpec(u) for u in e.urls]
    for k, n in [(0, 5), (4, 3), (3, 300), (3, 6)]:
        with pytest.raises(UsageError):
            Vault.init(specs, k, n, PASS, home=e.home)
    with pytest.raises(UsageError):
        Vault.init(specs[:4] + [specs[0]], 3, 5, PASS, home=e.home)
    e.init().close()
    with pytest.raises(UsageError):
        Vault.init(specs, 3, 5, PASS, home=tmp_path / "home2")  # providers already hold a vault


def test_one_of_one_and_k_equals_n(tmp_path: Path) -> None:
    for k, n in [(1, 1), (2, 2), (1, 3)]:
        e = make_env(tmp_path / f"{k}{n}", k=k, n=n)
        src = write_tree(tmp_path / f"src{k}{n}", small=10, big=100_000)
        with e.init() as v:
            sid, _, _ = v.backup([str(src)])
            v.restore(sid, tmp_path / f"out{k}{n}")
        same_tree(src, tmp_path / f"out{k}{n}" / src.name)
