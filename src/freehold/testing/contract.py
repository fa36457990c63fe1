"""The contract every Freehold provider must honour, as a reusable pytest suite.

Subclass :class:`ProviderContract` in a test module under a ``Test*`` name and
implement :meth:`ProviderContract.make_provider`; pytest then runs every test below
against that provider::

    from freehold.testing.contract import ProviderContract

    class TestMyProvider(ProviderContract):
        def make_provider(self, request):
            tmp = request.getfixturevalue("tmp_path")
            return MyProvider(tempfile.mkdtemp(dir=tmp))

Each test gets a fresh provider from ``make_provider`` and expects it to start empty
(use a fresh directory, bucket or key prefix per call: one test, ``test_close``, calls it
twice). After the test,
:meth:`ProviderContract.cleanup` deletes whatever it left behind. Override
``secret_values`` to list strings (keys, passwords) that must never appear in the
provider's ``info``, ``repr`` or error messages.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..errors import FreeholdError, ObjectNotFound, UsageError
from ..providers.base import Capabilities, Provider, overlapping

__all__ = ["ProviderContract"]


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


class ProviderContract:
    """Tests of the :class:`freehold.providers.base.Provider` protocol."""

    #: Size of the "large" round-trip object; a few MiB catches multipart and pooling bugs.
    large_size: int = 5 * 1024 * 1024
    #: Threads and objects per thread of the concurrency test.
    threads: int = 8
    objects_per_thread: int = 4
    #: Names raced for, one after the other, by ``threads`` concurrent put_new calls each.
    put_new_races: int = 5

    # -- hooks for subclasses ---------------------------------------------------------------------

    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        """Return a new, empty provider. ``request`` gives access to other fixtures."""
        raise NotImplementedError("subclasses of ProviderContract implement make_provider()")

    def secret_values(self) -> list[str]:
        """Strings that must never show in ``info``, ``repr`` or error messages."""
        return []

    def cleanup(self, provider: Provider) -> None:
        """Delete whatever a test left in the provider."""
        for name, _ in list(provider.list()):
            provider.delete(name)

    @pytest.fixture
    def provider(self, request: pytest.FixtureRequest) -> Iterator[Provider]:
        p = self.make_provider(request)
        yield p
        self.cleanup(p)

    # -- helpers ----------------------------------------------------------------------------------

    def _assert_clean_message(self, exc: BaseException) -> None:
        text = str(exc)
        assert text and "\n" not in text, f"error message must be one line: {text!r}"
        for secret in self.secret_values():
            if secret:
                assert secret not in text, "error message leaks a secret"

    # -- the protocol itself ----------------------------------------------------------------------

    def test_is_a_provider(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert provider.info.url

    def test_starts_empty(self, provider: Provider) -> None:
        assert list(provider.list()) == []

    @pytest.mark.parametrize("size", [0, 1, 4097])
    def test_round_trip_small(self, provider: Provider, size: int) -> None:
        data = _payload(size, size)
        provider.put(f"obj/{size}", data)
        assert provider.get(f"obj/{size}") == data
        assert provider.head(f"obj/{size}") == size

    def test_round_trip_large(self, provider: Provider) -> None:
        data = _payload(self.large_size, 7)
        provider.put("big", data)
        assert provider.head("big") == len(data)
        assert provider.get("big") == data

    def test_put_accepts_memoryview(self, provider: Provider) -> None:
        buf = bytearray(_payload(1000, 3))
        provider.put("mv", memoryview(buf)[100:600])
        assert provider.get("mv") == bytes(buf[100:600])

    def test_put_accepts_parts(self, provider: Provider) -> None:
        head, body = b"header:", bytearray(_payload(3000, 4))
        provider.put("parts", [head, memoryview(body)[:2000], bytearray(b"tail")])
        assert provider.get("parts") == head + bytes(body[:2000]) + b"tail"
        provider.put("one-part", [b"only"])
        assert provider.get("one-part") == b"only"
        provider.put("no-parts", [])
        assert provider.get("no-parts") == b""
        assert provider.head("no-parts") == 0

    def test_get_missing(self, provider: Provider) -> None:
        with pytest.raises(ObjectNotFound) as info:
            provider.get("no/such/object")
        self._assert_clean_message(info.value)
        with pytest.raises(ObjectNotFound):
            provider.get("no/such/object", 0, 10)

    def test_ranged_get(self, provider: Provider) -> None:
        data = _payload(1000, 11)
        provider.put("r", data)
        assert provider.get("r", 0, 1) == data[:1]
        assert provider.get("r", 10, 20) == data[10:20]
        assert provider.get("r", 999, 1000) == data[999:]
        assert provider.get("r", 0, 1000) == data

    def test_ranged_get_start_only(self, provider: Provider) -> None:
        data = _payload(1000, 12)
        provider.put("r", data)
        assert provider.get("r", 0) == data
        assert provider.get("r", 500) == data[500:]
        assert provider.get("r", 999) == data[999:]

    def test_ranged_get_end_only(self, provider: Provider) -> None:
        data = _payload(1000, 13)
        provider.put("r", data)
        assert provider.get("r", None, 10) == data[:10]

    def test_ranged_get_past_end_is_truncated(self, provider: Provider) -> None:
        data = _payload(100, 14)
        provider.put("r", data)
        assert provider.get("r", 50, 10_000) == data[50:]
        assert provider.get("r", 100) == b""
        assert provider.get("r", 150, 200) == b""
        assert provider.get("r", 150) == b""

    def test_ranged_get_empty_range(self, provider: Provider) -> None:
        provider.put("r", b"abcdef")
        assert provider.get("r", 3, 3) == b""
        provider.put("empty", b"")
        assert provider.get("empty", 0, 10) == b""
        assert provider.get("empty", 0) == b""

    def test_head(self, provider: Provider) -> None:
        assert provider.head("h/absent") is None
        provider.put("h/present", b"12345")
        assert provider.head("h/present") == 5
        assert provider.head("h/absent") is None

    def test_prefix_of_names_is_not_an_object(self, provider: Provider) -> None:
        # "h" is only the start of "h/present"; file-backed providers must not mistake it
        # (their directory) for an object.
        provider.put("h/present", b"12345")
        assert provider.head("h") is None
        with pytest.raises(ObjectNotFound):
            provider.get("h")
        provider.delete("h")
        assert provider.get("h/present") == b"12345"

    def test_list_with_prefix_and_nesting(self, provider: Provider) -> None:
        objects = {"a/1": b"x", "a/b/2": b"xx", "a/b/c/3": b"xxx", "ab": b"xxxx", "b/4": b"", "top": b"t"}
        for name, data in objects.items():
            provider.put(name, data)
        everything = list(provider.list())
        assert len(everything) == len(set(everything)), "list() repeats names"
        assert dict(everything) == {name: len(data) for name, data in objects.items()}
        assert set(dict(provider.list("a/"))) == {"a/1", "a/b/2", "a/b/c/3"}
        assert set(dict(provider.list("a"))) == {"a/1", "a/b/2", "a/b/c/3", "ab"}
        assert set(dict(provider.list("a/b/"))) == {"a/b/2", "a/b/c/3"}
        assert set(dict(provider.list("a/b/c/3"))) == {"a/b/c/3"}
        assert list(provider.list("zzz/")) == []
        assert list(provider.list("a/zz")) == []

    def test_list_many(self, provider: Provider) -> None:
        names = {f"many/{i:04d}": i % 7 for i in range(120)}
        for name, size in names.items():
            provider.put(name, b"z" * size)
        assert dict(provider.list("many/")) == names

    def test_overwrite_replaces_whole_object(self, provider: Provider) -> None:
        provider.put("o", _payload(5000, 1))
        short = _payload(10, 2)
        provider.put("o", short)
        assert provider.get("o") == short
        assert provider.head("o") == 10
        assert dict(provider.list()) == {"o": 10}
        longer = _payload(7000, 3)
        provider.put("o", longer)
        assert provider.get("o") == longer

    def test_delete_is_idempotent(self, provider: Provider) -> None:
        provider.delete("d/never-existed")
        provider.put("d/x", b"data")
        provider.put("d/y", b"other")
        provider.delete("d/x")
        assert provider.head("d/x") is None
        with pytest.raises(ObjectNotFound):
            provider.get("d/x")
        assert dict(provider.list()) == {"d/y": 5}
        provider.delete("d/x")
        assert provider.get("d/y") == b"other"

    def test_put_after_delete(self, provider: Provider) -> None:
        provider.put("again", b"one")
        provider.delete("again")
        provider.put("again", b"two!")
        assert provider.get("again") == b"two!"

    @pytest.mark.parametrize("name", ["", "/abs", "../up", "a/../b", "..", "a//b", "a/./b", "dir/"])
    def test_invalid_names_rejected(self, provider: Provider, name: str) -> None:
        with pytest.raises(UsageError):
            provider.put(name, b"x")
        with pytest.raises(UsageError):
            provider.put_new(name, b"x")
        with pytest.raises(UsageError):
            provider.get(name)
        with pytest.raises(UsageError):
            provider.head(name)
        with pytest.raises(UsageError):
            provider.delete(name)

    def test_ordinary_names_accepted(self, provider: Provider) -> None:
        names = ["plain", "with-dash_and.dot", "deep/er/and/deeper/still", "k=v+w,x~y", "UPPER/lower09"]
        for i, name in enumerate(names):
            provider.put(name, bytes([i]) * (i + 1))
        for i, name in enumerate(names):
            assert provider.get(name) == bytes([i]) * (i + 1)
        assert set(dict(provider.list())) == set(names)

    # -- conditional create -----------------------------------------------------------------------

    def test_put_new_creates_when_absent(self, provider: Provider) -> None:
        data = _payload(3000, 21)
        assert provider.put_new("gen/1", data) is True
        assert provider.get("gen/1") == data
        assert provider.head("gen/1") == len(data)
        assert dict(provider.list()) == {"gen/1": len(data)}
        assert provider.put_new("gen/parts", [b"head:", memoryview(bytearray(data))[:100]]) is True
        assert provider.get("gen/parts") == b"head:" + data[:100]
        assert provider.put_new("gen/empty", b"") is True
        assert provider.get("gen/empty") == b""

    def test_put_new_leaves_an_existing_object_alone(self, provider: Provider) -> None:
        provider.put("taken", b"first by put")
        assert provider.put_new("taken", b"second") is False
        assert provider.get("taken") == b"first by put"
        assert provider.put_new("made", b"first by put_new") is True
        assert provider.put_new("made", _payload(10_000, 22)) is False
        assert provider.put_new("made", b"") is False
        assert provider.get("made") == b"first by put_new"
        assert dict(provider.list()) == {"taken": 12, "made": 16}

    def test_put_new_after_delete(self, provider: Provider) -> None:
        assert provider.put_new("again", b"one") is True
        provider.delete("again")
        assert provider.put_new("again", b"two!") is True
        assert provider.get("again") == b"two!"

    def test_put_new_concurrent_has_one_winner(self, provider: Provider) -> None:
        if not provider.capabilities.conditional_put:
            pytest.skip("this provider's put_new is not atomic (capabilities.conditional_put is False)")
        for race in range(self.put_new_races):
            name = f"race/{race}"
            contents = [_payload(2000 + 37 * t, 1000 * race + t) for t in range(self.threads)]
            barrier = threading.Barrier(self.threads)

            def racer(t: int, name: str = name, contents: list[bytes] = contents,
                      barrier: threading.Barrier = barrier) -> bool:
                barrier.wait()
                return provider.put_new(name, contents[t])

            with ThreadPoolExecutor(self.threads) as pool:
                won = list(pool.map(racer, range(self.threads)))
            assert won.count(True) == 1, f"race {race}: {won.count(True)} of {self.threads} put_new won"
            assert provider.get(name) == contents[won.index(True)], "the stored object is not the winner's"
        assert len(dict(provider.list("race/"))) == self.put_new_races

    # -- what the provider says about itself ------------------------------------------------------

    def test_capabilities(self, provider: Provider) -> None:
        caps = provider.capabilities
        assert isinstance(caps, Capabilities)
        assert all(isinstance(v, bool) for v in (caps.conditional_put, caps.ranged_get, caps.atomic_replace))
        assert list(provider.list()) == [], "asking the capabilities left something visible"

    def test_location(self, provider: Provider) -> None:
        loc = provider.location
        assert isinstance(loc, tuple) and len(loc) >= 2 and all(isinstance(part, str) for part in loc)
        assert loc == provider.location and hash(loc) == hash(provider.location)
        assert overlapping(loc, loc)
        provider.put("some/object", b"x")
        assert provider.location == loc, "the location changed with the contents"
        for secret in self.secret_values():
            if secret:
                assert not any(secret in part for part in loc), "the location leaks a secret"

    def test_close(self, request: pytest.FixtureRequest) -> None:
        other = self.make_provider(request)
        other.close()
        other.close()

    def test_info_has_no_secrets(self, provider: Provider) -> None:
        from urllib.parse import urlparse

        parsed = urlparse(provider.info.url)
        assert parsed.scheme
        assert parsed.password is None and "@" not in parsed.netloc
        shown = [provider.info.url, repr(provider), *provider.info.extra.values()]
        for secret in self.secret_values():
            if secret:
                assert not any(secret in text for text in shown), "provider info leaks a secret"

    def test_check_writable(self, provider: Provider) -> None:
        provider.check_writable()
        assert list(provider.list()) == [], "check_writable() left its probe visible"

    def test_concurrent_puts(self, provider: Provider) -> None:
        def work(thread: int) -> None:
            for i in range(self.objects_per_thread):
                name = f"conc/{thread}/{i}"
                provider.put(name, _payload(1000 + thread * 10 + i, thread * 100 + i))

        with ThreadPoolExecutor(self.threads) as pool:
            list(pool.map(work, range(self.threads)))
        listed = dict(provider.list("conc/"))
        assert len(listed) == self.threads * self.objects_per_thread
        for thread in range(self.threads):
            for i in range(self.objects_per_thread):
                data = _payload(1000 + thread * 10 + i, thread * 100 + i)
                assert listed[f"conc/{thread}/{i}"] == len(data)
                assert provider.get(f"conc/{thread}/{i}") == data

    def test_concurrent_overwrites_are_atomic(self, provider: Provider) -> None:
        versions = [bytes([v]) * (20_000 + v) for v in range(6)]
        barrier = threading.Barrier(len(versions))
        seen: list[bytes] = []
        stop = threading.Event()
        provider.put("hot", versions[0])

        def writer(v: int) -> None:
            barrier.wait()
            for _ in range(3):
                provider.put("hot", versions[v])

        def reader() -> None:
            while not stop.is_set():
                seen.append(provider.get("hot"))

        read_thread = threading.Thread(target=reader)
        read_thread.start()
        try:
            with ThreadPoolExecutor(len(versions)) as pool:
                list(pool.map(writer, range(len(versions))))
        finally:
            stop.set()
            read_thread.join()
        assert provider.get("hot") in versions
        assert all(data in versions for data in seen), "a reader saw a partial or mixed object"

    def test_errors_are_freehold_errors(self, provider: Provider) -> None:
        try:
            provider.get("missing/for/sure", 5, 10)
        except FreeholdError as exc:
            self._assert_clean_message(exc)
        else:  # pragma: no cover - the assertion below explains
            pytest.fail("get of a missing object returned instead of raising ObjectNotFound")
