"""The provider boundary: immutable named objects, nothing more.

A provider knows bytes and names. It never sees plaintext or keys, and it is
untrusted: everything read from it is verified above this layer.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..errors import UsageError

Buffer = bytes | bytearray | memoryview
# Objects may be handed over in parts (e.g. share header + payload) to spare a copy.
Data = Buffer | Sequence[Buffer]
# Where a provider's objects physically are; see Provider.location and overlapping().
Location = tuple[str, ...]


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


@dataclass(frozen=True)
class Capabilities:
    """What a provider can guarantee beyond the basic protocol.

    ``conditional_put``: :meth:`Provider.put_new` is atomic, i.e. of several concurrent
    ``put_new`` calls of one name (from any processes or machines) exactly one returns True.
    When False, ``put_new`` still never overwrites an object it *sees*, but two writers
    racing can both succeed (the last one's bytes stay): do not build exclusion on it.
    ``ranged_get``: ``get`` with a range transfers about the range, not the whole object.
    ``atomic_replace``: ``put`` over an existing object is atomic (old or new, never a mix).
    """

    conditional_put: bool
    ranged_get: bool = True
    atomic_replace: bool = True


# A control character, an empty component (leading, trailing or doubled "/"), "." or "..".
_BAD_NAME = re.compile(r"[\x00-\x1f\x7f]|^/|/$|//|(?:^|/)\.\.?(?:/|$)")


def check_name(name: str) -> None:
    """Raise UsageError unless ``name`` is an object name every provider accepts: non-empty
    printable ASCII, ``/``-separated, no empty, ``.`` or ``..`` component, no leading or
    trailing ``/`` (so the name listed is always exactly the name put)."""
    if not name or not name.isascii() or _BAD_NAME.search(name):
        raise UsageError(f"invalid object name {name!r}")


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def overlapping(a: Location, b: Location) -> bool:
    """Whether two locations share storage: equal, or one nested inside the other.

    A location is ``(scheme, *container, path)``: the scheme and the container parts
    (an S3 endpoint and bucket; nothing for a local directory) must be equal, and then
    one ``/``-separated path must be a prefix of the other on whole components
    (``/d1`` holds ``/d1/x`` but not ``/d10``; an empty S3 prefix holds the whole bucket;
    ``/`` holds every local path). Pure: no file system or network access.
    """
    if a == b:
        return True
    if len(a) < 2 or len(a) != len(b) or a[:-1] != b[:-1]:
        return False
    pa, pb = _components(a[-1]), _components(b[-1])
    short, long = (pa, pb) if len(pa) <= len(pb) else (pb, pa)
    return long[: len(short)] == short


@runtime_checkable
class Provider(Protocol):
    """Key/value object store. Names are ``/``-separated ASCII paths.

    ``put`` must be atomic (a reader sees the whole object or nothing) and durable
    when it returns. ``get`` with ``start``/``end`` reads the half-open byte range
    ``[start, end)``; a range past the end is truncated, as HTTP does.
    Errors are :class:`freehold.errors.ProviderError` subclasses.

    Optional attribute ``inline = True``: the provider's calls are quick local work, so callers
    make them in their own thread instead of on a pool (and do not hedge them). Absent: False.
    Optional method ``clock() -> float | None``: the storage server's current time (POSIX
    seconds), where it has a clock of its own (S3); absent on local directories.
    """

    info: ProviderInfo

    @property
    def capabilities(self) -> Capabilities:
        """What this provider guarantees (see :class:`Capabilities`). May cost one probe of
        the storage the first time it is asked (S3: whether the server honours
        ``If-None-Match``); then a ProviderError can come from here too (and, on Python 3.11,
        from ``isinstance(x, Provider)``, which reads every member)."""
        ...

    @property
    def location(self) -> Location:
        """Canonical key of where the objects physically are, to refuse one storage named
        twice (compare with :func:`overlapping`). Local: ``("file", realpath of the root)``;
        S3: ``("s3", endpoint, bucket, prefix)`` with the endpoint as lowercase
        ``scheme://host:port`` and the prefix without leading, trailing or double slashes.
        No request is made."""
        ...

    def put(self, name: str, data: Data) -> None:
        """Store ``data`` (one buffer, or a sequence of buffers to concatenate) under ``name``.
        The caller reuses the buffers once this returns: keep no reference to them."""
        ...

    def put_new(self, name: str, data: Data) -> bool:
        """Create ``name`` holding ``data`` only if no object of that name exists.

        True when this call created the object; False when an object of that name already
        existed (then nothing is changed). Atomic and durable like :meth:`put`; when
        ``capabilities.conditional_put`` holds, of several concurrent calls from any
        processes exactly one returns True. ``data`` is taken as by :meth:`put`."""
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

    def close(self) -> None:
        """Release what the provider holds (connections); it is not used afterwards.
        Safe to call twice."""
        ...
