"""What the command line shows on the terminal besides its results: progress (a bar on a
terminal, warning lines elsewhere), warnings once each, the one line an interrupted command
leaves (what was kept), and the process tuning of a short-lived command (docs/performance.md)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

from rich.console import Console

from .progress import NullProgress

err = Console(stderr=True, highlight=False, soft_wrap=True)

PROGRESS_EVERY = 0.05  # seconds between progress bar updates


class Counts:
    """What a job has finished so far, for the line an interruption prints."""

    files_done = 0     # files complete under their final names (restore)
    bytes_done = 0

    def file_done(self, files: int = 1) -> None:
        self.files_done += files


class BarProgress(Counts):
    """Adapts the vault's progress callbacks to a rich progress bar on stderr, shown once work starts."""

    def __init__(self, label: str) -> None:
        from rich.progress import (  # only where a bar is shown: 10 ms of every command otherwise
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(), console=err)
        self.label = label
        self.task: Any = None
        self.wants_total = err.is_terminal  # a total is worth a second walk only for a live bar
        self._pending = 0
        self._last = 0.0

    def scanned(self, files: int, size: int) -> None:
        if self.task is None:
            self.bar.start()
            # Restores always know their total; backups count it only for a live bar (wants_total).
            self.task = self.bar.add_task(self.label, total=size if size or self.wants_total else None)

    def advance(self, size: int) -> None:
        # Called once per file or chunk; rich's bookkeeping per call cost ~0.5 CPU s for 20,000
        # small files, so updates are passed on at most every PROGRESS_EVERY seconds.
        self._pending += size
        self.bytes_done += size
        now = time.monotonic()
        if self.task is not None and now - self._last >= PROGRESS_EVERY:
            self.bar.advance(self.task, self._pending)
            self._pending = 0
            self._last = now

    def warn(self, message: str) -> None:
        self.bar.console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)

    def stop(self) -> None:
        if self.task is not None:
            if self._pending:
                self.bar.advance(self.task, self._pending)
                self._pending = 0
            self.bar.stop()


class QuietProgress(Counts, NullProgress):
    """--json: nothing shown; only counted."""

    def advance(self, size: int) -> None:
        self.bytes_done += size

    def stop(self) -> None:
        pass


class LineProgress(QuietProgress):
    """Progress where stderr is not a terminal (a log, a pipe): no bar to redraw, warnings as lines."""

    def warn(self, message: str) -> None:
        err.print(f"warning: {message}", markup=False, highlight=False)


@contextmanager
def progress_for(label: str, quiet: bool) -> Iterator[BarProgress | QuietProgress]:
    """The progress of a ``backup`` or ``restore`` job; while it runs, an interruption says
    what the job kept (``interrupted_line``)."""
    prog = QuietProgress() if quiet else BarProgress(label) if err.is_terminal else LineProgress()
    _interrupt.note = lambda: _kept(label, prog)
    try:
        yield prog
    finally:
        prog.stop()
    _interrupt.note = None  # finished: nothing particular to say any more


def _kept(label: str, prog: Counts) -> str:
    if label == "backup":
        return ("no new snapshot was saved; earlier snapshots are intact (data already stored is reused by "
                "the next backup)")
    if label == "restore":
        n = prog.files_done
        files = "1 file restored so far is" if n == 1 else f"{n} files restored so far are"
        return f"{files} complete; run the same restore again to finish"
    if label in ("repair", "drain", "replace", "prune"):
        return f"nothing is lost: what the {label} wrote is kept; run it again to finish"
    return "snapshots already saved are intact"


class _Interrupt:
    seen = False
    note: Callable[[], str] | None = None


_interrupt = _Interrupt()


def catch_interrupts() -> None:
    """SIGINT is recorded before it becomes KeyboardInterrupt. The record is what tells an
    interrupted command: Typer catches KeyboardInterrupt itself and turns it into a silent
    exit code 130 (typer.core._main), so the exception never reaches the command line's
    handler. A SIGINT the parent ignores (a background job) stays ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        _interrupt.seen = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)


def interrupted() -> bool:
    return _interrupt.seen


def interrupted_line() -> str:
    """The one line an interrupted command prints: what was kept."""
    note = _interrupt.note() if _interrupt.note is not None else "snapshots already saved are intact"
    return f"freehold: interrupted: {note}"


class OnceHandler(logging.Handler):
    """Prints each distinct warning once, on one line, without a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg not in self.seen:
            self.seen.add(msg)
            err.print(f"warning: {msg}", markup=False, highlight=False)


def setup_logging() -> None:
    logger = logging.getLogger("freehold")
    if not any(isinstance(h, OnceHandler) for h in logger.handlers):
        logger.addHandler(OnceHandler())
    logger.propagate = False


def tune_malloc() -> None:
    """glibc settings for a pipeline whose threads pass 1-20 MiB buffers between them.

    One arena: with an arena per thread glibc keeps freed buffers mapped in each (600 MiB
    backup: 215 MiB peak RSS by default, 167 MiB with one arena). Buffers up to 32 MiB from
    the heap, not fresh mmaps: freshly mapped pages fault and are zeroed on first touch, which
    doubled the cost of filling a pack buffer here. Trimming above 32 MiB free keeps peak RSS
    of a 1 GiB backup at about 200 MiB."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-8, 1)              # M_ARENA_MAX
            libc.mallopt(-3, 32 * 1024 * 1024)   # M_MMAP_THRESHOLD (the maximum allowed)
            libc.mallopt(-1, 32 * 1024 * 1024)   # M_TRIM_THRESHOLD
        except (OSError, AttributeError):
            pass


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a short-lived command that allocates many long-lived objects
    (index entries, tree nodes, the restore plan). With Python's default threshold of 700
    allocations, a 20,000-file restore ran 305 collections for 65 ms; with 10,000 and the index
    frozen after loading (``cli._open``), 73 for 19 ms. Cycles are still collected."""
    gc.set_threshold(10_000, 10, 10)


def hard_exit(code: int) -> NoReturn:
    """Ends the process without tearing the interpreter down object by object (40 ms of every
    command went to freeing a loaded index at exit). Everything a command writes is written,
    fsynced where it must be, and closed before the command returns; only Python's own stream
    buffers and log handlers are left to flush, and they are flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (freehold ... | head): nothing to tell
            pass
    os._exit(code)


