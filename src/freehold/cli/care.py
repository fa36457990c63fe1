"""The upkeep commands: forget, prune, locks, unlock, retention."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from .. import formats
from ..api import PruneOptions, PruneReport
from ..console import err
from ..errors import UsageError
from ..retention import KeepRules
from .admin import provider_app
from .common import JsonOpt, PassFileOpt, app, emit, local_time, open_vault, out, size, table

KeepOpt = Annotated[int, typer.Option(min=-1)]
ListOpt = list[str] | None


def parse_fraction(text: str) -> float:
    """``5%``, ``0.05`` or ``5`` (percent) as a fraction in [0, 1]."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise UsageError(f"--max-unused: expected a percentage such as 5% or 10%, got {text!r}") from None
    if not t.endswith("%") and value > 1:
        value /= 100
    if not 0 <= value <= 1:
        raise UsageError(f"--max-unused must be between 0% and 100%, got {text!r}")
    return value


class _Stages:
    """One line per stage of a prune on stderr (a prune of a large vault takes minutes)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.stage = ""
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (stage == self.stage and now - self.last < 2 and done + 1 < total):
            return
        self.stage, self.last = stage, now
        err.print(f"{stage}: {done + 1}/{total}", markup=False, highlight=False)


def _prune_text(r: PruneReport) -> str:
    verb = "would" if r.dry_run else "did"
    lines = [
        f"{r.snapshots} snapshots need {size(r.used_bytes)} in {r.packs} packs; {size(r.unused_bytes)} of the packs "
        "is used by nothing.",
        f"Packs: {r.kept} kept, {r.repacked} rewritten (their used part copied to {r.new_packs} new), "
        f"{r.dropped} dropped ({verb}).",
    ]
    if not r.dry_run:
        lines.append(f"Deleted {r.deleted_objects} share objects of {r.deleted_packs} packs: "
                     f"{size(r.freed_bytes)} freed ({size(r.written_bytes)} written) in {r.seconds:.1f} s.")
    if r.deferred_packs:
        lines.append(f"{r.deferred_packs} retired packs ({size(r.deferred_bytes)}) are kept for now: a backup was "
                     "running, or they were found in no index; a prune after the safety window deletes them.")
    if r.orphans:
        lines.append(f"{r.orphans} packs in no index (left by interrupted backups) were found; a prune after the "
                     "safety window deletes them.")
    return "\n".join(lines)


@app.command()
def forget(
    snapshot_ids: Annotated[ListOpt, typer.Argument(help="Snapshots to forget (unique id prefixes).")] = None,
    keep_last: KeepOpt = 0, keep_hourly: KeepOpt = 0, keep_daily: KeepOpt = 0, keep_weekly: KeepOpt = 0,
    keep_monthly: KeepOpt = 0, keep_yearly: KeepOpt = 0,
    keep_within: Annotated[str, typer.Option(help="Keep snapshots within DURATION (e.g. 30d, 1y6m) of the newest."
                                             )] = "",
    keep_tag: Annotated[ListOpt, typer.Option("--keep-tag", help="Keep snapshots with TAG (a,b: both).")] = None,
    host: Annotated[ListOpt, typer.Option("--host", help="Only snapshots of HOST.")] = None,
    tag: Annotated[ListOpt, typer.Option("--tag", help="Only snapshots with TAG.")] = None,
    group_by: Annotated[str, typer.Option(help="Apply the rules per group of host,paths,tags.")] = "host,paths",
    use_policy: Annotated[bool, typer.Option("--policy", help="Use the vault's retention policy "
                                             "('freehold retention set').")] = False,
    prune: Annotated[bool, typer.Option("--prune", help="Prune afterwards.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would be forgotten.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Forget snapshots by id or by retention rules (restic's --keep-* rules). Data is reclaimed by
    'freehold prune' (or --prune)."""
    with open_vault(passphrase_file) as v:
        rules = None
        if use_policy:
            r = v.retention_policy()
            if r == formats.Retention():
                raise UsageError("the vault has no retention policy yet ('freehold retention set --keep-...')")
            rules = KeepRules.of(r)
        elif not snapshot_ids:
            rules = KeepRules(last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly,
                              monthly=keep_monthly, yearly=keep_yearly, within=keep_within,
                              tags=tuple(keep_tag or ()))
        rep = v.forget(rules, snapshot_ids, group_by=group_by, hosts=host, tags=tag, dry_run=dry_run)
        pruned = v.prune(PruneOptions(dry_run=dry_run), _Stages(as_json)) if prune and rep.removed else None
    if as_json:
        emit({"dry_run": dry_run,
              "keep": [{"id": s, "time": snap.time, "host": snap.host, "paths": snap.paths, "reasons": why}
                       for s, snap, why in rep.kept],
              "remove": [{"id": s, "time": snap.time, "host": snap.host, "paths": snap.paths}
                         for s, snap in rep.removed],
              "prune": None if pruned is None else pruned.__dict__})
        return
    if rep.kept and not snapshot_ids:
        out.print(f"keep {len(rep.kept)} snapshots:")
        table(["id", "time", "host", "reasons"],
              [[s[:12], local_time(snap.time), snap.host, ", ".join(why)] for s, snap, why in rep.kept])
    verb = "would forget" if dry_run else "forgot"
    out.print(f"{verb} {len(rep.removed)} snapshots" + (":" if rep.removed else "."))
    if rep.removed:
        table(["id", "time", "host", "paths"],
              [[s[:12], local_time(snap.time), snap.host, " ".join(snap.paths)] for s, snap in rep.removed])
    if pruned is not None:
        out.print(_prune_text(pruned), markup=False)
    elif rep.removed and not dry_run:
        out.print("Run 'freehold prune' to reclaim the space they used.")


@app.command("prune")
def prune_cmd(
    max_unused: Annotated[str, typer.Option(help="Rewrite packs whose unused part is above this.")] = "5%",
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Say what would be done; change nothing.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reclaim the space of forgotten snapshots and interrupted backups."""
    options = PruneOptions(max_unused=parse_fraction(max_unused), dry_run=dry_run)
    with open_vault(passphrase_file) as v:
        rep = v.prune(options, _Stages(as_json))
    if as_json:
        emit(rep.__dict__)
    else:
        out.print(_prune_text(rep), markup=False)


@app.command("locks")
def locks_cmd(passphrase_file: PassFileOpt = None, as_json: JsonOpt = False) -> None:
    """List the locks on the vault (running backups, prunes, repairs; stale ones marked)."""
    with open_vault(passphrase_file) as v:
        infos = v.locks()
    if as_json:
        emit([{"name": i.name, "host": i.lock.host, "pid": i.lock.pid, "op": i.lock.op,
               "exclusive": i.lock.exclusive, "time": i.lock.time, "refreshed": i.lock.refreshed,
               "stale": i.stale, "providers": sorted(i.holders)} for i in infos])
        return
    if not infos:
        out.print("no locks")
        return
    table(["op", "host", "pid", "since", "refreshed", "state"],
          [[i.lock.op, i.lock.host, str(i.lock.pid), local_time(i.lock.time), local_time(i.lock.refreshed),
            f"stale: {i.stale}" if i.stale else "live"] for i in infos])


@app.command()
def unlock(
    remove_all: Annotated[bool, typer.Option("--remove-all", help="Remove every lock, live ones too (only when "
                                             "you know no other command is running).")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove stale locks (a lock is stale when not refreshed for 30 minutes, or its process on
    this host is gone)."""
    with open_vault(passphrase_file) as v:
        removed = v.unlock(all_locks=remove_all)
    if as_json:
        emit([{"name": i.name, "op": i.lock.op, "host": i.lock.host, "pid": i.lock.pid} for i in removed])
        return
    out.print(f"removed {len(removed)} lock(s)" + "".join(f"\n  {i.describe()}" for i in removed), markup=False)


retention_app = typer.Typer(help="The vault's retention policy ('forget --policy' and 'maintain' apply it).",
                            no_args_is_help=True)
app.add_typer(retention_app, name="retention")


@retention_app.command("set")
def retention_set(
    keep_last: KeepOpt = 0, keep_hourly: KeepOpt = 0, keep_daily: KeepOpt = 0, keep_weekly: KeepOpt = 0,
    keep_monthly: KeepOpt = 0, keep_yearly: KeepOpt = 0,
    keep_within: Annotated[str, typer.Option(help="Keep snapshots within DURATION of the newest.")] = "",
    keep_tag: Annotated[ListOpt, typer.Option("--keep-tag", help="Keep snapshots with TAG.")] = None,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the retention policy."""
    rules = formats.Retention(last=keep_last, hourly=keep_hourly, daily=keep_daily, weekly=keep_weekly,
                              monthly=keep_monthly, yearly=keep_yearly, within=keep_within,
                              tags=list(keep_tag or ()))
    with open_vault(passphrase_file) as v:
        v.set_retention(rules)
    if as_json:
        emit(formats.encode_json(rules))
    else:
        out.print("retention policy set")


def _command_line(passphrase_file: Path | None) -> str:
    """How a timer runs this installation's ``freehold maintain``."""
    exe = shutil.which("freehold") or f"{sys.executable} -m freehold.cli"
    home = os.environ.get("FREEHOLD_HOME")
    env = f"FREEHOLD_HOME={shlex.quote(home)} " if home else ""
    pf = f" --passphrase-file {shlex.quote(str(passphrase_file.resolve()))}" if passphrase_file else \
        " --passphrase-file /path/to/passphrase-file"
    return f"{env}{exe} maintain{pf}"


def timer_units(passphrase_file: Path | None) -> dict[str, str]:
    """A systemd user service and timer (daily, randomised, catching up after sleep) and a cron line."""
    line = _command_line(passphrase_file)
    return {
        "freehold-maintain.service": (
            "[Unit]\nDescription=Freehold vault maintenance (check, read a subset, repair, prune)\n\n"
            f"[Service]\nType=oneshot\nExecStart=/bin/sh -c {shlex.quote(line)}\nNice=10\nIOSchedulingClass=idle\n"),
        "freehold-maintain.timer": (
            "[Unit]\nDescription=Run Freehold vault maintenance daily\n\n"
            "[Timer]\nOnCalendar=daily\nRandomizedDelaySec=1h\nPersistent=true\n\n"
            "[Install]\nWantedBy=timers.target\n"),
        "cron": f"17 3 * * * {line}\n",
    }


@app.command()
def maintain(
    take_over: Annotated[bool, typer.Option("--take-over", help="Make this host the vault's maintainer.")] = False,
    period: Annotated[int | None, typer.Option(help="Days over which every share is read once (one subset a "
                                               "run; default 30).", min=1, max=366)] = None,
    print_timer: Annotated[bool, typer.Option("--print-timer", help="Print a systemd timer and a cron line that "
                                              "run this daily; do nothing else.")] = False,
    install_timer: Annotated[bool, typer.Option("--install-timer", help="Write the systemd user timer to "
                                                "~/.config/systemd/user; do nothing else.")] = False,
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """What a timer runs: check, read the next subset of the data, repair when needed, forget by the
    retention policy and prune. Exit 0 healthy, 1 problems remain that repair can fix, 13 data lost."""
    if print_timer or install_timer:
        units = timer_units(passphrase_file)
        if install_timer:
            where = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
            where.mkdir(parents=True, exist_ok=True)
            for name in ("freehold-maintain.service", "freehold-maintain.timer"):
                (where / name).write_text(units[name])
            out.print(f"wrote {where}/freehold-maintain.service and .timer; enable with:\n"
                      "  systemctl --user daemon-reload && systemctl --user enable --now freehold-maintain.timer",
                      markup=False)
        else:
            for name in ("freehold-maintain.service", "freehold-maintain.timer"):
                out.print(f"# ~/.config/systemd/user/{name}\n{units[name]}", markup=False)
            out.print(f"# or, with cron (crontab -e):\n{units['cron']}", markup=False)
        return
    with open_vault(passphrase_file) as v:
        rep = v.maintain(take_over=take_over, period_days=period, progress=_Stages(as_json))
    check = rep.check
    if as_json:
        emit({"host": rep.host, "subset": rep.subset, "exit_code": rep.exit_code,
              "check": {"healthy": check.healthy, "problems": len(check.problems)},
              "repair": None if rep.repair is None else rep.repair.__dict__ | {"outcome": None},
              "forgotten": [] if rep.forget is None else [s for s, _ in rep.forget.removed],
              "prune": None if rep.prune is None else rep.prune.__dict__})
    else:
        out.print(f"maintenance on {rep.host}: read subset {rep.subset} of the data; check "
                  f"{'healthy' if check.healthy else f'found {len(check.problems)} problem(s)'}", markup=False)
        if rep.repair is not None:
            r = rep.repair
            out.print(f"repair: {r.packs_repaired} packs repaired, {r.shares_rebuilt} shares rebuilt, "
                      f"{r.shares_moved} moved; {len(r.lost)} packs lost", markup=False)
        if rep.forget is not None:
            out.print(f"forgot {len(rep.forget.removed)} snapshots by the retention policy", markup=False)
        if rep.prune is not None:
            out.print(_prune_text(rep.prune), markup=False)
        status = {0: "healthy", 1: "problems remain that 'freehold repair' can fix", 13: "DATA LOST"}
        out.print(f"status: {status.get(rep.exit_code, rep.exit_code)}", markup=False)
    if rep.exit_code:
        raise typer.Exit(rep.exit_code)


@provider_app.command("price")
def provider_price(
    name: Annotated[str, typer.Argument(help="The provider's id (see 'freehold provider list').")],
    price: Annotated[float, typer.Argument(help="What the provider charges per TB-month, in your currency.",
                                           min=0)],
    passphrase_file: PassFileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a provider's price per TB-month; 'freehold stats' shows the monthly cost."""
    with open_vault(passphrase_file) as v:
        v.set_price(name, price)
    if as_json:
        emit({"provider": name, "price_per_tb_month": price})
    else:
        out.print(f"provider {name}: {price:g} per TB-month", markup=False)
