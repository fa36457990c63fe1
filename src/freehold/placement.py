"""Where each share of a pack may live: placement policies over providers (docs/design.md §9a).

Pure functions over the provider list: no I/O. A policy is checked before a byte is
written; an unsatisfiable one is an error that names the rule that fails and why.

Rules, each optional:
- ``allow``: the jurisdictions (ISO 3166 alpha-2) shares may live in. A provider with no
  recorded jurisdiction never satisfies an allow list.
- ``min_jurisdictions``: each pack's n shares span at least this many jurisdictions
  (providers without a recorded jurisdiction do not count).
- ``max_per_operator``: at most this many of a pack's shares with one operator (providers
  without a recorded operator count as one shared "unknown" operator).

A provider being drained (``ProviderEntry.draining``, format 1.3) is never eligible: it gets no
new shares, and ``repair`` moves the ones it holds elsewhere.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Sequence

import blake3

from .errors import PolicyError
from .formats import Policy, ProviderEntry

# Beyond this many candidate sets the search gives up (vaults have tens of providers at most).
MAX_COMBINATIONS = 200_000


def allowed(p: ProviderEntry, policy: Policy) -> bool:
    """Whether the policy's allow list admits the provider (draining aside)."""
    allow = {j.upper() for j in policy.allow}
    return not allow or bool(p.jurisdiction and p.jurisdiction.upper() in allow)


def eligible(providers: Iterable[ProviderEntry], policy: Policy,
             exclude: Iterable[str] = ()) -> list[ProviderEntry]:
    """Providers that may take new shares: allowed by the policy, not draining, not ``exclude``d."""
    skip = set(exclude)
    return [p for p in providers if p.id not in skip and not p.draining and allowed(p, policy)]


def satisfies(chosen: Sequence[ProviderEntry], policy: Policy) -> bool:
    if len({p.id for p in chosen}) != len(chosen):
        return False
    if policy.max_per_operator:
        counts = Counter(p.operator for p in chosen)
        if max(counts.values(), default=0) > policy.max_per_operator:
            return False
    if policy.min_jurisdictions <= 1:
        return True
    jurisdictions = {p.jurisdiction.upper() for p in chosen if p.jurisdiction}
    return len(jurisdictions) >= policy.min_jurisdictions


def rank(pack_id: bytes, candidates: Iterable[ProviderEntry]) -> list[ProviderEntry]:
    """Rendezvous (highest-random-weight) order: stable per pack, even across providers."""
    return sorted(candidates, key=lambda p: blake3.blake3(pack_id + p.id.encode()).digest())



def _greedy(ranked: list[ProviderEntry], n: int, policy: Policy) -> list[ProviderEntry] | None:
    chosen: list[ProviderEntry] = []
    ops: Counter[str] = Counter()
    cap = policy.max_per_operator or n

    def take(p: ProviderEntry) -> None:
        chosen.append(p)
        ops[p.operator] += 1

    seen_j: set[str] = set()
    for p in ranked:  # first one provider from each of enough jurisdictions
        if policy.min_jurisdictions <= 1 or len(seen_j) >= policy.min_jurisdictions or len(chosen) == n:
            break
        j = p.jurisdiction.upper()
        if j and j not in seen_j and ops[p.operator] < cap:
            take(p)
            seen_j.add(j)
    for p in ranked:  # then fill by rank
        if len(chosen) == n:
            break
        if p not in chosen and ops[p.operator] < cap:
            take(p)
    return chosen if len(chosen) == n and satisfies(chosen, policy) else None


def place(pack_id: bytes, providers: Sequence[ProviderEntry], n: int, policy: Policy,
          exclude: Iterable[str] = ()) -> list[str]:
    """Provider id for each of a pack's n shares (share i goes to element i)."""
    ranked = rank(pack_id, eligible(providers, policy, exclude))
    chosen = _greedy(ranked, n, policy)
    if chosen is None:
        for combo in itertools.islice(itertools.combinations(ranked, n), MAX_COMBINATIONS):
            if satisfies(combo, policy):
                chosen = list(combo)
                break
    if chosen is None:
        raise PolicyError(explain(providers, n, policy, exclude))
    return [p.id for p in chosen]


def check(providers: Sequence[ProviderEntry], n: int, policy: Policy, exclude: Iterable[str] = ()) -> None:
    """Raise PolicyError, saying which rule fails and why, if no pack could be placed."""
    place(b"feasibility", providers, n, policy, exclude)


def explain(providers: Sequence[ProviderEntry], n: int, policy: Policy, exclude: Iterable[str] = ()) -> str:
    down = set(exclude)
    pool = eligible(providers, policy, down)
    avail = [p for p in providers if p.id not in down and not p.draining]
    draining = sum(p.draining for p in providers)
    if len(avail) < n:
        return (f"each pack needs {n} providers but only {len(avail)} are available"
                + (f" ({len(down)} unreachable)" if down else "")
                + (f" ({draining} being drained)" if draining else ""))
    if len(pool) < n:
        outside = sorted(f"{p.id} ({p.jurisdiction or 'no jurisdiction'})" for p in avail if p not in pool)
        return (f"rule allow={','.join(policy.allow)}: only {len(pool)} providers are in allowed "
                f"jurisdictions, {n} are needed; outside: {', '.join(outside)}")
    jurisdictions = {p.jurisdiction.upper() for p in pool if p.jurisdiction}
    if policy.min_jurisdictions > 1 and len(jurisdictions) < policy.min_jurisdictions:
        return (f"rule min-jurisdictions={policy.min_jurisdictions}: the eligible providers span only "
                f"{len(jurisdictions)} ({', '.join(sorted(jurisdictions)) or 'none recorded'})")
    if policy.max_per_operator:
        ops = Counter(p.operator for p in pool)
        room = sum(min(c, policy.max_per_operator) for c in ops.values())
        if room < n:
            listing = ", ".join(f"{op or 'unknown'}: {c}" for op, c in sorted(ops.items()))
            return (f"rule max-per-operator={policy.max_per_operator}: the eligible providers' operators "
                    f"({listing}) can hold at most {room} of a pack's {n} shares")
    return (f"no set of {n} providers satisfies allow/min-jurisdictions={policy.min_jurisdictions}/"
            f"max-per-operator={policy.max_per_operator} together")


def describe(policy: Policy) -> str:
    parts = []
    if policy.allow:
        parts.append(f"shares only in {', '.join(policy.allow)}")
    if policy.min_jurisdictions > 1:
        parts.append(f"each pack across at least {policy.min_jurisdictions} jurisdictions")
    if policy.max_per_operator:
        parts.append(f"at most {policy.max_per_operator} share(s) of a pack per operator")
    return "; ".join(parts) or "no restrictions (any n distinct providers)"
