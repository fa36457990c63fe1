"""The provider boundary: immutable named objects, nothing more.

A provider knows bytes and names. It never sees plaintext or keys, and it is
untrusted: everything read from it is verified above this layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

Buffer = bytes | bytearray | memoryview
# Objects may be handed over in parts (e.g. share header + payload) to spare a copy.
Data = Buffer | Sequence[Buffer]


def as_parts(data: Data) -> list[memoryview]:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return [memoryview(data)]
    return [memoryview(p) for p in data]


def joined(data: Data) -> bytes:
    parts = as_parts(data)
    return parts[0].tobytes() if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True)
class ProviderInfo:
    """What a provider says about itself. ``url`` never contains credentials."""

    url: str
    jurisdiction: str = ""
    operator: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """Key/value object store. Names are ``/``-separated ASCII paths.

    ``put`` must be atomic (a reader sees the whole object or nothing) and durable
    when it returns. ``get`` with ``start``/``end`` reads the half-open byte range
    ``[start, end)``; a range past the end is truncated, as HTTP does.
    Errors are :class:`freehold.errors.ProviderError` subclasses.
    """

    info: ProviderInfo

    def put(self, name: str, data: Data) -> None:
        """Store ``data`` (one buffer, or a sequence of buffers to concatenate) under ``name``.
        The caller reuses the buffers once this returns: keep no reference to them."""
        ...

    def get(self, name: str, start: int | None = None, end: int | None = None) -> bytes: ...

    def head(self, name: str) -> int | None:
        """Size of the object, or None when absent."""
        ...

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(name, size) of every object whose name starts with ``prefix``."""
        ...

    def delete(self, name: str) -> None: ...

    def check_writable(self) -> None:
        """Raise a ProviderError when the provider cannot take writes now."""
        ...
