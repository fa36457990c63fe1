"""Local state in ``$FREEHOLD_HOME/vault.json`` (docs/design.md §16): which vault, where its
providers are, and what this machine has seen (the newest config generation, the key ids that
opened it, the newest snapshot it wrote) so that a provider serving older state is noticed.

Never keys or credentials. Written to a unique temporary name, fsynced, renamed, and the
directory fsynced: commands sharing one home never see a half-written file, and a crash leaves
the old or the new state. A home that cannot be written leaves read-only commands working.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import formats
from .errors import VaultNotFound

log = logging.getLogger("freehold")

STATE_FILE = "vault.json"


@dataclass
class LocalState:
    vault_id: str
    k: int
    n: int
    providers: list[dict[str, str]]
    config_generation: int = 0
    key_ids: list[str] = field(default_factory=list)
    last_snapshot: str = ""

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
                          [str(k) for k in raw.get("key_ids", [])], str(raw.get("last_snapshot", "")))
    except (TypeError, ValueError) as exc:
        raise VaultNotFound(f"{path} is not a Freehold vault configuration ({exc})") from None


def write(home: Path, state: LocalState, *, required: bool = False) -> None:
    """Replace vault.json atomically and durably. ``required`` False: a failure (read-only
    home) is a warning, for commands whose state update is only a memo."""
    path = home / STATE_FILE
    tmp = home / f".{STATE_FILE}.{secrets.token_hex(6)}.tmp"
    try:
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, (json.dumps(asdict(state), indent=2) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(home, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        if required:
            raise
        log.warning("cannot update %s: %s", path, exc.strerror or exc)
