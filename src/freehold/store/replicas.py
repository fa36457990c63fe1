"""Replicated objects: written to every provider, read from whichever copy verifies.

Config, key objects, index and snapshot objects live on every provider. Any provider may have
lost, damaged, replaced or planted a copy, so nothing here trusts who answers first:

- a read asks one provider, and the next as soon as an answer fails verification or is late
  (``Session.hedge_after``), until a copy verifies; bad copies are reported once, naming the
  provider and the object, and recorded for healing;
- a listing is the union of what every reachable provider lists, with which provider holds
  each name; a name that verifies nowhere is a finding for ``check``, not an error for reads;
- a write succeeds when a quorum of providers took it; the others are recorded as having
  missed it, and the caller says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..errors import FreeholdError, IntegrityError, ObjectNotFound, ProviderError, ProviderUnavailable, QuorumError
from ..providers.base import Data, Provider
from .session import Session

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Verified(Generic[T]):
    value: T          # what ``verify`` made of the bytes
    raw: bytes        # the bytes as stored
    provider: str     # who served them


@dataclass
class Listing:
    """Who holds which name under a prefix, over the providers that answered."""

    held: dict[str, set[str]] = field(default_factory=dict)     # name -> providers listing it
    reachable: set[str] = field(default_factory=set)
    errors: dict[str, FreeholdError] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.held)

    def lacking(self, name: str) -> set[str]:
        return self.reachable - self.held.get(name, set())


class ReplicaSet:
    def __init__(self, providers: Mapping[str, Provider], pool: ThreadPoolExecutor, session: Session) -> None:
        self.providers = providers
        self.pool = pool
        self.session = session

    def ids(self) -> list[str]:
        """Providers to ask, in order: those not known down, the ones not known slow first."""
        up = [pid for pid in self.providers if pid not in self.session.down]
        return sorted(up, key=lambda pid: pid in self.session.slow)

    # ------------------------------------------------------------------ every provider at once

    def gather(self, fn: Callable[[Provider], R], *, enough: int | None = None,
               pids: list[str] | None = None, inline: bool = False) -> dict[str, R | FreeholdError]:
        """``fn`` on every usable provider in parallel: {provider: result or error}. Once
        ``enough`` of them have answered (default: a majority), the rest get ``hedge_after``
        seconds more; those still silent are marked slow and reported as unavailable. A slow
        provider thus costs a hedge delay, never its full timeout. ``inline``: quick reads, made
        in this thread on providers that allow it (writes wait on fsyncs: those go in parallel)."""
        order = pids if pids is not None else self.ids()
        here = [pid for pid in order if inline and _inline(self.providers[pid])]
        jobs: dict[Future[R], str] = {self.pool.submit(fn, self.providers[pid]): pid
                                      for pid in order if pid not in here}
        out: dict[str, R | FreeholdError] = {}
        for pid in here:  # local work: cheaper in this thread than handed to one (GIL hand-offs)
            try:
                out[pid] = fn(self.providers[pid])
            except FreeholdError as exc:
                out[pid] = exc
        pending = set(jobs)
        need = len(order) // 2 + 1 if enough is None else min(enough, len(order))
        if len(out) >= need:
            deadline: float | None = time.monotonic() + self.session.hedge_after
        else:
            deadline = None
        while pending:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
            if not done:
                break
            for job in done:
                out[jobs[job]] = _outcome(job)
            if deadline is None and len(out) >= need:
                deadline = time.monotonic() + self.session.hedge_after
        late = [jobs[job] for job in pending]
        if late:
            self.session.mark_slow(late)
            for pid in late:
                out[pid] = ProviderUnavailable(f"provider {pid} did not answer within "
                                               f"{self.session.hedge_after:g} s")
        return out

    def listing(self, prefix: str) -> Listing:
        got = self.gather(lambda p: [name for name, _ in p.list(prefix)], inline=True)
        out = Listing()
        for pid, result in got.items():
            if isinstance(result, FreeholdError):
                out.errors[pid] = result
                continue
            out.reachable.add(pid)
            for name in result:
                out.held.setdefault(name, set()).add(pid)
        if not out.reachable and out.errors:
            pid, exc = next(iter(out.errors.items()))
            raise _named(pid, exc)
        return out

    # ------------------------------------------------------------------ reads

    def newest(self, name: str, verify: Callable[[bytes], T], rank: Callable[[T], Any]) -> T:
        """Of an object replaced in place (grant objects, the writers' config, the maintenance
        record), the copy that verifies and ranks highest among the providers that answer (a
        majority, the others within the hedge delay): a provider replaying an older copy is
        outvoted. Fails with the first refusal if no copy verifies, ObjectNotFound if none exists."""
        def one(prov: Provider) -> T:
            return verify(prov.get(name))
        got = self.gather(one)
        good = [v for v in got.values() if not isinstance(v, FreeholdError)]
        if good:
            return max(good, key=rank)
        bad = [e for e in got.values() if isinstance(e, FreeholdError) and not isinstance(e, ObjectNotFound)]
        if bad:
            raise bad[0]
        raise ObjectNotFound(f"{name} is on no reachable provider")

    def read(self, name: str, verify: Callable[[bytes], T], *, pids: list[str] | None = None) -> Verified[T]:
        """The first copy of ``name`` that verifies. A provider that fails, serves a copy that
        does not verify, or is late is followed by the next one; a late one still counts if it
        answers first. Fails only when no usable provider holds a valid copy."""
        order = iter(pids if pids is not None else self.ids())
        pending: dict[Future[tuple[T, bytes]], str] = {}
        failures: dict[str, FreeholdError] = {}

        def launch() -> bool:
            pid = next(order, None)
            if pid is None:
                return False
            prov = self.providers[pid]
            job: Future[tuple[T, bytes]] = Future()
            if _inline(prov) and not pending:  # nothing to race: local work in this thread
                try:
                    job.set_result(_get_verified(prov, name, verify))
                except FreeholdError as exc:
                    job.set_exception(exc)
            else:
                job = self.pool.submit(_get_verified, prov, name, verify)
            pending[job] = pid
            return True

        launch()
        while pending:
            done, _ = wait(pending, timeout=self.session.hedge_after, return_when=FIRST_COMPLETED)
            if not done:
                self.session.mark_slow(set(pending.values()))
                if not launch():
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                else:
                    continue
            for job in done:
                pid = pending.pop(job)
                result = _outcome(job)
                if isinstance(result, FreeholdError):
                    failures[pid] = result
                    launch()
                    continue
                for bad, exc in failures.items():
                    if not isinstance(exc, ObjectNotFound | ProviderUnavailable):
                        self.session.warn(f"provider {bad}: {name}: {exc}; another provider's copy was used")
                    if not isinstance(exc, ProviderUnavailable):
                        self.session.miss(name, [bad])
                value, raw = result
                return Verified(value, raw, pid)
        raise _read_failure(name, failures)

    def read_each(self, name: str, verify: Callable[[bytes], T]) -> dict[str, Verified[T] | FreeholdError]:
        """Every usable provider's copy of ``name``, verified (or the reason it is not)."""
        def one(prov: Provider) -> Verified[T]:
            value, raw = _get_verified(prov, name, verify)
            return Verified(value, raw, "")

        got = self.gather(one, inline=True)
        return {pid: (r if isinstance(r, FreeholdError) else Verified(r.value, r.raw, pid))
                for pid, r in got.items()}

    # ------------------------------------------------------------------ writes

    def put_all(self, name: str, data: Data, *, quorum: int, pids: list[str] | None = None) -> list[str]:
        """Write to every usable provider (or ``pids``); succeeds when at least ``quorum`` took
        it. Providers that failed are marked down for this operation and recorded as having
        missed ``name``. Returns the providers that hold it now."""
        order = pids if pids is not None else self.ids()
        got = self.gather(lambda p: p.put(name, data), pids=order, enough=len(order))
        written = [pid for pid in order if not isinstance(got.get(pid), FreeholdError)]
        failed = {pid: r for pid, r in got.items() if isinstance(r, FreeholdError)}
        skipped = [pid for pid in self.providers if pid not in order]
        if len(written) < quorum:
            raise _quorum_failure(name, written, failed, quorum, skipped)
        self.session.down.update(failed)
        self.session.miss(name, [*failed, *skipped])
        return written

    def put_new_each(self, name: str, data: Data, pids: list[str] | None = None) -> dict[str, bool | FreeholdError]:
        """Create-if-absent on every usable provider: {provider: created, or the error}."""
        order = pids if pids is not None else self.ids()
        return self.gather(lambda p: p.put_new(name, data), pids=order, enough=len(order))

    def delete_each(self, name: str, pids: list[str] | None = None) -> dict[str, FreeholdError | None]:
        order = pids if pids is not None else self.ids()
        return self.gather(lambda p: p.delete(name), pids=order, enough=len(order))


def _inline(prov: Provider) -> bool:
    """A provider whose calls are quick local work (``inline = True``: a local directory) is asked
    in the calling thread: handing a few stat calls to a thread cost more in GIL hand-offs than the
    calls. Wrappers that add latency or faults do not say so, and are asked on the pool."""
    return getattr(prov, "inline", False) is True


def _get_verified(prov: Provider, name: str, verify: Callable[[bytes], T]) -> tuple[T, bytes]:
    raw = prov.get(name)
    return verify(raw), raw


def _outcome(job: Future[R]) -> R | FreeholdError:
    exc = job.exception()
    if exc is None:
        return job.result()
    if isinstance(exc, FreeholdError):
        return exc
    raise exc


def _named(pid: str, exc: FreeholdError) -> FreeholdError:
    text = str(exc)
    return exc if text.startswith("provider ") else type(exc)(f"provider {pid}: {text}")


def _read_failure(name: str, failures: dict[str, FreeholdError]) -> FreeholdError:
    if not failures:
        return ProviderUnavailable(f"{name}: no provider is reachable")
    if all(isinstance(e, ObjectNotFound) for e in failures.values()):
        return ObjectNotFound(f"{name} is on no reachable provider")
    bad = {pid: e for pid, e in failures.items() if not isinstance(e, ProviderError)}
    if bad:
        detail = "; ".join(f"{pid}: {e}" for pid, e in sorted(bad.items()))
        return IntegrityError(f"no reachable provider holds a valid copy of {name} ({detail})")
    pid, exc = sorted(failures.items())[0]
    return _named(pid, exc)


def _quorum_failure(name: str, written: list[str], failed: dict[str, FreeholdError], quorum: int,
                    skipped: list[str]) -> QuorumError:
    why = "; ".join(f"{pid}: {_named(pid, e)}" for pid, e in sorted(failed.items()))
    down = f"; known down: {', '.join(sorted(skipped))}" if skipped else ""
    return QuorumError(f"{name}: {len(written)} providers took the write, {quorum} are needed"
                       f"{' (' + why + ')' if why else ''}{down}")
