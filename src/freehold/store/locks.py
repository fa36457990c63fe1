"""Locks on a quorum of providers (format 1.3, docs/design.md §15a).

A lock is a sealed object ``locks/<32 hex random>`` naming who works on the vault (host, pid,
operation), written to a majority of the providers and refreshed in place every
``REFRESH_EVERY`` seconds by a thread until released. It is stale when not refreshed for
``STALE_AFTER`` seconds, or when its host is this host and its process is gone.

Maintenance commands (prune, repair, drain) take an *exclusive* lock: two of them never run at
once. Backups take a shared lock, which an exclusive one does not refuse: ``prune`` reads the
shared locks to decide whether a backup may have loaded the index it replaces (then it defers
deleting data). Locks are never the only protection (§15a): a hidden or lost lock costs space
or a failed backup, not data.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from .. import formats
from ..crypto import KIND_LOCK, open_sealed, seal
from ..errors import FreeholdError, LockedError
from .clock import age_seconds, utc_stamp
from .replicas import ReplicaSet, Verified

LOCKS_PREFIX = "locks/"
_RELEASED: set[str] = set()   # locks this process released: a copy left on a provider then down is stale
REFRESH_EVERY = 300.0
STALE_AFTER = 1800.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LockInfo:
    name: str
    lock: formats.Lock
    holders: set[str]
    stale: str = ""      # why it is stale ("" when live)

    def describe(self) -> str:
        kind = "exclusive" if self.lock.exclusive else "shared"
        return (f"{self.lock.op} on {self.lock.host} (pid {self.lock.pid}, {kind}, since {self.lock.time}, "
                f"refreshed {self.lock.refreshed})")


class Locks:
    def __init__(self, replicas: ReplicaSet, key: bytes, quorum: int, host: str | None = None) -> None:
        self.replicas = replicas
        self.key = key
        self.quorum = quorum
        self.host = host or socket.gethostname()

    def _verify(self, name: str):  # type: ignore[no-untyped-def]
        def verify(env: bytes) -> formats.Lock:
            return formats.decode(open_sealed(self.key, KIND_LOCK, name.encode(), env, "lock"), formats.Lock, "lock")
        return verify

    def list(self, now: datetime | None = None) -> list[LockInfo]:
        """Every lock that verifies on some reachable provider, newest refresh of each."""
        now = now or datetime.now(UTC)
        listing = self.replicas.listing(LOCKS_PREFIX)
        out = []
        for name in listing.names:
            best: formats.Lock | None = None
            for got in self.replicas.read_each(name, self._verify(name)).values():
                if isinstance(got, Verified) and (best is None or got.value.refreshed > best.refreshed):
                    best = got.value
            if best is None:
                continue  # verifies nowhere: not a lock of this vault
            out.append(LockInfo(name, best, listing.held[name], self._stale(name, best, now)))
        return out

    def _stale(self, name: str, lock: formats.Lock, now: datetime) -> str:
        age = age_seconds(lock.refreshed, now)
        if age == float("inf"):
            return "unreadable time"
        if age > STALE_AFTER:
            return f"not refreshed for {int(age // 60)} minutes"
        if lock.host == self.host and not _alive(lock.pid):
            return f"process {lock.pid} is gone"
        if lock.host == self.host and lock.pid == os.getpid() and name in _RELEASED:
            return "released (a copy left on a provider that was down)"
        return ""

    def acquire(self, op: str, *, exclusive: bool) -> Held:
        """Write a lock, then look at the others: an exclusive lock is refused (LockedError) while
        another live exclusive lock exists; a shared one never is."""
        name = LOCKS_PREFIX + secrets.token_hex(16)
        t = utc_stamp(precise=True)
        lock = formats.Lock(v=formats.FORMAT_VERSION, host=self.host, pid=os.getpid(), op=op, time=t,
                            refreshed=t, exclusive=exclusive)
        held = Held(self, name, lock)
        held.write()
        if exclusive:
            others = [i for i in self.list() if i.name != name and not i.stale and i.lock.exclusive]
            if others:
                held.release()
                raise LockedError(f"the vault is locked by {others[0].describe()}; if that command is no "
                                  "longer running, 'freehold unlock' removes its lock")
        held.start()
        return held

    def others(self, held: Held | None) -> list[LockInfo]:
        """Live locks other than ``held``."""
        return [i for i in self.list() if not i.stale and (held is None or i.name != held.name)]

    def remove(self, *, all_locks: bool = False) -> list[LockInfo]:
        """Delete stale locks (``all_locks``: every lock). Returns what was removed."""
        removed = []
        for info in self.list():
            if info.stale or all_locks:
                self.replicas.delete_each(info.name, sorted(info.holders))
                removed.append(info)
        return removed


class Held:
    """A lock this process holds: refreshed by a daemon thread, deleted on release."""

    def __init__(self, locks: Locks, name: str, lock: formats.Lock) -> None:
        self.locks = locks
        self.name = name
        self.lock = lock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write(self) -> None:
        env = seal(self.locks.key, KIND_LOCK, self.name.encode(), formats.encode(self.lock))
        self.locks.replicas.put_all(self.name, env, quorum=self.locks.quorum)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._refresh, name="freehold-lock", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self.lock = formats.Lock(**{**{f: getattr(self.lock, f) for f in self.lock.__struct_fields__},
                                        "refreshed": utc_stamp(precise=True)})
            try:
                self.write()
            except FreeholdError as exc:
                self.locks.replicas.session.warn(f"cannot refresh the lock: {exc}")

    def release(self) -> None:
        _RELEASED.add(self.name)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.locks.replicas.delete_each(self.name)

    def __enter__(self) -> Held:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clock_skew(replicas: ReplicaSet) -> tuple[float, str]:
    """The largest difference between this machine's clock and a provider's that has one
    (seconds), and which provider; (0, "") when none has a clock of its own."""
    def read(prov: object) -> float | None:
        clock = getattr(prov, "clock", None)
        if clock is None:
            return None
        before = time.time()
        theirs = clock()
        after = time.time()
        return None if theirs is None else theirs - (before + after) / 2
    worst, who = 0.0, ""
    for pid, got in replicas.gather(read).items():  # type: ignore[arg-type]
        if isinstance(got, float) and abs(got) > abs(worst):
            worst, who = got, pid
    return worst, who
