"""Per-operation state: made by the Vault for one operation, dropped after it.

Which providers were found down or slow, whether writes may be degraded, what was read and
which replicas missed a write belong to one operation. Kept on a long-lived object they leak
into the next call (a key added after a degraded backup reached only the providers that were up
then); so every component that needs them is handed the operation's ``Session``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

log = logging.getLogger("freehold")

HEDGE_AFTER = 2.0   # seconds a provider may take before the next one is asked too


@dataclass
class Session:
    degraded: bool = False               # writes that reach k+1 providers but not all succeed
    hedge_after: float = HEDGE_AFTER
    down: set[str] = field(default_factory=set)    # failed a probe or a write in this operation
    slow: set[str] = field(default_factory=set)    # missed a hedge deadline in this operation
    fallback_reads: int = 0              # share reads beyond the fast path
    bytes_fetched: int = 0
    missed: dict[str, set[str]] = field(default_factory=dict)  # replicated object -> providers without it
    warnings: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def read(self, n: int, fallback: bool = False) -> None:
        with self._lock:
            self.bytes_fetched += n
            self.fallback_reads += int(fallback)

    def warn(self, message: str) -> None:
        """A warning for the user, logged once per operation."""
        with self._lock:
            if message in self.warnings:
                return
            self.warnings.append(message)
        log.warning("%s", message)

    def miss(self, name: str, pids: set[str] | list[str]) -> None:
        if pids:
            with self._lock:
                self.missed.setdefault(name, set()).update(pids)

    def mark_slow(self, pids: set[str] | list[str]) -> None:
        with self._lock:
            self.slow.update(pids)
