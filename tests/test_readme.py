"""Every shell command README.md shows is run here, in order, on local-directory providers.

The convention README.md follows (keep it when editing the README):

- Fenced blocks tagged ```sh or ```console hold shell commands: in ```sh blocks every line that is
  not blank or a comment (a trailing ``\\`` continues it); in ```console blocks the lines starting
  with ``$ `` (the rest is output, not checked). They run in order, as if typed into one bash
  (``set -o pipefail``): exports and ``cd`` carry over from one command to the next.
- Each command must exit 0, unless its trailing comment says ``exits N``: then it must exit N.
- ``<!-- readme: illustrative -->`` on the line before a block: the block is not run (it needs an
  S3 service, or it is ``make`` itself, which is run elsewhere). Instead its ``freehold``
  commands are parsed by the CLI's own parser (every option and argument must be accepted), every
  ``s3://`` URL in them must parse as a provider, and every ``make`` target must exist.
- The test stands in for the machine: the scratch directory is the clone (its ``.venv/bin/freehold``
  runs this checkout's CLI, and ``freehold`` is on PATH only if the README puts it there), HOME is
  a scratch directory holding ``~/Documents`` (with ``Documents/taxes``) and ``~/Photos``, and the
  example disks' absolute paths (under ``/mnt/`` and ``/media/``) are moved into the scratch
  directory. FREEHOLD_HOME and FREEHOLD_PASSPHRASE are set (the README's exports override them),
  and FREEHOLD_KDF_MEMORY_KIB keeps Argon2id cheap.
- Placeholders the test fills in: ``KEY_ID``, the newest key object that does not open the vault
  with the current passphrase (from ``freehold keys list --json``); ``GRANT_ID``, the newest grant
  (from ``freehold shares list --json``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer.main

from freehold.cli import app
from freehold.cli.common import parse_provider

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
ILLUSTRATIVE = "<!-- readme: illustrative -->"
MOVED = ("/mnt/", "/media/")            # example disks, moved under the scratch directory
EXITS = re.compile(r"\s#.*\bexits (\d+)\b")
ILLUSTRATIVE_PROGRAMS = {"freehold", "make", "pip", "pipx"}


@dataclass
class Command:
    line: int                            # in README.md
    text: str
    expect: int


@dataclass
class Block:
    line: int
    lang: str
    illustrative: bool
    commands: list[Command]


def blocks(text: str) -> list[Block]:
    """The ```sh and ```console blocks of a Markdown text, with their commands."""
    lines = text.splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        lang = lines[i][3:].strip().split(" ")[0]
        start = i
        body: list[tuple[int, str]] = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        i += 1
        if lang not in ("sh", "console"):
            continue
        before = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        out.append(Block(start + 1, lang, before == ILLUSTRATIVE, _commands(lang, body)))
    return out


def _commands(lang: str, body: list[tuple[int, str]]) -> list[Command]:
    out: list[Command] = []
    pending: tuple[int, str] | None = None
    for no, raw in body:
        if pending is None:
            if lang == "console":
                if not raw.startswith("$ "):
                    continue
                raw = raw[2:]
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            pending = (no, "")
        text = pending[1] + raw
        if text.endswith("\\"):
            pending = (pending[0], text + "\n")  # bash joins the lines
            continue
        m = EXITS.search(text)
        out.append(Command(pending[0], text, int(m.group(1)) if m else 0))
        pending = None
    return out


# -- running the README -------------------------------------------------------------------------------

class Machine:
    """One shell session's state (environment, working directory) on a scratch machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        home = root / "home"
        for d in ("Documents/taxes", "Documents/letters", "Photos/2024", "Photos/2025"):
            (home / d).mkdir(parents=True)
        (home / "Documents/taxes/2025.pdf").write_bytes(os.urandom(30_000))
        (home / "Documents/letters/bank.txt").write_text("Dear bank,\n" * 200)
        (home / "Documents/letters/draft.tmp").write_text("scratch")
        (home / "Photos/2024/beach.jpg").write_bytes(os.urandom(200_000))
        (home / "Photos/2025/snow.jpg").write_bytes(os.urandom(150_000))
        bin_dir = root / ".venv" / "bin"  # "the clone": its venv's freehold runs this checkout
        bin_dir.mkdir(parents=True)
        shim = bin_dir / "freehold"
        shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m freehold.cli \"$@\"\n")
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
                if d and not os.access(os.path.join(d, "freehold"), os.X_OK)]
        self.env = {**os.environ, "HOME": str(home), "PATH": os.pathsep.join(path),
                    "FREEHOLD_HOME": str(home / ".freehold"), "FREEHOLD_PASSPHRASE": "readme passphrase",
                    "FREEHOLD_KDF_MEMORY_KIB": "64"}
        for name in ("FREEHOLD_NEW_PASSPHRASE", "FREEHOLD_DEBUG"):
            self.env.pop(name, None)
        self.cwd = root
        self.state = root / ".shell"

    def localise(self, text: str) -> str:
        for prefix in MOVED:
            text = re.sub(rf"(?<![\w.]){re.escape(prefix)}", f"{self.root}{prefix}", text)
        if "KEY_ID" in text:
            text = text.replace("KEY_ID", self.spare_key())
        if "GRANT_ID" in text:
            grants = json.loads(self.run_raw("freehold shares list --json").stdout)
            assert grants, "GRANT_ID: no grant made yet"
            text = text.replace("GRANT_ID", str(max(grants, key=lambda g: g["created"])["id"]))
        return text

    def spare_key(self) -> str:
        keys = json.loads(self.run_raw("freehold keys list --json").stdout)
        others = sorted((k for k in keys if not k["current"]), key=lambda k: k["created"])
        assert others, f"KEY_ID: no key besides the current one: {keys}"
        return str(others[-1]["id"])

    def run_raw(self, text: str) -> subprocess.CompletedProcess[str]:
        self.state.mkdir(exist_ok=True)
        script = (f"set -o pipefail\n{text}\n__rc=$?\npwd > {shlex.quote(str(self.state / 'cwd'))}\n"
                  f"env -0 > {shlex.quote(str(self.state / 'env'))}\nexit $__rc\n")
        proc = subprocess.run(["bash", "-c", script], env=self.env, cwd=self.cwd, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=600)
        env_file = self.state / "env"
        if env_file.exists():
            pairs = [e.split("=", 1) for e in env_file.read_text().split("\0") if "=" in e]
            self.env = {k: v for k, v in pairs if not k.startswith("BASH_FUNC_") and k not in ("_", "SHLVL")}
            self.cwd = Path((self.state / "cwd").read_text().strip())
            env_file.unlink()
        return proc

    def run(self, cmd: Command) -> str | None:
        """None when the command exited as the README says; else what went wrong."""
        proc = self.run_raw(self.localise(cmd.text))
        if proc.returncode == cmd.expect:
            return None
        return (f"README.md:{cmd.line}: `{cmd.text}` exited {proc.returncode}, expected {cmd.expect}\n"
                f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")


def run_all(text: str, root: Path) -> list[str]:
    """Run every runnable block of ``text`` in order; the first failure stops the run."""
    machine = Machine(root)
    for block in blocks(text):
        if block.illustrative:
            continue
        for cmd in block.commands:
            failure = machine.run(cmd)
            if failure:
                return [failure]
    return []


# -- checking illustrative blocks -----------------------------------------------------------------------

def parse_freehold(argv: list[str]) -> None:
    """Parse a freehold command line as the CLI would, without running it (click raises on
    anything it does not accept)."""
    cmd = typer.main.get_command(app)
    names: list[str] = []
    while hasattr(cmd, "commands"):
        assert argv, f"freehold {' '.join(names)}: no command given"
        sub = cmd.commands.get(argv[0])  # type: ignore[attr-defined]
        assert sub is not None, f"freehold {' '.join(names)}: no command {argv[0]!r}"
        names.append(argv.pop(0))
        cmd = sub
    cmd.make_context(" ".join(["freehold", *names]), argv)


def check_illustrative(cmd: Command) -> None:
    argv = shlex.split(cmd.text.replace("\\\n", " "), comments=True)
    while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # VAR=value freehold ...
        argv.pop(0)
    assert argv and argv[0] in ILLUSTRATIVE_PROGRAMS, f"README.md:{cmd.line}: cannot check {cmd.text!r}"
    if argv[0] == "make":
        makefile = (ROOT / "Makefile").read_text()
        for target in argv[1:]:
            assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"README.md:{cmd.line}: no make {target}"
        return
    if argv[0] != "freehold":
        return
    parse_freehold(argv[1:])
    urls = [a for a in argv if "s3://" in a]
    if urls:
        pytest.importorskip("boto3", reason="the S3 provider needs boto3")
        from freehold.providers import open_provider

        for arg in urls:
            open_provider(parse_provider(arg).url)  # raises UsageError on a URL the CLI refuses


# -- the tests ------------------------------------------------------------------------------------------

def test_the_readme_has_runnable_and_illustrative_blocks() -> None:
    found = blocks(README.read_text())
    assert sum(len(b.commands) for b in found if not b.illustrative) >= 30
    assert any(b.illustrative for b in found)


def test_every_readme_command_runs(tmp_path: Path) -> None:
    failures = run_all(README.read_text(), tmp_path)
    assert not failures, failures[0]


def test_illustrative_readme_commands_parse() -> None:
    checked = 0
    for block in blocks(README.read_text()):
        if block.illustrative:
            for cmd in block.commands:
                check_illustrative(cmd)
                checked += 1
    assert checked


# -- the checker itself catches wrong commands ----------------------------------------------------------

FAKE = """
Intro.

```sh
export PATH="$PWD/.venv/bin:$PATH"
export FREEHOLD_HOME=~/.vault
mkdir -p /mnt/d1 /mnt/d2 /mnt/d3
freehold init --k 2 --n 3 file:///mnt/d1 file:///mnt/d2 file:///mnt/d3
freehold backup ~/Documents
freehold ls latest Documents/taxes
freehold ls latest Documents/nothing    # exits 2: not in this snapshot
```

```console
$ freehold snapshots
id  time  paths
$ freehold {last}
```
"""


@pytest.mark.parametrize("last,failing", [("stats", None), ("stats --no-such-option", "stats --no-such-option"),
                                          ("ls latest Documents/nothing", "ls latest Documents/nothing")])
def test_a_wrong_command_fails_the_run(tmp_path: Path, last: str, failing: str | None) -> None:
    failures = run_all(FAKE.replace("{last}", last), tmp_path)
    if failing is None:
        assert not failures, failures
    else:
        assert len(failures) == 1 and f"`freehold {failing}`" in failures[0], failures


def test_exit_markers_and_continuations_are_read() -> None:
    parsed = blocks("```sh\nfreehold a \\\n    --b   # exits 5 when so\n# comment\n\nfreehold c\n```\n")
    assert [(c.text, c.expect) for c in parsed[0].commands] == [("freehold a \\\n    --b   # exits 5 when so", 5),
                                                                 ("freehold c", 0)]


@pytest.mark.parametrize("text", ["freehold init --k 3 --provider fra=s3://b1/v?endpoint=http://x:8333",
                                  "freehold restore latest --bogus", "freehold nosuch", "make no-such-target"])
def test_a_wrong_illustrative_command_is_caught(text: str) -> None:
    if "s3://" in text:
        pytest.importorskip("boto3")
    with pytest.raises(Exception):  # noqa: B017 - click's, the CLI's or an assertion: any refusal
        check_illustrative(Command(1, text, 0))


def test_shell_is_available() -> None:
    assert shutil.which("bash"), "the README's commands are run by bash"
