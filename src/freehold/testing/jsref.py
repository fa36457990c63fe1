"""The IPFS reference importer (npm ``ipfs-unixfs-importer`` 17.1.1), run with the machine's
``node``, for byte-for-byte checks of :mod:`freehold.unixfs`.

:func:`ensure_installed` installs the packages pinned in ``tests/js/jsref/package.json`` into
``.tools/jsref`` of the source tree (gitignored) with ``npm install --no-audit --no-fund``, once:
a stamp file keyed by the hash of package.json says it is done. The harness
``tests/js/jsref/import.mjs`` is copied beside ``node_modules`` on each call (ESM resolves
packages from the script's folder). ``FREEHOLD_JSREF_HOME`` overrides the install folder.

:func:`reference_import` imports a file or folder with a profile (the importer's own
``profile`` option) or with a :class:`~freehold.unixfs.Profile` of other parameters (passed
as explicit options, see :func:`profile_options`), optionally writing a CAR.

Raises :class:`JSRefUnavailable` when ``node`` or ``npm`` is not on PATH (tests skip on
exactly that) and :class:`JSRefError` when the install or a run fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from freehold.unixfs import PROFILES, Profile

from .npm_tools import NpmError, ensure_tree

__all__ = ["HARNESS", "PACKAGE_JSON", "JSRefError", "JSRefUnavailable", "ensure_installed",
           "profile_options", "reference_import", "tools_available"]

_ROOT = Path(__file__).resolve().parents[3]
PACKAGE_JSON = _ROOT / "tests" / "js" / "jsref" / "package.json"
HARNESS = _ROOT / "tests" / "js" / "jsref" / "import.mjs"
_STAMP = ".freehold-jsref-stamp"


class JSRefError(RuntimeError):
    """The reference importer could not be installed or run."""


class JSRefUnavailable(JSRefError):
    """``node`` or ``npm`` is not on PATH."""


def tools_available() -> bool:
    """True when both ``node`` and ``npm`` are on PATH."""
    return shutil.which("node") is not None and shutil.which("npm") is not None


def _home() -> Path:
    env = os.environ.get("FREEHOLD_JSREF_HOME")
    return Path(env) if env else _ROOT / ".tools" / "jsref"


def ensure_installed() -> Path:
    """Install the pinned reference packages (once) and the harness; returns the install folder."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise JSRefUnavailable(f"{tool} is not on PATH: the IPFS reference importer needs Node.js and npm")
    if not PACKAGE_JSON.is_file() or not HARNESS.is_file():
        raise JSRefError(f"the reference harness is missing ({PACKAGE_JSON.parent}): not a source checkout?")
    home = _home()
    try:
        ensure_tree(PACKAGE_JSON.parent, home)
    except NpmError as exc:
        raise JSRefError(str(exc)) from None
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        harness = HARNESS.read_bytes()
        target = home / "import.mjs"
        if not target.is_file() or target.read_bytes() != harness:
            tmp = home / "import.mjs.tmp"
            tmp.write_bytes(harness)
            tmp.replace(target)
    return home


def profile_options(profile: Profile) -> dict[str, Any]:
    """The reference's explicit options equivalent to a Profile (chunkSize and
    maxChildrenPerNode are turned into its fixedSize chunker and balanced layout by the harness)."""
    return {
        "cidVersion": profile.cid_version,
        "rawLeaves": profile.raw_leaves,
        "chunkSize": profile.chunk_size,
        "maxChildrenPerNode": profile.max_links,
        "shardSplitThresholdBytes": profile.shard_split_threshold,
        "shardSplitStrategy": profile.shard_split_strategy,
        "shardFanoutBits": profile.shard_fanout_bits,
        "reduceSingleLeafToSelf": profile.reduce_single_leaf_to_self,
        "blockWriteConcurrency": profile.write_batch,
    }


def reference_import(path: Path, profile: str | Profile, car_out: Path | None = None, *,
                     order_out: Path | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Import ``path`` with the reference; returns ``{"root": CID text, "blocks": n, "bytes": n,
    "car": Path | None}``. A profile name is passed as the importer's ``profile`` option; a
    Profile that is not one of :data:`PROFILES` is passed as explicit options."""
    home = ensure_installed()
    cmd = ["node", str(home / "import.mjs")]
    if isinstance(profile, str):
        if profile not in PROFILES:
            raise JSRefError(f"unknown profile {profile!r}")
        cmd += ["--profile", profile]
    elif PROFILES.get(profile.name) == profile:
        cmd += ["--profile", profile.name]
    else:
        cmd += ["--options", json.dumps(profile_options(profile))]
    if car_out is not None:
        cmd += ["--car", str(car_out)]
    if order_out is not None:
        cmd += ["--order", str(order_out)]
    cmd.append(str(path))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise JSRefError(f"reference import of {path} failed:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result["car"] = Path(car_out) if car_out is not None else None
    return result
