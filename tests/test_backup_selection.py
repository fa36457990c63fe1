"""What a backup takes from its paths: restic's exclude patterns and options, Freehold's own state
left out, incomplete snapshots (exit 3), long paths, same-named sources, symlinked sources, dry
runs and stdin. Real files and real vaults over local directories."""

from __future__ import annotations

import fnmatch
import io
import json
import os
import posixpath
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freehold.api import BackupOptions
from freehold.errors import UsageError
from freehold.formats import Node
from freehold.progress import NullProgress
from freehold.selection import (
    CACHEDIR_SIGNATURE,
    PatternList,
    expand_env,
    parse_size,
    pattern_lines,
    source_names,
)

from .conftest import Env, make_env, write_tree


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def listing(v: object, sid: str) -> dict[str, Node]:
    return dict(v.ls(sid))  # type: ignore[attr-defined]


# -- the matcher ----------------------------------------------------------------------------------------

def restic_match(pattern: str, path: str) -> bool:
    """restic's filter.Match (internal/filter/filter.go), component by component, as written
    there: '**' expanded into 0..n '*' components, the pattern slid along the path (anchored
    patterns only at its start). fnmatch stands in for Go's filepath.Match on the syntax the
    property test generates (*, ?, [ab], [a-b]), where the two agree. One difference, kept on
    purpose: restic bounds the expansion by ``i <= len(strs)-len(parts)+1``, so a pattern with
    two or more parts more than the path (only possible with repeated '**': 'a/**/**/**' and
    '/a') never matches; the documented meaning ('**' is any number of directories) does."""
    cleaned = posixpath.normpath(pattern)
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    parts = cleaned.split("/")
    if parts[0] == "":
        parts[0] = "/"
    parts = ["" if p == "**" else p for p in parts]
    strs = path.split("/")
    strs[0] = "/"
    return _restic(parts, strs)


def _restic(parts: list[str], strs: list[str]) -> bool:
    if "" in parts:
        pos = parts.index("")
        return any(_restic(parts[:pos] + ["*"] * i + parts[pos + 1:], strs) for i in range(len(strs) + 1))
    if not parts:
        return not strs
    if len(parts) > len(strs):
        return False
    lo, hi = 0, len(strs) - len(parts)
    if parts[0] == "/":
        hi = 0
    elif strs[0] == "/":
        lo = 1
    return any(all(fnmatch.fnmatchcase(strs[off + i], p) for i, p in enumerate(parts))
               for off in range(hi, lo - 1, -1))


def restic_list(patterns: list[str], path: str) -> bool:
    matched = False
    for p in patterns:
        negated = p.startswith("!")
        hit = restic_match(p[1:] if negated else p, path)
        matched = (matched and not hit) if negated else (matched or hit)
    return matched


COMPONENTS = st.sampled_from(["a", "b", "ab", "ba", "*", "?", "a*", "*b", "?b", "[ab]", "[a-b]a", "**", "a?"])
PATTERNS = st.builds(lambda lead, comps, trail: ("/" if lead else "") + "/".join(comps) + ("/" if trail else ""),
                     st.booleans(), st.lists(COMPONENTS, min_size=1, max_size=4), st.booleans())
PATHS = st.builds(lambda comps: "/" + "/".join(comps),
                  st.lists(st.sampled_from(["a", "b", "ab", "ba", "aa", "bb", "aab", "bab"]), min_size=1, max_size=6))


@given(PATTERNS, PATHS)
def test_matcher_agrees_with_restic_component_by_component(pattern: str, path: str) -> None:
    assert PatternList([pattern]).match(path) == restic_match(pattern, path), (pattern, path)
    # --iexclude: the pattern and the path are compared in lower case
    assert PatternList([pattern.upper()], fold=True).match(path.upper()) == restic_match(pattern, path)


@given(st.lists(st.tuples(st.booleans(), PATTERNS), min_size=1, max_size=4), PATHS)
def test_pattern_lists_with_negations_agree_with_restic(items: list[tuple[bool, str]], path: str) -> None:
    patterns = [("!" if neg else "") + p for neg, p in items]
    assert PatternList(patterns).match(path) == restic_list(patterns, path), (patterns, path)


@pytest.mark.parametrize(("pattern", "path", "expected"), [
    # restic's doc/040_backup.rst, "Excluding Files"
    ("foo", "/dir1/foo/dir2/file", True), ("foo", "/dir/foo", True),
    ("foo", "/dir/foobar", False), ("foo", "/barfoo", False),
    ("/bin", "/bin/bash", True), ("/bin", "/usr/bin/restic", False),
    ("b*ash", "/bin/bash", True), ("b*ash", "/bin/ash", False),
    ("foo/**/bar", "/dir1/foo/dir2/bar/file", True), ("foo/**/bar", "/foo/bar/file", True),
    ("foo/**/bar", "/tmp/foo/bar", True), ("foo/**/bar", "/tmp/foo/baz", False),
    ("*.go", "/src/x/main.go", True), ("*.go", "/src/x/main.go.txt", False),
    ("foo/", "/a/foo", True),                      # a trailing / is ignored
    ("*", "/a", True), ("?", "/ab", False), ("a?", "/ab", True),
    ("/home/*/.cache", "/home/u/.cache/x", True), ("/home/*/.cache", "/home/u/v/.cache", False),
    ("[a-c]x", "/q/bx", True), ("[^a-c]x", "/q/bx", False), ("[^a-c]x", "/q/dx", True),
    (r"\*", "/q/*", True), (r"\*", "/q/a", False),
    ("a/../b", "/x/b", True),                      # cleaned like filepath.Clean
    ("/", "/anything", True),
    ("a/**/**/**", "/a", True), ("/**/**/x", "/x", True),   # '**' as documented (restic's loop bound: False)
])
def test_matcher_known_cases(pattern: str, path: str, expected: bool) -> None:
    assert PatternList([pattern]).match(path) is expected


def test_negated_patterns_put_back_what_earlier_ones_left_out() -> None:
    # restic's documented example: everything below $HOME but a few directories
    pats = PatternList(["/home/u/**/*", "!/home/u/Documents", "*.o"])
    assert pats.match("/home/u/Music")
    assert not pats.match("/home/u/Documents") and not pats.match("/home/u/Documents/tax.pdf")
    assert pats.match("/home/u/Documents/build.o")  # a later pattern applies again


@pytest.mark.parametrize("bad", ["[abc", "a\\", "[]", "[a-]", "x/[z"])
def test_malformed_patterns_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        PatternList([bad])


def test_exclude_file_lines_comments_and_variables() -> None:
    text = "# a comment\n\n  *.tmp  \n$HOME/cache\n${HOME}/x\nprice$$\n$UNSET/y\n"
    assert pattern_lines(text, {"HOME": "/home/u"}) == ["*.tmp", "/home/u/cache", "/home/u/x", "price$", "/y"]
    assert expand_env("a$", {}) == "a$" and expand_env("${}b", {}) == "b"


@pytest.mark.parametrize(("text", "size"), [("2048", 2048), ("1k", 1024), ("10M", 10 << 20), ("1.5G", 3 << 29),
                                            ("2T", 2 << 40), ("3MiB", 3 << 20), ("7b", 7)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_bad_sizes_are_refused() -> None:
    for bad in ("", "ten", "10X", "-1"):
        with pytest.raises(UsageError):
            parse_size(bad)


# -- every option, on real backups ----------------------------------------------------------------------

def _tree(root: Path) -> Path:
    (root / "keep" / "deep").mkdir(parents=True)
    (root / "keep" / "a.txt").write_text("a")
    (root / "keep" / "deep" / "b.TMP").write_text("b")
    (root / "keep" / "c.tmp").write_text("c")
    (root / "big.bin").write_bytes(os.urandom(50_000))
    (root / "small.bin").write_bytes(b"s" * 100)
    return root


def _backup(env: Env, paths: list[Path], **opts: object) -> tuple[str, dict[str, Node], object, Recorder]:
    rec = Recorder()
    with env.open() as v:
        sid, snap, _ = v.backup([str(p) for p in paths], rec, options=BackupOptions(**opts))  # type: ignore[arg-type]
        nodes = listing(v, sid) if sid else {}
    return sid, nodes, snap, rec


@pytest.fixture
def vault_env(env: Env) -> Env:
    env.init().close()
    return env


def test_exclude(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    _, nodes, snap, _ = _backup(vault_env, [src], excludes=("*.tmp", "/nowhere"))
    assert "src/keep/c.tmp" not in nodes and "src/keep/deep/b.TMP" in nodes and "src/keep/a.txt" in nodes
    assert snap.excluded == 1  # type: ignore[attr-defined]
    _, nodes, snap, _ = _backup(vault_env, [src / "keep" / "c.tmp", src / "small.bin"], excludes=("*.tmp",))
    assert set(nodes) == {"small.bin"} and snap.excluded == 1  # type: ignore[attr-defined]  # sources too


def test_iexclude(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    _, nodes, snap, _ = _backup(vault_env, [src], iexcludes=("*.tmp",))
    assert "src/keep/c.tmp" not in nodes and "src/keep/deep/b.TMP" not in nodes and "src/keep/a.txt" in nodes
    assert snap.excluded == 2  # type: ignore[attr-defined]


def test_exclude_file_and_iexclude_file(vault_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tree(tmp_path / "src")
    monkeypatch.setenv("FH_TEST_SRC", str(src))
    ex = tmp_path / "ex.txt"
    ex.write_text("# leave out the big file\n$FH_TEST_SRC/big.bin\n\n")
    iex = tmp_path / "iex.txt"
    iex.write_text("DEEP\n")
    _, nodes, snap, _ = _backup(vault_env, [src], exclude_files=(str(ex),), iexclude_files=(str(iex),))
    assert "src/big.bin" not in nodes and "src/keep/deep" not in nodes and "src/small.bin" in nodes
    assert snap.excluded == 2  # type: ignore[attr-defined]
    with pytest.raises(UsageError, match="exclude-file"):
        _backup(vault_env, [src], exclude_files=(str(tmp_path / "missing.txt"),))


def test_exclude_caches_keeps_the_tag_and_checks_its_signature(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    for name, tag in (("cache", CACHEDIR_SIGNATURE + b"\n# a cache\n"), ("fake", b"Signature: not the right one")):
        (src / name / "sub").mkdir(parents=True)
        (src / name / "sub" / "blob").write_text("x")
        (src / name / "CACHEDIR.TAG").write_bytes(tag)
    _, nodes, snap, rec = _backup(vault_env, [src], exclude_caches=True)
    assert "src/cache" in nodes and "src/cache/CACHEDIR.TAG" in nodes and "src/cache/sub" not in nodes
    assert "src/fake/sub/blob" in nodes  # a tag without the standard signature excludes nothing
    assert snap.excluded == 1 and any("signature" in w for w in rec.warnings)  # type: ignore[attr-defined]


def test_exclude_if_present(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    (src / "keep" / "deep" / ".nobackup").write_text("")
    (src / "hdr").mkdir()
    (src / "hdr" / ".marker").write_text("nope")
    (src / "hdr" / "f").write_text("f")
    _, nodes, snap, _ = _backup(vault_env, [src], exclude_if_present=(".nobackup", ".marker:yes"))
    assert "src/keep/deep" in nodes and "src/keep/deep/.nobackup" in nodes and "src/keep/deep/b.TMP" not in nodes
    assert "src/hdr/f" in nodes  # its marker lacks the header asked for
    assert snap.excluded == 1  # type: ignore[attr-defined]


def test_exclude_larger_than(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    _, nodes, snap, _ = _backup(vault_env, [src], exclude_larger_than=parse_size("10k"))
    assert "src/big.bin" not in nodes and "src/small.bin" in nodes and snap.excluded == 1  # type: ignore[attr-defined]


def test_one_file_system(vault_env: Env, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    mnt = src / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "fh-test", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (mnt / "other-fs.txt").write_text("on another file system")
        _, nodes, snap, _ = _backup(vault_env, [src], one_file_system=True)
        assert "src/mnt" in nodes and "src/mnt/other-fs.txt" not in nodes and "src/keep/a.txt" in nodes
        assert snap.excluded == 1  # type: ignore[attr-defined]
        _, nodes, _, _ = _backup(vault_env, [src])
        assert "src/mnt/other-fs.txt" in nodes
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_files_from(vault_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tree(tmp_path / "src")
    lst = tmp_path / "list.txt"
    lst.write_text(f"# what to back up\n\n{src / 'keep' / 'a.txt'}\n  {src}/*.bin  \nsrc/keep/deep\n{src}/nothing*\n")
    monkeypatch.chdir(tmp_path)  # relative entries are relative to the working directory
    rec = Recorder()
    with vault_env.open() as v:
        sid, snap, _ = v.backup([], rec, options=BackupOptions(files_from=(str(lst),)))
        nodes = listing(v, sid)
    assert sorted(snap.paths) == sorted(str(src / p) for p in ("keep/a.txt", "big.bin", "small.bin", "keep/deep"))
    assert {"a.txt", "big.bin", "small.bin", "deep", "deep/b.TMP"} <= set(nodes)
    assert any("nothing*" in w for w in rec.warnings)


def test_dry_run_writes_nothing(vault_env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=30)
    before = sorted(str(f) for _, f in vault_env.objects())
    state = (vault_env.home / "vault.json").read_bytes()
    rec = Recorder()
    with vault_env.open() as v:
        sid, snap, stats = v.backup([str(src)], rec, options=BackupOptions(dry_run=True))
        assert sid == "" and v.snapshots() == []
    assert stats.files == snap.files > 30 and stats.new_bytes > 0 and stats.stored_bytes == 0  # type: ignore[attr-defined]
    assert sorted(str(f) for _, f in vault_env.objects()) == before
    assert (vault_env.home / "vault.json").read_bytes() == state
    proc = vault_env.cli("backup", "--dry-run", str(src))
    assert proc.stdout.strip().startswith("would store ") and "new)" in proc.stdout
    assert sorted(str(f) for _, f in vault_env.objects()) == before


def test_stdin_stores_the_stream(vault_env: Env, tmp_path: Path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    rec = Recorder()
    with vault_env.open() as v:
        sid, snap, _ = v.backup([], rec, options=BackupOptions(stdin=io.BytesIO(data), stdin_filename="dump.sql"))
        node = listing(v, sid)["dump.sql"]
        assert snap.paths == ["/dump.sql"] and node.size == len(data) and node.type == "file"
        copy = tmp_path / "dump.sql"
        copy.write_bytes(data)
        sid2, _, st2 = v.backup([str(copy)])
        assert listing(v, sid2)["dump.sql"].content == node.content and st2.new_bytes == 0  # type: ignore[attr-defined]
    proc = vault_env.cli("backup", "--stdin", "--stdin-filename", "piped.txt", input="from a pipe\n")
    with vault_env.open() as v:
        assert listing(v, proc.stdout.strip().splitlines()[-1])["piped.txt"].size == len("from a pipe\n")
    with pytest.raises(UsageError), vault_env.open() as v:
        v.backup([str(copy)], options=BackupOptions(stdin=io.BytesIO(b"x")))


# -- Freehold's own state -------------------------------------------------------------------------------

def test_a_home_holding_the_vault_is_backed_up_without_it(tmp_path: Path) -> None:
    """Finding 2: three backups of a home that holds FREEHOLD_HOME and the provider directories
    ingested the vault each time (28.6, 72, 144 MiB). Now they are left out, with one line."""
    home = tmp_path / "u"
    env = make_env(home)
    write_tree(home / "docs", small=40)
    alias = tmp_path / "alias"
    alias.symlink_to(home)
    env.home = alias / "home"  # FREEHOLD_HOME spelled through a link: found by device and inode
    env.init().close()
    sizes = []
    for _ in range(3):
        rec = Recorder()
        with env.open() as v:
            sid, snap, _ = v.backup([str(home)], rec)
            names = set(listing(v, sid))
        sizes.append(snap.size)
        assert snap.excluded == 6 and not any(n.startswith(("u/home", "u/prov")) for n in names)
        own = [w for w in rec.warnings if w.startswith("left out Freehold's own state: ")]
        assert len(own) == 1 and all(str(home / d) in own[0] for d in ("home", "prov1", "prov5"))
    assert sizes[0] == sizes[1] == sizes[2] > 0
    proc = env.cli("backup", str(home), env_override={**env.cli_env(), "FREEHOLD_HOME": str(env.home)})
    assert "left out Freehold's own state" in proc.stderr
    for own_dir in (env.home, env.providers[0], env.providers[0] / "data"):
        with pytest.raises(UsageError, match="own state"), env.open() as v:
            v.backup([str(own_dir)])


# -- incomplete snapshots -------------------------------------------------------------------------------

def _limited() -> list[str]:
    """Run the CLI so that file modes bind it: as root, drop the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_unreadable_files_make_an_incomplete_snapshot_exit_3(vault_env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=10)
    secret = src / "d1" / "locked.txt"
    secret.write_text("cannot read me")
    secret.chmod(0)
    closed = src / "d2" / "closed"
    closed.mkdir()
    closed.chmod(0)
    sock = src / "d3" / "agent.sock"
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    proc = vault_env.cli("backup", str(src), prefix=_limited(), check=False)
    assert proc.returncode == 3, proc.stderr
    sid = proc.stdout.strip().splitlines()[-1]
    assert len(sid) == 64 and "was saved, but 2 path(s) could not be read" in proc.stderr
    assert "agent.sock" in proc.stderr and "a socket holds no data" in proc.stderr
    with vault_env.open() as v:
        [(listed, snap)] = v.snapshots()
        nodes = listing(v, sid)
    assert listed == sid
    assert sorted(snap.skipped) == sorted([f"{secret}: Permission denied", f"{closed}: Permission denied"])
    assert "src/d1/locked.txt" not in nodes and "src/d3/agent.sock" not in nodes and "src/d1/e1/f1.txt" in nodes
    proc = vault_env.cli("backup", "--json", str(src), prefix=_limited(), check=False)
    assert proc.returncode == 3
    out = json.loads(proc.stdout)
    assert out["incomplete"] is True and len(out["skipped"]) == 2 and out["snapshot"]
    s.close()
    secret.chmod(0o644)
    closed.chmod(0o755)
    assert vault_env.cli("backup", str(src)).returncode == 0


def test_paths_longer_than_path_max(vault_env: Env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    parts = []
    try:
        for i in range(20):  # 20 x 251 characters: past PATH_MAX (4096)
            name = f"{i:02d}" + "x" * 249
            os.mkdir(name, dir_fd=fd)
            parts.append(name)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        wfd = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(wfd, b"far down")
        os.close(wfd)
    finally:
        os.close(fd)
    deep = "src/" + "/".join(parts) + "/deep.txt"
    assert len(str(tmp_path) + deep) > 4096
    with vault_env.open() as v:
        sid, snap, _ = v.backup([str(src)])
        nodes = listing(v, sid)
    assert snap.skipped == [] and nodes[deep].size == len(b"far down")


# -- sources --------------------------------------------------------------------------------------------

def test_sources_with_the_same_name_are_both_stored(vault_env: Env, tmp_path: Path) -> None:
    for d, body in (("x", "from x"), ("y", "from y")):
        (tmp_path / d / "data").mkdir(parents=True)
        (tmp_path / d / "data" / "f").write_text(body)
    os.chmod(tmp_path / "x", 0o700)
    os.utime(tmp_path / "x", ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))
    paths = [tmp_path / "x" / "data", tmp_path / "y" / "data"]
    with vault_env.open() as v:
        sid, snap, _ = v.backup([str(p) for p in paths])
        nodes = listing(v, sid)
        assert sorted(snap.paths) == sorted(str(p) for p in paths)
        assert source_names(snap.paths) == {str(paths[0]): "x/data", str(paths[1]): "y/data"}
        assert nodes["x/data/f"].size == nodes["y/data/f"].size == 6 and set(nodes) == {
            "x", "x/data", "x/data/f", "y", "y/data", "y/data/f"}
        x = nodes["x"]  # an intermediate directory carries the real directory's metadata
        assert x.type == "dir" and x.mode == 0o700 and x.mtime == 1_500_000_000_000_000_001
        assert x.meta is not None and x.meta.uid == os.stat(tmp_path / "x").st_uid
        (tmp_path / "y" / "data" / "f").write_text("from y, changed")
        sid2, _, st2 = v.backup([str(p) for p in paths])  # the parent is found: the files cache applies
        assert st2.unchanged_files == 1 and listing(v, sid2)["y/data/f"].size == 15  # type: ignore[attr-defined]


def test_a_symlinked_source_is_stored_as_a_link_or_followed_with_a_slash(vault_env: Env, tmp_path: Path) -> None:
    real = write_tree(tmp_path / "real", small=5)
    link = tmp_path / "link"
    link.symlink_to(real)
    with vault_env.open() as v:
        rec = Recorder()
        sid, _, _ = v.backup([str(link)], rec)
        nodes = listing(v, sid)
        assert nodes["link"].type == "symlink" and len(nodes) == 1
        assert any("is a symbolic link; stored as a link" in w and "trailing /" in w for w in rec.warnings)
        rec = Recorder()
        sid, snap, _ = v.backup([str(link) + "/"], rec)
        nodes = listing(v, sid)
        assert nodes["link"].type == "dir" and "link/d0/e0/f0.txt" in nodes and snap.paths == [str(link)]
        assert not rec.warnings
