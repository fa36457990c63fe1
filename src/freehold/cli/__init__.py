"""The ``freehold`` command line. Talks only to :class:`freehold.vault.Vault`.

``common`` holds the Typer app and what the commands share; ``data`` and ``admin`` register the
commands on it."""

from __future__ import annotations

import os

import typer

from .. import __version__
from ..console import (
    catch_interrupts,
    err,
    hard_exit,
    interrupted,
    interrupted_line,
    setup_logging,
    tune_gc,
    tune_malloc,
)
from ..errors import FreeholdError
from . import admin, care, data, publishing, sharing  # noqa: F401  (importing them registers their commands)
from .common import JsonOpt, app, report

__all__ = ["app", "main"]

INTERRUPTED = 130  # 128 + SIGINT, as shells report it


@app.command()
def version(as_json: JsonOpt = False) -> None:
    """Print the version."""
    report(as_json, {"version": __version__}, __version__)


def main() -> None:
    """The ``freehold`` console command. Ends the process (``_exit``): call ``app`` to embed."""
    tune_malloc()
    tune_gc()
    setup_logging()
    catch_interrupts()
    hard_exit(_run())


def _say(line: str) -> None:
    err.print(line, markup=False, highlight=False)


def _run() -> int:
    try:
        rc = app(standalone_mode=False)
    except (typer.Abort, KeyboardInterrupt):  # Ctrl-C (or Ctrl-D at a prompt)
        return _interrupted()
    except BaseException as exc:
        if interrupted() and not isinstance(exc, SystemExit):  # raised while unwinding from Ctrl-C
            return _interrupted()
        return _failed(exc)
    if interrupted() and rc == INTERRUPTED:  # Typer returns 130 for a KeyboardInterrupt, silently
        return _interrupted()
    return rc if isinstance(rc, int) else 0


def _interrupted() -> int:
    _say(interrupted_line())
    return INTERRUPTED


def _failed(exc: BaseException) -> int:
    if isinstance(exc, FreeholdError):
        _say(f"freehold: error: {exc.message}")
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    if isinstance(exc, typer.Exit):
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    if isinstance(exc, OSError):  # the local machine refused (disk full, permissions): not a bug
        where = f": {exc.filename}" if exc.filename else ""
        _say(f"freehold: error: {exc.strerror or exc}{where}")
        return 1
    if not isinstance(exc, Exception):  # SystemExit and the like: as Python would
        raise exc
    if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
        return _usage_error(exc)
    if os.environ.get("FREEHOLD_DEBUG"):
        raise exc
    _say(f"freehold: internal error: {type(exc).__name__}: {exc} (set FREEHOLD_DEBUG=1 for details)")
    return 70


def _usage_error(exc: Exception) -> int:
    """click's usage errors as one line: ``freehold: error: <message> (see 'freehold <cmd> --help')``.
    A command group run without a command still prints its help."""
    code = getattr(exc, "exit_code", 2)
    code = code if isinstance(code, int) else 2
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        return code
    names = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None and ctx.parent is not None:  # the root's name is the program's: left out
        names.append(ctx.info_name)
        ctx = ctx.parent
    command = " ".join(["freehold", *reversed(names)])
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    message = message.strip().rstrip(".")
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    _say(f"freehold: error: {message} (see '{command} --help')")
    return code
