"""Install the suite's npm tools at once, in parallel (``make test`` runs this before pytest):
the IPFS reference importer (``jsref``), js-ipfs on Node 22 (``jsipfs``) and the IPFS clients
(``jsclient``). Each is skipped when its stamp matches; without npm this says so and exits 0 (the
tests that need them skip on that alone)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


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
