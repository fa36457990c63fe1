"""The lifecycle shared by the throwaway servers the tests start (:mod:`.jsipfs`, :mod:`.seaweed`).

:class:`ServerProcess` owns one process in its own session, its log file under ``workdir`` and,
when it made it, the work directory itself. A subclass writes :meth:`~ServerProcess.start`
from :meth:`~ServerProcess._spawn` (the command line is its own) and
:meth:`~ServerProcess._wait_until` (with its own readiness probe), and names its error class,
its log file and the words used in messages in class attributes. A finalizer SIGKILLs and
reaps the process if the object is dropped without :meth:`~ServerProcess.stop`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, ClassVar, Self, TypeVar

__all__ = ["LOOPBACK", "ServerProcess", "free_ports", "tail"]

LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def free_ports(count: int = 1) -> list[int]:
    """Distinct free loopback ports (all held open together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of the last 20,000 bytes of ``path``, or ``(no log)``."""
    try:
        text = path.read_bytes()[-20000:].decode(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup if a server object is dropped without stop()."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class ServerProcess:
    """One local server process under ``workdir``; :meth:`start` again after :meth:`stop`."""

    #: Raised when the process cannot be started or driven.
    error: ClassVar[type[Exception]] = RuntimeError
    #: What the object is called in messages ("node is not running").
    noun: ClassVar[str] = "server"
    #: The program's name in "... exited with code N during startup".
    program: ClassVar[str] = "server"
    #: The log file's name under ``workdir`` (the process's stdout and/or stderr).
    log_name: ClassVar[str] = "server.log"
    #: ``tempfile.mkdtemp`` prefix of a work directory made when none is given.
    workdir_prefix: ClassVar[str] = "freehold-server-"

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, startup_timeout: float = 60.0) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir if workdir is not None else tempfile.mkdtemp(prefix=self.workdir_prefix))
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], ServerProcess] | None = None
        self._paused = False

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- hooks ------------------------------------------------------------------------------------

    def start(self) -> Self:
        raise NotImplementedError

    def _address(self) -> str | None:
        """Where the started server listens, for repr(); None before the first start."""
        return None

    # -- for start() ------------------------------------------------------------------------------

    def _spawn(self, cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None,
               pipe_stdout: bool = False) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in its own session, appending to :attr:`log_path`: stdout and stderr,
        or with ``pipe_stdout`` only stderr (stdout is then a pipe, closed by the subclass)."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _kill()
        out: IO[bytes] | int = subprocess.PIPE if pipe_stdout else self._log
        err: IO[bytes] | int = self._log if pipe_stdout else subprocess.STDOUT
        self._proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                      start_new_session=True)
        self._finalizer = weakref.finalize(self, _reap, self._proc)
        self._paused = False
        return self._proc

    def _wait_until(self, probe: Callable[[], T], timed_out: Callable[[], str]) -> T:
        """Poll ``probe`` every 0.1 s until it returns something true, and return that. Raises
        :attr:`error` with the log tail if the process exits first, or with ``timed_out()``
        after :attr:`startup_timeout` seconds."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                raise self.error(f"{self.program} exited with code {self._proc.returncode} during startup; "
                                 f"log tail:\n{self.log_tail()}")
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise self.error(f"{timed_out()}; log tail:\n{self.log_tail()}")
            time.sleep(0.1)

    # -- lifecycle --------------------------------------------------------------------------------

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds. Safe to call twice."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if self._paused:
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process never sees SIGTERM
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        self._kill()

    def _kill(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # SIGKILL by PID if still alive, and reap
            self._finalizer = None
        self._paused = False
        if self._log is not None:
            self._log.close()
            self._log = None

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted by the kernel, never answered."""
        if not self.running:
            raise self.error(f"{self.noun} is not running")
        assert self._proc is not None
        os.kill(self._proc.pid, signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        if self._proc is not None and self._paused:
            os.kill(self._proc.pid, signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the process and remove the work directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log_path, lines)

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"{type(self).__name__}({self._address() or 'unstarted'}, {state})"
