"""The ``freehold`` command line. Talks only to :class:`freehold.vault.Vault`."""

from __future__ import annotations

import dataclasses
import gc
import getpass
import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from . import __version__, formats, keys, placement
from .console import err, hard_exit, progress_for, setup_logging, tune_gc, tune_malloc
from .errors import FreeholdError, UsageError
from .vault import ProviderSpec, Vault

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Freehold: encrypted, deduplicated, erasure-coded backups on storage you choose.")
out = Console(highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
PassFileOpt = Annotated[Path | None, typer.Option("--passphrase-file", help="Read the passphrase from FILE.",
                                                  dir_okay=False)]


def _passphrase(passphrase_file: Path | None, confirm: bool = False) -> str:
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


def _missed(pids: list[str]) -> str:
    if not pids:
        return ""
    return (f" Providers {', '.join(pids)} did not take the change; they are brought up to date the next time "
            "they are reachable.")


def _open(passphrase_file: Path | None) -> Vault:
    vault = Vault.open(_passphrase(passphrase_file))
    # The index just loaded lives as long as the command: keep the cyclic GC from rescanning it
    # at every full collection (see tune_gc).
    gc.freeze()
    return vault


def _emit(data: Any) -> None:
    out.out(json.dumps(data, indent=2, default=str), highlight=False)


def _report(as_json: bool, data: Any, text: str) -> None:
    """A command's result: ``data`` as JSON with --json, else ``text`` for people."""
    if as_json:
        _emit(data)
    else:
        out.print(text)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _parse_provider(value: str) -> ProviderSpec:
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


def _policy(allow: str | None, min_jurisdictions: int, max_per_operator: int) -> formats.Policy:
    codes = [c.strip().upper() for c in (allow or "").split(",") if c.strip()]
    for c in codes:
        if len(c) != 2 or not c.isalpha():
            raise UsageError(f"--allow: {c!r} is not an ISO 3166 alpha-2 code such as DE")
    if min_jurisdictions < 1 or max_per_operator < 0:
        raise UsageError("--min-jurisdictions must be >= 1 and --max-per-operator >= 0")
    return formats.Policy(allow=codes, min_jurisdictions=min_jurisdictions, max_per_operator=max_per_operator)


@app.command()
def init(
    providers: Annotated[list[str] | None, typer.Argument(help="Provider URLs, e.g. file:///abs/path.")] = None,
    provider: Annotated[list[str] | None, typer.Option(
        "--provider", help="NAME=URL,jurisdiction=XX,operator=Y (repeatable).")] = None,
    k: Annotated[int, typer.Option("--k", help="Shares needed to read (k).")] = 3,
    n: Annotated[int, typer.Option("--n", help="Shares written per pack (n).")] = 5,
    allow: AllowOpt = None,
    min_jurisdictions: MinJurOpt = 1,
    max_per_operator: MaxOpOpt = 0,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a vault over N providers; any K of them can restore everything."""
    specs = [_parse_provider(p) for p in [*(providers or []), *(provider or [])]]
    if not specs:
        raise UsageError("name the providers: freehold init --k 3 --n 5 file:///abs/p1 ... (or --provider)")
    policy = _policy(allow, min_jurisdictions, max_per_operator)
    passphrase = _passphrase(passphrase_file, confirm=True)
    with Vault.init(specs, k, n, passphrase, kdf=_kdf_from_env(), policy=policy) as v:
        info = v.info()
        vid = info.vault_id
        if as_json:
            _emit({"vault_id": vid, "k": k, "n": n, "home": str(v.home),
                   "providers": [p.url for p in info.providers]})
            return
        out.print(f"Created vault {vid[:12]}: {k}-of-{n} over {len(specs)} providers "
                  f"(survives the loss of any {n - k}).")
        out.print(f"Local configuration: {v.home}")


@app.command()
def backup(
    paths: Annotated[list[str], typer.Argument(help="Files or directories to back up.")],
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag the snapshot.")] = None,
    degraded: Annotated[bool, typer.Option(
        "--degraded", help="Proceed when some providers are down, if at least k+1 take writes.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up PATHs; print the new snapshot id on the last line."""
    with _open(passphrase_file) as v, progress_for("backup", as_json) as prog:
        sid, _, st = v.backup(paths, prog, tag, degraded=degraded)
        missing = v.last_outcome.down
    if as_json:
        _emit({"snapshot": sid, "files": st.files, "dirs": st.dirs, "size": st.size,
               "new_bytes": st.new_bytes, "stored_bytes": st.stored_bytes,
               "unchanged_files": st.unchanged_files, "skipped": st.skipped, "providers_down": missing})
        return
    if missing:
        out.print(f"[yellow]Degraded backup:[/] providers {', '.join(missing)} were down; their shares are "
                  "missing (see 'freehold check').")
    out.print(f"{st.files} files, {st.dirs} directories, {_size(st.size)}; "
              f"{_size(st.new_bytes)} new, {_size(st.stored_bytes)} written across providers"
              + (f"; {st.unchanged_files} unchanged files not re-read" if st.unchanged_files else ""))
    if st.skipped:
        out.print(f"[yellow]{len(st.skipped)} path(s) could not be read and were skipped:[/]")
        for s in st.skipped:
            out.print(f"  {s}")
    out.print(sid)


@app.command()
def snapshots(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """List snapshots: id, time, paths, size."""
    with _open(passphrase_file) as v:
        snaps = v.snapshots()
    if as_json:
        _emit([{"id": sid, "time": s.time, "host": s.host, "paths": s.paths, "size": s.size,
                "files": s.files, "tags": s.tags} for sid, s in snaps])
        return
    from rich.table import Table

    table = Table("id", "time", "paths", "size", "files", box=None)
    for sid, s in snaps:
        when = datetime.fromisoformat(s.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(sid[:12], when, ", ".join(s.paths), _size(s.size), str(s.files))
    out.print(table)
    out.print(f"{len(snaps)} snapshot(s)")


def _mode_str(node_type: str, mode: int) -> str:
    prefix = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK}.get(node_type, stat.S_IFREG)
    return stat.filemode(prefix | mode)


@app.command()
def ls(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or prefix, or 'latest').")],
    path: Annotated[str, typer.Argument(help="Path inside the snapshot.")] = "",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the files of a snapshot."""
    with _open(passphrase_file) as v:
        entries = v.ls(snapshot, path)
    if as_json:
        _emit([{"path": p, "type": nd.type, "mode": nd.mode, "size": nd.size, "mtime_ns": nd.mtime,
                **({"target": os.fsdecode(nd.target)} if nd.target is not None else {})}
               for p, nd in entries])
        return
    for p, nd in entries:
        when = datetime.fromtimestamp(nd.mtime / 1e9).strftime("%Y-%m-%d %H:%M")
        extra = f" -> {os.fsdecode(nd.target)}" if nd.target is not None else ""
        out.print(f"{_mode_str(nd.type, nd.mode)} {nd.size:>12} {when}  {p}{extra}", markup=False)


@app.command()
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or prefix, or 'latest').")],
    target: Annotated[Path, typer.Option("--target", help="Directory to restore into.")],
    include: Annotated[str | None, typer.Option("--include", help="Restore only this path.")] = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a snapshot (or one path of it) into a directory."""
    with _open(passphrase_file) as v, progress_for("restore", as_json) as prog:
        st = v.restore(snapshot, target, include, prog)
        fallback = v.last_outcome.fallback_reads
    if as_json:
        _emit({"files": st.files, "dirs": st.dirs, "symlinks": st.symlinks, "size": st.size,
               "target": str(target), "degraded_reads": fallback})
        return
    out.print(f"Restored {st.files} files, {st.dirs} directories, {st.symlinks} symlinks "
              f"({_size(st.size)}) into {target}")
    if fallback:
        out.print(f"{fallback} read(s) were rebuilt from other shares: run 'freehold check --read-data'")


@app.command()
def check(
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every share.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the vault; exit 0 when healthy, 1 with a report when not."""
    with _open(passphrase_file) as v:
        report = v.check(read_data)
    problems = [{"kind": p.kind, "detail": p.detail, "provider": p.provider, "object": p.object,
                 "healed": p.healed} for p in report.problems]
    if as_json:
        _emit({"healthy": report.healthy, "packs": report.packs, "shares": report.shares,
               "snapshots": report.snapshots, "replicas": report.replicas, "healed": report.healed,
               "read_data": read_data, "problems": problems})
    else:
        what = "read and verified" if read_data else "present"
        open_ = [p for p in problems if not p["healed"]]
        if report.healthy:
            out.print(f"OK: {report.snapshots} snapshots, {report.packs} packs, all {report.shares} shares "
                      f"{what}; {report.replicas} replicated objects verified.")
        else:
            out.print(f"[red]{len(open_)} problem(s)[/] in {report.packs} packs / {report.shares} shares / "
                      f"{report.replicas} replicated objects:")
        for p in problems:
            where = f" on {p['provider']}" if p["provider"] else ""
            obj = f" {p['object']}" if p["object"] else ""
            healed = " (healed)" if p["healed"] else ""
            out.print(f"  {p['kind']}{where}:{obj} {p['detail']}{healed}", markup=False)
    if not report.healthy:
        raise typer.Exit(1)


@app.command()
def stats(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Logical bytes, stored bytes per provider, dedup and overhead ratios."""
    with _open(passphrase_file) as v:
        s = v.stats()
    if as_json:
        _emit(s)
        return
    out.print(f"snapshots: {s['snapshots']}   scheme: {s['k']}-of-{s['n']}")
    out.print(f"logical bytes (all snapshots): {_size(s['logical_bytes'])}")
    out.print(f"unique bytes (after dedup):    {_size(s['unique_bytes'])}")
    out.print(f"stored bytes (all providers):  {_size(s['stored_bytes'])}")
    out.print(f"dedup ratio: {s['dedup_ratio']:.2f}x   storage overhead: {s['overhead_ratio']:.2f}x "
              f"(erasure coding alone: {s['n'] / s['k']:.2f}x)")
    from rich.table import Table

    table = Table("provider", "url", "objects", "bytes", box=None)
    for pid, p in s["providers"].items():
        table.add_row(pid, p["url"], str(p["objects"]), _size(p["bytes"]) + (" (unreachable)"
                                                                             if "error" in p else ""))
    out.print(table)


provider_app = typer.Typer(help="Add and list the vault's providers.", no_args_is_help=True)
policy_app = typer.Typer(help="Where shares may live: jurisdictions and operators.", no_args_is_help=True)
app.add_typer(provider_app, name="provider")
app.add_typer(policy_app, name="policy")


@provider_app.command("add")
def provider_add(
    name: Annotated[str, typer.Argument(help="A short name for the provider.")],
    url: Annotated[str, typer.Argument(help="file:///abs/path or s3://bucket/prefix?endpoint=...")],
    jurisdiction: Annotated[str, typer.Option("--jurisdiction", help="ISO 3166 code, e.g. DE.")] = "",
    operator: Annotated[str, typer.Option("--operator", help="Who runs it, e.g. hetzner.")] = "",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a provider; it receives copies of keys, index and snapshots at once."""
    with _open(passphrase_file) as v:
        entry = v.add_provider(ProviderSpec(url, jurisdiction, operator, name))
    _report(as_json, formats.encode_json(entry),
            f"Added provider {entry.id} ({entry.url}); new packs may now be placed on it.")


@provider_app.command("list")
def provider_list(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Providers with health, jurisdiction, operator and bytes held."""
    with _open(passphrase_file) as v:
        rows = v.provider_status()
    if as_json:
        _emit([dataclasses.asdict(r) for r in rows])
        return
    from rich.table import Table

    table = Table("name", "health", "jurisdiction", "operator", "shares", "bytes", "url", box=None)
    for r in rows:
        health = "[green]ok[/]" if r.healthy else f"[red]down[/] ({r.error})"
        table.add_row(r.id, health, r.jurisdiction or "-", r.operator or "-", str(r.shares), _size(r.bytes), r.url)
    out.print(table)
    if not all(r.healthy for r in rows):
        raise typer.Exit(1)


@policy_app.command("set")
def policy_set(
    allow: AllowOpt = None,
    min_jurisdictions: MinJurOpt = 1,
    max_per_operator: MaxOpOpt = 0,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the placement policy; refused, with the reason, if the providers cannot satisfy it."""
    policy = _policy(allow, min_jurisdictions, max_per_operator)
    with _open(passphrase_file) as v:
        misplaced = v.set_policy(policy)
    if as_json:
        _emit({"policy": formats.encode_json(policy), "packs_placed_otherwise": misplaced})
        return
    out.print(f"Policy set: {placement.describe(policy)}.")
    if misplaced:
        out.print(f"{misplaced} existing pack(s) were placed under the old policy and stay where they are.")


@policy_app.command("show")
def policy_show(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Show the placement policy."""
    with _open(passphrase_file) as v:
        policy = v.info().policy
    _report(as_json, formats.encode_json(policy), placement.describe(policy))


keys_app = typer.Typer(help="Passphrases that open the vault (key objects).", no_args_is_help=True)
passphrase_app = typer.Typer(help="Change the passphrase.", no_args_is_help=True)
guardians_app = typer.Typer(help="Guardians: SLIP-39 shares of the vault key for people you trust.",
                            no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(passphrase_app, name="passphrase")
app.add_typer(guardians_app, name="guardians")


def _new_passphrase(new_file: Path | None, env_name: str = "FREEHOLD_NEW_PASSPHRASE") -> str:
    """The new passphrase: --new-passphrase-file, $FREEHOLD_NEW_PASSPHRASE, or asked twice."""
    if new_file is not None:
        return _passphrase(new_file)
    env = os.environ.get(env_name)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise UsageError(f"no new passphrase: set {env_name} or use --new-passphrase-file")
    first = getpass.getpass("New passphrase: ")
    if getpass.getpass("Repeat new passphrase: ") != first:
        raise UsageError("the passphrases do not match")
    return first


def _kdf_from_env() -> keys.KdfParams | None:
    weak = os.environ.get("FREEHOLD_KDF_MEMORY_KIB")  # test suites only: see keys.KdfParams.weak
    return keys.KdfParams.weak(int(weak)) if weak and weak.isdigit() else None


NewPassOpt = Annotated[Path | None, typer.Option("--new-passphrase-file", help="Read the new passphrase from FILE.",
                                                 dir_okay=False)]


@keys_app.command("list")
def keys_list(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Key objects (one per passphrase), with their Argon2id parameters."""
    with _open(passphrase_file) as v:
        rows = v.key_objects()
    data = [{"id": r.id, "created": r.created, "kdf": "argon2id", "t": r.t, "memory_kib": r.m, "p": r.p,
             "current": r.current} for r in rows]
    if as_json:
        _emit(data)
        return
    from rich.table import Table

    table = Table("id", "created", "kdf", "", box=None)
    for r in data:
        table.add_row(str(r["id"])[:12], str(r["created"]), f"argon2id t={r['t']} m={r['memory_kib']} KiB p={r['p']}",
                      "(this passphrase)" if r["current"] else "")
    out.print(table)


@keys_app.command("add")
def keys_add(new_passphrase_file: NewPassOpt = None, passphrase_file: PassFileOpt = None,
             as_json: JsonOpt = False) -> None:
    """Add another passphrase that opens the vault."""
    with _open(passphrase_file) as v:
        change = v.add_key(_new_passphrase(new_passphrase_file), _kdf_from_env())
    _report(as_json, {"id": change.id, "missed": change.outcome.missed},
            f"Added key {change.id[:12]}; the new passphrase opens this vault too." + _missed(change.outcome.missed))


@keys_app.command("remove")
def keys_remove(key_id: Annotated[str, typer.Argument(help="Key id (or a unique prefix).")],
                passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """Revoke a passphrase: its key object is deleted from every provider."""
    with _open(passphrase_file) as v:
        change = v.remove_key(key_id)
    pending = (f" Providers {', '.join(change.pending)} were not reachable: their copy will be deleted when "
               "they are back, and it is refused either way." if change.pending else "")
    _report(as_json, {"removed": change.id, "pending": change.pending, "missed": change.outcome.missed},
            f"Revoked key {change.id[:12]}: it no longer opens the vault." + pending + _missed(change.outcome.missed))


@passphrase_app.command("change")
def passphrase_change(new_passphrase_file: NewPassOpt = None, passphrase_file: PassFileOpt = None,
                      as_json: JsonOpt = False) -> None:
    """Change the passphrase: only key objects are rewritten, never data."""
    with _open(passphrase_file) as v:
        change = v.change_passphrase(_new_passphrase(new_passphrase_file), _kdf_from_env())
    _report(as_json, {"id": change.id, "pending": change.pending, "missed": change.outcome.missed},
            "Passphrase changed; the old one no longer opens the vault." + _missed(change.outcome.missed))


@guardians_app.command("create")
def guardians_create(
    threshold: Annotated[int, typer.Option("--threshold", help="Shares needed to recover.")] = 3,
    shares: Annotated[int, typer.Option("--shares", help="Shares to make, one per guardian.")] = 5,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Write printable shares (SVG + text) here.")] = None,
    guardian_passphrase_file: Annotated[Path | None, typer.Option(
        "--guardian-passphrase-file", help="Protect the shares with this extra passphrase.")] = None,
    label: Annotated[str, typer.Option("--label", help="Vault name printed on each share.")] = "",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Split the vault key into SLIP-39 shares for guardians; any THRESHOLD of them recover it."""
    from . import guardian_pages

    gpass = _passphrase(guardian_passphrase_file) if guardian_passphrase_file else ""
    with _open(passphrase_file) as v:
        mnemonics = v.guardian_shares(threshold, shares, gpass)
        vid = v.info().vault_id
    files: list[Path] = []
    if out_dir is not None:
        files = guardian_pages.write_share_files(mnemonics, out_dir, label or f"Freehold vault {vid[:12]}", threshold)
    if as_json:
        _emit({"threshold": threshold, "shares": mnemonics if out_dir is None else len(mnemonics),
               "files": [str(f) for f in files]})
        return
    if files:
        out.print(f"Wrote {len(mnemonics)} guardian shares to {out_dir} (one SVG page and one text file each). "
                  f"Any {threshold} of them recover the vault; give each to a different person.")
    else:
        for i, m in enumerate(mnemonics, 1):
            out.print(f"Share {i} of {shares} (any {threshold} recover the vault):\n  {m}\n", markup=False)


@app.command()
def recover(
    from_: Annotated[list[str], typer.Option("--from", help="URL of a surviving provider (repeatable).")],
    share_file: Annotated[list[Path] | None, typer.Option(
        "--share-file", help="A guardian share (text file with its words); repeat for each.")] = None,
    guardian_passphrase_file: Annotated[Path | None, typer.Option(
        "--guardian-passphrase-file", help="The passphrase protecting the guardian shares, if any.")] = None,
    new_passphrase_file: NewPassOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild this machine's vault configuration from any one provider and a passphrase or guardian shares.

    With guardian shares, a new passphrase for everyday use is set as well ($FREEHOLD_NEW_PASSPHRASE,
    --new-passphrase-file, or asked)."""
    from . import guardians

    new_pass = None
    if share_file:
        new_pass = _new_passphrase(new_passphrase_file)
        words = []
        for f in share_file:
            try:
                words.append(guardians.mnemonic_from_text(f.read_text()))
            except OSError as exc:
                raise UsageError(f"cannot read share file {f}: {exc.strerror}") from None
        gpass = _passphrase(guardian_passphrase_file) if guardian_passphrase_file else ""
        v = Vault.recover(from_, shares=words, share_passphrase=gpass, new_passphrase=new_pass,
                          kdf=_kdf_from_env())
    else:
        v = Vault.recover(from_, passphrase=_passphrase(passphrase_file))
    with v:
        snaps = v.snapshots()
        info = v.info()
    if as_json:
        _emit({"vault_id": info.vault_id, "providers": [p.id for p in info.providers], "snapshots": len(snaps),
               "home": str(v.home)})
        return
    out.print(f"Recovered vault {info.vault_id[:12]} ({info.k}-of-{info.n}, {len(info.providers)} providers, "
              f"{len(snaps)} snapshots) into {v.home}.")
    if share_file:
        out.print("Unlocked by guardian shares; the new passphrase now opens the vault.")


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    """The ``freehold`` console command. Ends the process (``_exit``): call ``app`` to embed."""
    tune_malloc()
    tune_gc()
    setup_logging()
    hard_exit(_run())


def _run() -> int:
    try:
        rc = app(standalone_mode=False)
    except FreeholdError as exc:
        err.print(f"freehold: error: {exc.message}", markup=False, highlight=False)
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    except typer.Exit as exc:
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    except OSError as exc:  # the local machine refused (disk full, permissions): not a bug
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"freehold: error: {exc.strerror or exc}{where}", markup=False, highlight=False)
        return 1
    except (typer.Abort, KeyboardInterrupt):
        err.print("freehold: interrupted; snapshots already saved are intact")
        return 130
    except Exception as exc:  # a click usage error, or a bug
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
            exc.show()
            return exc.exit_code if isinstance(exc.exit_code, int) else 1
        if os.environ.get("FREEHOLD_DEBUG"):
            raise
        err.print(f"freehold: internal error: {type(exc).__name__}: {exc} "
                  "(set FREEHOLD_DEBUG=1 for details)", markup=False)
        return 70
    return rc if isinstance(rc, int) else 0


if __name__ == "__main__":
    main()
