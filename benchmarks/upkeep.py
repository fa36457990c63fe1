#!/usr/bin/env python3
"""Issue 13's upkeep targets, measured side by side: prune after forgetting half of a history, and
repair after losing one provider.

Part ``prune``: one history of H backups (default 8) of bench.py's two data sets together (the
``random`` files and the ``tree`` of small files), changed between backups (deterministic seeds:
a region of one random file rewritten, a random file added and an older one deleted, 5 % of the
small files rewritten, 2 % deleted and 2 % added), backed up at every step by Freehold (3-of-5 over
five local directories), restic and BorgBackup, all on the same disk and the same data. The history
of each system is then kept as a pristine copy; every repeat copies it back to where it was built,
drops the page cache and times the forget + prune phase only:

- freehold:      ``freehold forget --keep-last H/2 --prune``
- freehold-2cmd: ``freehold forget --keep-last H/2`` then ``freehold prune``
- restic:        ``restic forget --keep-last H/2 --prune``
- borg:          ``borg prune --keep-last H/2`` then ``borg compact``

Each system's defaults are kept (Freehold and restic rewrite packs more than 5 % unused, borg
compacts segments more than 10 % unused). Storage after the phase: the ``du`` of each repository,
each system's own figure for its live data (Freehold ``stats --json``; ``restic stats --mode
raw-data``; ``borg info --json``), and for Freehold stored / (n/k x live unique bytes) and what a
``prune --dry-run`` still finds unused.

Part ``repair``: a vault of bench.py's ``random`` set (1 GiB at scale 1); every repeat copies it,
empties one provider's directory, drops the page cache and times ``freehold repair``. Beside it,
the machine's limit for that work on this disk: a cold sequential read of k surviving share files
of every pack plus writing (and fsyncing) files of the lost shares' sizes.

Run ``python benchmarks/upkeep.py --help``. Prints figures; asserts no targets.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402  (the data generators, the runner, the cache drops)
from bench import KIB, MB, MIB, Measure, Runner, log  # noqa: E402

K, N = bench.K, bench.N
PASSPHRASE = bench.PASSPHRASE
PRUNE_SYSTEMS = ("freehold", "freehold-2cmd", "restic", "borg")
TARGET_SPEEDUP = 2.0       # Freehold's forget+prune at least 2x faster than restic's
TARGET_STORAGE = 1.05      # stored <= 1.05 x n/k x live unique bytes
TARGET_RSS_MIB = 200.0
TARGET_REPAIR = 0.70       # repair at >= 70 % of the disk's limit


def median(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def copy_tree(src: Path, dst: Path) -> None:
    bench.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(src), str(dst)], check=True)


def dir_bytes(path: Path) -> int:
    """Sum of file sizes under ``path`` (apparent bytes, not blocks)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def json_tail(text: str) -> Any:
    """The JSON document a command printed (after any other lines)."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        raise ValueError("no JSON in output")
    return json.loads(text[start:])


# ----------------------------------------------------------------------------------------------------
# The history: bench.py's random and tree sets, changed between backups


class History:
    """The source directory (random/ and tree/) and its deterministic changes, step by step."""

    def __init__(self, root: Path, seed: int, scale: float) -> None:
        self.root = root
        self.seed = seed
        self.scale = scale
        self.vocab, self.cum = bench.vocabulary()

    def create(self) -> None:
        bench.rmtree(self.root)
        (self.root / "random").mkdir(parents=True)
        (self.root / "tree").mkdir(parents=True)
        t0 = time.perf_counter()
        bench.gen_random(self.root / "random", self.seed, self.scale)
        bench.gen_tree(self.root / "tree", self.seed, self.scale)
        log(f"history data: {self.describe()} generated in {time.perf_counter() - t0:.1f} s")

    def describe(self) -> str:
        files = sum(len(f) for _, _, f in os.walk(self.root))
        return f"{files} files, {dir_bytes(self.root) / MB:,.1f} MB"

    def change(self, step: int) -> dict[str, int]:
        """Step ``step`` (1, 2, ...): rewrite, add and delete parts of the data; return what changed."""
        rng = random.Random(f"freehold-upkeep/{self.seed}/{step}")
        take = bench.keystream(self.seed, f"upkeep-step-{step}")
        rnd = self.root / "random"
        # One big file: a region of 1/8 of it rewritten (a different region each round).
        target = rnd / f"random-{(step - 1) % 4}.bin"
        size = target.stat().st_size
        region = max(1, size // 8)
        offset = (((step - 1) // 4) * 3 % 8) * region
        with open(target, "r+b") as f:
            f.seek(offset)
            left = min(region, size - offset)
            while left:
                buf = take(min(left, bench.BLOCK))
                f.write(buf)
                left -= len(buf)
        # A new random file every step; the one from two steps back is deleted.
        added = max(1, int(16 * MIB * self.scale))
        with open(rnd / f"new-{step:02d}.bin", "wb") as f:
            f.write(take(added))
        with contextlib.suppress(FileNotFoundError):
            (rnd / f"new-{step - 2:02d}.bin").unlink()
        # The tree: 5 % of its files rewritten, 2 % deleted, 2 % added (in existing directories).
        tree = self.root / "tree"
        files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
        n_rewrite, n_delete = max(1, len(files) // 20), max(1, len(files) // 50)
        picked = rng.sample(files, n_rewrite + n_delete)
        written = region + added
        for rel in picked[:n_rewrite]:
            data = self._small_file(rng)
            (tree / rel).write_bytes(data)
            written += len(data)
        for rel in picked[n_rewrite:]:
            (tree / rel).unlink()
        dirs = sorted({str(Path(rel).parent) for rel in files})
        for i in range(n_delete):
            data = self._small_file(rng)
            (tree / rng.choice(dirs) / f"n{step:02d}-{i:05d}.txt").write_bytes(data)
            written += len(data)
        return {"rewritten_region_bytes": region, "added_random_bytes": added, "tree_rewritten": n_rewrite,
                "tree_deleted": n_delete, "tree_added": n_delete, "bytes_written": written}

    def _small_file(self, rng: random.Random) -> bytes:
        size = min(MIB, int(rng.lognormvariate(math.log(5 * KIB), 1.0)))
        if rng.random() < 0.8:
            words = rng.choices(self.vocab, cum_weights=self.cum, k=size // 5 + 16)
            return "\n".join(" ".join(words[i: i + 11]) for i in range(0, len(words), 11)).encode()[:size]
        return rng.randbytes(size)


# ----------------------------------------------------------------------------------------------------
# The systems, for the prune part


class UpkeepSystem:
    name = ""
    family = ""

    def __init__(self, runner: Runner, base: Path) -> None:
        self.runner = runner
        self.base = base  # where the history is built, and where each repeat's copy goes

    @property
    def logdir(self) -> Path:
        return self.base.parent / "logs" / self.name

    def run(self, cmd: Sequence[str], label: str) -> tuple[Measure, str]:
        return self.runner.run(cmd, env=self.env(), cwd=self.base, logdir=self.logdir, label=label)

    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def backup(self, src: Path, step: int) -> Measure:
        raise NotImplementedError

    def phase(self, keep: int, rep: int) -> list[tuple[str, Measure, str]]:
        """The timed forget+prune commands: (label, measure, stdout) each."""
        raise NotImplementedError

    def storage(self, rep: int) -> dict[str, Any]:
        raise NotImplementedError

    def snapshots(self, rep: int) -> int:
        raise NotImplementedError


class FreeholdUp(UpkeepSystem):
    name = family = "freehold"

    def __init__(self, runner: Runner, base: Path, cmd: list[str], two_commands: bool = False) -> None:
        super().__init__(runner, base)
        self.cmd = cmd
        self.two = two_commands
        if two_commands:
            self.name = "freehold-2cmd"

    @property
    def providers(self) -> list[Path]:
        return [self.base / f"p{i}" for i in range(1, N + 1)]

    def env(self) -> dict[str, str]:
        return dict(os.environ, FREEHOLD_HOME=str(self.base / "home"), FREEHOLD_PASSPHRASE=PASSPHRASE)

    def init(self) -> None:
        for p in self.providers:
            p.mkdir(parents=True)
        self.run([*self.cmd, "init", "--k", str(K), "--n", str(N), *(p.resolve().as_uri() for p in self.providers)],
                 "init")

    def backup(self, src: Path, step: int) -> Measure:
        return self.run([*self.cmd, "backup", str(src)], f"backup-{step:02d}")[0]

    def phase(self, keep: int, rep: int) -> list[tuple[str, Measure, str]]:
        if self.two:
            f = self.run([*self.cmd, "forget", "--keep-last", str(keep), "--json"], f"r{rep}-forget")
            p = self.run([*self.cmd, "prune", "--json"], f"r{rep}-prune")
            return [("forget", *f), ("prune", *p)]
        m, out = self.run([*self.cmd, "forget", "--keep-last", str(keep), "--prune", "--json"], f"r{rep}-forget-prune")
        return [("forget --prune", m, out)]

    def stats(self, label: str) -> dict[str, Any]:
        return json_tail(self.run([*self.cmd, "stats", "--json"], label)[1])

    def storage(self, rep: int) -> dict[str, Any]:
        st = self.stats(f"r{rep}-stats")
        dry = json_tail(self.run([*self.cmd, "prune", "--dry-run", "--json"], f"r{rep}-prune-dry")[1])
        unique, stored, packed = int(st["unique_bytes"]), int(st["stored_bytes"]), int(st["packed_bytes"])
        share_bytes = sum(int(p.get("share_bytes", 0)) for p in st["providers"].values())
        ideal = N / K * unique
        return {
            "du_bytes": sum(bench.disk_usage(p) for p in self.providers),
            "stored_bytes": stored,
            "share_bytes": share_bytes,
            "unique_bytes": unique,
            "packed_bytes": packed,
            "live_bytes": unique,
            "snapshots": int(st["snapshots"]),
            "stored_over_nk_unique": stored / ideal if ideal else None,
            "stored_over_nk_packed": stored / (N / K * packed) if packed else None,
            "unused_after_bytes": int(dry["unused_bytes"]),
            "unused_after_fraction": int(dry["unused_bytes"]) / packed if packed else None,
            "dry_run_would_repack": int(dry["repacked"]),
            "dry_run_would_drop": int(dry["dropped"]),
        }

    def snapshots(self, rep: int) -> int:
        return int(self.stats(f"r{rep}-stats-before")["snapshots"])


class ResticUp(UpkeepSystem):
    name = family = "restic"

    def __init__(self, runner: Runner, base: Path, binary: str) -> None:
        super().__init__(runner, base)
        self.binary = binary

    def env(self) -> dict[str, str]:
        return dict(os.environ, RESTIC_PASSWORD=PASSPHRASE, RESTIC_CACHE_DIR=str(self.base / "cache"))

    @property
    def r(self) -> list[str]:
        return [self.binary, "--repo", str(self.base / "repo")]

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.run([*self.r, "init"], "init")

    def backup(self, src: Path, step: int) -> Measure:
        return self.run([*self.r, "backup", str(src)], f"backup-{step:02d}")[0]

    def phase(self, keep: int, rep: int) -> list[tuple[str, Measure, str]]:
        m, out = self.run([*self.r, "forget", "--keep-last", str(keep), "--prune"], f"r{rep}-forget-prune")
        return [("forget --prune", m, out)]

    def storage(self, rep: int) -> dict[str, Any]:
        raw = json_tail(self.run([*self.r, "stats", "--mode", "raw-data", "--json"], f"r{rep}-stats")[1])
        snaps = json_tail(self.run([*self.r, "snapshots", "--json"], f"r{rep}-snapshots")[1])
        du = bench.disk_usage(self.base / "repo")
        live = int(raw.get("total_size", 0))
        return {"du_bytes": du, "live_bytes": live, "raw_data": raw, "snapshots": len(snaps),
                "du_over_live": du / live if live else None}

    def snapshots(self, rep: int) -> int:
        return len(json_tail(self.run([*self.r, "snapshots", "--json"], f"r{rep}-snapshots-before")[1]))


class BorgUp(UpkeepSystem):
    name = family = "borg"

    def __init__(self, runner: Runner, base: Path, binary: str) -> None:
        super().__init__(runner, base)
        self.binary = binary

    def env(self) -> dict[str, str]:
        return dict(os.environ, BORG_PASSPHRASE=PASSPHRASE, BORG_BASE_DIR=str(self.base / "borg-base"))

    @property
    def repo(self) -> str:
        return str(self.base / "repo")

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self.run([self.binary, "init", "--encryption", "repokey", self.repo], "init")

    def backup(self, src: Path, step: int) -> Measure:
        return self.run([self.binary, "create", f"{self.repo}::h{step:02d}", str(src)], f"backup-{step:02d}")[0]

    def phase(self, keep: int, rep: int) -> list[tuple[str, Measure, str]]:
        p = self.run([self.binary, "prune", "--keep-last", str(keep), self.repo], f"r{rep}-prune")
        c = self.run([self.binary, "compact", self.repo], f"r{rep}-compact")
        return [("prune", *p), ("compact", *c)]

    def storage(self, rep: int) -> dict[str, Any]:
        info = json_tail(self.run([self.binary, "info", "--json", self.repo], f"r{rep}-info")[1])
        stats = info.get("cache", {}).get("stats", {})
        arch = json_tail(self.run([self.binary, "list", "--json", self.repo], f"r{rep}-list")[1])
        du = bench.disk_usage(Path(self.repo))
        live = int(stats.get("unique_csize", 0))
        return {"du_bytes": du, "live_bytes": live, "unique_size": int(stats.get("unique_size", 0)),
                "unique_csize": live, "snapshots": len(arch.get("archives", [])),
                "du_over_live": du / live if live else None}

    def snapshots(self, rep: int) -> int:
        arch = json_tail(self.run([self.binary, "list", "--json", self.repo], f"r{rep}-list-before")[1])
        return len(arch.get("archives", []))


def run_prune(args: argparse.Namespace, runner: Runner, work: Path, freehold_cmd: list[str],
              installer: bench.Installer) -> dict[str, Any]:
    root = work / "prune"
    bench.rmtree(root)
    live, pristine = root / "live", root / "pristine"
    history = History(root / "src", args.seed, args.scale)
    systems: list[UpkeepSystem] = []
    notes: list[str] = []
    for name in args.systems:
        if name == "freehold":
            systems.append(FreeholdUp(runner, live / "freehold", freehold_cmd))
        elif name == "freehold-2cmd":
            pass  # shares freehold's history (added below)
        else:
            binary = installer.ensure(name, "restic" if name == "restic" else "borgbackup")
            if binary is None:
                notes.append(f"{name}: not installed, skipped")
                continue
            systems.append(ResticUp(runner, live / name, binary) if name == "restic"
                           else BorgUp(runner, live / name, binary))
    keep = args.history // 2
    with bench_section(f"prune part: build a history of {args.history} backups"):
        history.create()
        for s in systems:
            s.init()
        backups: dict[str, list[float]] = {s.name: [] for s in systems}
        changes = []
        for step in range(1, args.history + 1):
            if step > 1:
                changes.append(history.change(step - 1))
            for s in systems:
                m = s.backup(history.root, step)
                backups[s.name].append(m.wall_s)
            log(f"history step {step}/{args.history}: {history.describe()}; backups "
                + ", ".join(f"{n} {w[-1]:.2f} s" for n, w in backups.items()))
    before: dict[str, dict[str, Any]] = {}
    for s in systems:
        os.sync()
        before[s.name] = {"du_bytes": bench.disk_usage(s.base)}
        pristine.mkdir(parents=True, exist_ok=True)
        s.base.rename(pristine / s.name)
    variants: list[UpkeepSystem] = []
    for s in systems:
        variants.append(s)
        if isinstance(s, FreeholdUp) and "freehold-2cmd" in args.systems:
            variants.append(FreeholdUp(runner, s.base, freehold_cmd, two_commands=True))
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    with bench_section(f"prune part: forget all but the last {keep} and prune, {args.repeat} repeats"):
        for rep in range(1, args.repeat + 1):
            for v in variants:
                copy_tree(pristine / v.family, v.base)
                bench.settle_memory()
                load = os.getloadavg()[0]
                steps = v.phase(keep, rep)
                wall = sum(m.wall_s for _, m, _ in steps)
                run = {
                    "wall_s": wall,
                    "cpu_s": sum(m.cpu_s for _, m, _ in steps),
                    "peak_rss_mib": max(m.max_rss_kib for _, m, _ in steps) / KIB,
                    "load_1m_before": load,
                    "commands": [{"label": lab, "wall_s": m.wall_s, "cpu_s": m.cpu_s,
                                  "peak_rss_mib": m.max_rss_kib / KIB} for lab, m, _ in steps],
                }
                if v.family == "freehold":
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        doc = json_tail(steps[-1][2])
                        run["prune_report"] = doc.get("prune", doc) if isinstance(doc, dict) else None
                run["storage"] = v.storage(rep)
                runs[v.name].append(run)
                log(f"prune {v.name} run {rep}/{args.repeat}: {wall:.2f} s ("
                    + ", ".join(f"{lab} {m.wall_s:.2f} s" for lab, m, _ in steps)
                    + f"), peak RSS {run['peak_rss_mib']:.0f} MiB, snapshots left "
                    f"{run['storage']['snapshots']}, du {run['storage']['du_bytes'] / MB:,.1f} MB, load {load:.2f}")
                if not args.keep:
                    bench.rmtree(v.base)
    summary: dict[str, Any] = {}
    for name, rs in runs.items():
        if not rs:
            continue
        st = rs[0]["storage"]
        summary[name] = {
            "repeats": len(rs),
            "wall_s": median([r["wall_s"] for r in rs]),
            "wall_runs_s": [r["wall_s"] for r in rs],
            "cpu_s": median([r["cpu_s"] for r in rs]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
            "commands": {c["label"]: median([r["commands"][i]["wall_s"] for r in rs])
                         for i, c in enumerate(rs[0]["commands"])},
            "du_before_bytes": before.get(name, before.get("freehold", {})).get("du_bytes"),
            "du_after_bytes": median([r["storage"]["du_bytes"] for r in rs]),
            "live_bytes": median([r["storage"]["live_bytes"] for r in rs]),
            "snapshots_after": st["snapshots"],
            "storage": st,
            "history_backup_wall_s": backups.get(name),
        }
    fh = summary.get("freehold")
    ratios: dict[str, float | None] = {}
    if fh and fh["wall_s"]:
        for anchor in ("restic", "borg"):
            if anchor in summary:
                ratios[f"{anchor}/freehold"] = summary[anchor]["wall_s"] / fh["wall_s"]
        if "freehold-2cmd" in summary and "restic" in summary:
            ratios["restic/freehold-2cmd"] = summary["restic"]["wall_s"] / summary["freehold-2cmd"]["wall_s"]
        if "freehold-2cmd" in summary and "borg" in summary:
            ratios["borg/freehold-2cmd"] = summary["borg"]["wall_s"] / summary["freehold-2cmd"]["wall_s"]
    if not args.keep:
        bench.rmtree(root)
    return {"history": args.history, "keep_last": keep, "changes": changes, "summary": summary,
            "ratios": ratios, "runs": runs, "notes": notes}


def format_prune(doc: dict[str, Any]) -> str:
    s, rat = doc["summary"], doc["ratios"]
    lines = [
        f"Prune after forgetting half of a history: {doc['history']} backups of random + tree (changed between",
        f"backups), forget all but the last {doc['keep_last']}, then prune; fresh copy of each repository per run,",
        "page cache dropped before the phase. Medians; MB = 10^6 bytes; RSS = largest single process.",
        "",
        f"{'system':<14} {'phase s':>8} {'runs s':>22} {'CPU s':>7} {'RSS MiB':>8} {'du before MB':>13} "
        f"{'du after MB':>12} {'live MB':>9} {'du/live':>8}",
    ]
    lines.append("-" * len(lines[-1]))
    for name, x in s.items():
        live = x["live_bytes"]
        lines.append(
            f"{name:<14} {fmt(x['wall_s'], '.2f'):>8} {'/'.join(f'{w:.2f}' for w in x['wall_runs_s']):>22} "
            f"{fmt(x['cpu_s'], '.2f'):>7} {fmt(x['peak_rss_mib'], '.0f'):>8} "
            f"{fmt((x['du_before_bytes'] or 0) / MB, ',.1f'):>13} {fmt(x['du_after_bytes'] / MB, ',.1f'):>12} "
            f"{fmt(live / MB if live else None, ',.1f'):>9} "
            f"{fmt(x['du_after_bytes'] / live if live else None, '.3f'):>8}"
        )
    lines.append("  (commands: " + "; ".join(
        f"{n}: " + ", ".join(f"{lab} {w:.2f} s" for lab, w in x["commands"].items()) for n, x in s.items()) + ")")
    lines.append("  live = Freehold stats unique_bytes (uncompressed); restic stats --mode raw-data total_size; "
                 "borg unique_csize.")
    lines.append("  Freehold's du covers n/k = 5/3 copies' worth; restic's and borg's one copy.")
    if rat:
        lines.append("Ratios (anchor seconds / Freehold seconds): "
                     + ", ".join(f"{k} {v:.2f}" for k, v in rat.items() if v is not None))
    fh = s.get("freehold")
    if fh:
        st = fh["storage"]
        lines += [
            f"Freehold storage after prune: stored {st['stored_bytes'] / MB:,.1f} MB (shares "
            f"{st['share_bytes'] / MB:,.1f} MB), live unique {st['unique_bytes'] / MB:,.1f} MB, packed "
            f"{st['packed_bytes'] / MB:,.1f} MB",
            f"  stored / (n/k x unique) = {fmt(st['stored_over_nk_unique'], '.4f')}; stored / (n/k x packed) = "
            f"{fmt(st['stored_over_nk_packed'], '.4f')}; unused after prune (dry-run): "
            f"{st['unused_after_bytes'] / MB:,.2f} MB = {fmt(st['unused_after_fraction'], '.2%')} of packed",
        ]
        sp = rat.get("restic/freehold")
        lines.append(
            f"Targets (printed, not asserted): >= {TARGET_SPEEDUP:.0f}x restic: {fmt(sp, '.2f')}x "
            f"({'met' if sp and sp >= TARGET_SPEEDUP else 'NOT met'}); stored <= {TARGET_STORAGE} x n/k x unique: "
            f"{fmt(st['stored_over_nk_unique'], '.3f')} "
            f"({'met' if (st['stored_over_nk_unique'] or 9) <= TARGET_STORAGE else 'NOT met'}); peak RSS <= "
            f"{TARGET_RSS_MIB:.0f} MiB: {fh['peak_rss_mib']:.0f} MiB "
            f"({'met' if fh['peak_rss_mib'] <= TARGET_RSS_MIB else 'NOT met'})"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Repair after losing one provider


def repair_available(freehold_cmd: list[str], src: Path) -> str | None:
    """None if ``freehold repair`` exists (the vault door and the CLI command), else why not."""
    door = src / "freehold" / "vault_integrity.py"
    try:
        if "def repair" not in door.read_text():
            return f"no 'def repair' in {door}"
    except OSError as exc:
        return f"cannot read {door}: {exc}"
    p = subprocess.run([*freehold_cmd, "repair", "--help"], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        return f"`freehold repair --help` exited {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}"
    return None


def read_cold(files: list[Path]) -> tuple[int, float]:
    """Bytes and seconds for reading ``files`` sequentially (4 MiB reads), page cache dropped first."""
    bench.drop_page_cache()
    buf = bytearray(4 * MIB)
    view = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                got = os.readv(fd, [view])
                if not got:
                    break
                total += got
        finally:
            os.close(fd)
    return total, time.perf_counter() - t0


def write_fsync(directory: Path, sizes: list[int]) -> tuple[int, float]:
    """Bytes and seconds for writing one file per size (random bytes), each fsynced, as repair writes shares."""
    bench.rmtree(directory)
    directory.mkdir(parents=True)
    biggest = max(sizes, default=0)
    data = bench.keystream(0, "repair-probe")(biggest)
    os.sync()
    total = 0
    t0 = time.perf_counter()
    for i, size in enumerate(sizes):
        fd = os.open(directory / f"s{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)[:size]
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        total += size
    elapsed = time.perf_counter() - t0
    bench.rmtree(directory)
    return total, elapsed


def share_files(provider: Path) -> list[Path]:
    return sorted(p for p in (provider / "data").rglob("*") if p.is_file())


def run_repair(args: argparse.Namespace, runner: Runner, work: Path, freehold_cmd: list[str]) -> dict[str, Any]:
    reason = repair_available(freehold_cmd, args.src_dir)
    if reason:
        log(f"repair part skipped: {reason}")
        return {"skipped": reason}
    root = work / "repair"
    bench.rmtree(root)
    live, pristine = root / "live", root / "pristine"
    ds = bench.prepare_set("random", root / "data", args.seed, args.repair_scale)
    fh = FreeholdUp(runner, live, freehold_cmd)
    fh.init()
    bench.settle_memory()
    bench.warm_cache(ds.root)
    backup, _ = fh.run([*freehold_cmd, "backup", str(ds.root)], "repair-backup")
    log(f"repair part: backed up {ds.total_bytes / MB:,.1f} MB in {backup.wall_s:.2f} s")
    os.sync()
    pristine.parent.mkdir(parents=True, exist_ok=True)
    live.rename(pristine)
    lost_name = "p1"
    survivors = [f"p{i}" for i in range(2, N + 1)][:K]
    runs: list[dict[str, Any]] = []
    for rep in range(1, args.repeat + 1):
        copy_tree(pristine, live)
        lost = live / lost_name
        lost_files = share_files(lost)
        lost_sizes = [p.stat().st_size for p in lost_files]
        lost_bytes_all = dir_bytes(lost)
        read_files = [f for s in survivors for f in share_files(live / s)]
        # The limit: a cold sequential read of k shares of every pack, then the lost shares written.
        read_bytes, read_s = read_cold(read_files)
        write_bytes, write_s = write_fsync(root / "probe", lost_sizes)
        bench.rmtree(lost)
        lost.mkdir()
        bench.settle_memory()
        load = os.getloadavg()[0]
        m, out = fh.run([*freehold_cmd, "repair"], f"r{rep}-repair")
        rebuilt = dir_bytes(lost)
        check_ok = None
        check_problems: list[str] = []
        try:
            fh.run([*freehold_cmd, "check"], f"r{rep}-check")
            check_ok = True
        except bench.CommandFailed:
            check_ok = False
            with contextlib.suppress(OSError):
                check_problems = (fh.logdir / f"r{rep}-check.out").read_text().strip().splitlines()[:4]
            log(f"repair run {rep}: check after repair reports: " + " | ".join(check_problems))
        limit_s = read_s + write_s
        run = {
            "wall_s": m.wall_s, "cpu_s": m.cpu_s, "peak_rss_mib": m.max_rss_kib / KIB,
            "lost_share_files": len(lost_files), "lost_share_bytes": sum(lost_sizes), "lost_bytes": lost_bytes_all,
            "rebuilt_bytes": rebuilt, "read_bytes": read_bytes, "read_s": read_s, "write_bytes": write_bytes,
            "write_s": write_s, "limit_serial_s": limit_s, "limit_overlapped_s": max(read_s, write_s),
            "share_of_limit": limit_s / m.wall_s, "share_of_overlapped_limit": max(read_s, write_s) / m.wall_s,
            "check_ok": check_ok, "check_problems": check_problems, "load_1m_before": load,
            "stdout_tail": out.strip().splitlines()[-5:],
        }
        runs.append(run)
        log(f"repair run {rep}/{args.repeat}: {m.wall_s:.2f} s, rebuilt {rebuilt / MB:,.1f} MB "
            f"({sum(lost_sizes) / MB / m.wall_s:,.1f} MB/s of shares), peak RSS {run['peak_rss_mib']:.0f} MiB; "
            f"limit: read {read_bytes / MB:,.1f} MB in {read_s:.2f} s + write {write_bytes / MB:,.1f} MB in "
            f"{write_s:.2f} s = {limit_s:.2f} s -> {run['share_of_limit']:.0%} of it; check "
            f"{'ok' if check_ok else 'FAILED'}")
        if not args.keep:
            bench.rmtree(live)
    if not args.keep:
        bench.rmtree(root)

    def med(key: str) -> float | None:
        return median([r[key] for r in runs])

    wall = med("wall_s")
    lost_bytes = runs[0]["lost_share_bytes"]
    return {
        "input_bytes": ds.total_bytes, "backup_wall_s": backup.wall_s, "lost_provider": lost_name,
        "survivors_read": survivors, "summary": {
            "wall_s": wall, "wall_runs_s": [r["wall_s"] for r in runs], "cpu_s": med("cpu_s"),
            "peak_rss_mib": med("peak_rss_mib"), "lost_share_bytes": lost_bytes,
            "rebuilt_bytes": med("rebuilt_bytes"),
            "share_mb_s": lost_bytes / MB / wall if wall else None,
            "input_mb_s": ds.total_bytes / MB / wall if wall else None,
            "read_mb_s": median([r["read_bytes"] / MB / r["read_s"] for r in runs]),
            "write_mb_s": median([r["write_bytes"] / MB / r["write_s"] for r in runs]),
            "limit_serial_s": med("limit_serial_s"), "limit_overlapped_s": med("limit_overlapped_s"),
            "share_of_limit": med("share_of_limit"), "share_of_overlapped_limit": med("share_of_overlapped_limit"),
            "checks_ok": all(r["check_ok"] for r in runs),
            "check_problems": next((r["check_problems"] for r in runs if r["check_problems"]), []),
        }, "runs": runs,
    }


def format_repair(doc: dict[str, Any]) -> str:
    if doc.get("skipped"):
        return f"Repair: not measured ({doc['skipped']}); the code is ready behind that check."
    s = doc["summary"]
    return "\n".join([
        f"Repair after losing one provider ({doc['lost_provider']} emptied) of a {doc['input_bytes'] / MB:,.1f} MB "
        f"vault ({K}-of-{N}, local directories, page cache dropped first); medians of {len(doc['runs'])}:",
        f"  freehold repair: {fmt(s['wall_s'], '.2f')} s (runs {'/'.join(f'{w:.2f}' for w in s['wall_runs_s'])}), "
        f"CPU {fmt(s['cpu_s'], '.2f')} s, peak RSS {fmt(s['peak_rss_mib'], '.0f')} MiB; rebuilt "
        f"{s['lost_share_bytes'] / MB:,.1f} MB of shares = {fmt(s['share_mb_s'], ',.1f')} MB/s "
        f"({fmt(s['input_mb_s'], ',.1f')} MB/s of vault data); check afterwards: "
        f"{'ok' if s['checks_ok'] else 'FAILED: ' + ' | '.join(s['check_problems'])}",
        f"  machine limit: cold read of {K} surviving shares per pack {fmt(s['read_mb_s'], ',.0f')} MB/s, write + "
        f"fsync of the lost shares' files {fmt(s['write_mb_s'], ',.0f')} MB/s -> {fmt(s['limit_serial_s'], '.2f')} s "
        f"one after the other ({fmt(s['limit_overlapped_s'], '.2f')} s if fully overlapped)",
        f"  repair = {fmt(s['share_of_limit'], '.0%')} of the serial limit "
        f"({fmt(s['share_of_overlapped_limit'], '.0%')} of the overlapped one); target >= {TARGET_REPAIR:.0%}: "
        f"{'met' if (s['share_of_limit'] or 0) >= TARGET_REPAIR else 'NOT met'} (printed, not asserted)",
    ])


# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bench_section(title: str) -> Any:
    log(f"== {title}")
    t0 = time.perf_counter()
    yield
    log(f"== {title}: done in {time.perf_counter() - t0:.1f} s")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3, help="timed runs per system (fresh copy each; default 3)")
    p.add_argument("--part", choices=("prune", "repair", "all"), default="all")
    p.add_argument("--work", type=Path, default=None,
                   help="work directory (default: a new one under /tmp, removed at the end)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    p.add_argument("--history", type=int, default=8, help="backups in the history (default 8; H/2 are kept)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="history data: 1.0 = 1 GiB random + 20,000 small files (default 1.0)")
    p.add_argument("--repair-scale", type=float, default=1.0, help="repair vault: 1.0 = 1 GiB (default)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--systems", default=",".join(PRUNE_SYSTEMS),
                   help=f"prune part, comma-separated from {','.join(PRUNE_SYSTEMS)}")
    p.add_argument("--freehold-cmd", default=str(bench.DEFAULT_FREEHOLD),
                   help="the Freehold CLI (used with --no-freeze)")
    p.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True,
                   help="run Freehold from a copy of src/ taken at the start (default; others may edit src/ "
                        "during a run)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in PRUNE_SYSTEMS]
    if bad:
        p.error(f"unknown systems: {bad}")
    if "freehold-2cmd" in args.systems and "freehold" not in args.systems:
        args.systems.insert(0, "freehold")
    return args


def source_fingerprint(src: Path) -> str:
    """SHA-256 over the paths and bytes of every .py file under ``src`` (which code was measured)."""
    h = hashlib.sha256()
    for path in sorted(src.rglob("*.py")):
        h.update(str(path.relative_to(src)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def freeze_source(work: Path) -> tuple[list[str], str]:
    """Copy the checkout's src/ into the work dir and return a command that runs the Freehold CLI from
    the copy: others edit src/ while a run takes minutes, and every run here must measure one code."""
    frozen = work / "src-frozen"
    bench.rmtree(frozen)
    shutil.copytree(bench.REPO_ROOT / "src", frozen, ignore=shutil.ignore_patterns("__pycache__"))
    python = str(bench.VENV_PYTHON if bench.VENV_PYTHON.exists() else Path(sys.executable))
    cmd = ["env", f"PYTHONPATH={frozen}", python, "-c", "import sys; from freehold.cli import main; sys.exit(main())"]
    return cmd, source_fingerprint(frozen)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    bench.ensure_dependencies()
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as bench.py: programs keep their bytecode cache
    made = args.work is None
    work = Path(tempfile.mkdtemp(prefix="freehold-upkeep-", dir="/tmp")) if made else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    installer = bench.Installer()
    time_bin = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else installer.ensure("time", "time")
    runner = Runner(time_bin, args.timeout)
    freehold_cmd = shlex.split(args.freehold_cmd)
    fingerprint = source_fingerprint(bench.REPO_ROOT / "src")
    args.src_dir = bench.REPO_ROOT / "src"
    if args.freeze:
        args.src_dir = work / "src-frozen"
        freehold_cmd, fingerprint = freeze_source(work)
        log(f"Freehold runs from a frozen copy of src/ (sha256 of its .py files {fingerprint[:16]})")
    if not os.access("/proc/sys/vm/drop_caches", os.W_OK):
        bench.loud("cannot drop the page cache (not root): runs start from whatever the cache holds")
    busy = subprocess.run(["pgrep", "-fc", "pytest"], capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    versions = {"freehold": bench.tool_version([*freehold_cmd, "version"]),
                "restic": bench.tool_version(["restic", "version"]),
                "borg": bench.tool_version(["borg", "--version"])}
    log("versions: " + "; ".join(versions.values()) + f"; load {load[0]:.2f}; pytest processes: {busy or 0}")
    doc: dict[str, Any] = {
        "config": {"repeat": args.repeat, "part": args.part, "history": args.history, "scale": args.scale,
                   "repair_scale": args.repair_scale, "seed": args.seed, "systems": args.systems, "k": K, "n": N,
                   "work": str(work), "command": shlex.join([sys.executable, *sys.argv]),
                   "freehold_cmd": freehold_cmd, "frozen": args.freeze, "source_sha256": fingerprint},
        "versions": versions, "load_at_start": load, "pytest_processes_at_start": busy,
    }
    exit_code = 0
    try:
        if args.part in ("prune", "all"):
            try:
                doc["prune"] = run_prune(args, runner, work, freehold_cmd, installer)
            except bench.CommandFailed as exc:
                bench.loud(f"prune part: a command failed: {exc}")
                doc["prune"] = {"failed": str(exc)}
                exit_code = 2
        if args.part in ("repair", "all"):
            try:
                doc["repair"] = run_repair(args, runner, work, freehold_cmd)
            except bench.CommandFailed as exc:
                bench.loud(f"repair part: a command failed: {exc}")
                doc["repair"] = {"failed": str(exc)}
                exit_code = 2
    finally:
        doc["load_at_end"] = os.getloadavg()
        if not args.keep:
            for sub in ("prune", "repair", "src-frozen"):
                bench.rmtree(work / sub)
            if made:
                bench.rmtree(work)
    print()
    print("Versions: " + "; ".join(versions.values()) + f"; Freehold source sha256 {fingerprint[:16]}"
          + (" (frozen copy)" if args.freeze else ""))
    if "prune" in doc:
        print(format_prune(doc["prune"]) if "summary" in doc["prune"] else f"Prune: FAILED {doc['prune']['failed']}")
        print()
    if "repair" in doc:
        print(format_repair(doc["repair"]) if "failed" not in doc["repair"]
              else f"Repair: FAILED {doc['repair']['failed']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2, default=str))
        log(f"wrote {args.json}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
