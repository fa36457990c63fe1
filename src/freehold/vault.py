"""The Vault: Freehold's one front door. The CLI (and later the web app) use nothing else.

Local state lives in ``$FREEHOLD_HOME`` (default ``~/.freehold``):
``vault.json`` (vault id and provider list: addresses, never credentials or keys)
and ``cache/`` (sealed copies of index, snapshot and tree objects; disposable).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from . import erasure, formats, keys, placement
from .chunking import AVG_SIZE, MAX_SIZE, MIN_SIZE
from .crypto import VaultKeys
from .errors import (
    FreeholdError,
    GuardianShareError,
    IntegrityError,
    NotEnoughShares,
    ObjectNotFound,
    ProviderError,
    UsageError,
    VaultNotFound,
    WrongPassphrase,
)
from .pipeline import Backup, BackupStats
from .progress import Progress
from .providers import Provider, open_provider
from .repository import CONFIG_NAME, KEYS_PREFIX, SNAPSHOT_PREFIX, Problem, Repository
from .restore import Restore, RestoreStats, find_node, walk

PACK_SIZE = 16 * 1024 * 1024
STATE_FILE = "vault.json"


def default_home() -> Path:
    return Path(os.environ.get("FREEHOLD_HOME") or Path.home() / ".freehold")


@dataclass
class ProviderSpec:
    url: str
    jurisdiction: str = ""
    operator: str = ""
    name: str = ""


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def _check_name(name: str) -> None:
    if not _NAME_OK.match(name):
        raise UsageError(f"provider name {name!r}: use 1-40 letters, digits, '.', '_' or '-'")


def _check_jurisdiction(code: str) -> str:
    code = code.strip().upper()
    if code and not re.fullmatch(r"[A-Z]{2}", code):
        raise UsageError(f"jurisdiction {code!r}: use an ISO 3166 alpha-2 country code such as DE")
    return code


@dataclass
class ProviderStatus:
    id: str
    url: str
    jurisdiction: str
    operator: str
    healthy: bool
    error: str = ""
    shares: int = 0
    bytes: int = 0


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    packs: int = 0
    shares: int = 0
    snapshots: int = 0

    @property
    def healthy(self) -> bool:
        return not self.problems


class Vault:
    def __init__(self, home: Path, repo: Repository, master: bytes | None = None,
                 key_name: str | None = None) -> None:
        self.home = home
        self.repo = repo
        self._master = master          # kept in memory only, for key and guardian operations
        self.key_name = key_name       # the key object that opened this session, if any

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def init(cls, specs: list[ProviderSpec], k: int, n: int, passphrase: str,
             home: Path | None = None, kdf: keys.KdfParams | None = None,
             policy: formats.Policy | None = None) -> Vault:
        home = home or default_home()
        policy = policy or formats.Policy()
        erasure.check_params(k, n)
        if len(specs) < n:
            raise UsageError(f"{n} shares need at least {n} providers; {len(specs)} given")
        if len({s.url for s in specs}) != len(specs):
            raise UsageError("the same provider is given twice")
        names = [s.name or f"p{i + 1}" for i, s in enumerate(specs)]
        for name in names:
            _check_name(name)
        if len(set(names)) != len(names):
            raise UsageError("two providers have the same name")
        if (home / STATE_FILE).exists():
            raise UsageError(f"{home} already holds a vault (set FREEHOLD_HOME to use another)")
        if not passphrase:
            raise UsageError("the passphrase must not be empty")
        providers: dict[str, Provider] = {}
        entries = []
        for pid, spec in zip(names, specs, strict=True):
            prov = open_provider(spec.url, jurisdiction=spec.jurisdiction, operator=spec.operator)
            providers[pid] = prov
            entries.append(formats.ProviderEntry(id=pid, url=prov.info.url,
                                                 jurisdiction=_check_jurisdiction(spec.jurisdiction),
                                                 operator=spec.operator))
        # The policy is checked before anything is written anywhere.
        placement.check(entries, n, policy)
        for pid, prov in providers.items():
            _check_fresh(pid, prov)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        vault_id = secrets.token_bytes(16)
        config = formats.Config(v=formats.FORMAT_VERSION, vault_id=vault_id, k=k, n=n,
                                chunker=formats.Chunker(MIN_SIZE, AVG_SIZE, MAX_SIZE),
                                pack_size=PACK_SIZE, providers=entries, created=now, policy=policy)
        master = keys.new_master_secret()
        vkeys = VaultKeys.derive(master)
        keyfile = keys.wrap(master, passphrase.encode(), vault_id, kdf or keys.KdfParams(), now)
        repo = Repository(config, vkeys, providers, cls._cache_dir(home, vault_id))
        # Key objects first, then the config that needs them: a half-made vault is never mistaken
        # for a working one because `config` is what marks a provider as holding a vault.
        key_name = KEYS_PREFIX + secrets.token_hex(16)
        repo._put_everywhere(key_name, keyfile)
        repo._put_everywhere(CONFIG_NAME, Repository.seal_config(vkeys, config))
        home.mkdir(parents=True, exist_ok=True)
        _write_state(home, config)
        return cls(home, repo, master, key_name)

    # ------------------------------------------------------------------ keys and guardians

    def _require_master(self) -> bytes:
        if self._master is None:
            raise UsageError("this vault session holds no master secret")
        return self._master

    def key_objects(self) -> list[tuple[str, formats.KeyFile]]:
        out = []
        for name in sorted(self.repo._list_union(KEYS_PREFIX)):
            try:
                kf = keys.read_keyfile(self.repo._get_any(name, lambda d: d))
            except FreeholdError:
                continue
            if kf.vault_id == self.repo.config.vault_id:
                out.append((name[len(KEYS_PREFIX):], kf))
        return out

    def add_key(self, passphrase: str, kdf: keys.KdfParams | None = None) -> str:
        """Another passphrase for the vault: a new key object on every provider; no data rewritten."""
        if not passphrase:
            raise UsageError("the passphrase must not be empty")
        now = datetime.now(UTC).isoformat(timespec="seconds")
        kid = secrets.token_hex(16)
        blob = keys.wrap(self._require_master(), passphrase.encode(), self.repo.config.vault_id,
                         kdf or keys.KdfParams(), now)
        self.repo._put_everywhere(KEYS_PREFIX + kid, blob)
        return kid

    def remove_key(self, kid: str) -> None:
        """Revoke a key object everywhere. The last remaining key cannot be removed."""
        ids = [k for k, _ in self.key_objects()]
        matches = [k for k in ids if k.startswith(kid)] if kid else []
        if len(matches) != 1:
            raise UsageError(f"no single key matches {kid!r} (see 'freehold keys list')")
        if len(ids) == 1:
            raise UsageError("refusing to remove the vault's last key: add another first")
        for pid, prov in self.repo.providers.items():
            try:
                prov.delete(KEYS_PREFIX + matches[0])
            except ProviderError as exc:
                raise type(exc)(f"provider {pid}: {exc}; the key is still valid there, retry") from None
        if self.key_name == KEYS_PREFIX + matches[0]:
            self.key_name = None

    def change_passphrase(self, new: str, kdf: keys.KdfParams | None = None) -> str:
        """Replace the key object this session was opened with by one for the new passphrase."""
        old = self.key_name
        kid = self.add_key(new, kdf)
        if old is not None:
            self.remove_key(old[len(KEYS_PREFIX):])
        self.key_name = KEYS_PREFIX + kid
        return kid

    def guardian_shares(self, threshold: int, count: int, passphrase: str = "") -> list[str]:
        """SLIP-39 shares of the master secret: any ``threshold`` of them recover the vault."""
        from . import guardians

        return guardians.split(self._require_master(), threshold, count, passphrase.encode())

    # ------------------------------------------------------------------ providers and policy

    def _update_config(self, config: formats.Config) -> None:
        """Replace the sealed config on every provider (it is the one mutable object)."""
        self.repo.config = config
        self.repo._put_everywhere(CONFIG_NAME, Repository.seal_config(self.repo.keys, config))
        _write_state(self.home, config)

    def add_provider(self, spec: ProviderSpec) -> formats.ProviderEntry:
        """Add a provider: it receives copies of every replicated object (keys, index,
        snapshots), then the new config naming it goes to every provider."""
        cfg = self.repo.config
        name = spec.name or f"p{len(cfg.providers) + 1}"
        _check_name(name)
        if any(p.id == name for p in cfg.providers):
            raise UsageError(f"a provider named {name!r} already exists")
        prov = open_provider(spec.url, jurisdiction=spec.jurisdiction, operator=spec.operator)
        if any(p.url == prov.info.url for p in cfg.providers):
            raise UsageError(f"{prov.info.url} is already a provider of this vault")
        _check_fresh(name, prov)
        entry = formats.ProviderEntry(id=name, url=prov.info.url,
                                      jurisdiction=_check_jurisdiction(spec.jurisdiction),
                                      operator=spec.operator)
        self.repo.replicate_metadata_to(prov, keys.read_keyfile)
        self.repo.providers[name] = prov
        self._update_config(msgspec.structs.replace(cfg, providers=[*cfg.providers, entry]))
        return entry

    def provider_status(self) -> list[ProviderStatus]:
        held: dict[str, tuple[int, int]] = {}
        for rec in self.repo.packs.values():
            for share in rec.shares:
                if share is not None:
                    c, b = held.get(share.p, (0, 0))
                    held[share.p] = (c + 1, b + share.z)

        def one(entry: formats.ProviderEntry) -> ProviderStatus:
            st = ProviderStatus(entry.id, entry.url, entry.jurisdiction, entry.operator, True,
                                shares=held.get(entry.id, (0, 0))[0], bytes=held.get(entry.id, (0, 0))[1])
            try:
                if self.repo.providers[entry.id].head(CONFIG_NAME) is None:
                    st.healthy, st.error = False, "config object missing"
            except ProviderError as exc:
                st.healthy, st.error = False, str(exc)
            return st

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, self.repo.config.providers))

    def set_policy(self, policy: formats.Policy) -> int:
        """Make ``policy`` the vault's placement policy. Refused (PolicyError, saying which rule
        fails) when the providers cannot satisfy it. Returns how many existing packs it would
        place differently (they stay where they are until repaired or rebalanced)."""
        cfg = self.repo.config
        placement.check(cfg.providers, cfg.n, policy)
        self._update_config(msgspec.structs.replace(cfg, policy=policy))
        allowed = {p.id: p for p in placement.eligible(cfg.providers, policy)}

        def fits(rec: formats.PackRecord) -> bool:
            where = [allowed.get(s.p) for s in rec.shares if s is not None]
            return None not in where and placement.satisfies(where, policy)  # type: ignore[arg-type]

        return sum(not fits(rec) for rec in self.repo.packs.values())

    @staticmethod
    def _cache_dir(home: Path, vault_id: bytes) -> Path:
        return home / "cache" / vault_id.hex()

    @classmethod
    def open(cls, passphrase: str, home: Path | None = None) -> Vault:
        home = home or default_home()
        state = _read_state(home)
        specs = state.get("providers", [])
        providers: dict[str, Provider] = {
            p["id"]: open_provider(p["url"], jurisdiction=p.get("jurisdiction", ""),
                                   operator=p.get("operator", ""))
            for p in specs
        }
        master, key_name, _ = _unlock(providers, passphrase.encode(), bytes.fromhex(state["vault_id"]))
        return cls._assemble(home, providers, master, key_name, bytes.fromhex(state["vault_id"]))

    @classmethod
    def _assemble(cls, home: Path, providers: dict[str, Provider], master: bytes, key_name: str | None,
                  vault_id: bytes | None) -> Vault:
        """From a master secret and some of the vault's providers to an open vault: the sealed
        config (the source of truth for the provider list) names every other provider."""
        vkeys = VaultKeys.derive(master)
        config = _load_config(providers, vkeys)
        if vault_id is not None and config.vault_id != vault_id:
            raise IntegrityError("the providers hold a different vault than the one configured here")
        by_url = {p.info.url: p for p in providers.values()}
        full: dict[str, Provider] = {}
        for entry in config.providers:
            full[entry.id] = by_url.get(entry.url) or open_provider(
                entry.url, jurisdiction=entry.jurisdiction, operator=entry.operator)
        home.mkdir(parents=True, exist_ok=True)
        _write_state(home, config)
        repo = Repository(config, vkeys, full, cls._cache_dir(home, config.vault_id))
        repo.load_index()
        return cls(home, repo, master, key_name)

    @classmethod
    def recover(cls, urls: list[str], *, passphrase: str | None = None, shares: list[str] | None = None,
                share_passphrase: str = "", home: Path | None = None) -> Vault:
        """Rebuild the local configuration on a fresh machine from any one (or more) of the
        vault's providers, unlocked by a passphrase or by a threshold of guardian shares."""
        home = home or default_home()
        if (home / STATE_FILE).exists():
            raise UsageError(f"{home} already holds a vault configuration; recover into an empty "
                             "FREEHOLD_HOME")
        if (passphrase is None) == (shares is None):
            raise UsageError("recover with a passphrase or with guardian shares (one of the two)")
        if not urls:
            raise UsageError("name at least one provider to recover from (--from URL)")
        providers = {f"from{i}": open_provider(u) for i, u in enumerate(urls)}
        if passphrase is not None:
            master, key_name, kf = _unlock(providers, passphrase.encode(), None)
            return cls._assemble(home, providers, master, key_name, kf.vault_id)
        from . import guardians  # only recovery by shares needs SLIP-39

        master = guardians.combine(shares or [], share_passphrase.encode())
        if len(master) != 32:
            raise GuardianShareError(f"these guardian shares hold a {len(master) * 8}-bit secret; a Freehold "
                                     "vault key has 256 bits: they belong to something else")
        try:
            return cls._assemble(home, providers, master, None, None)
        except IntegrityError:
            raise GuardianShareError(
                "these guardian shares do not open the vault on the given provider(s): they belong to "
                "another vault, or the guardians' passphrase is wrong") from None

    def close(self) -> None:
        self.repo.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ operations

    def backup(self, paths: list[str], progress: Progress | None = None,
               tags: list[str] | None = None,
               degraded: bool = False) -> tuple[str, formats.Snapshot, BackupStats]:
        """Back up paths into a new snapshot. Every provider must take writes, unless ``degraded``:
        then the backup proceeds when at least k+1 do, and the missing shares are recorded."""
        if not paths:
            raise UsageError("name at least one path to back up")
        for p in paths:
            if not os.path.lexists(p):
                raise UsageError(f"no such file or directory: {p}")
        failures = self.repo.probe()
        if failures and not degraded:
            pid, exc = next(iter(failures.items()))
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise type(exc)(f"provider {pid} cannot take writes: {exc}{more}; nothing was written "
                            "(use --degraded to back up to the others)")
        self.repo.degraded = degraded
        self.repo.down = set(failures)
        if failures and len(self.repo.providers) - len(failures) < self.repo.k + 1:
            raise NotEnoughShares(f"only {len(self.repo.providers) - len(failures)} providers take writes; "
                                  f"even a degraded backup needs k+1 = {self.repo.k + 1}")
        self.repo.check_placement()
        self.repo.heal_replicas()
        wanted = sorted(os.path.abspath(p) for p in paths)
        parent = None
        for sid, snap in reversed(self.repo.snapshots()):
            if sorted(snap.paths) == wanted:
                parent = (sid, snap)
                break
        job = Backup(self.repo, progress)
        sid, snap = job.run(paths, parent, tags)
        return sid, snap, job.stats

    def snapshots(self) -> list[tuple[str, formats.Snapshot]]:
        return self.repo.snapshots()

    def snapshot(self, ref: str) -> tuple[str, formats.Snapshot]:
        sid = self.repo.resolve_snapshot(ref)
        return sid, self.repo.load_snapshot(sid)

    def ls(self, ref: str, path: str = "") -> list[tuple[str, formats.Node]]:
        _, snap = self.snapshot(ref)
        node = find_node(self.repo, snap, path) if path.strip("/") else None
        if node is None:
            return list(walk(self.repo, snap.tree))
        base = path.strip("/")
        out = [(base, node)]
        if node.type == "dir" and node.subtree is not None:
            out += list(walk(self.repo, node.subtree, base + "/"))
        return out

    def restore(self, ref: str, target: Path, include: str | None = None,
                progress: Progress | None = None) -> RestoreStats:
        _, snap = self.snapshot(ref)
        return Restore(self.repo, progress).run(snap, target, include)

    def check(self, read_data: bool = False, progress: Callable[[int], None] | None = None) -> CheckReport:
        report = CheckReport()
        report.packs = len(self.repo.packs)
        report.shares = sum(len(p.shares) for p in self.repo.packs.values())
        report.problems += self.repo.check_shares(read_data, progress)
        # Every snapshot's trees must load and every blob they name must be indexed.
        snaps = self._check_snapshot_objects(report)
        seen: set[bytes] = set()
        for sid, snap in snaps:
            try:
                self._check_tree(snap.tree, seen, report)
            except FreeholdError as exc:
                report.problems.append(Problem("unreadable-snapshot", f"{sid[:12]}: {exc}"))
        report.snapshots = len(snaps)
        return report

    def _check_snapshot_objects(self, report: CheckReport) -> list[tuple[str, formats.Snapshot]]:
        # One listing per reachable provider serves both the snapshot list and the replica check
        # (unreachable providers are reported by check_shares).
        listings = self.repo.replica_listings(SNAPSHOT_PREFIX)
        if not listings:
            self.repo.snapshot_ids()  # no provider answers: raise its error, as listing always did
        names = sorted(set().union(*listings.values()))
        ids = [n[len(SNAPSHOT_PREFIX):] for n in names]
        for pid, held in listings.items():
            for name in names:
                if name not in held:
                    report.problems.append(Problem("missing-replica", "snapshot object missing", pid, name))
        out = []
        for sid in ids:
            try:
                out.append((sid, self.repo.load_snapshot(sid)))
            except FreeholdError as exc:
                report.problems.append(Problem("unreadable-snapshot", f"{sid[:12]}: {exc}"))
        return out

    def _check_tree(self, tree_id: bytes, seen: set[bytes], report: CheckReport) -> None:
        if tree_id in seen:
            return
        seen.add(tree_id)
        if tree_id not in self.repo.blobs:
            report.problems.append(Problem("missing-blob", f"tree {tree_id.hex()[:12]} is in no index"))
            return
        for node in self.repo.load_tree(tree_id).nodes:
            for c in node.content:
                if c not in self.repo.blobs and c not in seen:
                    seen.add(c)
                    report.problems.append(Problem("missing-blob", f"data blob {c.hex()[:12]} of "
                                                   f"{os.fsdecode(node.name)!r} is in no index"))
            if node.subtree is not None:
                self._check_tree(node.subtree, seen, report)

    def stats(self) -> dict[str, Any]:
        snaps = self.repo.snapshots()
        logical = sum(s.size for _, s in snaps)
        unique = sum(loc.entry.s for loc in self.repo.blobs.values())
        packed = sum(p.len for p in self.repo.packs.values())
        per_provider: dict[str, dict[str, Any]] = {}

        def usage(item: tuple[str, Provider]) -> tuple[str, dict[str, Any]]:
            pid, prov = item
            try:
                objs = list(prov.list(""))
                return pid, {"url": prov.info.url, "objects": len(objs), "bytes": sum(z for _, z in objs)}
            except ProviderError as exc:
                return pid, {"url": prov.info.url, "error": str(exc), "objects": 0, "bytes": 0}

        with ThreadPoolExecutor(8) as pool:
            per_provider = dict(pool.map(usage, self.repo.providers.items()))
        stored = sum(p["bytes"] for p in per_provider.values())
        return {
            "snapshots": len(snaps),
            "logical_bytes": logical,
            "unique_bytes": unique,
            "packed_bytes": packed,
            "stored_bytes": stored,
            "packs": len(self.repo.packs),
            "blobs": len(self.repo.blobs),
            "k": self.repo.k,
            "n": self.repo.n,
            "dedup_ratio": logical / unique if unique else 1.0,
            "overhead_ratio": stored / unique if unique else 0.0,
            "providers": per_provider,
        }

    def clear_cache(self) -> None:
        shutil.rmtree(self.home / "cache", ignore_errors=True)


# ---------------------------------------------------------------------- helpers


def _check_fresh(pid: str, prov: Provider) -> None:
    """A new provider must take writes and hold no vault yet."""
    try:
        prov.check_writable()
        held = prov.head(CONFIG_NAME)
    except ProviderError as exc:
        raise type(exc)(f"provider {pid}: {exc}") from None
    if held is not None:
        raise UsageError(f"provider {pid} ({prov.info.url}) already holds a Freehold vault")


def _write_state(home: Path, config: formats.Config) -> None:
    state = {
        "vault_id": config.vault_id.hex(),
        "k": config.k,
        "n": config.n,
        "providers": [{"id": p.id, "url": p.url, "jurisdiction": p.jurisdiction, "operator": p.operator}
                      for p in config.providers],
    }
    tmp = home / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(home / STATE_FILE)


def _read_state(home: Path) -> dict[str, Any]:
    path = home / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaultNotFound(f"no vault configured in {home} (run 'freehold init' first, "
                            "or set FREEHOLD_HOME)") from None
    except (OSError, ValueError) as exc:
        raise VaultNotFound(f"cannot read {path}: {exc}") from None
    if not isinstance(state, dict) or "vault_id" not in state:
        raise VaultNotFound(f"{path} is not a Freehold vault configuration")
    return state


def _unlock(providers: dict[str, Provider], passphrase: bytes,
            vault_id: bytes | None) -> tuple[bytes, str, formats.KeyFile]:
    """Try every key object found on any provider; the first one the passphrase opens wins.
    Returns (master secret, key object name, key object). ``vault_id`` None: any vault's."""
    seen: set[str] = set()
    reachable = 0
    last_error: FreeholdError | None = None
    for prov in providers.values():
        try:
            names = [n for n, _ in prov.list(KEYS_PREFIX)]
            reachable += 1
        except ProviderError as exc:
            last_error = exc
            continue
        for name in names:
            if name in seen:
                continue
            try:
                kf = keys.read_keyfile(prov.get(name))
            except (ProviderError, IntegrityError):
                continue
            if vault_id is not None and kf.vault_id != vault_id:
                continue
            seen.add(name)
            try:
                return keys.unwrap(kf, passphrase), name, kf
            except WrongPassphrase:
                continue
    if not reachable:
        raise last_error or VaultNotFound("no provider is configured")
    if not seen:
        raise VaultNotFound("no provider holds a key for this vault")
    raise WrongPassphrase("wrong passphrase")


def _load_config(providers: dict[str, Provider], vkeys: VaultKeys) -> formats.Config:
    last: FreeholdError | None = None
    for prov in providers.values():
        try:
            return Repository.open_config(vkeys, prov.get(CONFIG_NAME))
        except (ProviderError, IntegrityError) as exc:
            last = exc
    if isinstance(last, ObjectNotFound):
        raise VaultNotFound("no provider holds this vault's config")
    raise last or VaultNotFound("no provider holds this vault's config")
