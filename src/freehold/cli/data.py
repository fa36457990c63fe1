"""The data commands: init, backup, snapshots, ls, restore, check, stats."""

from __future__ import annotations

import os
import stat
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ..console import progress_for
from ..errors import UsageError
from ..vault import Vault
from .common import (
    AllowOpt,
    JsonOpt,
    MaxOpOpt,
    MinJurOpt,
    PassFileOpt,
    app,
    emit,
    kdf_from_env,
    make_policy,
    open_vault,
    out,
    parse_provider,
    read_passphrase,
    size,
)


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
    specs = [parse_provider(p) for p in [*(providers or []), *(provider or [])]]
    if not specs:
        raise UsageError("name the providers: freehold init --k 3 --n 5 file:///abs/p1 ... (or --provider)")
    policy = make_policy(allow, min_jurisdictions, max_per_operator)
    passphrase = read_passphrase(passphrase_file, confirm=True)
    with Vault.init(specs, k, n, passphrase, kdf=kdf_from_env(), policy=policy) as v:
        info = v.info()
        vid = info.vault_id
        if as_json:
            emit({"vault_id": vid, "k": k, "n": n, "home": str(v.home),
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
    with open_vault(passphrase_file) as v, progress_for("backup", as_json) as prog:
        sid, _, st = v.backup(paths, prog, tag, degraded=degraded)
        missing = v.last_outcome.down
    if as_json:
        emit({"snapshot": sid, "files": st.files, "dirs": st.dirs, "size": st.size,
               "new_bytes": st.new_bytes, "stored_bytes": st.stored_bytes,
               "unchanged_files": st.unchanged_files, "skipped": st.skipped, "providers_down": missing})
        return
    if missing:
        out.print(f"[yellow]Degraded backup:[/] providers {', '.join(missing)} were down; their shares are "
                  "missing (see 'freehold check').")
    out.print(f"{st.files} files, {st.dirs} directories, {size(st.size)}; "
              f"{size(st.new_bytes)} new, {size(st.stored_bytes)} written across providers"
              + (f"; {st.unchanged_files} unchanged files not re-read" if st.unchanged_files else ""))
    if st.skipped:
        out.print(f"[yellow]{len(st.skipped)} path(s) could not be read and were skipped:[/]")
        for s in st.skipped:
            out.print(f"  {s}")
    out.print(sid)


@app.command()
def snapshots(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """List snapshots: id, time, paths, size."""
    with open_vault(passphrase_file) as v:
        snaps = v.snapshots()
    if as_json:
        emit([{"id": sid, "time": s.time, "host": s.host, "paths": s.paths, "size": s.size,
                "files": s.files, "tags": s.tags} for sid, s in snaps])
        return
    from rich.table import Table

    table = Table("id", "time", "paths", "size", "files", box=None)
    for sid, s in snaps:
        when = datetime.fromisoformat(s.time).astimezone().strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(sid[:12], when, ", ".join(s.paths), size(s.size), str(s.files))
    out.print(table)
    out.print(f"{len(snaps)} snapshot(s)")


def mode_str(node_type: str, mode: int) -> str:
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
    with open_vault(passphrase_file) as v:
        entries = v.ls(snapshot, path)
    if as_json:
        emit([{"path": p, "type": nd.type, "mode": nd.mode, "size": nd.size, "mtime_ns": nd.mtime,
                **({"target": os.fsdecode(nd.target)} if nd.target is not None else {})}
               for p, nd in entries])
        return
    for p, nd in entries:
        when = datetime.fromtimestamp(nd.mtime / 1e9).strftime("%Y-%m-%d %H:%M")
        extra = f" -> {os.fsdecode(nd.target)}" if nd.target is not None else ""
        out.print(f"{mode_str(nd.type, nd.mode)} {nd.size:>12} {when}  {p}{extra}", markup=False)


@app.command()
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or prefix, or 'latest').")],
    target: Annotated[Path, typer.Option("--target", help="Directory to restore into.")],
    include: Annotated[str | None, typer.Option("--include", help="Restore only this path.")] = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a snapshot (or one path of it) into a directory."""
    with open_vault(passphrase_file) as v, progress_for("restore", as_json) as prog:
        st = v.restore(snapshot, target, include, prog)
        fallback = v.last_outcome.fallback_reads
    if as_json:
        emit({"files": st.files, "dirs": st.dirs, "symlinks": st.symlinks, "size": st.size,
               "target": str(target), "degraded_reads": fallback})
        return
    out.print(f"Restored {st.files} files, {st.dirs} directories, {st.symlinks} symlinks "
              f"({size(st.size)}) into {target}")
    if fallback:
        out.print(f"{fallback} read(s) were rebuilt from other shares: run 'freehold check --read-data'")


@app.command()
def check(
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every share.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the vault; exit 0 when healthy, 1 with a report when not."""
    with open_vault(passphrase_file) as v:
        report = v.check(read_data)
    problems = [{"kind": p.kind, "detail": p.detail, "provider": p.provider, "object": p.object,
                 "healed": p.healed} for p in report.problems]
    if as_json:
        emit({"healthy": report.healthy, "packs": report.packs, "shares": report.shares,
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
    with open_vault(passphrase_file) as v:
        s = v.stats()
    if as_json:
        emit(s)
        return
    out.print(f"snapshots: {s['snapshots']}   scheme: {s['k']}-of-{s['n']}")
    out.print(f"logical bytes (all snapshots): {size(s['logical_bytes'])}")
    out.print(f"unique bytes (after dedup):    {size(s['unique_bytes'])}")
    out.print(f"stored bytes (all providers):  {size(s['stored_bytes'])}")
    out.print(f"dedup ratio: {s['dedup_ratio']:.2f}x   storage overhead: {s['overhead_ratio']:.2f}x "
              f"(erasure coding alone: {s['n'] / s['k']:.2f}x)")
    from rich.table import Table

    table = Table("provider", "url", "objects", "bytes", box=None)
    for pid, p in s["providers"].items():
        table.add_row(pid, p["url"], str(p["objects"]), size(p["bytes"]) + (" (unreachable)"
                                                                             if "error" in p else ""))
    out.print(table)
