"""The door of a machine that holds a write-only key (design §23): ``freehold init --write-key
nas.key`` once, then ``freehold backup`` as usual. Everything else is refused, clearly.

It reads the writers' config (signed by the owner), the index and deletion records (to
deduplicate and to respect prunes), takes the shared backup lock, and writes packs, signed index
objects and snapshots sealed to the owner. It cannot list, read or restore anything."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import formats, keys, state
from .api import BackupOptions, BackupResult, Outcome
from .assembly import Wrap, open_one, outcome_of, own_dirs
from .door import StoreDoor
from .errors import IntegrityError, UsageError, WrongPassphrase
from .pipeline import check_writable, run_locked
from .progress import NullProgress, Progress
from .providers import Provider
from .sources import own_state, plan_backup
from .store import Session, Store
from .store.writers import read_writer_config, writer_keys

KEY_FILE = "writer.key"


def _unwrap(blob: bytes, passphrase: str) -> formats.WriterKey:
    kf = keys.read_keyfile(blob)
    forms = keys.passphrase_forms(passphrase)
    for form in forms:
        try:
            plain = keys.unwrap(kf, form, context=b"writer")
            break
        except WrongPassphrase:
            if form is forms[-1]:
                raise
    wk = formats.decode(plain, formats.WriterKey, "write-only key")
    if wk.vault_id != kf.vault_id or len(wk.sign) != 32 or not wk.providers:
        raise IntegrityError("the write-only key file is malformed")
    return wk


class WriterVault(StoreDoor):
    def __init__(self, home: Path, store: Store, label: str, local: state.LocalState, hedge_after: float) -> None:
        self.home = home
        self._store = store
        self.label = label
        self._local = local
        self.hedge_after = hedge_after
        self.last_outcome = Outcome()

    @classmethod
    def setup(cls, key_file: bytes, passphrase: str, home: Path, *, wrap: Wrap | None = None) -> WriterVault:
        """Make ``home`` a machine that backs up with this write-only key; checks the key opens
        and the providers hold the vault before anything is written."""
        if state.exists(home):
            raise UsageError(f"{home} already holds a vault (set FREEHOLD_HOME to use another)")
        wk = _unwrap(key_file, passphrase)
        local = state.LocalState(wk.vault_id.hex(), 0, 0, [{"id": p.id, "url": p.url, "jurisdiction": p.jurisdiction,
                                                             "operator": p.operator} for p in wk.providers],
                                 writer=wk.label)
        vault = cls._assemble(home, wk, local, wrap, 2.0)
        cfg = vault.config
        local.k, local.n, local.config_generation = cfg.k, cfg.n, cfg.generation
        state.replace_private(home / KEY_FILE, key_file)
        state.create(home, local)
        return vault

    @classmethod
    def open(cls, passphrase: str, home: Path, local: state.LocalState, *, wrap: Wrap | None = None,
             hedge_after: float = 2.0) -> WriterVault:
        try:
            blob = (home / KEY_FILE).read_bytes()
        except OSError as exc:
            raise UsageError(f"this machine's write-only key ({home / KEY_FILE}) cannot be read: "
                             f"{exc.strerror}") from None
        return cls._assemble(home, _unwrap(blob, passphrase), local, wrap, hedge_after)

    @classmethod
    def _assemble(cls, home: Path, wk: formats.WriterKey, local: state.LocalState, wrap: Wrap | None,
                  hedge_after: float) -> WriterVault:
        providers: dict[str, Provider] = {p["id"]: open_one(p["id"], p["url"], p.get("jurisdiction", ""),
                                                            p.get("operator", ""), wrap) for p in local.providers}
        store = Store(providers, None)
        vk = writer_keys(wk)
        try:
            config = read_writer_config(store.replicas(Session(hedge_after=hedge_after)), vk, wk.vault_id)
            if config.generation < local.config_generation:
                raise IntegrityError("the providers serve an older writers' config than this machine has seen")
            for p in config.providers:  # providers the owner added since the key was made
                if p.id not in store.providers:
                    store.providers[p.id] = open_one(p.id, p.url, p.jurisdiction, p.operator, wrap)
            for pid in [pid for pid in store.providers if pid not in {p.id for p in config.providers}]:
                del store.providers[pid]
            if not any(w.label == wk.label for w in config.policy.writers):
                raise UsageError(f"the owner no longer lists the write-only key {wk.label!r}")
            store.attach(config, vk)
        except BaseException:
            store.close()
            raise
        return cls(home, store, wk.label, local, hedge_after)

    @property
    def config(self) -> formats.Config:
        return self._store.config

    def backup(self, paths: list[str], progress: Progress | None = None, tags: list[str] | None = None,
               degraded: bool = False, options: BackupOptions | None = None) -> BackupResult:
        """As the owner's backup, without a parent snapshot (a writer cannot read one: every file
        is read again; what is stored already is not uploaded again)."""
        plan = plan_backup(paths, options or BackupOptions(), os.environ, progress or NullProgress())
        own = own_state(own_dirs(self.home, self._store.providers), plan.sources)
        op = self._store.operation(Session(degraded=degraded, hedge_after=self.hedge_after))
        check_writable(op, plan, degraded)
        op.packs.check_placement()
        sid, snap, stats = run_locked(op, plan, progress, own, None, tags)
        self.last_outcome = outcome_of(op.session)
        return BackupResult(sid, snap, stats)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise UsageError(f"this machine holds the write-only key {self.label!r}: it can back up, and nothing "
                         f"else ({name.replace('_', ' ')} needs the owner's passphrase, on the owner's machine)")


