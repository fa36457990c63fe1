"""The ``freehold`` command line. Talks only to :class:`freehold.vault.Vault`.

``common`` holds the Typer app and what the commands share; ``data`` and ``admin`` register the
commands on it."""

from __future__ import annotations

import os

import typer

from .. import __version__
from ..console import err, hard_exit, setup_logging, tune_gc, tune_malloc
from ..errors import FreeholdError
from . import admin, data  # noqa: F401  (importing them registers their commands)
from .common import app, out

__all__ = ["app", "main"]


@app.command()
def version() -> None:
    """Print the version."""
    out.print(__version__)


def main() -> None:
    """The ``freehold`` console command. Ends the process (``_exit``): call ``app`` to embed."""
    tune_malloc()
    tune_gc()
    setup_logging()
    hard_exit(_run())


def _run() -> int:
    try:
        rc = app(standalone_mode=False)
    except FreeholdError as exc:
        err.print(f"freehold: error: {exc.message}", markup=False, highlight=False)
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    except typer.Exit as exc:
        return exc.exit_code if isinstance(exc.exit_code, int) else 1
    except OSError as exc:  # the local machine refused (disk full, permissions): not a bug
        where = f": {exc.filename}" if exc.filename else ""
        err.print(f"freehold: error: {exc.strerror or exc}{where}", markup=False, highlight=False)
        return 1
    except (typer.Abort, KeyboardInterrupt):
        err.print("freehold: interrupted; snapshots already saved are intact")
        return 130
    except Exception as exc:  # a click usage error, or a bug
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # click's usage errors
            exc.show()
            return exc.exit_code if isinstance(exc.exit_code, int) else 1
        if os.environ.get("FREEHOLD_DEBUG"):
            raise
        err.print(f"freehold: internal error: {type(exc).__name__}: {exc} "
                  "(set FREEHOLD_DEBUG=1 for details)", markup=False)
        return 70
    return rc if isinstance(rc, int) else 0
