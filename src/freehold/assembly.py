"""From provider addresses to an open store: opening and wrapping providers, refusing one storage
counted twice (locations and identity markers), unlocking at a bounded cost, following the newest
config's provider list, and seeding a new provider with every replicated object."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import formats, keys
from .api import Outcome
from .crypto import VaultKeys
from .errors import FreeholdError, IntegrityError, ProviderError, UsageError, VaultNotFound, WrongPassphrase
from .providers import Provider, open_provider
from .providers.base import overlapping
from .state import LocalState
from .store import HEALED, Operation, Session, Store
from .store.configs import CONFIG_NAME, ConfigStore, StaleConfig, majority
from .store.keystore import KEYS_PREFIX, KeyStore, Unlocked
from .store.metadata import MARKER_PREFIX
from .store.replicas import ReplicaSet

# A hook that wraps each provider as it is opened (fault injection, counting, logging).
Wrap = Callable[[str, Provider], Provider]


@dataclass
class ProviderSpec:
    url: str
    jurisdiction: str = ""
    operator: str = ""
    name: str = ""


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def check_name(name: str) -> None:
    if not _NAME_OK.match(name):
        raise UsageError(f"provider name {name!r}: use 1-40 letters, digits, '.', '_' or '-'")


def check_jurisdiction(code: str) -> str:
    code = code.strip().upper()
    if code and not re.fullmatch(r"[A-Z]{2}", code):
        raise UsageError(f"jurisdiction {code!r}: use an ISO 3166 alpha-2 country code such as DE")
    return code


def change_quorum(config: formats.Config) -> int:
    """Providers that must take a key or config change: a majority (so two changes cannot both
    win) and at least k (so any k providers that restore data also hold it)."""
    return max(config.k, majority(config))


def cache_dir(home: Path, vault_id: bytes) -> Path:
    return home / "cache" / vault_id.hex()


def open_one(pid: str, url: str, jurisdiction: str, operator: str, wrap: Wrap | None) -> Provider:
    prov = open_provider(url, jurisdiction=jurisdiction, operator=operator)
    return wrap(pid, prov) if wrap is not None else prov


def location(prov: Provider) -> tuple[str, ...]:
    loc = getattr(prov, "location", None)
    return tuple(loc) if loc else ("url", prov.info.url.rstrip("/"))


def own_dirs(home: Path, providers: dict[str, Provider]) -> list[str]:
    """Freehold's own directories on this machine, which a backup leaves out: the home and the
    local-directory providers."""
    return [str(home), *(loc[-1] for p in providers.values() if (loc := location(p))[0] == "file")]


def refuse_overlaps(providers: dict[str, Provider]) -> None:
    """The same storage under two names (or one inside another) would count one disk twice."""
    items = [(pid, location(p)) for pid, p in providers.items()]
    for i, (a, la) in enumerate(items):
        for b, lb in items[i + 1:]:
            if overlapping(la, lb):
                raise UsageError(f"providers {a} and {b} are the same storage, or one lies inside the other "
                                 f"({providers[a].info.url}, {providers[b].info.url}): each provider must be "
                                 "independent storage")


def place_markers(providers: dict[str, Provider], entries: list[formats.ProviderEntry]) -> None:
    """Write each new provider's identity marker, then look for it on every other provider: one
    found elsewhere is the same storage under another address, and the markers just written are
    deleted again. Nothing else is written before this."""
    by_id = {e.id: e for e in entries}
    written: list[tuple[Provider, str]] = []
    for pid, prov in providers.items():
        name = MARKER_PREFIX + by_id[pid].marker
        if by_id[pid].marker and prov.head(name) is None:
            prov.put(name, b"")
            written.append((prov, name))
    try:
        for pid, prov in providers.items():
            for other, e in by_id.items():
                if other == pid or not e.marker or other not in providers:
                    continue
                try:
                    seen = prov.head(MARKER_PREFIX + e.marker)
                except ProviderError:
                    continue
                if seen is not None:
                    raise UsageError(f"providers {pid} and {other} are the same storage under two addresses "
                                     f"({prov.info.url}, {providers[other].info.url})")
    except UsageError:
        for prov, name in written:
            try:
                prov.delete(name)
            except ProviderError:
                pass
        raise


def check_fresh(pid: str, prov: Provider) -> None:
    """A new provider must take writes and hold no vault yet."""
    try:
        prov.check_writable()
        held = prov.head(CONFIG_NAME)
    except ProviderError as exc:
        raise type(exc)(f"provider {pid}: {exc}") from None
    if held is not None:
        raise UsageError(f"provider {pid} ({prov.info.url}) already holds a Freehold vault")


def unlock(replicas: ReplicaSet, store: Store, passphrase: str, vault_id: bytes | None,
            local: LocalState | None) -> tuple[Unlocked, Any]:
    """The first key the passphrase opens whose master secret also opens a config of the vault
    (a planted key object can wrap a secret of the attacker's choosing)."""
    seen = local.config_generation if local else 0
    last: FreeholdError | None = None
    for cand in KeyStore(replicas).candidates(passphrase, vault_id, local.key_ids if local else []):
        try:
            read = ConfigStore(replicas, VaultKeys.derive(cand.master), store.cache).load(
                seen_generation=seen, vault_id=cand.keyfile.vault_id)
        except StaleConfig:
            raise
        except (IntegrityError, VaultNotFound) as exc:
            last = exc
            continue
        if not read.plausible:  # a planted key object and a config sealed under its own master
            replicas.session.warn(f"key object {cand.key_id[:8]} opens a config that most providers do not hold; "
                                  "ignored (planted?)")
            last = WrongPassphrase("wrong passphrase (it opens none of this vault's keys)")
            continue
        return cand, read
    raise last or WrongPassphrase("wrong passphrase")  # pragma: no cover - candidates() raises first


def adopt_providers(store: Store, config: formats.Config, wrap: Wrap | None) -> bool:
    """Key the open providers by the config's ids, matching by storage location, and open every
    provider the config names that is not open yet. Returns whether any was opened."""
    by_loc = {location(p): p for p in store.providers.values()}
    named: dict[str, Provider] = {}
    added = False
    for entry in config.providers:
        prov = open_provider(entry.url, jurisdiction=entry.jurisdiction, operator=entry.operator)
        known = by_loc.get(location(prov)) or _by_marker(store, entry, {id(p) for p in named.values()})
        if known is not None:
            named[entry.id] = known
        else:
            named[entry.id] = wrap(entry.id, prov) if wrap is not None else prov
            added = True
    used = {id(p) for p in named.values()}
    for pid, prov in store.providers.items():
        if id(prov) not in used:
            named[pid] = prov  # a --from provider the config does not name: still asked for now
    store.providers.clear()
    store.providers.update(named)
    return added


def _by_marker(store: Store, entry: formats.ProviderEntry, taken: set[int]) -> Provider | None:
    """An open provider holding ``entry``'s identity marker: the same storage reached under another
    address (a disk mounted elsewhere on a new machine, a renamed endpoint)."""
    if not entry.marker:
        return None
    for prov in store.providers.values():
        if id(prov) in taken:
            continue
        try:
            if prov.head(MARKER_PREFIX + entry.marker) is not None:
                return prov
        except ProviderError:
            continue
    return None


def drop_unlisted(store: Store, config: formats.Config) -> None:
    listed = {p.id for p in config.providers}
    for pid in [p for p in store.providers if p not in listed]:
        del store.providers[pid]


def copy_metadata(op: Operation, target: Provider, name: str) -> int:
    """Copy every replicated object (keys, index, snapshots) to a new provider, each from a
    copy that verifies. Returns the number copied."""
    copied = 0
    for kid in op.keystore.ids():
        if kid in op.config.revoked:
            continue
        got = op.replicas.read(KEYS_PREFIX + kid, keys.read_keyfile)
        target.put(KEYS_PREFIX + kid, got.raw)
        copied += 1
    for prefix, kind, what in HEALED:  # deletion records first; nothing they say is gone
        for obj in op.live_listing(prefix).names:
            try:
                env, _ = op.objects.read(prefix, obj[len(prefix):], kind, what)
            except FreeholdError as exc:
                op.session.warn(f"{obj} not copied to {name}: {exc}")
                continue
            target.put(obj, env)
            copied += 1
    return copied


def outcome_of(s: Session) -> Outcome:
    missed = sorted(set().union(*s.missed.values())) if s.missed else []
    return Outcome(down=sorted(s.down), missed=missed, warnings=list(s.warnings), fallback_reads=s.fallback_reads)


def leave_nothing(home: Path, existed: bool) -> None:
    """After a failed recovery: no cache, and no home directory if there was none before."""
    shutil.rmtree(home / "cache", ignore_errors=True)
    if not existed:
        try:
            home.rmdir()
        except OSError:
            pass
