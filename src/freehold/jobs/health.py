"""The health survey shared by ``check`` and ``repair`` (design §15b).

For every pack of the live index, each share is looked up in the listings of ``data/`` (present,
with its recorded size) and, for the packs selected by ``--read-data`` or ``--read-data-subset``,
read and hashed against its ``ShareRecord.h``. Each pack is then classified (``api.PACK_*``):
healthy, at risk (k <= good < n, or a share on a draining provider, or placed against the current
policy), unavailable (fewer than k good, enough on providers that did not answer) or lost.
Share objects no live index lists are counted apart: packs of crashed backups (which ``repair``
can index from their trailers), retired packs awaiting ``prune``, stray copies, unknown names.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import blake3

from .. import placement
from ..api import (
    DAMAGED_SHARE,
    DRAINING_SHARE,
    LOST_PACK,
    MISPLACED_PACK,
    MISSING_SHARE,
    PACK_AT_RISK,
    PACK_HEALTHY,
    PACK_LOST,
    PACK_UNAVAILABLE,
    SHARE_DAMAGED,
    SHARE_GOOD,
    SHARE_MISSING,
    SHARE_NEVER_WRITTEN,
    SHARE_UNKNOWN_PROVIDER,
    SHARE_UNREACHABLE,
    SHARE_UNREADABLE,
    SHARE_WRONG_SIZE,
    UNKNOWN_PROVIDER,
    UNREACHABLE_PROVIDER,
    UNREADABLE_SHARE,
    CheckReport,
    Orphans,
    PackHealth,
    Problem,
    ShareHealth,
)
from ..errors import FreeholdError, ProviderError, UsageError
from ..formats import Config, PackRecord, Policy, ProviderEntry
from ..store import Operation
from ..store.packs import DATA_PREFIX, share_name

SHARE_NAME = re.compile(r"^data/([0-9a-f]{2})/([0-9a-f]{64})\.(\d{1,3})$")

# (pack id, share index) of a share object's name, or None when it is not named like one.
def parse_share_name(name: str) -> tuple[bytes, int] | None:
    m = SHARE_NAME.match(name)
    if m is None or m.group(2)[:2] != m.group(1):
        return None
    return bytes.fromhex(m.group(2)), int(m.group(3))


Selector = Callable[[list[bytes]], set[bytes]]


def parse_subset(text: str) -> Selector:
    """restic's ``--read-data-subset``: ``N%`` (a random N % of the packs) or ``n/t`` (the packs
    whose first id byte is n-1 modulo t: 1/t .. t/t together cover every pack)."""
    spec = text.strip()
    if spec.endswith("%"):
        try:
            pct = float(spec[:-1])
        except ValueError:
            pct = -1.0
        if not 0 < pct <= 100:
            raise UsageError(f"--read-data-subset {text!r}: a percentage must be in (0, 100]")

        def pick_pct(ids: list[bytes]) -> set[bytes]:
            count = min(len(ids), max(1, round(len(ids) * pct / 100))) if ids else 0
            return set(random.sample(ids, count))
        return pick_pct
    n_s, sep, t_s = spec.partition("/")
    if not sep or not n_s.isdigit() or not t_s.isdigit() or not 1 <= int(n_s) <= int(t_s):
        raise UsageError(f"--read-data-subset {text!r}: use N% or n/t with 1 <= n <= t (e.g. 5%, 1/12)")
    n, t = int(n_s), int(t_s)
    return lambda ids: {i for i in ids if i[0] % t == n - 1}


def select(read_data: bool, subset: str | None) -> Selector | None:
    if subset:
        return parse_subset(subset)
    return (lambda ids: set(ids)) if read_data else None


@dataclass
class SharePlace:
    """Where one share of a pack is, and what the survey found."""

    index: int
    provider: str                  # the recorded provider ("" when nil)
    state: str
    size: int = 0                  # the recorded size (0 when nil)


@dataclass
class PackView:
    rec: PackRecord
    shares: list[SharePlace]
    state: str = PACK_HEALTHY
    good: int = 0
    unreachable: int = 0
    draining: list[int] = field(default_factory=list)    # indices of good shares on draining providers
    misplaced: bool = False
    strays: list[tuple[str, int]] = field(default_factory=list)   # (provider, index) held but not recorded

    def health(self, entries: dict[str, ProviderEntry]) -> PackHealth:
        return PackHealth(self.rec.id.hex(), self.state, self.good, self.rec.k, self.rec.n,
                          [ShareHealth(s.index, s.provider, s.state,
                                       bool(entries.get(s.provider) and entries[s.provider].draining))
                           for s in self.shares], self.misplaced)


@dataclass
class Survey:
    listings: dict[str, dict[str, int]] = field(default_factory=dict)   # provider -> data/ name -> size
    unreachable: dict[str, FreeholdError] = field(default_factory=dict)
    packs: list[PackView] = field(default_factory=list)
    orphans: dict[bytes, dict[int, list[tuple[str, int]]]] = field(default_factory=dict)  # unindexed
    retired: dict[bytes, dict[int, list[tuple[str, int]]]] = field(default_factory=dict)
    unknown: list[tuple[str, str]] = field(default_factory=list)        # (provider, name)
    read_packs: int = 0
    bytes_read: int = 0

    def summary(self, k: int) -> Orphans:
        o = Orphans()
        for held in self.orphans.values():
            o.packs += 1
            o.shares += sum(len(h) for h in held.values())
            o.bytes += sum(z for h in held.values() for _, z in h)
            o.indexable += len(held) >= k
        for held in self.retired.values():
            o.retired_packs += 1
            o.retired_bytes += sum(z for h in held.values() for _, z in h)
        o.stray_shares = sum(len(p.strays) for p in self.packs)
        o.unknown = [f"{pid}: {name}" for pid, name in self.unknown]
        return o


def list_data(op: Operation) -> tuple[dict[str, dict[str, int]], dict[str, FreeholdError]]:
    listings: dict[str, dict[str, int]] = {}
    errors: dict[str, FreeholdError] = {}
    got = op.replicas.gather(lambda p: dict(p.list(DATA_PREFIX)), enough=len(op.store.providers))
    for pid, res in got.items():
        if isinstance(res, FreeholdError):
            errors[pid] = res
        else:
            listings[pid] = res
    for pid in op.store.providers:
        if pid not in listings and pid not in errors:
            errors[pid] = ProviderError(f"provider {pid} is down in this operation")
    return listings, errors


def survey(op: Operation, selector: Selector | None = None,
           progress: Callable[[int], None] | None = None) -> Survey:
    """The state of every share of every live pack, and the share objects no pack explains."""
    s = Survey()
    s.listings, s.unreachable = list_data(op)
    cfg = op.store.config
    entries = {p.id: p for p in cfg.providers}
    packs = op.index.packs()
    chosen = selector([r.id for r in packs]) if selector is not None else set()
    s.read_packs = len(chosen)
    # Who holds each share object name.
    holders: dict[str, list[tuple[str, int]]] = {}
    for pid, names in s.listings.items():
        for name, size in names.items():
            holders.setdefault(name, []).append((pid, size))
    jobs = []
    for rec in packs:
        view = PackView(rec, [])
        for i, share in enumerate(rec.shares):
            name = share_name(rec.id, i)
            here = holders.pop(name, [])
            if share is None:
                view.shares.append(SharePlace(i, "", SHARE_NEVER_WRITTEN))
                view.strays += [(pid, i) for pid, _ in here]
                continue
            view.strays += [(pid, i) for pid, _ in here if pid != share.p]
            place = SharePlace(i, share.p, SHARE_GOOD, share.z)
            size = dict(here).get(share.p)
            if share.p not in entries or share.p not in op.store.providers:
                place.state = SHARE_UNKNOWN_PROVIDER
            elif share.p in s.unreachable:
                place.state = SHARE_UNREACHABLE
            elif size is None:
                place.state = SHARE_MISSING
            elif size != share.z:
                place.state = SHARE_WRONG_SIZE
            elif rec.id in chosen:
                jobs.append((place, op.store.pool.submit(_hash_state, op, share.p, name, share.h)))
            view.shares.append(place)
        for i in range(len(rec.shares), rec.n):  # a record shorter than n: those shares were never written
            view.shares.append(SharePlace(i, "", SHARE_NEVER_WRITTEN))
        s.packs.append(view)
    for place, job in jobs:
        place.state, n = job.result()
        s.bytes_read += n
        if progress:
            progress(n)
    for view in s.packs:
        classify(view, entries, cfg.policy)
    gone = op.load_deletions().packs
    for name, held in holders.items():  # share objects no live pack's record explains
        parsed = parse_share_name(name)
        if parsed is None:
            s.unknown += [(pid, name) for pid, _ in held]
            continue
        pack_id, i = parsed
        if op.index.has_pack(pack_id):  # an index beyond n: not ours to explain
            s.unknown += [(pid, name) for pid, _ in held]
            continue
        into = s.retired if pack_id in gone else s.orphans
        into.setdefault(pack_id, {}).setdefault(i, []).extend(held)
    return s


def _hash_state(op: Operation, pid: str, name: str, want: bytes) -> tuple[str, int]:
    try:
        obj = op.store.providers[pid].get(name)
    except ProviderError:
        return SHARE_UNREADABLE, 0
    return (SHARE_GOOD if blake3.blake3(obj).digest() == want else SHARE_DAMAGED), len(obj)


def fits_policy(where: list[str], entries: dict[str, ProviderEntry], policy: Policy, n: int) -> bool:
    """Whether a pack's recorded providers meet the policy (draining aside; providers the config
    does not name, and rules only a full set of n can meet, are judged elsewhere)."""
    chosen = [entries[p] for p in where if p in entries]
    if not all(placement.allowed(e, policy) for e in chosen) or len({e.id for e in chosen}) != len(chosen):
        return False
    return len(chosen) < n or placement.satisfies(chosen, policy)


def classify(view: PackView, entries: dict[str, ProviderEntry], policy: Policy) -> None:
    rec = view.rec
    good = [s for s in view.shares if s.state == SHARE_GOOD]
    view.good = len(good)
    view.unreachable = sum(s.state == SHARE_UNREACHABLE for s in view.shares)
    view.draining = [s.index for s in good if entries[s.provider].draining]
    recorded = [s.provider for s in view.shares if s.provider]
    view.misplaced = not fits_policy(recorded, entries, policy, rec.n)
    if view.good < rec.k:
        view.state = PACK_UNAVAILABLE if view.good + view.unreachable >= rec.k else PACK_LOST
    elif view.good < rec.n or view.draining or view.misplaced:
        view.state = PACK_AT_RISK
    else:
        view.state = PACK_HEALTHY


# -- check's findings ------------------------------------------------------------------------------

def report_into(found: Survey, r: CheckReport, cfg: Config) -> None:
    """The survey's findings as ``check`` reports them: share problems (one per share, naming
    provider and object), pack problems (draining, misplaced, lost), every pack that is not
    healthy, and the share objects no live index lists."""
    entries = {p.id: p for p in cfg.providers}
    r.read_packs = found.read_packs
    r.orphans = found.summary(cfg.k)
    for pid, exc in sorted(found.unreachable.items()):
        r.problems.append(Problem(UNREACHABLE_PROVIDER, str(exc), provider=pid))
    for view in found.packs:
        _pack_problems(view, entries, cfg, r)


def _pack_problems(view: PackView, entries: dict[str, ProviderEntry], cfg: Config, r: CheckReport) -> None:
    rec = view.rec
    planned: list[str] = []
    if any(s.state == SHARE_NEVER_WRITTEN for s in view.shares):
        try:
            planned = placement.place(rec.id, cfg.providers, rec.n, cfg.policy)
        except FreeholdError:
            planned = []
    for s in view.shares:
        name = share_name(rec.id, s.index)
        problem = _share_problem(s, name, planned)
        if problem is not None:
            r.problems.append(problem)
        elif s.index in view.draining:
            r.problems.append(Problem(DRAINING_SHARE, f"share {s.index} is on {s.provider}, which is being "
                                      "drained ('freehold repair' moves it)", s.provider, name))
    pack = f"pack {rec.id.hex()[:12]}"
    if view.misplaced and all(s.provider in entries for s in view.shares if s.provider):
        where = ", ".join(s.provider for s in view.shares if s.provider)
        r.problems.append(Problem(MISPLACED_PACK, f"{pack} is on {where}, which the current policy does not "
                                  f"allow ({placement.describe(cfg.policy)}); 'freehold repair' moves it"))
    if view.state == PACK_LOST:
        bad = ", ".join(f"{s.index}: {s.state}{' on ' + s.provider if s.provider else ''}"
                        for s in view.shares if s.state != SHARE_GOOD)
        r.problems.append(Problem(LOST_PACK, f"{pack} has {view.good} good shares of the {rec.k} needed "
                                  f"({bad}): its blobs cannot be read"))
    if view.state != PACK_HEALTHY:
        r.pack_health.append(view.health(entries))


def _share_problem(s: SharePlace, name: str, planned: list[str]) -> Problem | None:
    """The finding of one share of the survey (None: good)."""
    if s.state == SHARE_NEVER_WRITTEN:
        where = planned[s.index] if s.index < len(planned) else ""
        return Problem(MISSING_SHARE, f"share {s.index} was never written (degraded backup)", where, name)
    if s.state == SHARE_UNKNOWN_PROVIDER:
        return Problem(UNKNOWN_PROVIDER, f"share {s.index} is on {s.provider!r}, which the config does not name",
                       s.provider, name)
    if s.state == SHARE_MISSING:
        return Problem(MISSING_SHARE, "share is missing", s.provider, name)
    if s.state == SHARE_WRONG_SIZE:
        return Problem(DAMAGED_SHARE, f"size differs from the expected {s.size}", s.provider, name)
    if s.state == SHARE_DAMAGED:
        return Problem(DAMAGED_SHARE, "content does not match its hash in the index", s.provider, name)
    if s.state == SHARE_UNREADABLE:
        return Problem(UNREADABLE_SHARE, "cannot be read", s.provider, name)
    return None  # good, or on an unreachable provider (reported once, for the provider)
