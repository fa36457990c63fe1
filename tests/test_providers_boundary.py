"""The provider boundary beyond the contract: storage identity (``location``, ``overlapping``),
canonical local URLs, and what the local provider refuses: links out of its directory,
special files, unreadable directories, reserved names. ``put_new`` between processes.

Links and unreadable directories are made for real; as root (where ``chmod 000`` stops
nothing) the unreadable-directory test runs its listing in a child process without the
capabilities that bypass permissions.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freehold.errors import (
    ObjectNotFound,
    ProviderCorrupt,
    ProviderError,
    ProviderPermission,
    ProviderUnavailable,
    UsageError,
)
from freehold.providers import LocalProvider, open_provider
from freehold.providers.base import Capabilities, overlapping
from freehold.testing.faults import FaultyProvider


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "store"
    path.mkdir()
    return path


# -- storage identity --------------------------------------------------------------------------------


def test_local_url_is_canonical_and_location_is_physical(tmp_path: Path) -> None:
    real = tmp_path / "a" / "b"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    typed = [f"file://{real}", f"file://{real}/", f"file://{tmp_path}/a/./b", f"file://{tmp_path}/a/x/../b",
             f"file://{tmp_path}//a//b//", f"file://localhost{real}", real.as_uri()]
    urls = {open_provider(u).info.url for u in typed}
    assert urls == {f"file://{real}"}
    assert {open_provider(u).location for u in typed} == {("file", os.path.realpath(real))}
    via_link = LocalProvider(tmp_path / "link" / "")
    assert via_link.info.url == f"file://{tmp_path}/link"  # what the user named: links kept
    assert via_link.location == LocalProvider(real).location  # where the objects are
    assert LocalProvider(f"{tmp_path}/link/../a/b").info.url == f"file://{tmp_path}/a/b"
    assert LocalProvider(tmp_path).capabilities == Capabilities(conditional_put=True)


def test_nested_and_sibling_local_providers(tmp_path: Path) -> None:
    (tmp_path / "d1" / "inner").mkdir(parents=True)
    (tmp_path / "d10").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "d1" / "inner")
    d1, d10 = LocalProvider(tmp_path / "d1").location, LocalProvider(tmp_path / "d10").location
    inner, alias = LocalProvider(tmp_path / "d1" / "inner").location, LocalProvider(tmp_path / "alias").location
    assert overlapping(d1, inner) and overlapping(inner, d1)
    assert overlapping(d1, alias) and inner == alias
    assert not overlapping(d1, d10) and not overlapping(d10, inner)
    assert overlapping(("file", "/"), d10)


def test_s3_location_is_canonical(isolated_aws: Path) -> None:
    s3 = pytest.importorskip("freehold.providers.s3")

    def loc(url: str) -> tuple[str, ...]:
        return open_provider(url).location

    ep = "endpoint=http://localhost:9000"
    assert loc("s3://b-1/a/b/?endpoint=HTTP://LocalHost:9000/") == ("s3", "http://localhost:9000", "b-1", "a/b")
    assert loc(f"s3://b-1//a/b?{ep}&region=x") == loc(f"s3://b-1/a/b?{ep}")
    assert loc("s3://b-1?endpoint=http://h")[1] == "http://h:80" == loc("s3://b-1?endpoint=http://h:80/")[1]
    assert loc("s3://b-1?endpoint=https://H")[1] == "https://h:443"
    assert loc("s3://b-1?endpoint=http://[::1]:9000")[1] == "http://[::1]:9000"
    assert loc("s3://b-1") == ("s3", s3.AWS_ENDPOINT, "b-1", "")
    assert loc("s3://b-1?endpoint=https://s3.eu-central-1.amazonaws.com") == loc("s3://b-1")
    at = "?endpoint=http://h:1"
    assert overlapping(loc(f"s3://b-1/a{at}"), loc(f"s3://b-1/a/b{at}"))
    assert overlapping(loc(f"s3://b-1{at}"), loc(f"s3://b-1/a/b{at}"))
    assert not overlapping(loc(f"s3://b-1/a{at}"), loc(f"s3://b-1/ab{at}"))
    assert not overlapping(loc(f"s3://b-1/a{at}"), loc(f"s3://b-2/a{at}"))
    assert not overlapping(loc(f"s3://b-1/a{at}"), loc("s3://b-1/a?endpoint=http://h:2"))
    assert not overlapping(loc(f"s3://b-1{at}"), ("file", "/"))
    with pytest.raises(UsageError, match="port"):
        open_provider("s3://b-1?endpoint=http://h:99999")


component = st.text(alphabet="ab1.-_", min_size=1, max_size=4).filter(lambda c: c not in (".", ".."))
paths = st.lists(component, max_size=4).map(lambda parts: "/" + "/".join(parts))
prefixes = st.lists(component, max_size=3).map("/".join)
locations = st.one_of(
    paths.map(lambda p: ("file", p)),
    st.tuples(st.just("s3"), st.sampled_from(["http://h:80", "https://h:443"]),
              st.sampled_from(["b-1", "b-2"]), prefixes))


@given(locations)
def test_overlapping_is_reflexive(a: tuple[str, ...]) -> None:
    assert overlapping(a, a)


@given(locations, locations)
def test_overlapping_is_symmetric(a: tuple[str, ...], b: tuple[str, ...]) -> None:
    assert overlapping(a, b) == overlapping(b, a)


@given(paths, paths)
def test_overlapping_local_paths_is_containment(a: str, b: str) -> None:
    common = os.path.commonpath([a, b])  # whole components, independently of overlapping()
    assert overlapping(("file", a), ("file", b)) == (common in (a, b))


@given(paths, st.lists(component, min_size=1, max_size=3))
def test_overlapping_detects_nesting(base: str, below: list[str]) -> None:
    nested = base.rstrip("/") + "/" + "/".join(below)
    assert overlapping(("file", base), ("file", nested))
    prefix = base.strip("/")
    s3 = ("s3", "http://h:80", "b-1")
    assert overlapping((*s3, prefix), (*s3, f"{prefix}/{'/'.join(below)}".strip("/")))
    assert overlapping((*s3, ""), (*s3, prefix))
    assert not overlapping(("s3", "http://h:80", "b-2", prefix), (*s3, prefix))


@given(paths, component, component)
def test_siblings_sharing_a_name_prefix_do_not_overlap(base: str, name: str, more: str) -> None:
    parent = base.rstrip("/")
    assert not overlapping(("file", f"{parent}/{name}"), ("file", f"{parent}/{name}{more}"))
    assert not overlapping(("s3", "h", "b", f"x/{name}"), ("s3", "h", "b", f"x/{name}{more}"))


# -- links, special files, names ----------------------------------------------------------------------


def test_linked_directory_inside_the_root_is_refused(tmp_path: Path, root: Path) -> None:
    other = LocalProvider(tmp_path / "other-vault")
    (tmp_path / "other-vault").mkdir()
    other.put("data/ab/share.0", b"another vault's share")
    (root / "data").symlink_to(tmp_path / "other-vault" / "data")
    p = LocalProvider(root)
    p.put("config", b"ours")
    for call in (lambda: p.get("data/ab/share.0"), lambda: p.head("data/ab/share.0"),
                 lambda: p.put("data/ab/new.1", b"x"), lambda: p.put_new("data/ab/new.2", b"x"),
                 lambda: p.put("data/cd/new.3", b"x"), lambda: p.delete("data/ab/share.0")):
        with pytest.raises(ProviderCorrupt, match="symbolic link") as info:
            call()
        assert "\n" not in str(info.value)
    assert dict(p.list()) == {"config": 4}
    assert list(p.list("data/")) == [] and list(p.list("data/ab/")) == []
    assert dict(other.list()) == {"data/ab/share.0": 21}, "something was written or deleted through the link"
    assert not (tmp_path / "other-vault" / "data" / "cd").exists()


def test_linked_object_is_refused_and_not_listed(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.write_bytes(b"not an object of this provider")
    p = LocalProvider(root)
    p.put("a/real", b"real")
    (root / "a" / "out").symlink_to(outside)
    (root / "a" / "inside").symlink_to(root / "a" / "real")
    (root / "a" / "dangling").symlink_to(tmp_path / "nowhere")
    (root / "a" / "loop").symlink_to(root / "a" / "loop")
    (root / "a" / "up").symlink_to(root)  # a directory loop, were links followed
    assert dict(p.list()) == {"a/real": 4}
    for name in ("a/out", "a/inside", "a/dangling", "a/loop"):
        with pytest.raises(ProviderCorrupt):
            p.get(name)
        with pytest.raises(ProviderCorrupt):
            p.head(name)
        with pytest.raises(ProviderCorrupt):
            p.put_new(name, b"x")
    with pytest.raises(ProviderCorrupt):
        p.get("a/up/a/real")
    p.delete("a/out")  # removes the link, never what it points to
    assert outside.read_bytes() == b"not an object of this provider" and not (root / "a" / "out").is_symlink()
    p.put("a/inside", b"replaced")  # the link is replaced, its target left alone
    assert p.get("a/inside") == b"replaced" and p.get("a/real") == b"real"


def test_root_may_be_a_link(tmp_path: Path, root: Path) -> None:
    (tmp_path / "alias").symlink_to(root)
    p = LocalProvider(tmp_path / "alias")
    p.put("x/y", b"through the root link")
    assert p.get("x/y") == b"through the root link" and p.head("x/y") == 21
    assert p.put_new("x/z", b"new") is True
    assert dict(p.list()) == {"x/y": 21, "x/z": 3}
    assert LocalProvider(root).get("x/z") == b"new"


def test_special_file_is_refused_without_blocking(root: Path) -> None:
    p = LocalProvider(root)
    p.put("a/real", b"1")
    os.mkfifo(root / "a" / "fifo")
    started = time.monotonic()
    with pytest.raises(ProviderCorrupt, match="special file"):
        p.get("a/fifo")
    with pytest.raises(ProviderCorrupt):
        p.head("a/fifo")
    assert dict(p.list()) == {"a/real": 1}
    assert time.monotonic() - started < 5


def test_names_listed_are_the_names_put(root: Path) -> None:
    p = LocalProvider(root)
    for name in (".tmp-x", "a/.tmp-y"):
        with pytest.raises(UsageError, match="reserved"):
            p.put(name, b"x")
        with pytest.raises(UsageError):
            p.put_new(name, b"x")
    p.put("a/b", b"12")
    for stray in (".tmp-b-123", "a/.tmp-b-456", "a/caf\u00e9", "a/tab\there"):
        (root / stray).write_bytes(b"not ours")
    assert dict(p.list()) == {"a/b": 2}
    assert list(p.list("../")) == [] and list(p.list("a//")) == [] and list(p.list("/")) == []


def test_put_new_with_a_directory_in_the_way(root: Path) -> None:
    p = LocalProvider(root)
    p.put("h/x", b"1")
    with pytest.raises(ProviderError, match="directory"):
        p.put_new("h", b"2")
    with pytest.raises(ObjectNotFound):
        p.get("h")
    assert p.put_new("h/x", b"2") is False
    assert sorted(os.listdir(root / "h")) == ["x"], "put_new left a temporary file"


RACER = """
import os, sys, time
from freehold.providers import LocalProvider
root, go, me = sys.argv[1], sys.argv[2], sys.argv[3]
p = LocalProvider(root)
while not os.path.exists(go):
    time.sleep(0.001)
print(p.put_new("config.gen/7", ("written by " + me).encode() * 2000))
"""


def test_put_new_between_processes_has_one_winner(tmp_path: Path, root: Path) -> None:
    go = tmp_path / "go"
    for _ in range(2):
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(root), str(go), str(i)],
                                  stdout=subprocess.PIPE, text=True) for i in range(6)]
        time.sleep(0.5)  # let them all start and wait
        go.touch()
        results = [proc.communicate(timeout=60)[0].strip() for proc in procs]
        assert all(proc.returncode == 0 for proc in procs)
        assert results.count("True") == 1 and results.count("False") == 5, results
        winner = results.index("True")
        assert LocalProvider(root).get("config.gen/7") == f"written by {winner}".encode() * 2000
        assert sorted(os.listdir(root / "config.gen")) == ["7"]
        go.unlink()
        shutil.rmtree(root / "config.gen")


# -- unreadable directories ---------------------------------------------------------------------------


LISTER = """
import sys
from freehold.errors import ProviderPermission
from freehold.providers import LocalProvider
try:
    print("LISTED", sorted(dict(LocalProvider(sys.argv[1]).list())))
except ProviderPermission as exc:
    print("REFUSED", exc)
"""


def test_list_does_not_skip_an_unreadable_directory(root: Path) -> None:
    p = LocalProvider(root)
    p.put("index/ab", b"1")
    p.put("data/ab/share.0", b"22")
    p.put("data/cd/share.1", b"333")
    (root / "data" / "ab").chmod(0)
    try:
        if os.geteuid() != 0:
            with pytest.raises(ProviderPermission, match="cannot read directory data/ab") as info:
                dict(p.list())
            message = str(info.value)
        else:
            # Root reads through mode 000: list in a child without CAP_DAC_OVERRIDE/READ_SEARCH.
            setpriv = shutil.which("setpriv")
            if setpriv is None:
                pytest.skip("running as root, and no setpriv to drop the capabilities that ignore chmod 000")
            run = subprocess.run([setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable,
                                  "-c", LISTER, str(root)], capture_output=True, text=True, timeout=60)
            if run.returncode != 0 and "setpriv" in run.stderr:
                pytest.skip(f"running as root and setpriv cannot drop capabilities here: {run.stderr.strip()}")
            assert run.returncode == 0, run.stderr
            message = run.stdout.strip()
            assert message.startswith("REFUSED "), f"an unreadable directory was skipped: {message}"
        assert "cannot read directory data/ab" in message and "permission denied" in message
        assert "share.0" not in message
    finally:
        (root / "data" / "ab").chmod(0o755)
    assert dict(p.list()) == {"index/ab": 1, "data/ab/share.0": 2, "data/cd/share.1": 3}


# -- the fault wrapper passes the new calls through ------------------------------------------------


def test_faulty_put_new_is_counted_and_faulted(root: Path) -> None:
    local = LocalProvider(root, fsync=False)
    f = FaultyProvider(local)
    f.fail_next("put_new")
    with pytest.raises(ProviderUnavailable, match="put_new gen"):
        f.put_new("gen", b"abc")
    assert local.head("gen") is None
    assert f.put_new("gen", b"abc") is True and f.put_new("gen", b"other") is False
    assert f.calls["put_new"] == 3 and f.failures["put_new"] == 1 and not f.calls["put"]
    assert f.bytes_written == 3  # only what was stored
    assert local.get("gen") == b"abc"
    assert f.capabilities == local.capabilities and f.location == local.location
    f.close()


def test_close_is_harmless(root: Path) -> None:
    p = LocalProvider(root)
    p.close()
    p.close()
