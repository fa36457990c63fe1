"""What the command modules share: the Typer app, the console, common options and helpers."""

from __future__ import annotations

import contextlib
import gc
import getpass
import json
import os
import secrets
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from .. import formats, keys
from ..errors import UsageError
from ..vault import ProviderSpec, Vault

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Freehold: encrypted, deduplicated, erasure-coded backups on storage you choose.")
out = Console(highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PassFileOpt = Annotated[Path | None, typer.Option("--passphrase-file", help="Read the passphrase from FILE.",
                                                  dir_okay=False)]


def read_passphrase(passphrase_file: Path | None, confirm: bool = False) -> str:
    if passphrase_file is not None:
        try:
            return passphrase_file.read_text().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read passphrase file {passphrase_file}: {exc.strerror}") from None
    env = os.environ.get("FREEHOLD_PASSPHRASE")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError("no passphrase: set FREEHOLD_PASSPHRASE, use --passphrase-file, "
                         "or run in a terminal")
    first = getpass.getpass("Vault passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != first:
        raise UsageError("the passphrases do not match")
    return first


def missed(pids: list[str]) -> str:
    if not pids:
        return ""
    return (f" Providers {', '.join(pids)} did not take the change; they are brought up to date the next time "
            "they are reachable.")


def open_vault(passphrase_file: Path | None) -> Vault:
    vault = Vault.open(read_passphrase(passphrase_file))
    # The index just loaded lives as long as the command: keep the cyclic GC from rescanning it
    # at every full collection (see tune_gc).
    gc.freeze()
    return vault


def emit(data: Any) -> None:
    out.out(json.dumps(data, indent=2, default=str), highlight=False)


def report(as_json: bool, data: Any, text: str) -> None:
    """A command's result: ``data`` as JSON with --json, else ``text`` for people."""
    if as_json:
        emit(data)
    else:
        out.print(text, markup=False)


TIME_FORMAT = "%Y-%m-%d %H:%M:%S %z"  # every time shown to people: local, with its UTC offset


def local_time(when: str | int) -> str:
    """An ISO 8601 time (a snapshot's, a key's; UTC when it names no offset) or nanoseconds
    since the epoch (a file's mtime) as local time with its UTC offset, to the second:
    ``2026-12-02 10:15:03 +0100``. JSON output keeps the ISO text or the nanoseconds."""
    if isinstance(when, int):
        t = datetime.fromtimestamp(when // 1_000_000_000, UTC)
    else:
        try:
            t = datetime.fromisoformat(when)
        except ValueError:
            return when
        t = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return t.astimezone().strftime(TIME_FORMAT)


Cell = str | Text


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """Columns for people. On a terminal a rich table whose cells wrap (never cut); anywhere
    else (a pipe, a file, a test) plain aligned text at full length, whatever the width.
    ``str`` cells are plain text (a path with brackets stays as it is); ``Text`` may be styled."""
    if out.is_terminal:
        from rich.table import Table

        t = Table(*headers, box=None)
        for col in t.columns:
            col.overflow = "fold"
        for row in rows:
            t.add_row(*[c if isinstance(c, Text) else Text(c) for c in row])
        out.print(t)
        return
    plain = [[c.plain if isinstance(c, Text) else c for c in row] for row in [list(headers), *rows]]
    widths = [max(len(r[i]) for r in plain) for i in range(len(headers))]
    for r in plain:
        out.out("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(), highlight=False)


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def parse_provider(value: str) -> ProviderSpec:
    """NAME=URL,jurisdiction=XX,operator=Y or a plain URL."""
    head, *opts = value.split(",")
    name, sep, rest = head.partition("=")
    spec = ProviderSpec(rest, name=name) if sep and "://" not in name else ProviderSpec(head)
    for opt in opts:
        key, _, val = opt.partition("=")
        if key == "jurisdiction":
            spec.jurisdiction = val.upper()
        elif key == "operator":
            spec.operator = val
        else:
            raise UsageError(f"unknown provider option {key!r} in {value!r}")
    return spec


AllowOpt = Annotated[str | None, typer.Option("--allow", help="Jurisdictions shares may live in, e.g. DE,FR.")]
MinJurOpt = Annotated[int, typer.Option("--min-jurisdictions", help="Each pack across at least this many.")]
MaxOpOpt = Annotated[int, typer.Option("--max-per-operator", help="At most this many shares of a pack per "
                                                                  "operator (0: no limit).")]


def make_policy(allow: str | None, min_jurisdictions: int, max_per_operator: int) -> formats.Policy:
    codes = [c.strip().upper() for c in (allow or "").split(",") if c.strip()]
    for c in codes:
        if len(c) != 2 or not c.isalpha():
            raise UsageError(f"--allow: {c!r} is not an ISO 3166 alpha-2 code such as DE")
    if min_jurisdictions < 1 or max_per_operator < 0:
        raise UsageError("--min-jurisdictions must be >= 1 and --max-per-operator >= 0")
    return formats.Policy(allow=codes, min_jurisdictions=min_jurisdictions, max_per_operator=max_per_operator)


def new_passphrase(new_file: Path | None, env_name: str = "FREEHOLD_NEW_PASSPHRASE") -> str:
    """The new passphrase: --new-passphrase-file, $FREEHOLD_NEW_PASSPHRASE, or asked twice."""
    if new_file is not None:
        return read_passphrase(new_file)
    env = os.environ.get(env_name)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError(f"no new passphrase: set {env_name} or use --new-passphrase-file")
    first = getpass.getpass("New passphrase: ")
    if getpass.getpass("Repeat new passphrase: ") != first:
        raise UsageError("the passphrases do not match")
    return first


def kdf_from_env() -> keys.KdfParams | None:
    weak = os.environ.get("FREEHOLD_KDF_MEMORY_KIB")  # test suites only: see keys.KdfParams.weak
    return keys.KdfParams.weak(int(weak)) if weak and weak.isdigit() else None


def write_private(path: Path, data: str | bytes) -> None:
    """A new file readable by its owner only, written whole or not at all; never over another."""
    if path.exists() or path.is_symlink():
        raise UsageError(f"{path} exists: choose another --out (it is never overwritten)")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the name appeared meanwhile
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
