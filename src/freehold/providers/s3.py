"""S3-compatible object storage provider (AWS S3, SeaweedFS, MinIO, ...).

URL form, with every query parameter optional::

    s3://BUCKET/PREFIX?endpoint=http://127.0.0.1:8333&region=eu-central-1&profile=NAME

Credentials come only from the standard AWS environment variables or from a named
profile in the AWS shared config files; they are never read from the URL nor
written into it. Credential sources that probe the network (EC2 instance metadata,
container roles) are switched off, so a machine without credentials fails at once
with a clear message instead of hanging.

Retries of throttling, 5xx answers, connection resets and timeouts are botocore's
own ("standard" mode). Every botocore error is translated into a
:class:`freehold.errors.ProviderError` here, at the boundary, with a one-line
message that names the bucket and endpoint and never a secret.

``put_new`` is a PUT with ``If-None-Match: *`` (S3's conditional write): the server
answers 412 PreconditionFailed when the key exists. Servers that ignore the header
would overwrite silently, so, except on AWS itself, the first ``put_new`` (or the first
look at ``capabilities``) probes the server once: two conditional PUTs of one probe
key, then a DELETE. A server that accepts the second PUT does not honour the header;
``put_new`` then falls back to HEAD-then-PUT, which never overwrites an object it
sees but is *not* atomic against a concurrent writer, and ``capabilities`` says so
(``conditional_put=False``). SeaweedFS 4.x honours the header. The constructor keyword
``conditional_put=True/False`` states the answer instead of probing.

Tuning knobs (URL query or constructor keywords): ``connect_timeout`` and
``read_timeout`` in seconds, ``attempts`` (total tries per request, including the
first), ``pool`` (HTTP connection pool size) and ``addressing`` (``path`` or
``virtual``; path-style is the default when an endpoint is given).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import random
import re
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse

import boto3
import botocore.exceptions as bexc
import botocore.session
from botocore.config import Config

from ..errors import (
    ObjectNotFound,
    ProviderError,
    ProviderPermission,
    ProviderQuota,
    ProviderUnavailable,
    UsageError,
)
from .base import Capabilities, Data, Location, ProviderInfo, check_name, joined

__all__ = ["S3Provider", "translate_error"]

PROBE_PREFIX = ".freehold-probe-"
MAX_KEY_BYTES = 1024

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_ATTEMPTS = 5
DEFAULT_POOL = 32

# How long a successful bucket check is trusted: HEAD of a missing key answers 404
# with no body whether the key or the whole bucket is missing.
BUCKET_CHECK_TTL = 30.0

_URL_PARAMS = ("endpoint", "region", "profile", "connect_timeout", "read_timeout", "attempts", "pool",
               "addressing")
# Parameter names someone might try to smuggle a credential through.
_SECRET_PARAMS = re.compile(r"(secret|access|key|token|password|credential|session)", re.IGNORECASE)
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_AWS_HOST = re.compile(r"^s3([.-][a-z0-9-]+)*\.amazonaws\.com(\.cn)?$")
_DEFAULT_PORTS = {"http": 80, "https": 443}
AWS_ENDPOINT = "https://s3.amazonaws.com:443"

# Whether a server honours If-None-Match on PutObject, by (endpoint, bucket), once probed.
_conditional_seen: dict[tuple[str, str], bool] = {}

_PERMISSION_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "InvalidSecurity",
    "RequestTimeTooSkewed", "403", "Forbidden",
}
_QUOTA_CODES = {
    "QuotaExceeded", "EntityTooLarge", "InsufficientStorage", "StorageQuotaExceeded",
    "XMinioStorageFull", "TooManyBuckets",
}
_UNAVAILABLE_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests",
    "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeoutException",
    "PriorRequestNotComplete", "BadDigest", "IncompleteBody", "OperationAborted", "XAmzContentSHA256Mismatch",
}


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate_error(exc: Exception, what: str, *, bucket: str, endpoint: str,
                    attempts: int = DEFAULT_ATTEMPTS) -> ProviderError:
    """Map a botocore exception to the Freehold error a caller can act on.

    ``what`` names the operation ("read x from s3://b/p"). The result carries a single
    line; the server's own message is not echoed (only its error code), so nothing the
    server or the request held can leak into it.
    """
    where = endpoint or "AWS S3"
    if isinstance(exc, bexc.ClientError):
        err = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode", 0) or 0)
        if code == "NoSuchBucket":
            return ProviderUnavailable(f"{what}: S3 bucket {bucket!r} does not exist at {where}")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return ObjectNotFound(f"{what}: not found")
        if code == "InvalidAccessKeyId":
            return ProviderPermission(f"{what}: wrong credentials: {where} does not know this access key id")
        if code == "SignatureDoesNotMatch":
            return ProviderPermission(f"{what}: wrong credentials: secret key rejected by {where}")
        if code in ("ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
            return ProviderPermission(f"{what}: wrong credentials: session token expired or invalid ({code})")
        if code == "RequestTimeTooSkewed":
            return ProviderPermission(f"{what}: request refused by {where}: this machine's clock is off")
        if code in _QUOTA_CODES or status == 507:
            return ProviderQuota(f"{what}: storage quota exceeded at {where} ({code or status})")
        if code in _PERMISSION_CODES or status == 403:
            return ProviderPermission(
                f"{what}: access denied by {where} ({code or status}): wrong credentials "
                f"or no permission on bucket {bucket!r}")
        if code in _UNAVAILABLE_CODES or status >= 500 or status == 429:
            return ProviderUnavailable(
                f"{what}: {where} keeps failing ({code or status}) after {attempts} attempts")
        if code in _REGION_CODES:
            return ProviderError(f"{what}: bucket {bucket!r} is in another region; set ?region= in the URL")
        return ProviderError(f"{what}: S3 error {code or '?'} (HTTP {status or '?'}) from {where}")
    if isinstance(exc, bexc.NoCredentialsError | bexc.PartialCredentialsError):
        return ProviderPermission(
            f"{what}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            f"or name a profile with ?profile=")
    if isinstance(exc, bexc.CredentialRetrievalError):
        return ProviderPermission(f"{what}: could not load S3 credentials from the profile")
    if isinstance(exc, bexc.ConnectTimeoutError | bexc.ReadTimeoutError):
        return ProviderUnavailable(f"{what}: {where} timed out after {attempts} attempts")
    if isinstance(exc, bexc.EndpointConnectionError):
        return ProviderUnavailable(f"{what}: cannot connect to {where} after {attempts} attempts")
    if isinstance(exc, bexc.ConnectionError | bexc.HTTPClientError | bexc.IncompleteReadError):
        return ProviderUnavailable(f"{what}: connection to {where} failed ({type(exc).__name__})")
    if isinstance(exc, bexc.BotoCoreError):
        return ProviderError(f"{what}: S3 client error ({type(exc).__name__})")
    return ProviderUnavailable(f"{what}: {type(exc).__name__}")


def canonical_endpoint(endpoint: str) -> str:
    """``scheme://host:port[/path]`` lowercased, the default port explicit, no trailing slash;
    every AWS S3 endpoint (and no endpoint at all) is :data:`AWS_ENDPOINT` (bucket names are
    global there), China's partition its own. Names are not resolved: ``localhost`` and
    ``127.0.0.1`` stay different."""
    if not endpoint:
        return AWS_ENDPOINT
    ep = urlparse(endpoint)
    scheme = ep.scheme.lower()
    host = (ep.hostname or "").lower()
    port = ep.port or _DEFAULT_PORTS.get(scheme, 0)
    if _AWS_HOST.match(host):
        return AWS_ENDPOINT + (".cn" if host.endswith(".cn") else "")
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{ep.path.rstrip('/')}"


def _answer(exc: bexc.ClientError) -> tuple[int, str, int]:
    """(HTTP status, error code, retries botocore made) of a refused request."""
    meta = exc.response.get("ResponseMetadata", {}) or {}
    code = str((exc.response.get("Error", {}) or {}).get("Code", "") or "")
    return int(meta.get("HTTPStatusCode", 0) or 0), code, int(meta.get("RetryAttempts", 0) or 0)


def _number_param(name: str, value: str, kind: type[int] | type[float]) -> Any:
    what = "an integer" if kind is int else "a number"
    try:
        result = kind(value)
    except ValueError:
        raise UsageError(f"S3 URL parameter {name} must be {what}, got {_one_line(value, 40)!r}") from None
    if (kind is int and result < 1) or not result > 0:
        raise UsageError(f"S3 URL parameter {name} must be {'at least 1' if kind is int else 'positive'}")
    return result


class S3Provider:
    """A bucket (and optional key prefix) of an S3-compatible service.

    One boto3 client is shared by every thread: botocore clients are thread-safe and
    keep a pool of ``pool`` HTTP connections for parallel transfers.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint: str | None = None,
                 region: str | None = None, profile: str | None = None, jurisdiction: str = "",
                 operator: str = "", connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
                 read_timeout: float = DEFAULT_READ_TIMEOUT, attempts: int = DEFAULT_ATTEMPTS,
                 pool: int = DEFAULT_POOL, addressing: str | None = None,
                 conditional_put: bool | None = None) -> None:
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise UsageError(f"invalid S3 bucket name {_one_line(bucket, 70)!r}")
        prefix = prefix.strip("/")
        if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
            raise UsageError(f"invalid S3 key prefix {_one_line(prefix, 70)!r}")
        if endpoint:
            ep = urlparse(endpoint)
            if ep.scheme not in ("http", "https") or not ep.hostname:
                raise UsageError("S3 endpoint must be an http:// or https:// URL")
            if ep.username or ep.password:
                raise UsageError("credentials never go in the S3 endpoint URL: "
                                 "use AWS_* variables or a profile")
            try:
                ep.port  # noqa: B018 - raises on a port that is not a number in range
            except ValueError:
                raise UsageError("S3 endpoint has an invalid port") from None
            endpoint = endpoint.rstrip("/")
        if addressing not in (None, "path", "virtual"):
            raise UsageError("S3 URL parameter addressing must be 'path' or 'virtual'")
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.endpoint = endpoint or ""
        self.region = region or ""
        self.profile = profile or ""
        self.attempts = int(attempts)
        self._connect_timeout = float(connect_timeout)
        self._read_timeout = float(read_timeout)
        self._pool = int(pool)
        self._addressing = addressing or ("path" if endpoint else "auto")
        self._label = f"s3://{bucket}/{prefix}".rstrip("/")
        self._bucket_ok_until = 0.0
        # None: probe the server on first need (AWS itself honours If-None-Match since 2024).
        self._conditional: bool | None = True if not endpoint else conditional_put

        query: dict[str, str] = {}
        if self.endpoint:
            query["endpoint"] = self.endpoint
        if self.region:
            query["region"] = self.region
        if self.profile:
            query["profile"] = self.profile
        for name, value, default in (("connect_timeout", self._connect_timeout, DEFAULT_CONNECT_TIMEOUT),
                                     ("read_timeout", self._read_timeout, DEFAULT_READ_TIMEOUT),
                                     ("attempts", self.attempts, DEFAULT_ATTEMPTS),
                                     ("pool", self._pool, DEFAULT_POOL)):
            if value != default:
                query[name] = f"{value:g}" if isinstance(value, float) else str(value)
        if addressing:
            query["addressing"] = addressing
        url = f"s3://{bucket}/{quote(prefix)}" if prefix else f"s3://{bucket}"
        if query:
            url += "?" + urlencode(query, safe=":/")
        extra = {"bucket": bucket, "prefix": self.prefix, "endpoint": self.endpoint or "aws"}
        if self.region:
            extra["region"] = self.region
        self.info = ProviderInfo(url=url, jurisdiction=jurisdiction, operator=operator, extra=extra)
        self._client = self._make_client()

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> S3Provider:
        try:
            parsed = urlparse(url)
        except ValueError:
            raise UsageError("malformed S3 URL (want s3://bucket/prefix)") from None
        if parsed.scheme != "s3":
            raise UsageError("not an S3 URL (want s3://bucket/prefix)")
        if "@" in parsed.netloc or parsed.password is not None:
            # Do not echo the URL: what precedes the @ is likely a secret.
            raise UsageError("credentials never go in an S3 URL: use AWS_ACCESS_KEY_ID/"
                             "AWS_SECRET_ACCESS_KEY or ?profile=NAME")
        if parsed.fragment or parsed.params:
            raise UsageError("S3 URL must not have a fragment or parameters after ';'")
        bucket = parsed.netloc
        options: dict[str, Any] = {}
        for name, value in parse_qsl(parsed.query, keep_blank_values=True):
            if name not in _URL_PARAMS:
                if _SECRET_PARAMS.search(name):
                    raise UsageError("credentials never go in an S3 URL: use AWS_ACCESS_KEY_ID/"
                                     "AWS_SECRET_ACCESS_KEY or ?profile=NAME")
                raise UsageError(f"unknown S3 URL parameter {_one_line(name, 40)!r} "
                                 f"(known: {', '.join(_URL_PARAMS)})")
            if name in options:
                raise UsageError(f"S3 URL parameter {name} given twice")
            if name in ("connect_timeout", "read_timeout"):
                options[name] = _number_param(name, value, float)
            elif name in ("attempts", "pool"):
                options[name] = _number_param(name, value, int)
            else:
                options[name] = value or None
        options.update(kw)
        return cls(bucket, unquote(parsed.path), **options)

    def _make_client(self) -> Any:
        config = Config(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.attempts},
            max_pool_connections=self._pool,
            s3={"addressing_style": self._addressing},
            # Content-MD5 is the integrity check every S3 clone understands; the newer
            # flexible checksums are not universally supported.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra="freehold",
        )
        try:
            core = botocore.session.Session(profile=self.profile or None)
            # Only environment variables and named profiles: no network-probing sources.
            resolver = core.get_component("credential_provider")
            for method in ("iam-role", "container-role"):
                resolver.remove(method)
            session = boto3.session.Session(botocore_session=core)
            return session.client("s3", endpoint_url=self.endpoint or None,
                                  region_name=self.region or None, config=config)
        except bexc.ProfileNotFound:
            raise UsageError(f"AWS profile {self.profile!r} not found in the AWS config files") from None
        except bexc.BotoCoreError as exc:
            raise self._translate(exc, f"open {self._label}") from None

    def __repr__(self) -> str:
        return f"S3Provider({self.info.url})"

    @property
    def location(self) -> Location:
        """``("s3", canonical endpoint, bucket, prefix without slashes at either end)``."""
        return ("s3", canonical_endpoint(self.endpoint), self.bucket, self.prefix.strip("/"))

    @property
    def capabilities(self) -> Capabilities:
        """``conditional_put`` is whether the server honours If-None-Match: known on AWS,
        probed once per endpoint and bucket elsewhere (a ProviderError if the probe fails)."""
        return Capabilities(conditional_put=self._conditional_put())

    def close(self) -> None:
        """Release pooled connections (optional; the provider is unusable afterwards)."""
        close = getattr(self._client, "close", None)
        if close is not None:
            close()

    # -- helpers ----------------------------------------------------------------------------------

    def _translate(self, exc: Exception, what: str) -> ProviderError:
        return translate_error(exc, what, bucket=self.bucket, endpoint=self.endpoint,
                               attempts=self.attempts)

    def _key(self, name: str) -> str:
        # The same names every provider accepts; S3 itself would take more, but some
        # S3 servers (SeaweedFS) map keys onto a filesystem and fold "a//b" into "a/b".
        check_name(name)
        if name.startswith(PROBE_PREFIX):
            raise UsageError(f"invalid object name {name!r} ({PROBE_PREFIX}* is reserved for write probes)")
        key = self.prefix + name
        if len(key.encode()) > MAX_KEY_BYTES:
            raise UsageError(f"object name too long for S3 ({len(key)} bytes with the prefix)")
        return key

    def _require_bucket(self, what: str) -> None:
        """Raise ProviderUnavailable if the bucket itself is missing (cached for a while)."""
        if time.monotonic() < self._bucket_ok_until:
            return
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except bexc.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status == 404 or code in ("404", "NoSuchBucket", "NotFound"):
                where = self.endpoint or "AWS S3"
                raise ProviderUnavailable(
                    f"{what}: S3 bucket {self.bucket!r} does not exist at {where}") from None
            raise self._translate(exc, what) from None
        except bexc.BotoCoreError as exc:
            raise self._translate(exc, what) from None
        self._bucket_ok_until = time.monotonic() + BUCKET_CHECK_TTL

    def clock(self) -> float | None:
        """The server's time (a bucket request's HTTP ``Date``), to check the local clock before
        deleting by age (design §15a); None when it sends none."""
        try:
            date = self._client.head_bucket(Bucket=self.bucket)["ResponseMetadata"]["HTTPHeaders"].get("date")
            return email.utils.parsedate_to_datetime(date).timestamp() if date else None
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            raise self._translate(exc, "reading the server's clock") from None
        except (KeyError, TypeError, ValueError):
            return None

    # -- the Provider protocol --------------------------------------------------------------------

    def check_writable(self) -> None:
        key = f"{self.prefix}{PROBE_PREFIX}{secrets.token_hex(6)}"
        what = f"write probe to {self._label}"
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=b"")
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            raise self._translate(exc, what) from None

    def create_bucket(self) -> None:
        """Create the bucket if it does not exist yet (setup and tests; needs the right)."""
        what = f"create bucket {self.bucket!r}"
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region and self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client.create_bucket(**kwargs)
        except bexc.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou",
                                                              "BucketAlreadyExists"):
                return
            raise self._translate(exc, what) from None
        except bexc.BotoCoreError as exc:
            raise self._translate(exc, what) from None

    def put(self, name: str, data: Data) -> None:
        key = self._key(name)
        body = data if isinstance(data, bytes) else joined(data)  # one body: MD5 and retries need it
        digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        # A single PUT is atomic in S3: readers see the old object or the whole new one.
        self._put(key, body, digest, f"write {name} to {self._label}")

    def put_new(self, name: str, data: Data) -> bool:
        """Create-if-absent with ``If-None-Match: *``: the server refuses (412) when the key
        exists, and of concurrent writers exactly one gets through. A 412 answering a retry
        whose first attempt got through but lost its answer is recognised: the object then
        holds exactly these bytes. A 409 (a conflicting operation in progress) is False when an
        object is there, else the write is tried again. On a server found to ignore the header,
        HEAD then PUT (see the module's documentation)."""
        key = self._key(name)
        body = data if isinstance(data, bytes) else joined(data)
        digest = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        what = f"write {name} to {self._label}"
        if not self._conditional_put():
            if self.head(name) is not None:
                return False
            self._put(key, body, digest, what)
            return True
        for attempt in range(self.attempts):
            try:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=digest,
                                        IfNoneMatch="*")
                return True
            except bexc.ClientError as exc:
                status, code, retried = _answer(exc)
                if status == 412 or code == "PreconditionFailed":
                    return bool(retried) and self._holds(name, body)
                if status != 409 and code != "ConditionalRequestConflict":
                    raise self._translate(exc, what) from None
            except bexc.BotoCoreError as exc:
                raise self._translate(exc, what) from None
            if self.head(name) is not None:
                return False
            time.sleep(min(0.05 * 2 ** attempt, 2.0) * random.random())
        raise ProviderUnavailable(f"{what}: the conditional write kept conflicting ({self.attempts} attempts)")

    def _holds(self, name: str, body: bytes) -> bool:
        try:
            return self.get(name) == body
        except ObjectNotFound:
            return False

    def _put(self, key: str, body: bytes, digest: str, what: str) -> None:
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=digest)
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            raise self._translate(exc, what) from None

    def _conditional_put(self) -> bool:
        if self._conditional is None:
            seen = _conditional_seen.get((self.endpoint, self.bucket))
            if seen is None:
                seen = _conditional_seen[(self.endpoint, self.bucket)] = self._probe_conditional()
            self._conditional = seen
        return self._conditional

    def _probe_conditional(self) -> bool:
        """Whether the server refuses a second If-None-Match PUT of one key (a probe key of
        this prefix, deleted afterwards; list() never shows probe keys)."""
        key = f"{self.prefix}{PROBE_PREFIX}cond-{secrets.token_hex(6)}"
        what = f"probe conditional writes on {self._label}"
        try:
            honoured = False
            for body in (b"1", b"2"):
                try:
                    self._client.put_object(Bucket=self.bucket, Key=key, Body=body, IfNoneMatch="*")
                except bexc.ClientError as exc:
                    status, code, _ = _answer(exc)
                    if status == 501 and body == b"1":
                        return False  # NotImplemented: the header is understood and refused
                    if status != 412 and code != "PreconditionFailed":
                        raise
                    honoured = True  # (also when the first PUT's answer was lost and it was retried)
                    break
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except (bexc.ClientError, bexc.BotoCoreError) as exc:
            raise self._translate(exc, what) from None
        return honoured

    def get(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        key = self._key(name)
        what = f"read {name} from {self._label}"
        first = start or 0
        if first < 0 or (end is not None and end < 0):
            raise UsageError(f"negative byte range for {name}")
        if end is not None and end <= first:
            # An empty range has no HTTP form; still say whether the object exists.
            if self.head(name) is None:
                raise ObjectNotFound(f"{what}: not found")
            return b""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if first or end is not None:
            kwargs["Range"] = f"bytes={first}-" if end is None else f"bytes={first}-{end - 1}"
        # botocore retries the request; the body is streamed after it returns, so a
        # connection lost mid-body is retried here.
        for attempt in range(self.attempts):
            try:
                response = self._client.get_object(**kwargs)
            except bexc.ClientError as exc:
                error = exc.response.get("Error", {})
                if error.get("Code") == "InvalidRange" or \
                        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416:
                    return b""  # the object exists and the range starts at or past its end
                raise self._translate(exc, what) from None
            except bexc.BotoCoreError as exc:
                raise self._translate(exc, what) from None
            body = response["Body"]
            try:
                data: bytes = body.read()
            except (bexc.HTTPClientError, bexc.ConnectionError, bexc.IncompleteReadError) as exc:
                if attempt + 1 >= self.attempts:
                    raise self._translate(exc, what) from None
                time.sleep(min(0.05 * 2 ** attempt, 2.0) * random.random())
                continue
            finally:
                body.close()
            if "Range" in kwargs and not response.get("ContentRange"):
                # The server ignored the Range header and sent the whole object.
                data = data[first:end]
            return data
        raise ProviderUnavailable(f"{what}: gave up after {self.attempts} attempts")  # pragma: no cover

    def head(self, name: str) -> int | None:
        key = self._key(name)
        what = f"stat {name} in {self._label}"
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except bexc.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                self._require_bucket(what)
                return None
            raise self._translate(exc, what) from None
        except bexc.BotoCoreError as exc:
            raise self._translate(exc, what) from None
        return int(response["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        what = f"list {self._label}"
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        cut = len(self.prefix)
        while True:
            try:
                page = self._client.list_objects_v2(**kwargs)
            except (bexc.ClientError, bexc.BotoCoreError) as exc:
                raise self._translate(exc, what) from None
            for obj in page.get("Contents", ()):
                key: str = obj["Key"]
                name = key[cut:]
                if not name or key.endswith("/") or name.startswith(PROBE_PREFIX):
                    continue  # folder markers made by other tools, our own write probes
                yield name, int(obj["Size"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            kwargs["ContinuationToken"] = token

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except bexc.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                return
            raise self._translate(exc, f"delete {name} in {self._label}") from None
        except bexc.BotoCoreError as exc:
            raise self._translate(exc, f"delete {name} in {self._label}") from None
