"""A fault-injecting provider wrapper for failure tests.

:class:`FaultyProvider` wraps any provider and, on demand, makes calls fail with
:class:`~freehold.errors.ProviderUnavailable`, corrupts or truncates what ``get``
returns, or slows calls down. Random faults come from a seeded generator, so a test
that fails once fails the same way every time (with one thread). It also counts
calls and bytes, so a test can assert how much a restore really read::

    faulty = FaultyProvider(LocalProvider(tmp_path), seed=1, fail={"get": 0.2})
    faulty.fail_next("put", 2)        # exactly the next two puts fail
    faulty.down = True                # everything fails until set back
    assert faulty.bytes_read <= 1.1 * restored_bytes

``put_new`` is counted and faulted like ``put`` (under its own name). ``capabilities``,
``location`` and ``close`` go straight to ``inner``, never faulted nor counted.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping

from ..errors import ProviderUnavailable
from ..providers.base import Capabilities, Data, Location, Provider, ProviderInfo, as_parts

__all__ = ["METHODS", "FaultyProvider"]

METHODS = ("put", "put_new", "get", "head", "list", "delete", "check_writable")


class FaultyProvider:
    """Wraps ``inner``; every knob can be changed between calls.

    ``fail``: probability per method name (or one number for all) that a call raises
    ProviderUnavailable before reaching ``inner``. ``corrupt``: probability that a
    non-empty ``get`` result has one byte flipped. ``truncate``: probability that a
    non-empty ``get`` result loses its tail. ``delay``: seconds slept before every call
    (or per method name). ``down``: every call fails.
    """

    def __init__(self, inner: Provider, *, seed: int = 0,
                 fail: float | Mapping[str, float] = 0.0, corrupt: float = 0.0, truncate: float = 0.0,
                 delay: float | Mapping[str, float] = 0.0, down: bool = False) -> None:
        self.inner = inner
        self.info: ProviderInfo = inner.info
        self.fail: dict[str, float] = self._per_method(fail, "fail")
        self.delay: dict[str, float] = self._per_method(delay, "delay")
        self.corrupt = corrupt
        self.truncate = truncate
        self.down = down
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._scheduled: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.corrupted = 0
        self.truncated = 0
        self.bytes_read = 0
        self.bytes_written = 0

    @staticmethod
    def _per_method(value: float | Mapping[str, float], what: str) -> dict[str, float]:
        if isinstance(value, int | float):
            return dict.fromkeys(METHODS, float(value))
        unknown = set(value) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown method(s) in {what}: {sorted(unknown)}")
        return {m: float(value.get(m, 0.0)) for m in METHODS}

    def __repr__(self) -> str:
        return f"FaultyProvider({self.inner!r})"

    # -- controls ---------------------------------------------------------------------------------

    def fail_next(self, method: str, count: int = 1) -> None:
        """Make exactly the next ``count`` calls of ``method`` fail."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}")
        with self._lock:
            self._scheduled[method] += count

    def reset_counters(self) -> None:
        with self._lock:
            self.calls.clear()
            self.failures.clear()
            self.corrupted = self.truncated = self.bytes_read = self.bytes_written = 0

    # -- the fault machinery ----------------------------------------------------------------------

    def _enter(self, method: str, name: str = "") -> None:
        with self._lock:
            self.calls[method] += 1
            failing = self.down
            if not failing and self._scheduled[method] > 0:
                self._scheduled[method] -= 1
                failing = True
            rate = self.fail[method]
            if not failing and rate > 0 and self._rng.random() < rate:
                failing = True
            if failing:
                self.failures[method] += 1
            pause = self.delay[method]
        if pause > 0:
            time.sleep(pause)
        if failing:
            target = f" {name}" if name else ""
            state = "down" if self.down else "failing (injected)"
            raise ProviderUnavailable(f"{method}{target} on {self.info.url}: provider {state}")

    def _damage(self, data: bytes) -> bytes:
        if not data:
            return data
        with self._lock:
            if self.truncate > 0 and self._rng.random() < self.truncate:
                self.truncated += 1
                data = data[: self._rng.randrange(len(data))]
            if data and self.corrupt > 0 and self._rng.random() < self.corrupt:
                self.corrupted += 1
                at = self._rng.randrange(len(data))
                flip = 1 << self._rng.randrange(8)
                data = data[:at] + bytes([data[at] ^ flip]) + data[at + 1:]
            self.bytes_read += len(data)
        return data

    # -- the Provider protocol --------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    @property
    def location(self) -> Location:
        return self.inner.location

    def close(self) -> None:
        self.inner.close()

    def put(self, name: str, data: Data) -> None:
        self._enter("put", name)
        self.inner.put(name, data)
        self._wrote(data)

    def put_new(self, name: str, data: Data) -> bool:
        """``bytes_written`` grows only when the object was created."""
        self._enter("put_new", name)
        created = self.inner.put_new(name, data)
        if created:
            self._wrote(data)
        return created

    def _wrote(self, data: Data) -> None:
        size = sum(part.nbytes for part in as_parts(data))
        with self._lock:
            self.bytes_written += size

    def get(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        self._enter("get", name)
        return self._damage(self.inner.get(name, start, end))

    def head(self, name: str) -> int | None:
        self._enter("head", name)
        return self.inner.head(name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        self._enter("list", prefix)  # fails at the call, not at the first item
        return iter(self.inner.list(prefix))

    def delete(self, name: str) -> None:
        self._enter("delete", name)
        self.inner.delete(name)

    def check_writable(self) -> None:
        self._enter("check_writable")
        self.inner.check_writable()
