"""The data commands: init, backup, snapshots, ls, restore, check, stats."""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from .. import formats
from ..api import OVERWRITE_MODES, BackupOptions, RestoreOptions
from ..console import progress_for
from ..errors import Incomplete, UsageError
from ..selection import parse_size
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
    local_time,
    make_policy,
    open_vault,
    out,
    parse_provider,
    read_passphrase,
    size,
    table,
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
    structure: Annotated[int, typer.Option("--format", help="Vault format: 1, or 2 (write-only keys for "
                                                            "machines; references as capabilities).")] = 1,
    write_key: Annotated[Path | None, typer.Option(
        "--write-key", help="Instead: set this machine up to back up with a write-only key file the owner "
                            "made ('keys add --write-only'); the passphrase is that file's.", dir_okay=False)] = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a vault over N providers; any K of them can restore everything."""
    if write_key is not None:
        _init_writer(write_key, passphrase_file, as_json)
        return
    specs = [parse_provider(p) for p in [*(providers or []), *(provider or [])]]
    if not specs:
        raise UsageError("name the providers: freehold init --k 3 --n 5 file:///abs/p1 ... (or --provider)")
    policy = make_policy(allow, min_jurisdictions, max_per_operator)
    passphrase = read_passphrase(passphrase_file, confirm=True)
    with Vault.init(specs, k, n, passphrase, kdf=kdf_from_env(), policy=policy, structure=structure) as v:
        info = v.info()
        vid = info.vault_id
        if as_json:
            emit({"vault_id": vid, "k": k, "n": n, "home": str(v.home),
                   "providers": [p.url for p in info.providers]})
            return
        out.print(f"Created vault {vid[:12]}: {k}-of-{n} over {len(specs)} providers "
                  f"(survives the loss of any {n - k}).")
        out.print(f"Local configuration: {v.home}")


def _init_writer(key_file: Path, passphrase_file: Path | None, as_json: bool) -> None:
    try:
        blob = key_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {key_file}: {exc.strerror}") from None
    with Vault.setup_writer(blob, read_passphrase(passphrase_file)) as w:
        label, home = w.label, w.home
    if as_json:
        emit({"writer": label, "home": str(home)})
        return
    out.print(f"This machine now backs up with the write-only key {label!r} (local configuration: {home}). "
              "It can write backups; it cannot list, read or restore them.", markup=False)


ListOpt = list[str] | None


@app.command()
def backup(
    paths: Annotated[list[str] | None, typer.Argument(help="Files or directories to back up.")] = None,
    tag: Annotated[ListOpt, typer.Option("--tag", help="Tag the snapshot.")] = None,
    degraded: Annotated[bool, typer.Option(
        "--degraded", help="Proceed when some providers are down, if at least k+1 take writes.")] = False,
    exclude: Annotated[ListOpt, typer.Option("--exclude", "-e", help="Leave out paths matching PATTERN.")] = None,
    iexclude: Annotated[ListOpt, typer.Option("--iexclude", help="Like --exclude, ignoring case.")] = None,
    exclude_file: Annotated[ListOpt, typer.Option("--exclude-file", help="Read exclude patterns from FILE.")] = None,
    iexclude_file: Annotated[ListOpt, typer.Option(
        "--iexclude-file", help="Read case-insensitive exclude patterns from FILE.")] = None,
    exclude_caches: Annotated[bool, typer.Option(
        "--exclude-caches", help="Leave out the contents of directories holding a valid CACHEDIR.TAG.")] = False,
    exclude_if_present: Annotated[ListOpt, typer.Option(
        "--exclude-if-present", help="Leave out the contents of directories holding NAME[:HEADER].")] = None,
    exclude_larger_than: Annotated[str | None, typer.Option(
        "--exclude-larger-than", help="Leave out files larger than SIZE (e.g. 2048, 10M, 1.5G).")] = None,
    one_file_system: Annotated[bool, typer.Option(
        "--one-file-system", "-x", help="Stay on the file systems of the paths given.")] = False,
    files_from: Annotated[ListOpt, typer.Option(
        "--files-from", help="Read paths (or glob patterns) to back up from FILE, one a line.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Report what would be stored; write nothing.")] = False,
    stdin: Annotated[bool, typer.Option("--stdin", help="Back up standard input as one file.")] = False,
    stdin_filename: Annotated[str, typer.Option(
        "--stdin-filename", help="The file name for --stdin.")] = "stdin",
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Back up PATHs; print the new snapshot id on the last line (exit 3: saved, but some paths could
    not be read)."""
    options = BackupOptions(
        excludes=tuple(exclude or ()), iexcludes=tuple(iexclude or ()), exclude_files=tuple(exclude_file or ()),
        iexclude_files=tuple(iexclude_file or ()), exclude_caches=exclude_caches,
        exclude_if_present=tuple(exclude_if_present or ()),
        exclude_larger_than=parse_size(exclude_larger_than) if exclude_larger_than is not None else None,
        one_file_system=one_file_system, files_from=tuple(files_from or ()), dry_run=dry_run,
        stdin=sys.stdin.buffer if stdin else None, stdin_filename=stdin_filename)
    with open_vault(passphrase_file) as v, progress_for("backup", as_json) as prog:
        sid, _, st = v.backup(paths or [], prog, tag, degraded=degraded, options=options)
        missing = v.last_outcome.down
    incomplete = Incomplete(f"snapshot {sid[:12]} was saved, but {len(st.skipped)} path(s) could not be read "
                            "and are missing from it") if st.skipped and not dry_run else None
    if as_json:
        emit({"snapshot": sid or None, "files": st.files, "dirs": st.dirs, "size": st.size,
              "new_bytes": st.new_bytes, "stored_bytes": st.stored_bytes,
              "unchanged_files": st.unchanged_files, "skipped": st.skipped, "torn": st.torn,
              "excluded": st.excluded, "providers_down": missing, "dry_run": dry_run,
              "incomplete": bool(st.skipped)})
    else:
        _backup_report(sid, st, missing, dry_run)
    if incomplete is not None:
        raise incomplete


def _backup_report(sid: str, st: Any, missing: list[str], dry_run: bool) -> None:
    if dry_run:
        out.print(f"would store {st.files} files, {st.dirs} dirs, {size(st.size)} ({size(st.new_bytes)} new)")
    else:
        if missing:
            out.print(f"[yellow]Degraded backup:[/] providers {', '.join(missing)} were down; their shares are "
                      "missing (see 'freehold check').")
        out.print(f"{st.files} files, {st.dirs} directories, {size(st.size)}; "
                  f"{size(st.new_bytes)} new, {size(st.stored_bytes)} written across providers"
                  + (f"; {st.unchanged_files} unchanged files not re-read" if st.unchanged_files else ""))
    if st.skipped:
        out.print(f"[yellow]{len(st.skipped)} path(s) could not be read and were skipped:[/]")
        for s in st.skipped:
            out.print(f"  {s}", markup=False)
    if not dry_run:
        out.print(sid)


@app.command()
def snapshots(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """List snapshots: id, time, paths, size."""
    with open_vault(passphrase_file) as v:
        snaps = v.snapshots()
    if as_json:
        emit([{"id": sid, "time": s.time, "host": s.host, "paths": s.paths, "size": s.size,
                "files": s.files, "tags": s.tags, "incomplete": bool(s.skipped), "skipped": s.skipped,
                "torn": s.torn, "excluded": s.excluded, "writer": s.writer or None} for sid, s in snaps])
        return
    table(["id", "time", "paths", "size", "files", "notes"],
          [[sid[:12], local_time(s.time), ", ".join(s.paths), size(s.size), str(s.files), snapshot_notes(s)]
           for sid, s in snaps])
    out.print(f"{len(snaps)} snapshot(s)")
    if any(s.skipped for _, s in snaps):
        out.print("incomplete: some paths could not be read; 'freehold snapshots --json' lists them")


def snapshot_notes(s: formats.Snapshot) -> str:
    notes = []
    if s.skipped:
        notes.append(f"incomplete: {len(s.skipped)} missing")
    if s.writer:
        notes.append(f"by write-only key {s.writer}")
    if s.torn:
        notes.append(f"{len(s.torn)} changed while read")
    return "; ".join(notes)


def mode_str(node_type: str, mode: int) -> str:
    prefix = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR,
              "blockdev": stat.S_IFBLK}.get(node_type, stat.S_IFREG)
    return stat.filemode(prefix | mode)


@app.command()
def ls(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or prefix, or 'latest').")],
    path: Annotated[str, typer.Argument(
        help="Path inside the snapshot: as backed up (/home/me/Documents/taxes) or below its name "
             "(Documents/taxes).")] = "",
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
        extra = f" -> {os.fsdecode(nd.target)}" if nd.target is not None else ""
        out.out(f"{mode_str(nd.type, nd.mode)} {nd.size:>12} {local_time(nd.mtime)}  {p}{extra}", highlight=False)


@app.command()
def restore(
    snapshot: Annotated[str, typer.Argument(help="Snapshot id (or prefix, or 'latest').")],
    target: Annotated[Path, typer.Option("--target", help="Directory to restore into.")],
    include: Annotated[list[str] | None, typer.Option(
        "--include", help="Restore only this path: as 'ls' prints it, the original absolute path, or a "
                          "glob (repeatable).")] = None,
    exclude: Annotated[list[str] | None, typer.Option(
        "--exclude", help="Leave this path out (as --include; repeatable; wins over --include).")] = None,
    overwrite: Annotated[str, typer.Option(
        "--overwrite", help="Existing files: always, if-changed (type, size or mtime differ), if-newer "
                            "(the snapshot's mtime is newer), never.")] = "always",
    delete: Annotated[bool, typer.Option(
        "--delete", help="Remove what restored directories hold that the snapshot does not.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore a snapshot (or paths of it) into a directory; exit 3 when some entries could not be."""
    if str(target) == "-":
        raise UsageError("--target -: a restore writes into a directory, not to standard output")
    if overwrite not in OVERWRITE_MODES:
        raise UsageError(f"--overwrite {overwrite}: use one of {', '.join(OVERWRITE_MODES)}")
    options = RestoreOptions(includes=tuple(include or ()), excludes=tuple(exclude or ()),
                             overwrite=overwrite, delete=delete)
    with open_vault(passphrase_file) as v, progress_for("restore", as_json) as prog:
        st = v.restore(snapshot, target, progress=prog, options=options)
        fallback = v.last_outcome.fallback_reads
    if as_json:
        emit({"files": st.files, "dirs": st.dirs, "symlinks": st.symlinks, "size": st.size,
              "hardlinks": st.hardlinks, "specials": st.specials, "kept": st.kept, "deleted": st.deleted,
              "failed": [{"path": p, "reason": r} for p, r in st.failed],
              "target": str(target), "degraded_reads": fallback})
    else:
        extra = [f"{n} {what}" for n, what in [(st.hardlinks, "hardlinks"), (st.specials, "special files"),
                                               (st.kept, "kept as they were"), (st.deleted, "deleted")] if n]
        out.print(f"Restored {st.files} files, {st.dirs} directories, {st.symlinks} symlinks "
                  f"({size(st.size)}) into {target}" + (f"; {', '.join(extra)}" if extra else ""), markup=False)
        if fallback:
            out.print(f"{fallback} read(s) were rebuilt from other shares: run 'freehold check --read-data'")
        for p, r in st.failed:
            out.print(f"{p}: {r}", markup=False)
    if st.failed:
        raise Incomplete(f"{len(st.failed)} entries could not be restored"
                         + ("" if as_json else " (listed above)"))


SubsetOpt = Annotated[str | None, typer.Option(
    "--read-data-subset", help="Read and verify the shares of some packs: N% (random) or n/t (1/12 .. 12/12).")]


@app.command()
def check(
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every share.")] = False,
    read_data_subset: SubsetOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify the vault; exit 0 when healthy, 1 when repairable ('freehold repair'), 13 when data is lost."""
    with open_vault(passphrase_file) as v:
        report = v.check(read_data, subset=read_data_subset)
    problems = [{"kind": p.kind, "detail": p.detail, "provider": p.provider, "object": p.object,
                 "healed": p.healed} for p in report.problems]
    if as_json:
        emit({"healthy": report.healthy, "lost": report.lost, "exit_code": report.exit_code,
              "packs": report.packs, "shares": report.shares,
              "snapshots": report.snapshots, "replicas": report.replicas, "healed": report.healed,
              "read_data": read_data, "read_data_subset": read_data_subset, "read_packs": report.read_packs,
              "problems": problems, "unhealthy_packs": [dataclasses.asdict(h) for h in report.pack_health],
              "orphans": dataclasses.asdict(report.orphans)})
    else:
        what = ("read and verified" if read_data and not read_data_subset else
                f"present ({report.read_packs} packs read and verified)" if read_data_subset else "present")
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
        _pack_lines(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _pack_lines(report: Any) -> None:
    by_state: dict[str, list[Any]] = {}
    for h in report.pack_health:
        by_state.setdefault(h.state, []).append(h)
    for state, packs in sorted(by_state.items()):
        out.print(f"{len(packs)} pack(s) {state}:", markup=False)
        for h in packs[:20]:
            bad = ", ".join(f"share {s.index} {s.state}{' on ' + s.provider if s.provider else ''}"
                            for s in h.shares if s.state != "good" or s.draining)
            extra = " (placed against the policy)" if h.misplaced else ""
            out.print(f"  pack {h.id[:12]}: {h.good} of {h.n} shares good (k={h.k}){extra}"
                      + (f"; {bad}" if bad else ""), markup=False)
        if len(packs) > 20:
            out.print(f"  ... and {len(packs) - 20} more (see --json)", markup=False)
    o = report.orphans
    if o.packs or o.retired_packs or o.stray_shares or o.unknown:
        out.print(f"Not in any index (not a problem): {o.packs} pack(s) of interrupted backups ({size(o.bytes)}, "
                  f"{o.indexable} complete enough for 'freehold repair' to index), {o.retired_packs} retired "
                  f"pack(s) awaiting prune ({size(o.retired_bytes)}), {o.stray_shares} stray share copies, "
                  f"{len(o.unknown)} unknown object(s).", markup=False)
    if report.exit_code == 13:
        out.print("[red]Data is lost[/]: some packs have fewer than k good shares, or a snapshot needs a blob "
                  "that is in no index.")
    elif report.exit_code == 1 and report.pack_health:
        out.print("Run 'freehold repair' to rebuild and move the shares named above.")


@app.command()
def repair(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be done; write nothing.")] = False,
    read_data: Annotated[bool, typer.Option("--read-data", help="Read and verify every share first "
                                                              "(finds silently damaged shares).")] = False,
    read_data_subset: SubsetOpt = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rebuild missing and damaged shares, move shares off draining providers, rebuild the index
    from pack trailers; exit 0 when everything is healthy, 1 when some is left, 13 when data is lost."""
    with open_vault(passphrase_file) as v, progress_for("repair", as_json) as prog:
        rep = v.repair(dry_run=dry_run, read_data=read_data, subset=read_data_subset, progress=prog)
    repair_summary(rep, as_json)
    if rep.exit_code:
        raise typer.Exit(rep.exit_code)


def repair_json(rep: Any) -> dict[str, Any]:
    data = dataclasses.asdict(rep)
    data["exit_code"] = rep.exit_code
    return data


def repair_summary(rep: Any, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    """A repair's result (also that of provider drain and replace)."""
    if as_json:
        emit({**repair_json(rep), **(extra or {})})
        return
    for line in rep.actions[:50]:
        out.print(f"  {line}", markup=False)
    if len(rep.actions) > 50:
        out.print(f"  ... and {len(rep.actions) - 50} more (see --json)", markup=False)
    verb = "would repair" if rep.dry_run else "repaired"
    out.print(f"{rep.packs} packs surveyed; {verb} {rep.packs_repaired}; shares rebuilt {rep.shares_rebuilt}, "
              f"moved {rep.shares_moved}, deleted {rep.shares_deleted}; {size(rep.bytes_read)} read, "
              f"{size(rep.bytes_written)} written; {rep.replicas_healed} replica copies healed; "
              f"{rep.index_objects_written} index objects written; {rep.packs_indexed} packs indexed from "
              "their trailers.", markup=False)
    if rep.lost:
        out.print(f"[red]{len(rep.lost)} pack(s) are lost[/] (fewer than k readable shares): "
                  + ", ".join(x[:12] for x in rep.lost[:10]))
    if rep.unrepaired:
        out.print(f"{len(rep.unrepaired)} pack(s) could not be fully repaired now (a provider down?); run "
                  "'freehold repair' again later.", markup=False)


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
    out.print(f"unique bytes (after dedup):    {size(s['unique_bytes'])} of file data, {size(s['tree_bytes'])} "
              "of directory listings")
    out.print(f"stored bytes (all providers):  {size(s['stored_bytes'])}")
    out.print(f"dedup ratio: {s['dedup_ratio']:.2f}x   storage overhead: {s['overhead_ratio']:.2f}x "
              f"(erasure coding alone: {s['n'] / s['k']:.2f}x)")
    priced = s["priced"]
    headers = ["provider", "url", "objects", "bytes", "overhead"] + (["price/TB-month", "cost/month"] if priced else [])
    rows = []
    for pid, p in s["providers"].items():
        row = [pid, p["url"], str(p["objects"]), size(p["bytes"]) + (" (unreachable)" if "error" in p else ""),
               f"{p['overhead_ratio']:.2f}x"]
        if priced:
            row += [f"{p['price_per_tb_month']:.2f}", f"{p['cost_per_month']:.4f}"]
        rows.append(row)
    table(headers, rows)
    if priced:
        out.print(f"cost per month (all providers): {s['cost_per_month']:.4f}")
