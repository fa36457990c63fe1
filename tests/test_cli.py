"""The command line: the forms issue 2 fixes, --json everywhere, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import Env, same_tree, write_tree


def _no_traceback(proc: object) -> None:
    text = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in text, text
    err_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("freehold: error:")]  # type: ignore[attr-defined]
    assert len(err_lines) == 1, proc.stderr  # type: ignore[attr-defined]


def test_cli_full_cycle_with_json(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=40, big=500_000)
    init = json.loads(env.cli("init", "--k", "3", "--n", "5", *env.urls, "--json").stdout)
    assert init["k"] == 3 and len(init["providers"]) == 5
    out = env.cli("backup", str(src)).stdout
    sid = out.strip().splitlines()[-1]
    assert len(sid) == 64 and all(c in "0123456789abcdef" for c in sid)
    b2 = json.loads(env.cli("backup", str(src), "--json").stdout)
    assert b2["unchanged_files"] == b2["files"] and b2["new_bytes"] == 0
    snaps = json.loads(env.cli("snapshots", "--json").stdout)
    assert [s["id"] for s in snaps][0] == sid and snaps[0]["paths"] == [str(src)]
    assert sid[:12] in env.cli("snapshots").stdout
    listing = json.loads(env.cli("ls", sid[:10], "src/d0", "--json").stdout)
    assert {e["path"] for e in listing} >= {"src/d0", "src/d0/e0/f0.txt"}
    assert "src/link -> d0/e0/f0.txt" in env.cli("ls", "latest").stdout
    rs = json.loads(env.cli("restore", "latest", "--target", str(tmp_path / "out"), "--json").stdout)
    assert rs["files"] > 40
    same_tree(src, tmp_path / "out" / "src")
    env.cli("restore", sid, "--target", str(tmp_path / "one"), "--include", "src/d2/e2")
    assert [p.name for p in (tmp_path / "one" / "src" / "d2").iterdir()] == ["e2"]
    chk = json.loads(env.cli("check", "--read-data", "--json").stdout)
    assert chk["healthy"] and chk["problems"] == []
    st = json.loads(env.cli("stats", "--json").stdout)
    assert st["logical_bytes"] == 2 * snaps[0]["size"]
    assert 1.9 < st["dedup_ratio"] < 2.1
    assert set(st["providers"]) == {"p1", "p2", "p3", "p4", "p5"}
    assert all(p["bytes"] > 0 for p in st["providers"].values())
    assert "dedup ratio" in env.cli("stats").stdout


def test_check_reports_and_fails_on_missing_provider(env: Env, tmp_path: Path) -> None:
    env.cli("init", "--k", "3", "--n", "5", *env.urls)
    env.cli("backup", str(write_tree(tmp_path / "src", small=5)))
    shutil.rmtree(env.providers[2])
    proc = env.cli("check", check=False)
    assert proc.returncode == 1 and "p3" in proc.stdout and "missing" in proc.stdout
    assert json.loads(env.cli("check", "--json", check=False).stdout)["healthy"] is False


def test_passphrase_file_and_prompt_free_errors(env: Env, tmp_path: Path) -> None:
    pf = tmp_path / "pass"
    pf.write_text("from a file\n")
    e2 = {k: v for k, v in env.cli_env().items() if k != "FREEHOLD_PASSPHRASE"}
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freehold.cli", *args], env=e2, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL)

    assert run("init", *env.urls, "--passphrase-file", str(pf)).returncode == 0
    assert run("snapshots", "--passphrase-file", str(pf)).returncode == 0
    no_pass = run("snapshots")
    assert no_pass.returncode == 2 and "FREEHOLD_PASSPHRASE" in no_pass.stderr
    _no_traceback(no_pass)
    wrong = env.cli("snapshots", check=False)  # env passphrase differs from the file's
    assert wrong.returncode == 4 and "wrong passphrase" in wrong.stderr
    _no_traceback(wrong)


@pytest.mark.parametrize("args,code,words", [
    (["backup", "/definitely/not/here"], 2, "no such file"),
    (["restore", "abcdef012345", "--target", "/tmp/x"], 5, "no snapshot"),
    (["ls", "latest", "no/such/path"], 2, "not in this snapshot"),
])
def test_bad_input_is_one_line_and_nonzero(env: Env, tmp_path: Path, args: list[str], code: int,
                                           words: str) -> None:
    env.cli("init", *env.urls)
    env.cli("backup", str(write_tree(tmp_path / "src", small=2)))
    proc = env.cli(*args, check=False)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr
    _no_traceback(proc)


@pytest.mark.parametrize("k,n", [("0", "5"), ("4", "3"), ("3", "6"), ("2", "300")])
def test_k_n_out_of_range(env: Env, k: str, n: str) -> None:
    proc = env.cli("init", "--k", k, "--n", n, *env.urls, check=False)
    assert proc.returncode == 2
    _no_traceback(proc)


def test_no_vault_and_unknown_provider_url(env: Env) -> None:
    proc = env.cli("snapshots", check=False)
    assert proc.returncode == 11 and "freehold init" in proc.stderr
    _no_traceback(proc)
    proc = env.cli("init", "ftp://example/x", *env.urls[1:], check=False)
    assert proc.returncode == 2
    _no_traceback(proc)


def test_missing_provider_directory(env: Env, tmp_path: Path) -> None:
    missing = env.urls[:4] + [(tmp_path / "not-there").as_uri()]
    proc = env.cli("init", *missing, check=False)
    assert proc.returncode == 7 and "not-there" in proc.stderr and "missing" in proc.stderr
    _no_traceback(proc)
    env.cli("init", *env.urls)
    shutil.rmtree(env.providers[4])
    proc = env.cli("backup", str(write_tree(tmp_path / "src", small=2)), check=False)
    assert proc.returncode == 7 and "missing" in proc.stderr
    _no_traceback(proc)


def _limited() -> list[str]:
    """Run the CLI so that file modes bind it: as root, drop the capabilities that bypass them."""
    if os.geteuid() != 0:
        return []
    if not shutil.which("setpriv"):
        pytest.skip("running as root without setpriv: file modes cannot be enforced")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]


def test_unreadable_file_is_skipped_with_warning_and_listed(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=10)
    secret = src / "d1" / "locked.txt"
    secret.write_text("cannot read me")
    secret.chmod(0)
    env.cli("init", *env.urls)
    proc = env.cli("backup", str(src), prefix=_limited(), check=False)
    assert proc.returncode == 3, proc.stderr  # saved, but incomplete
    assert "skipped" in proc.stderr and "locked.txt" in proc.stderr
    assert "locked.txt" in proc.stdout.split("skipped:")[-1]
    sid = proc.stdout.strip().splitlines()[-1]
    listing = env.cli("ls", sid).stdout
    assert "locked.txt" not in listing and "src/d1/e1/f1.txt" in listing


def test_read_only_provider(env: Env, tmp_path: Path) -> None:
    env.providers[1].chmod(0o555)
    proc = env.cli("init", *env.urls, check=False, prefix=_limited())
    assert proc.returncode == 7 and "permission denied" in proc.stderr
    _no_traceback(proc)
    env.providers[1].chmod(0o755)
    env.cli("init", *env.urls)
    src = write_tree(tmp_path / "src", small=3)
    env.cli("backup", str(src))
    for d in [env.providers[1], *env.providers[1].rglob("*")]:
        if d.is_dir():
            d.chmod(0o555)
    (src / "new").write_bytes(os.urandom(2000))
    proc = env.cli("backup", str(src), check=False, prefix=_limited())
    assert proc.returncode == 7 and "permission denied" in proc.stderr
    _no_traceback(proc)
    # The failed backup damaged nothing: the first snapshot is still the only one and restores.
    env.cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert env.cli("snapshots", "--json").stdout.count('"id"') == 1
    for d in [env.providers[1], *env.providers[1].rglob("*")]:
        if d.is_dir():
            d.chmod(0o755)


def test_cli_providers_and_policy(tmp_path: Path) -> None:
    env = Env(tmp_path, tmp_path / "home", [], 2, 3)
    dirs = {n: tmp_path / n for n in ("fra", "ber", "par", "ams")}
    for d in dirs.values():
        d.mkdir()
    spec = {"fra": "DE,operator=hetzner", "ber": "DE,operator=hetzner", "par": "FR,operator=ovh"}
    args = [a for n, j in spec.items() for a in ("--provider", f"{n}={dirs[n].as_uri()},jurisdiction={j}")]
    bad = env.cli("init", "--k", "2", "--n", "3", *args, "--max-per-operator", "1", check=False)
    assert bad.returncode == 9 and "max-per-operator=1" in bad.stderr
    _no_traceback(bad)
    assert not any(any(d.iterdir()) for d in dirs.values())
    env.cli("init", "--k", "2", "--n", "3", *args, "--min-jurisdictions", "2")
    env.cli("provider", "add", "ams", dirs["ams"].as_uri(), "--jurisdiction", "NL", "--operator", "scaleway")
    rows = json.loads(env.cli("provider", "list", "--json").stdout)
    assert [(r["id"], r["jurisdiction"], r["operator"], r["healthy"]) for r in rows] == [
        ("fra", "DE", "hetzner", True), ("ber", "DE", "hetzner", True), ("par", "FR", "ovh", True),
        ("ams", "NL", "scaleway", True)]
    refused = env.cli("policy", "set", "--allow", "DE,FR", "--min-jurisdictions", "3", check=False)
    assert refused.returncode == 9 and "min-jurisdictions=3" in refused.stderr
    env.cli("policy", "set", "--allow", "DE,FR,NL", "--max-per-operator", "1")
    assert json.loads(env.cli("policy", "show", "--json").stdout) == {
        "allow": ["DE", "FR", "NL"], "max_per_operator": 1}
    env.cli("backup", str(write_tree(tmp_path / "src", small=20, big=2_000_000)))
    rows = {r["id"]: r for r in json.loads(env.cli("provider", "list", "--json").stdout)}
    # every pack: one share with ovh, one with scaleway, and exactly one of the two hetzner providers
    assert rows["par"]["shares"] > 0
    assert rows["fra"]["shares"] + rows["ber"]["shares"] == rows["par"]["shares"] == rows["ams"]["shares"]


def test_cli_guardians_and_recovery_on_a_fresh_machine(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    src = write_tree(tmp_path / "src", small=15)
    sid = env.cli("backup", str(src)).stdout.split()[-1]
    env.cli("guardians", "create", "--threshold", "3", "--shares", "5", "--out", str(tmp_path / "g"),
            "--label", "Family <archive>")
    files = sorted((tmp_path / "g").glob("guardian-*.txt"))
    assert len(files) == 5 and all(f.stat().st_mode & 0o777 == 0o600 for f in files)
    assert "Family &lt;archive&gt;" in (tmp_path / "g" / "guardian-1.svg").read_text()
    # A fresh machine: empty home, no passphrase, one surviving provider and three guardians.
    fresh = Env(tmp_path, tmp_path / "fresh", env.providers, 3, 5)
    base = {k: v for k, v in fresh.cli_env().items() if k != "FREEHOLD_PASSPHRASE"}
    import subprocess
    import sys

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freehold.cli", *args], env={**base, **extra},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    shares = [a for f in files[:2] for a in ("--share-file", str(f))]
    few = run("recover", "--from", env.urls[3], *shares, FREEHOLD_NEW_PASSPHRASE="new one")
    assert few.returncode == 8 and "3 shares needed, 2 given" in few.stderr
    _no_traceback(few)
    ok = run("recover", "--from", env.urls[3], *shares, "--share-file", str(files[4]),
             FREEHOLD_NEW_PASSPHRASE="new one")
    assert ok.returncode == 0, ok.stderr
    rs = run("restore", "latest", "--target", str(tmp_path / "out"), FREEHOLD_PASSPHRASE="new one")
    assert rs.returncode == 0, rs.stderr
    same_tree(src, tmp_path / "out" / "src")
    assert sid in run("snapshots", "--json", FREEHOLD_PASSPHRASE="new one").stdout


def test_cli_keys_and_passphrase_change(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    e2 = env.cli_env()
    import subprocess
    import sys

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "freehold.cli", *args], env={**e2, **extra},
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)

    added = json.loads(run("keys", "add", "--json", FREEHOLD_NEW_PASSPHRASE="second").stdout)["id"]
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert len(listed) == 2 and sum(k["current"] for k in listed) == 1
    assert run("snapshots", FREEHOLD_PASSPHRASE="second").returncode == 0
    assert run("keys", "remove", added[:8]).returncode == 0
    assert run("snapshots", FREEHOLD_PASSPHRASE="second").returncode == 4
    assert run("passphrase", "change", FREEHOLD_NEW_PASSPHRASE="third").returncode == 0
    assert run("snapshots").returncode == 4
    assert run("snapshots", FREEHOLD_PASSPHRASE="third").returncode == 0
    last = run("keys", "remove", json.loads(run("keys", "list", "--json", FREEHOLD_PASSPHRASE="third").stdout)[0][
        "id"], FREEHOLD_PASSPHRASE="third")
    assert last.returncode == 2 and "last key" in last.stderr


def test_restore_into_bad_targets_is_a_clear_error(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    env.cli("backup", str(write_tree(tmp_path / "src", small=3)))
    afile = tmp_path / "afile"
    afile.write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    for target, code, words in [(afile, 2, "not a directory"), (ro / "sub", 2, "Permission denied"),
                                (ro, 1, "Permission denied")]:
        proc = env.cli("restore", "latest", "--target", str(target), check=False, prefix=_limited())
        assert proc.returncode == code and words in proc.stderr, proc.stderr
        _no_traceback(proc)
    ro.chmod(0o755)


# -- issue 12: Ctrl-C, snapshot prefixes, paths, tables, times, usage errors, --json -----------------

INTERRUPTED_BACKUP = ("freehold: interrupted: no new snapshot was saved; earlier snapshots are intact "
                      "(data already stored is reused by the next backup)")
INTERRUPTED_RESTORE = re.compile(r"freehold: interrupted: (\d+) files? restored so far (?:is|are) complete; "
                                 r"run the same restore again to finish")
# The CLI with every ranged provider read (the data shares) slowed down: a restore that takes long.
SLOW_READS = """
import time
from freehold.providers.local import LocalProvider
get = LocalProvider.get
def slow(self, name, start=None, end=None):
    if start is not None:
        time.sleep(0.3)
    return get(self, name, start, end)
LocalProvider.get = slow
from freehold.cli import main
main()
"""


def _interrupted(cmd: list[str], env: dict[str, str], ready: Callable[[int], bool]) -> tuple[int, str, str]:
    """Start ``cmd``, wait until ``ready(pid)``, send SIGINT as Ctrl-C does, and collect it."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a shell would
    deadline = time.monotonic() + 60
    try:
        while not ready(proc.pid):
            assert proc.poll() is None, f"finished before it was interrupted: {proc.communicate()}"
            assert time.monotonic() < deadline, "never became ready to interrupt"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, err


def _has_open(pid: int, path: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            pass
    return False


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to see what the backup reads")
def test_ctrl_c_during_a_backup_says_what_was_kept(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=10)
    env.cli("init", *env.urls)
    first = env.cli("backup", str(src)).stdout.split()[-1]
    huge = src / "huge.img"
    with open(huge, "wb") as f:  # sparse: minutes of chunking, no disk
        f.truncate(64 * 1024 ** 3)
    started = time.monotonic()
    rc, _, err = _interrupted([sys.executable, "-m", "freehold.cli", "backup", str(src)], env.cli_env(),
                                lambda pid: _has_open(pid, huge))
    assert rc == 130, err
    assert err.splitlines() == [INTERRUPTED_BACKUP], err
    assert time.monotonic() - started < 60
    assert [s["id"] for s in json.loads(env.cli("snapshots", "--json").stdout)] == [first]


def test_ctrl_c_during_a_restore_says_what_was_kept(env: Env, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", small=30)
    for i in range(12):
        (src / f"big{i}.bin").write_bytes(os.urandom(6_000_000))
    env.cli("init", *env.urls)
    env.cli("backup", str(src))
    target = tmp_path / "out"

    def some_file_written(pid: int) -> bool:
        return target.exists() and any(p.is_file() for p in target.rglob("*"))

    rc, _, err = _interrupted([sys.executable, "-c", SLOW_READS, "restore", "latest", "--target", str(target)],
                                env.cli_env(), some_file_written)
    assert rc == 130, err
    lines = err.splitlines()
    said = INTERRUPTED_RESTORE.fullmatch(lines[0]) if len(lines) == 1 else None
    assert said, err
    complete = [p for p in (target / "src").rglob("*") if p.is_file() and not p.is_symlink()
                and (src / p.relative_to(target / "src")).is_file()
                and (src / p.relative_to(target / "src")).read_bytes() == p.read_bytes()]
    assert int(said.group(1)) <= len(complete)  # that many are complete under their final names
    env.cli("restore", "latest", "--target", str(target))  # "run the same restore again to finish"
    same_tree(src, target / "src")


def _ids_sharing_a_first_character(env: Env, src: Path) -> list[str]:
    """Back up until two snapshot ids start alike (at most 17 backups: pigeonhole)."""
    ids: list[str] = []
    with env.open() as v:
        while len({i[0] for i in ids}) == len(ids):
            (src / "n").write_text(str(len(ids)))
            ids.append(v.backup([str(src)]).id)
    return ids


def test_any_unique_prefix_names_a_snapshot(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    src = write_tree(tmp_path / "src", small=3)
    ids = _ids_sharing_a_first_character(env, src)
    for sid in ids:
        short = next(sid[:n] for n in range(1, 65) if sum(i.startswith(sid[:n]) for i in ids) == 1)
        listing = json.loads(env.cli("ls", short, "src/n", "--json").stdout)
        assert listing[0]["size"] == len(str(ids.index(sid)))
    shared = ids[-1][0]
    proc = env.cli("ls", shared, check=False)
    many = sum(i.startswith(shared) for i in ids)
    assert proc.returncode == 5 and "ambiguous" in proc.stderr and f"{many} snapshots" in proc.stderr
    _no_traceback(proc)
    assert env.cli("ls", "latest", "src/n").stdout.strip().endswith("src/n")


def test_ls_takes_the_original_absolute_paths_and_normalises(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    src = write_tree(tmp_path / "src", small=10)
    env.cli("backup", str(src))
    by_abs = json.loads(env.cli("ls", "latest", str(src / "d0"), "--json").stdout)
    by_name = json.loads(env.cli("ls", "latest", "src/d0", "--json").stdout)
    assert by_abs == by_name and by_abs[0]["path"] == "src/d0"
    for spelling in ["./src//d0/", "src/d0/", "/src/d0", f"{src}/./d0/", f"{src}/e/../d0"]:
        first = env.cli("ls", "latest", spelling).stdout.splitlines()[0]
        assert first.endswith("  src/d0"), (spelling, first)
    assert env.cli("ls", "latest", str(src)).stdout.splitlines()[0].endswith("  src")
    proc = env.cli("ls", "latest", str(tmp_path / "elsewhere"), check=False)
    assert proc.returncode == 2 and "not in this snapshot" in proc.stderr and str(src) in proc.stderr
    _no_traceback(proc)


def test_output_is_never_cut_when_not_a_terminal(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    deep = tmp_path / ("a-rather-long-directory-name-" * 6) / ("and-a-long-file-name-" * 5 + ".txt")
    deep.parent.mkdir(parents=True)
    deep.write_text("x")
    env.cli("backup", str(deep.parent))
    assert str(deep.parent) in env.cli("snapshots").stdout
    assert f"{deep.parent.name}/{deep.name}" in env.cli("ls", "latest").stdout
    for url in env.urls:
        assert url in env.cli("provider", "list").stdout and url in env.cli("stats").stdout
    proc = env.cli("ls", "latest", str(deep) + "-missing", check=False)
    assert str(deep) + "-missing" in proc.stderr


TIME = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0100"  # local time with its offset, to the second


def test_times_are_local_with_their_offset_everywhere(env: Env, tmp_path: Path) -> None:
    env.cli("init", *env.urls)
    src = write_tree(tmp_path / "src", small=2)
    env.cli("backup", str(src))
    tz = {**env.cli_env(), "TZ": "XYZ-1"}  # UTC+1, no tzdata needed
    snaps = env.cli("snapshots", env_override=tz).stdout.splitlines()
    assert re.search(rf"  {TIME}  {re.escape(str(src))}  ", snaps[1]), snaps
    assert re.search(rf"  {TIME}  argon2id", env.cli("keys", "list", env_override=tz).stdout)
    one = next(ln for ln in env.cli("ls", "latest", env_override=tz).stdout.splitlines() if ln.endswith("src/one"))
    assert "2001-09-09 02:46:40 +0100  src/one" in one  # its mtime is 1,000,000,000.123456789 s
    js = json.loads(env.cli("snapshots", "--json", env_override=tz).stdout)[0]
    assert datetime.fromisoformat(js["time"]).utcoffset() is not None
    assert any(e["mtime_ns"] == 1_000_000_000_123_456_789
               for e in json.loads(env.cli("ls", "latest", "--json").stdout))
    assert datetime.fromisoformat(json.loads(env.cli("keys", "list", "--json").stdout)[0]["created"]).utcoffset() \
        is not None


@pytest.mark.parametrize("args,words", [
    (["ls"], "missing argument"),
    (["ls", "--bogus", "latest"], "no such option: --bogus"),
    (["init", "--k", "x"], "'x' is not a valid int"),
    (["nosuch"], "no such command 'nosuch'"),
    (["keys", "nosuch"], "no such command 'nosuch'"),
    (["snapshots", "extra"], "unexpected extra argument"),
])
def test_usage_errors_are_one_line(env: Env, args: list[str], words: str) -> None:
    proc = env.cli(*args, check=False)
    assert proc.returncode == 2
    assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
    line = proc.stderr.strip()
    command = " ".join(["freehold", *[a for a in args[:2] if a in ("ls", "init", "keys", "snapshots")]])
    assert line.startswith("freehold: error: ") and words in line, line
    assert line.endswith(f"(see '{command} --help')"), line


def test_every_command_takes_json(env: Env, tmp_path: Path) -> None:
    assert json.loads(env.cli("version", "--json").stdout)["version"]
    from typer.main import get_command

    from freehold.cli import app

    def leaves(cmd: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            return [(path, cmd)]
        return [leaf for name, sub in subs.items() for leaf in leaves(sub, (*path, name))]

    missing = [" ".join(path) for path, cmd in leaves(get_command(app))
               if not any("--json" in p.opts for p in cmd.params)]  # type: ignore[attr-defined]
    assert not missing, missing
