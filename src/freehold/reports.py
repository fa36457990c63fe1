"""``stats`` and ``provider list``: what the vault holds where, over one operation's components."""

from __future__ import annotations

from typing import Any

from .api import ProviderStatus
from .errors import FreeholdError
from .providers.base import Provider
from .store import Operation
from .store.configs import CONFIG_NAME


def provider_status(op: Operation) -> list[ProviderStatus]:
    """Each provider of the config: reachable and holding the config, and the shares it holds."""
    held: dict[str, tuple[int, int]] = {}
    for rec in op.index.packs():
        for share in rec.shares:
            if share is not None:
                c, b = held.get(share.p, (0, 0))
                held[share.p] = (c + 1, b + share.z)
    got = op.replicas.gather(lambda p: p.head(CONFIG_NAME), pids=list(op.store.providers))
    out = []
    for entry in op.config.providers:
        st = ProviderStatus(entry.id, entry.url, entry.jurisdiction, entry.operator, True,
                            shares=held.get(entry.id, (0, 0))[0], bytes=held.get(entry.id, (0, 0))[1])
        r = got.get(entry.id)
        if isinstance(r, FreeholdError):
            st.healthy, st.error = False, str(r)
        elif r is None:
            st.healthy, st.error = False, "config object missing"
        out.append(st)
    return out


def stats(op: Operation) -> dict[str, Any]:
    """Logical and unique bytes, bytes and objects per provider, dedup and overhead ratios."""
    snaps = op.snapshots()
    packs = op.index.packs()
    logical = sum(s.size for _, s in snaps)
    unique = op.index.unique_bytes()
    providers = op.store.providers

    def usage(p: Provider) -> dict[str, Any]:
        objs = list(p.list(""))
        return {"url": p.info.url, "objects": len(objs), "bytes": sum(z for _, z in objs)}

    per_provider: dict[str, dict[str, Any]] = {}
    for pid, got in op.replicas.gather(usage, pids=list(providers), enough=len(providers)).items():
        per_provider[pid] = got if not isinstance(got, FreeholdError) else {
            "url": providers[pid].info.url, "error": str(got), "objects": 0, "bytes": 0}
    stored = sum(p["bytes"] for p in per_provider.values())
    cfg = op.config
    return {
        "snapshots": len(snaps), "logical_bytes": logical, "unique_bytes": unique,
        "packed_bytes": sum(p.len for p in packs), "stored_bytes": stored, "packs": len(packs),
        "blobs": op.index.blob_count(), "k": cfg.k, "n": cfg.n,
        "dedup_ratio": logical / unique if unique else 1.0,
        "overhead_ratio": stored / unique if unique else 0.0,
        "providers": dict(sorted(per_provider.items())),
    }
