"""Install the suite's npm tools at once, in parallel (``make test`` runs this before pytest):
the IPFS reference importer (``jsref``), js-ipfs on Node 22 (``jsipfs``) and the IPFS clients
(``jsclient``). Each is skipped when its stamp matches; without npm this says so and exits 0 (the
tests that need them skip on that alone)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_STAMP = ".freehold-npm-stamp"


class NpmError(RuntimeError):
    """npm is missing or an install failed (the message ends with npm's own output)."""


def ensure_tree(spec: Path, target: Path, flags: Sequence[str] = (), timeout: float = 900) -> bool:
    """Install ``spec/package.json`` into ``target/node_modules`` unless it is there already (a
    stamp of package.json and package-lock.json says so); with a ``package-lock.json`` beside it,
    by ``npm ci``: exactly the versions and integrity hashes it records, every time. One process
    at a time (a lock file in ``target``). Returns whether it installed now."""
    npm = shutil.which("npm")
    if npm is None:
        raise NpmError("npm is not on PATH")
    files = [f for f in ("package.json", "package-lock.json") if (spec / f).is_file()]
    if "package.json" not in files:
        raise NpmError(f"no {spec / 'package.json'} (not a source checkout?)")
    key = hashlib.sha256(b"".join((spec / f).read_bytes() for f in files)).hexdigest()
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / _STAMP
    with open(target / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text().strip() == key and (target / "node_modules").is_dir():
            return False
        with contextlib.suppress(FileNotFoundError):
            stamp.unlink()
        with contextlib.suppress(FileNotFoundError):
            (target / "package-lock.json").unlink()
        for f in files:
            shutil.copyfile(spec / f, target / f)
        verb = ["ci"] if "package-lock.json" in files else ["install", "--no-package-lock"]
        cmd = [npm, *verb, "--no-audit", "--no-fund", "--no-update-notifier", "--loglevel=error", *flags]
        try:
            proc = subprocess.run(cmd, cwd=target, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.SubprocessError) as exc:
            raise NpmError(f"npm {verb[0]} in {target} failed: {exc}") from None
        if proc.returncode != 0:
            raise NpmError(f"npm {verb[0]} in {target} failed ({proc.returncode}):\n"
                           f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
        stamp.write_text(key + "\n")
        return True


def _jobs() -> dict[str, Callable[[], object]]:
    from . import jsclient, jsipfs, jsref

    return {"IPFS reference importer": jsref.ensure_installed, "js-ipfs on Node 22": jsipfs.install,
            "IPFS clients": jsclient.JSClient.install}


def main() -> int:
    if shutil.which("npm") is None:
        print("note: npm not found: the IPFS tests will be skipped", file=sys.stderr)
        return 0
    start = time.monotonic()
    failed = 0
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(job) for name, job in _jobs().items()}
        for name, fut in futures.items():
            try:
                fut.result()
            except Exception as exc:  # reported; the tests then fail with the installer's own error
                failed += 1
                print(f"npm tools: {name}: {exc}", file=sys.stderr)
    print(f"npm tools ready in {time.monotonic() - start:.1f} s" if not failed else
          f"npm tools: {failed} failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
