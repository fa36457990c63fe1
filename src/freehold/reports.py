"""``stats`` and ``provider list``: what the vault holds where, over one operation's components."""

from __future__ import annotations

from typing import Any

from .api import ProviderStatus
from .errors import FreeholdError
from .formats import BLOB_DATA
from .providers.base import Provider
from .store import Operation
from .store.configs import CONFIG_NAME
from .store.packs import DATA_PREFIX


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
    """What the vault holds: logical bytes (all snapshots' files), unique data bytes (after
    dedup: file chunks only, so that the dedup ratio compares like with like), tree bytes, and
    per provider the objects, bytes, share of the overhead and the monthly cost at the price
    per TB-month recorded for it (``provider add --price-per-tb-month``)."""
    snaps = op.snapshots()
    packs = op.index.packs()
    logical = sum(s.size for _, s in snaps)
    data_bytes = tree_bytes = 0
    seen: set[bytes] = set()
    for rec in packs:
        for e in rec.blobs:
            if e.id in seen:
                continue
            seen.add(e.id)
            if e.t == BLOB_DATA:
                data_bytes += e.s
            else:
                tree_bytes += e.s
    providers = op.store.providers
    prices = {p.id: p.price for p in op.config.providers}

    def usage(p: Provider) -> dict[str, Any]:
        objs = list(p.list(""))
        shares = [z for name, z in objs if name.startswith(DATA_PREFIX)]
        return {"url": p.info.url, "objects": len(objs), "bytes": sum(z for _, z in objs),
                "share_objects": len(shares), "share_bytes": sum(shares)}

    per_provider: dict[str, dict[str, Any]] = {}
    for pid, got in op.replicas.gather(usage, pids=list(providers), enough=len(providers)).items():
        row = got if not isinstance(got, FreeholdError) else {
            "url": providers[pid].info.url, "error": str(got), "objects": 0, "bytes": 0,
            "share_objects": 0, "share_bytes": 0}
        price = prices.get(pid, 0.0)
        row["price_per_tb_month"] = price
        row["cost_per_month"] = row["bytes"] / 1e12 * price
        row["overhead_ratio"] = row["bytes"] / data_bytes if data_bytes else 0.0
        per_provider[pid] = row
    stored = sum(p["bytes"] for p in per_provider.values())
    cfg = op.config
    unique = data_bytes
    return {
        "snapshots": len(snaps), "logical_bytes": logical, "unique_bytes": unique, "tree_bytes": tree_bytes,
        "packed_bytes": sum(p.len for p in packs), "stored_bytes": stored, "packs": len(packs),
        "blobs": op.index.blob_count(), "k": cfg.k, "n": cfg.n,
        "dedup_ratio": logical / unique if unique else 1.0,
        "overhead_ratio": stored / unique if unique else 0.0,
        "cost_per_month": sum(p["cost_per_month"] for p in per_provider.values()),
        "priced": any(prices.values()),
        "providers": dict(sorted(per_provider.items())),
    }
