"""Local state in ``$FREEHOLD_HOME/vault.json`` (docs/design.md §16): which vault, where its
providers are, and what this machine has seen (the newest config generation, the key ids that
opened it, the newest snapshot it wrote) so that a provider serving older state is noticed.

Never keys or credentials. Written to a unique temporary name, fsynced, renamed, and the
directory fsynced: commands sharing one home never see a half-written file, and a crash leaves
the old or the new state. Every change is a read-modify-write under an exclusive ``flock`` on
``vault.lock`` in the home, merged with what the file holds by then, so commands sharing one
home do not lose each other's updates (two backups: both newest config generations, the
last snapshot of whichever finished last). A command that has nothing new to record writes
nothing and takes no lock: a read-only home leaves read-only commands working.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import formats
from .errors import UsageError, VaultNotFound

log = logging.getLogger("freehold")

STATE_FILE = "vault.json"
LOCK_FILE = "vault.lock"
MAX_KEY_IDS = 8


@dataclass
class LocalState:
    vault_id: str
    k: int
    n: int
    providers: list[dict[str, str]]
    config_generation: int = 0
    key_ids: list[str] = field(default_factory=list)
    last_snapshot: str = ""
    writer: str = ""            # 2.0: this home backs up with the write-only key of this label

    @classmethod
    def from_config(cls, config: formats.Config, previous: LocalState | None = None,
                    urls: dict[str, str] | None = None) -> LocalState:
        """``urls``: where this machine reaches each provider, when that differs from the config's
        address (found by its identity marker, e.g. a disk mounted elsewhere)."""
        urls = urls or {}
        st = cls(config.vault_id.hex(), config.k, config.n,
                 [{"id": p.id, "url": urls.get(p.id, p.url), "jurisdiction": p.jurisdiction,
                   "operator": p.operator} for p in config.providers],
                 config_generation=config.generation)
        if previous is not None and previous.vault_id == st.vault_id:
            st.config_generation = max(previous.config_generation, config.generation)
            st.key_ids = previous.key_ids
            st.last_snapshot = previous.last_snapshot
        return st


def exists(home: Path) -> bool:
    return (home / STATE_FILE).exists()


def read(home: Path) -> LocalState:
    path = home / STATE_FILE
    try:
        raw: Any = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaultNotFound(f"no vault configured in {home} (run 'freehold init' first, "
                            "or set FREEHOLD_HOME)") from None
    except (OSError, ValueError) as exc:
        raise VaultNotFound(f"cannot read {path}: {exc}") from None
    if not isinstance(raw, dict) or "vault_id" not in raw:
        raise VaultNotFound(f"{path} is not a Freehold vault configuration")
    try:
        return LocalState(str(raw["vault_id"]), int(raw.get("k", 0)), int(raw.get("n", 0)),
                          list(raw.get("providers", [])), int(raw.get("config_generation", 0)),
                          [str(k) for k in raw.get("key_ids", [])], str(raw.get("last_snapshot", "")),
                          str(raw.get("writer", "")))
    except (TypeError, ValueError) as exc:
        raise VaultNotFound(f"{path} is not a Freehold vault configuration ({exc})") from None


def replace_private(path: Path, data: bytes) -> None:
    """Replace ``path`` (mode 0600) atomically and durably: a unique temporary name, fsynced,
    renamed, the directory fsynced. On failure the temporary file is removed and OSError raised."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write(home: Path, state: LocalState, *, required: bool = False) -> None:
    """Replace vault.json atomically and durably. ``required`` False: a failure (read-only
    home) is a warning, for commands whose state update is only a memo."""
    path = home / STATE_FILE
    try:
        replace_private(path, (json.dumps(asdict(state), indent=2) + "\n").encode())
    except OSError as exc:
        if required:
            raise
        log.warning("cannot update %s: %s", path, exc.strerror or exc)


@contextmanager
def locked(home: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``home/vault.lock`` (created if need be). Where the lock
    file can be neither created nor opened (a read-only home) nothing can be written either,
    and the caller goes on unlocked: its write fails with a warning."""
    fd = -1
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(home / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        try:
            fd = os.open(home / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


def _read_quiet(home: Path) -> LocalState | None:
    try:
        return read(home)
    except VaultNotFound:
        return None


def create(home: Path, state: LocalState) -> None:
    """The first vault.json of a home (``init``); refused when one appeared meanwhile."""
    with locked(home):
        if exists(home):
            raise UsageError(f"{home} already holds a vault (set FREEHOLD_HOME to use another)")
        write(home, state, required=True)


def record(home: Path, config: formats.Config, urls: dict[str, str], previous: LocalState | None, *,
           key_id: str | None = None, **changes: Any) -> LocalState:
    """Records what this process has seen (``config``, the key ``key_id`` that opened it, and
    ``changes`` such as ``last_snapshot``) over ``previous``, vault.json as this process read
    it. Nothing new: nothing written, no lock taken. Otherwise vault.json is read again under
    the lock and the news merged into what it holds now (a newer config generation another
    command recorded is kept, with its providers). Returns the state recorded (to be compared
    with at the next call; a home that cannot be written makes the write a warning)."""

    def merged(base: LocalState | None) -> LocalState:
        st = LocalState.from_config(config, base, urls)
        if base is not None and base.vault_id == st.vault_id and base.config_generation > config.generation:
            st.k, st.n, st.providers = base.k, base.n, base.providers
        if key_id and key_id not in st.key_ids:
            st.key_ids = [*st.key_ids, key_id][-MAX_KEY_IDS:]
        for name, value in changes.items():
            setattr(st, name, value)
        return st

    if previous is not None and merged(previous) == previous:
        return previous
    with locked(home):
        disk = _read_quiet(home)
        base = disk if disk is not None and disk.vault_id == config.vault_id.hex() else previous
        new = merged(base)
        if new != disk:
            write(home, new)
    return new
