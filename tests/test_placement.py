"""Placement policies: property tests against a brute-force oracle, and the vault refusing early."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freehold import placement
from freehold.errors import PolicyError
from freehold.formats import Policy, ProviderEntry
from freehold.keys import KdfParams
from freehold.vault import ProviderSpec, Vault

from .conftest import PASS

JURS = ["DE", "FR", "NL", "CH", ""]
OPS = ["hetzner", "ovh", "scaleway", "self", ""]


@st.composite
def providers_st(draw: st.DrawFn) -> list[ProviderEntry]:
    count = draw(st.integers(1, 9))
    return [ProviderEntry(id=f"p{i}", url=f"file:///x/{i}", jurisdiction=draw(st.sampled_from(JURS)),
                          operator=draw(st.sampled_from(OPS))) for i in range(count)]


policy_st = st.builds(Policy, allow=st.lists(st.sampled_from(JURS[:4]), unique=True, max_size=3),
                      min_jurisdictions=st.integers(1, 4), max_per_operator=st.integers(0, 3))


def _oracle(providers: list[ProviderEntry], n: int, policy: Policy) -> bool:
    pool = placement.eligible(providers, policy)
    return any(placement.satisfies(c, policy) for c in itertools.combinations(pool, n))


@given(providers_st(), st.integers(1, 6), policy_st, st.binary(min_size=1, max_size=8))
def test_place_is_valid_exactly_when_some_placement_exists(providers: list[ProviderEntry], n: int,
                                                           policy: Policy, pack_id: bytes) -> None:
    feasible = _oracle(providers, n, policy)
    if not feasible:
        with pytest.raises(PolicyError) as exc:
            placement.place(pack_id, providers, n, policy)
        assert str(exc.value)  # says why
        return
    where = placement.place(pack_id, providers, n, policy)
    by_id = {p.id: p for p in providers}
    chosen = [by_id[i] for i in where]
    assert len(set(where)) == n
    assert placement.satisfies(chosen, policy)
    assert all(p in placement.eligible(providers, policy) for p in chosen)
    assert where == placement.place(pack_id, providers, n, policy)  # deterministic per pack


def test_explanations_name_the_failing_rule() -> None:
    provs = [ProviderEntry(f"p{i}", "u", j, o) for i, (j, o) in
             enumerate([("DE", "hetzner"), ("DE", "hetzner"), ("FR", "ovh"), ("", "")])]
    with pytest.raises(PolicyError, match="allow=DE"):
        placement.check(provs, 3, Policy(allow=["DE"]))
    with pytest.raises(PolicyError, match="min-jurisdictions=3"):
        placement.check(provs, 3, Policy(min_jurisdictions=3))
    with pytest.raises(PolicyError, match="max-per-operator=1"):
        placement.check(provs[:3], 3, Policy(max_per_operator=1))
    with pytest.raises(PolicyError, match="only 4 are available"):
        placement.check(provs, 5, Policy())


def test_more_providers_than_n_spread_the_load() -> None:
    provs = [ProviderEntry(f"p{i}", "u", "DE", f"op{i}") for i in range(10)]
    counts: Counter[str] = Counter()
    data_counts: Counter[str] = Counter()
    for i in range(3000):
        where = placement.place(i.to_bytes(4, "big"), provs, 5, Policy())
        counts.update(where)
        data_counts.update(where[:3])
    assert min(counts.values()) > 0.8 * 1500 and max(counts.values()) < 1.2 * 1500
    assert min(data_counts.values()) > 0.8 * 900


def test_vault_refuses_unsatisfiable_policy_before_writing(tmp_path: Path) -> None:
    dirs = [tmp_path / f"d{i}" for i in range(5)]
    for d in dirs:
        d.mkdir()
    specs = [ProviderSpec(d.as_uri(), jurisdiction="DE", operator="hetzner", name=f"de{i}")
             for i, d in enumerate(dirs)]
    with pytest.raises(PolicyError, match="max-per-operator"):
        Vault.init(specs, 3, 5, PASS, home=tmp_path / "home", policy=Policy(max_per_operator=2))
    assert all(not any(d.iterdir()) for d in dirs), "nothing may be written before the policy is checked"
    v = Vault.init(specs, 3, 5, PASS, home=tmp_path / "home", kdf=KdfParams.weak(64))
    with v, pytest.raises(PolicyError, match="min-jurisdictions=2"):
        v.set_policy(Policy(min_jurisdictions=2))


def test_policy_places_new_packs_and_added_provider_gets_metadata(tmp_path: Path) -> None:
    plan = [("DE", "hetzner"), ("DE", "hetzner"), ("FR", "ovh"), ("NL", "scaleway"), ("DE", "ionos"),
            ("FR", "scaleway")]
    dirs = []
    for i in range(7):
        (tmp_path / f"d{i}").mkdir()
        dirs.append(tmp_path / f"d{i}")
    specs = [ProviderSpec(d.as_uri(), j, o, f"n{i}") for i, (d, (j, o)) in enumerate(zip(dirs, plan, strict=False))]
    policy = Policy(allow=["DE", "FR", "NL"], min_jurisdictions=3, max_per_operator=1)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(bytes([i]) * 700_000 + i.to_bytes(4, "big") * 1000)
    with Vault.init(specs, 2, 4, PASS, home=tmp_path / "home", kdf=KdfParams.weak(64), policy=policy) as v:
        v.backup([str(src)])
        by_id = {p.id: p for p in v.info().providers}
        for rec in v.packs():
            chosen = [by_id[s.p] for s in rec.shares if s is not None]
            assert len(chosen) == 4 and placement.satisfies(chosen, policy)
        entry = v.add_provider(ProviderSpec(dirs[6].as_uri(), "CH", "infomaniak", "swiss"))
        assert entry.id == "swiss"
    # The new provider holds the keys, index, snapshots and config: enough to start a recovery.
    names = {str(p.relative_to(dirs[6])).split("/")[0] for p in dirs[6].rglob("*") if p.is_file()}
    assert {"config", "keys", "index", "snapshots"} <= names
    with Vault.open(PASS, home=tmp_path / "home") as v:
        assert [p.id for p in v.info().providers][-1] == "swiss"
        assert all(s.healthy for s in v.provider_status())
