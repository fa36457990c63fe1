"""The Vault: Freehold's one front door. The CLI, the demo (and later the web app) use nothing else.

Every operation runs over a fresh ``Session`` (who is down or slow, what was read, which
replicas missed a write): a Vault used for a hundred calls behaves like a hundred processes.
What the last operation found about the providers is ``last_outcome``.

Local state lives in ``$FREEHOLD_HOME`` (default ``~/.freehold``): ``vault.json`` (see
``state``) and ``cache/`` (sealed copies of metadata and tree packs; disposable).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from . import erasure, formats, keys, placement, reports, state
from .api import BackupOptions, BackupResult, KeyChange, KeyInfo, Outcome, ProviderStatus, VaultInfo
from .assembly import (
    ProviderSpec,
    Wrap,
    adopt_providers,
    cache_dir,
    change_quorum,
    check_fresh,
    check_jurisdiction,
    check_name,
    copy_metadata,
    drop_unlisted,
    leave_nothing,
    open_one,
    outcome_of,
    own_dirs,
    place_markers,
    refuse_overlaps,
    unlock,
)
from .chunking import AVG_SIZE, MAX_SIZE, MIN_SIZE
from .crypto import VaultKeys
from .door import StoreDoor
from .errors import (
    GuardianShareError,
    IntegrityError,
    UsageError,
    WrongPassphrase,
)
from .pipeline import check_writable, run_locked
from .progress import NullProgress, Progress
from .providers import Provider
from .restore import Restore, RestoreOptions, RestoreStats
from .sources import own_state, plan_backup
from .store import HEALED, Operation, Session, Store, maintenance, snapshot_path, utc_stamp
from .store.cache import LocalCache
from .store.configs import CONFIG_NAME, ConfigRead, ConfigStore, admits, seal_config
from .store.keystore import KEYS_PREFIX
from .store.metadata import SNAPSHOT_PREFIX
from .store.replicas import Listing
from .store.writers import write_writer_config
from .vault_integrity import IntegrityDoor
from .vault_publishing import PublishingDoor
from .vault_sharing import SharingDoor
from .vault_upkeep import UpkeepDoor
from .vault_writer import WriterVault
from .vault_writers import WritersDoor

PACK_SIZE = 16 * 1024 * 1024
STATE_FILE = state.STATE_FILE



def default_home() -> Path:
    return Path(os.environ.get("FREEHOLD_HOME") or Path.home() / ".freehold")


class Vault(StoreDoor, IntegrityDoor, UpkeepDoor, SharingDoor, WritersDoor, PublishingDoor):
    def __init__(self, home: Path, store: Store, master: bytes | None, key_id: str | None,
                 on_disk: state.LocalState | None, hedge_after: float = 2.0,
                 opened: ConfigRead | None = None) -> None:
        self.home = home
        self._store = store
        self._master = master          # kept in memory only, for key and guardian operations
        self.key_id = key_id           # the key object that opened this session, if any
        self._on_disk = on_disk        # vault.json as last read or written (None: not yet written)
        self._opened = opened          # the config as opening read it: healed by the first backup
        self.hedge_after = hedge_after
        self.last_outcome = Outcome()

    # ------------------------------------------------------------------ operations' sessions

    def _op(self, degraded: bool = False) -> Operation:
        return self._store.operation(Session(degraded=degraded, hedge_after=self.hedge_after))

    def _finish(self, op: Operation) -> Outcome:
        self.last_outcome = outcome_of(op.session)
        return self.last_outcome

    def sync_state(self, **changes: Any) -> None:
        """Bring vault.json up to date: written only when something changed, merged under a
        lock with what other commands sharing the home recorded meanwhile (``state.record``)."""
        urls = {pid: p.info.url for pid, p in self._store.providers.items()}
        self._on_disk = state.record(self.home, self._store.config, urls, self._on_disk, key_id=self.key_id,
                                     **changes)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def init(cls, specs: list[ProviderSpec], k: int, n: int, passphrase: str,
             home: Path | None = None, kdf: keys.KdfParams | None = None,
             policy: formats.Policy | None = None, wrap: Wrap | None = None, structure: int = 1) -> Vault:
        """``structure`` 2 makes a 2.0 vault (design §23: references, write-only keys)."""
        home = home or default_home()
        if structure not in (1, 2):
            raise UsageError(f"--format {structure}: this Freehold writes vault formats 1 and 2")
        policy = policy or formats.Policy()
        erasure.check_params(k, n)
        if len(specs) < n:
            raise UsageError(f"{n} shares need at least {n} providers; {len(specs)} given")
        names = [s.name or f"p{i + 1}" for i, s in enumerate(specs)]
        for name in names:
            check_name(name)
        if len(set(names)) != len(names):
            raise UsageError("two providers have the same name")
        if state.exists(home):
            raise UsageError(f"{home} already holds a vault (set FREEHOLD_HOME to use another)")
        form = keys.passphrase_forms(passphrase)[0]
        providers: dict[str, Provider] = {}
        for pid, spec in zip(names, specs, strict=True):
            providers[pid] = open_one(pid, spec.url, spec.jurisdiction, spec.operator, wrap)
        refuse_overlaps(providers)
        entries = [formats.ProviderEntry(id=pid, url=prov.info.url,
                                         jurisdiction=check_jurisdiction(spec.jurisdiction),
                                         operator=spec.operator, marker=secrets.token_hex(16))
                   for (pid, prov), spec in zip(providers.items(), specs, strict=True)]
        # The policy is checked before anything is written anywhere.
        placement.check(entries, n, policy)
        for pid, prov in providers.items():
            check_fresh(pid, prov)
        place_markers(providers, entries)
        created = utc_stamp()
        vault_id = secrets.token_bytes(16)
        master = keys.new_master_secret()
        vkeys = VaultKeys.derive(master, structure)
        kid = secrets.token_hex(16)
        keyfile = keys.wrap(master, form, vault_id, kdf or keys.KdfParams(), created)
        config = formats.Config(v=structure, vault_id=vault_id, k=k, n=n,
                                chunker=formats.Chunker(MIN_SIZE, AVG_SIZE, MAX_SIZE),
                                pack_size=PACK_SIZE, providers=entries, created=created, policy=policy,
                                generation=1, change=secrets.token_bytes(16), changed=created, keys=[kid])
        store = Store(providers, cache_dir(home, vault_id))
        store.attach(config, vkeys)
        op = store.operation()
        try:
            # Key objects first, then the config that needs them: `config` is what marks a
            # provider as holding a vault, so a half-made vault is never mistaken for one.
            everyone = len(providers)
            op.replicas.put_all(KEYS_PREFIX + kid, keyfile, quorum=everyone)
            op.replicas.put_all(CONFIG_NAME, seal_config(vkeys, config), quorum=everyone)
            if structure >= 2:  # what writers read (design §23)
                write_writer_config(op.replicas, vkeys, config, everyone)
        except BaseException:
            store.close()
            raise
        local = state.LocalState.from_config(config)
        local.key_ids = [kid]
        state.create(home, local)
        return cls(home, store, master, kid, local)

    @staticmethod
    def setup_writer(key_file: bytes, passphrase: str, home: Path | None = None, *,
                     wrap: Wrap | None = None) -> WriterVault:
        """Make this machine's home back up with a write-only key file (design §23)."""
        return WriterVault.setup(key_file, passphrase, home or default_home(), wrap=wrap)

    @classmethod
    def open(cls, passphrase: str, home: Path | None = None, *, wrap: Wrap | None = None,
             hedge_after: float = 2.0) -> Vault:
        home = home or default_home()
        local = state.read(home)
        if local.writer:  # a machine with a write-only key: it can back up, nothing else
            return WriterVault.open(passphrase, home, local, wrap=wrap, hedge_after=hedge_after)  # type: ignore[return-value]
        providers = {p["id"]: open_one(p["id"], p["url"], p.get("jurisdiction", ""), p.get("operator", ""), wrap)
                     for p in local.providers}
        vault = cls._unlock_and_assemble(home, providers, bytes.fromhex(local.vault_id), local,
                                         passphrase=passphrase, wrap=wrap, hedge_after=hedge_after)
        vault.sync_state()
        return vault

    @classmethod
    def _unlock_and_assemble(cls, home: Path, providers: dict[str, Provider], vault_id: bytes | None,
                             local: state.LocalState | None, *, passphrase: str | None = None,
                             master: bytes | None = None, wrap: Wrap | None = None,
                             hedge_after: float = 2.0) -> Vault:
        """From some of the vault's providers and a passphrase (or a master secret) to an open
        vault. The newest config names every other provider; its providers are asked again
        until the newest config they hold names no provider not yet asked."""
        store = Store(dict(providers), cache_dir(home, vault_id) if vault_id else None)
        session = Session(hedge_after=hedge_after)
        try:
            replicas = store.replicas(session)
            if passphrase is not None:
                unlocked, read = unlock(replicas, store, passphrase, vault_id, local)
                master, kid = unlocked.master, unlocked.key_id
            else:
                assert master is not None
                kid = None
                read = ConfigStore(replicas, VaultKeys.derive(master), store.cache).load(vault_id=vault_id)
            vkeys = VaultKeys.derive(master)
            config = read.config
            seen = local.config_generation if local else 0
            for _ in range(4):  # follow the provider list of the newest config
                added = adopt_providers(store, config, wrap)
                if not added:
                    break
                read = ConfigStore(store.replicas(session), vkeys, store.cache).load(seen_generation=seen,
                                                                                     vault_id=config.vault_id)
                config = read.config
            drop_unlisted(store, config)
            if config.v not in (1, 2):
                raise UsageError(f"this vault has format {config.v}, written by a newer Freehold: upgrade Freehold")
            vkeys = VaultKeys.derive(master, config.v)
            store.cache = LocalCache(cache_dir(home, config.vault_id))
            store.attach(config, vkeys)
            if kid is not None and not admits(config, kid):
                raise WrongPassphrase("this passphrase was revoked (see 'freehold keys list')")
            if not read.confirmed:  # the providers the config names do not hold it: not this vault's key
                raise WrongPassphrase("wrong passphrase: the key it opens belongs to a config most of the "
                                      "vault's providers do not hold (a planted key object?)")
            op = store.operation(session)
            op.load_index()
            late = maintenance.overdue(maintenance.newest(op.replicas, op.store.keys.index), config.created)
            if late:
                session.warn(late)
        except BaseException:
            store.close()
            raise
        vault = cls(home, store, master, kid, local, hedge_after, read)
        vault.last_outcome = outcome_of(session)
        return vault

    @classmethod
    def recover(cls, urls: list[str], *, passphrase: str | None = None, shares: list[str] | None = None,
                share_passphrase: str = "", new_passphrase: str | None = None, home: Path | None = None,
                wrap: Wrap | None = None, kdf: keys.KdfParams | None = None) -> Vault:
        """Rebuild the local configuration on a fresh machine from any of the vault's providers,
        unlocked by a passphrase or by a threshold of guardian shares (then ``new_passphrase``
        becomes a new key). Nothing is written locally unless recovery succeeds."""
        home = home or default_home()
        if state.exists(home):
            raise UsageError(f"{home} already holds a vault configuration; recover into an empty "
                             "FREEHOLD_HOME")
        if (passphrase is None) == (shares is None):
            raise UsageError("recover with a passphrase or with guardian shares (one of the two)")
        if not urls:
            raise UsageError("name at least one provider to recover from (--from URL)")
        existed = home.exists()
        try:
            vault = cls._recover(home, urls, passphrase, shares, share_passphrase, wrap)
        except BaseException:
            leave_nothing(home, existed)
            raise
        try:
            if new_passphrase is not None:
                change = vault.add_key(new_passphrase, kdf)
                vault.key_id = change.id
            vault.sync_state(key_ids=[k for k in [vault.key_id] if k])
        except BaseException:
            vault.close()
            leave_nothing(home, existed)
            raise
        return vault

    @classmethod
    def _recover(cls, home: Path, urls: list[str], passphrase: str | None, shares: list[str] | None,
                 share_passphrase: str, wrap: Wrap | None) -> Vault:
        providers = {f"from{i}": open_one(f"from{i}", u, "", "", wrap) for i, u in enumerate(urls)}
        if passphrase is not None:
            return cls._unlock_and_assemble(home, providers, None, None, passphrase=passphrase, wrap=wrap)
        from . import guardians  # only recovery by shares needs SLIP-39

        master = guardians.combine(shares or [], share_passphrase.encode())
        if len(master) != 32:
            raise GuardianShareError(f"these guardian shares hold a {len(master) * 8}-bit secret; a Freehold "
                                     "vault key has 256 bits: they belong to something else")
        try:
            return cls._unlock_and_assemble(home, providers, None, None, master=master, wrap=wrap)
        except IntegrityError:
            raise GuardianShareError(
                "these guardian shares do not open the vault on the given provider(s): they belong to "
                "another vault, or the guardians' passphrase is wrong") from None

    # ------------------------------------------------------------------ what it is

    def info(self) -> VaultInfo:
        c = self._store.config
        return VaultInfo(c.vault_id.hex(), c.k, c.n, list(c.providers), c.policy, c.generation)

    def packs(self) -> list[formats.PackRecord]:
        return self._store.index.packs()

    # ------------------------------------------------------------------ keys and guardians

    def _require_master(self) -> bytes:
        if self._master is None:
            raise UsageError("this vault session holds no master secret")
        return self._master

    def key_objects(self) -> list[KeyInfo]:
        op = self._op()
        cfg = self._store.config
        out = []
        for kid in op.keystore.ids():
            if not admits(cfg, kid):
                continue
            vs = op.keystore.versions(kid, cfg.vault_id)
            if vs:
                kf = vs[0]
                out.append(KeyInfo(kid, kf.created, kf.t, kf.m, kf.p, kid == self.key_id, bool(cfg.keys)))
        self._finish(op)
        return out

    def _change_config(self, op: Operation, mutate: Callable[[formats.Config], formats.Config]) -> list[str]:
        new, missed = op.configs.change(self._store.config, mutate)
        self._store.config = new
        self.sync_state()
        if new.v >= 2:  # the writers' copy follows every change (design §23)
            write_writer_config(op.replicas, self._store.keys, new, op.maintenance_quorum())
        return missed

    def _listed_keys(self, op: Operation, cfg: formats.Config) -> list[str]:
        """The config's key list; for a version-1 config (no list), every key object of this
        vault now on the providers (the first change records them)."""
        if cfg.keys:
            return list(cfg.keys)
        return [kid for kid in op.keystore.ids() if admits(cfg, kid) and op.keystore.versions(kid, cfg.vault_id)]

    def add_key(self, passphrase: str, kdf: keys.KdfParams | None = None) -> KeyChange:
        """Another passphrase for the vault: a key object on a quorum of providers, then a config
        change naming it. No data rewritten. On failure nothing remains."""
        master = self._require_master()
        op = self._op()
        cfg = self._store.config
        kid, _ = op.keystore.add(master, passphrase, cfg.vault_id, kdf or keys.KdfParams(), utc_stamp(),
                                 quorum=change_quorum(cfg))
        listed = self._listed_keys(op, cfg)
        try:
            self._change_config(op, lambda c: msgspec.structs.replace(c, keys=sorted({*listed, kid})))
        except BaseException:
            op.keystore.delete(kid)
            raise
        return KeyChange(kid, self._finish(op))

    def remove_key(self, kid: str) -> KeyChange:
        """Revoke a key object: the config records it as revoked (so it is refused wherever it
        reappears), then it is deleted everywhere reachable; providers that were not reachable
        delete it when healed. The last key cannot be removed."""
        op = self._op()
        cfg = self._store.config
        ids = self._listed_keys(op, cfg)
        matches = [k for k in ids if k.startswith(kid)] if kid else []
        if len(matches) != 1:
            raise UsageError(f"no single key matches {kid!r} (see 'freehold keys list')")
        if len(ids) == 1:
            raise UsageError("refusing to remove the vault's last key: add another first")
        gone = matches[0]
        self._change_config(op, lambda c: msgspec.structs.replace(
            c, keys=sorted(set(ids) - {gone}), revoked=sorted({*c.revoked, gone})))
        _, pending = op.keystore.delete(gone)
        if self.key_id == gone:
            self.key_id = None
        return KeyChange(gone, self._finish(op), pending=pending)

    def change_passphrase(self, new: str, kdf: keys.KdfParams | None = None) -> KeyChange:
        """Replace the key object this session was opened with by one for the new passphrase,
        in one config change: both passphrases never stay valid after a reported failure."""
        master = self._require_master()
        old = self.key_id
        op = self._op()
        cfg = self._store.config
        kid, _ = op.keystore.add(master, new, cfg.vault_id, kdf or keys.KdfParams(), utc_stamp(),
                                 quorum=change_quorum(cfg))
        listed = self._listed_keys(op, cfg)
        revoke = {old} if old else set()
        try:
            self._change_config(op, lambda c: msgspec.structs.replace(
                c, keys=sorted((set(listed) - revoke) | {kid}), revoked=sorted(set(c.revoked) | revoke)))
        except BaseException:
            op.keystore.delete(kid)
            raise
        pending: list[str] = []
        if old:
            _, pending = op.keystore.delete(old)
        self.key_id = kid
        self.sync_state(key_ids=[kid])
        return KeyChange(kid, self._finish(op), pending=pending)

    def guardian_shares(self, threshold: int, count: int, passphrase: str = "") -> list[str]:
        """SLIP-39 shares of the master secret: any ``threshold`` of them recover the vault."""
        from . import guardians

        if threshold < 2:
            raise UsageError("a threshold of 1 makes every share alone a key to the vault; use 2 or more")
        return guardians.split(self._require_master(), threshold, count, passphrase.encode())

    # ------------------------------------------------------------------ providers and policy

    def add_provider(self, spec: ProviderSpec, wrap: Wrap | None = None) -> formats.ProviderEntry:
        """Add a provider: it receives copies of every replicated object (keys, index,
        snapshots) and its identity marker, then a config change names it."""
        cfg = self._store.config
        name = spec.name or f"p{len(cfg.providers) + 1}"
        check_name(name)
        if any(p.id == name for p in cfg.providers):
            raise UsageError(f"a provider named {name!r} already exists")
        prov = open_one(name, spec.url, spec.jurisdiction, spec.operator, wrap)
        refuse_overlaps({**self._store.providers, name: prov})
        check_fresh(name, prov)
        entry = formats.ProviderEntry(id=name, url=prov.info.url, jurisdiction=check_jurisdiction(spec.jurisdiction),
                                      operator=spec.operator, marker=secrets.token_hex(16))
        place_markers({**self._store.providers, name: prov}, [*cfg.providers, entry])
        op = self._op()
        copy_metadata(op, prov, name)
        self._store.providers[name] = prov
        try:
            self._change_config(op, lambda c: msgspec.structs.replace(c, providers=[*c.providers, entry]))
        except BaseException:
            del self._store.providers[name]
            raise
        self._finish(op)
        return entry

    def provider_status(self) -> list[ProviderStatus]:
        op = self._op()
        out = reports.provider_status(op)
        self._finish(op)
        return out

    def set_policy(self, policy: formats.Policy) -> int:
        """Make ``policy`` the vault's placement policy. Refused (PolicyError, saying which rule
        fails) when the providers cannot satisfy it. Returns how many existing packs it would
        place differently (they stay where they are until repaired or rebalanced)."""
        cfg = self._store.config
        placement.check(cfg.providers, cfg.n, policy)
        op = self._op()
        self._change_config(op, lambda c: msgspec.structs.replace(c, policy=policy))
        self._finish(op)
        allowed = {p.id: p for p in placement.eligible(cfg.providers, policy)}

        def fits(rec: formats.PackRecord) -> bool:
            where = [allowed.get(s.p) for s in rec.shares if s is not None]
            return None not in where and placement.satisfies(where, policy)  # type: ignore[arg-type]

        return sum(not fits(rec) for rec in self._store.index.packs())

    # ------------------------------------------------------------------ data

    def backup(self, paths: list[str], progress: Progress | None = None, tags: list[str] | None = None,
               degraded: bool = False, options: BackupOptions | None = None) -> BackupResult:
        """Back up paths into a new snapshot. Every provider must take writes, unless ``degraded``:
        then the backup proceeds when at least k+1 do, and the missing shares are recorded.
        ``options``: restic's selection, dry run, stdin (sources.plan_backup); a dry run writes nothing."""
        plan = plan_backup(paths, options or BackupOptions(), os.environ, progress or NullProgress())
        own = own_state(own_dirs(self.home, self._store.providers), plan.sources)
        op = self._op(degraded)
        check_writable(op, plan, degraded)
        op.packs.check_placement()
        snapshot_listing = op.objects.listing(SNAPSHOT_PREFIX) if plan.dry_run else self._heal(op)
        wanted = plan.paths
        parent = None
        snaps = op.snapshots(snapshot_listing)
        self._notice_missing_snapshot(op, snaps)
        for sid, snap in reversed(snaps):
            if sorted(snap.paths) == wanted:
                parent = (sid, snap)
                break
        sid, snap, stats = run_locked(op, plan, progress, own, parent, tags)
        if sid:  # "" after a dry run
            self.sync_state(last_snapshot=sid)
            self._refresh_grants(op, sid, snap)
        self._finish(op)
        return BackupResult(sid, snap, stats)

    def _heal(self, op: Operation) -> Listing:
        """Finish what interrupted or degraded writes left, and undo what hostile providers did:
        the newest config where a copy is missing, old or bad; index and snapshot objects where
        they are missing; revoked key objects that came back, deleted."""
        read, self._opened = self._opened, None  # read moments ago by open: not read twice
        if read is None or read.config is not self._store.config:
            read = op.configs.load(seen_generation=self._store.config.generation,
                                   vault_id=self._store.config.vault_id)
        op.configs.heal(read)
        raw, listings = {}, {}
        for prefix, kind, what in HEALED:
            raw[prefix] = op.objects.listing(prefix)
            listings[prefix] = op.live_listing(prefix, raw[prefix])
            op.objects.heal(op.objects.survey(prefix, kind, what, listings[prefix]), kind, what)
        op.purge_gone(raw)  # the listings show the gone copies too: no second listing
        op.keystore.purge_revoked(set(self._store.config.revoked))
        return listings[SNAPSHOT_PREFIX]

    def _notice_missing_snapshot(self, op: Operation, snaps: list[tuple[str, formats.Snapshot]]) -> None:
        last = self._on_disk.last_snapshot if self._on_disk else ""
        if last and last not in {sid for sid, _ in snaps} and last not in op.load_deletions().snapshots:
            op.session.warn(f"snapshot {last[:12]}, the newest this machine wrote, is on no reachable provider "
                            "(deleted or rolled back by the providers)")

    def snapshots(self) -> list[tuple[str, formats.Snapshot]]:
        op = self._op()
        snaps = op.snapshots()
        self._notice_missing_snapshot(op, snaps)
        self._finish(op)
        return snaps

    def snapshot(self, ref: str) -> tuple[str, formats.Snapshot]:
        op = self._op()
        sid, snap = op.resolve_snapshot(ref)
        self._finish(op)
        return sid, snap

    def ls(self, ref: str, path: str = "") -> list[tuple[str, formats.Node]]:
        """A snapshot's nodes at and below ``path``: an original absolute path or a path in the
        tree (``snapshot_path``); listed with normalised tree paths."""
        _, snap = self.snapshot(ref)
        op = self._op()
        base = snapshot_path(snap, path)
        try:
            node = op.trees.find(snap.tree, base) if base else None
        except UsageError:
            raise UsageError(f"{path!r} is not in this snapshot (it holds {', '.join(snap.paths)})") from None
        if node is None:
            out = list(op.trees.walk(snap.tree))
        else:
            out = [(base, node)]
            if node.type == "dir" and node.subtree is not None:
                out += list(op.trees.walk(node.subtree, base + "/"))
        self._finish(op)
        return out

    def restore(self, ref: str, target: Path, include: str | None = None, progress: Progress | None = None,
                *, options: RestoreOptions | None = None) -> RestoreStats:
        """Entries that could not be restored are in the result's ``failed``, not raised."""
        _, snap = self.snapshot(ref)
        op = self._op()
        stats = Restore(op, progress).run(snap, target, options, include)
        self._finish(op)
        return stats

    def clear_cache(self) -> None:
        shutil.rmtree(self.home / "cache", ignore_errors=True)

