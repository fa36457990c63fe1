"""Hostile providers (issue 11): with k-of-n, any n−k providers that lie cost availability only.

3-of-5 vaults over local directories (and a core subset over a real S3 server). One or two
providers (n−k = 2) serve damaged, truncated, empty, foreign, replayed, forged, swapped or
planted objects of every kind (config, key, index, snapshot objects and shares), written into
their storage between commands, or served by a wrapper around the provider (``wrap=``). For
every case the owner's commands keep working: the vault opens with the right passphrase (and
only with it), ``snapshots()`` lists exactly the honest snapshots, the latest restores
byte-exact, ``check`` names the provider and the object of every bad copy and blames no honest
provider, and the next run finds every metadata replica healed (docs/design.md §13d). Stray
objects and unknown key objects stay findings; damaged shares wait for a future ``repair``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from freehold import api, formats, keys
from freehold.errors import ObjectNotFound, WrongPassphrase
from freehold.keys import KdfParams
from freehold.providers import Provider, open_provider
from freehold.vault import ProviderSpec, Vault

from .conftest import PASS, Env, make_env, needs_weed, same_tree, write_tree

NEW_PASS = "the owner's new passphrase"
SECOND_PASS = "a second passphrase, later removed"
ATTACKER_PASS = "the attacker's passphrase"
S3_FAST = {"connect_timeout": 1, "read_timeout": 2, "attempts": 2}   # as in test_faults

# Kinds of findings that a check heals (metadata replicas), and those that stay.
HEALED_KINDS = {api.MISSING_REPLICA, api.DAMAGED_REPLICA, api.STALE_REPLICA, api.REVOKED_KEY}
LASTING_KINDS = {api.STRAY_OBJECT, api.UNKNOWN_KEY, api.DAMAGED_SHARE, api.MISSING_SHARE, api.UNREADABLE_SHARE}
DAMAGED = {api.DAMAGED_REPLICA}
SHARE_DAMAGED = {api.DAMAGED_SHARE}


# -- where objects live: a provider's directory, or any provider through its own put() ---------------

class DirPlace:
    """A local provider's objects, read and written as the files in its directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def read(self, name: str) -> bytes:
        return (self.root / name).read_bytes()

    def write(self, name: str, data: bytes) -> None:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        path.write_bytes(data)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def names(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(str(f.relative_to(self.root)) for f in base.rglob("*")
                      if f.is_file() and not f.name.startswith("."))


class ProviderPlace:
    """Any provider's objects, through the provider's own get/put/delete (an S3 bucket)."""

    def __init__(self, prov: Provider) -> None:
        self.prov = prov

    def read(self, name: str) -> bytes:
        return self.prov.get(name)

    def write(self, name: str, data: bytes) -> None:
        self.prov.put(name, data)

    def delete(self, name: str) -> None:
        self.prov.delete(name)

    def names(self, prefix: str) -> list[str]:
        return sorted(n for n, _ in self.prov.list(prefix))


Place = DirPlace | ProviderPlace


class Liar:
    """A provider that keeps lying through the wrap hook: ``get`` serves the planted bytes (None:
    says the object is not there, ``list`` hides it), planted names are listed, everything else
    (writes included: healing reaches the storage, but the liar goes on serving its bytes) is
    passed on."""

    def __init__(self, inner: Provider, plant: dict[str, bytes | None]) -> None:
        self.inner = inner
        self.info = inner.info
        self.plant = plant

    @property
    def capabilities(self) -> Any:
        return self.inner.capabilities

    @property
    def location(self) -> Any:
        return self.inner.location

    def get(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        if name in self.plant:
            data = self.plant[name]
            if data is None:
                raise ObjectNotFound(f"{name}: not found")
            return data[start or 0:end]
        return self.inner.get(name, start, end)

    def head(self, name: str) -> int | None:
        if name in self.plant:
            data = self.plant[name]
            return None if data is None else len(data)
        return self.inner.head(name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        got = dict(self.inner.list(prefix))
        for name, data in self.plant.items():
            if name.startswith(prefix):
                if data is None:
                    got.pop(name, None)
                else:
                    got[name] = len(data)
        return iter(sorted(got.items()))

    def put(self, name: str, data: Any) -> None:
        self.inner.put(name, data)

    def put_new(self, name: str, data: Any) -> bool:
        return self.inner.put_new(name, data)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def check_writable(self) -> None:
        self.inner.check_writable()

    def close(self) -> None:
        self.inner.close()


def liars(plant: dict[str, dict[str, bytes | None]]) -> Callable[[str, Provider], Provider]:
    def wrap(pid: str, prov: Provider) -> Provider:
        return Liar(prov, plant[pid]) if pid in plant else prov
    return wrap


# -- the vault under attack --------------------------------------------------------------------------

@dataclass
class Target:
    """A vault with two snapshots (the second adds a file: two index objects, four packs)."""

    home: Path
    src: Path
    places: dict[str, Place]            # provider id -> its objects
    sids: list[str]                     # snapshot ids, oldest first
    index: list[str]                    # index object names: the first backup's, the second's
    key: str                            # keys/<id> of the one key object
    vault_id: bytes
    packs: list[formats.PackRecord]     # what the two backups wrote
    foreign: dict[str, tuple[str, bytes]]   # another vault's (name, bytes) per object kind
    extra_dir: Path | None = None       # where `provider add` may put a sixth provider
    touched: set[str] = field(default_factory=set)   # objects the attacks wrote or deleted

    def open(self, passphrase: str = PASS, **kw: Any) -> Vault:
        return Vault.open(passphrase, home=self.home, **kw)

    def clear_cache(self) -> None:
        shutil.rmtree(self.home / "cache", ignore_errors=True)


def build(v: Vault, home: Path, src: Path, places: dict[str, Place],
          foreign: dict[str, tuple[str, bytes]]) -> Target:
    """Two backups of ``src`` (a file added between them), recording what each wrote."""
    first = places["p1"]
    s1 = v.backup([str(src)]).id
    index1 = first.names("index/")
    (src / "later.bin").write_bytes(random.Random(3).randbytes(150_000))
    s2 = v.backup([str(src)]).id
    index2 = [n for n in first.names("index/") if n not in index1]
    assert len(index1) == 1 and len(index2) == 1, (index1, index2)
    (key,) = first.names("keys/")
    return Target(home, src, places, [s1, s2], [index1[0], index2[0]], key,
                  bytes.fromhex(v.info().vault_id), v.packs(), foreign)


def objects_of(places: dict[str, Place], v: Vault) -> dict[str, tuple[str, bytes]]:
    """One object of each kind of a vault: what a foreign vault can copy over ours."""
    p1 = places["p1"]
    out = {kind: (name, p1.read(name)) for kind, name in
           (("config", "config"), ("key", p1.names("keys/")[0]), ("index", p1.names("index/")[0]),
            ("snapshot", p1.names("snapshots/")[0]))}
    rec = max(v.packs(), key=lambda r: r.len)
    share = rec.shares[0]
    assert share is not None
    name = f"data/{rec.id.hex()[:2]}/{rec.id.hex()}.0"
    out["share"] = (name, places[share.p].read(name))
    return out


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """Another vault's valid objects (same passphrase, even: still another vault)."""
    root = tmp_path_factory.mktemp("foreign")
    other = make_env(root)
    src = write_tree(root / "src", seed=5, small=8)
    with other.init() as v:
        v.backup([str(src)])
        return objects_of({f"p{i + 1}": DirPlace(p) for i, p in enumerate(other.providers)}, v)


@dataclass
class Local:
    env: Env
    target: Target
    pristine: Path

    def reset(self) -> Target:
        """Providers and home back to the state right after the two backups; no cache."""
        for p in self.env.providers:
            shutil.rmtree(p, ignore_errors=True)
            shutil.copytree(self.pristine / p.name, p)
        shutil.rmtree(self.env.home, ignore_errors=True)
        shutil.copytree(self.pristine / "home", self.env.home)
        shutil.rmtree(self.env.home / "cache", ignore_errors=True)
        assert self.target.extra_dir is not None
        shutil.rmtree(self.target.extra_dir, ignore_errors=True)
        self.target.extra_dir.mkdir()
        return self.target


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, foreign: dict[str, tuple[str, bytes]]) -> Local:
    root = tmp_path_factory.mktemp("hostile")
    env = make_env(root / "vault")
    src = write_tree(root / "src", seed=2, small=12)
    places: dict[str, Place] = {f"p{i + 1}": DirPlace(p) for i, p in enumerate(env.providers)}
    with env.init() as v:
        target = build(v, env.home, src, places, foreign)
    target.extra_dir = root / "vault" / "prov6"
    pristine = root / "pristine"
    for p in env.providers:
        shutil.copytree(p, pristine / p.name)
    shutil.copytree(env.home, pristine / "home")
    return Local(env, target, pristine)


# -- attacks -----------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What the hostile providers serve, and what the owner must see."""

    plant: dict[str, dict[str, bytes | None]]      # provider -> object -> hostile bytes (None: withheld)
    expect: dict[tuple[str, str], set[str]]        # (provider, object) -> acceptable finding kinds
    passphrase: str = PASS                         # the owner's (right) passphrase
    refused: tuple[str, ...] = ()                  # passphrases that must not open the vault
    warns: bool = False                            # reading a bad copy warns, naming provider and object
    verify: Callable[[Vault], None] | None = None  # more to assert on the owner's open vault

    @property
    def hostile(self) -> set[str]:
        return set(self.plant)

    @property
    def meets_fast_path(self) -> bool:
        """Whether a data share (i < k = 3) is attacked: a restore reads those first."""
        return any(name.startswith("data/") and int(name.rsplit(".", 1)[1]) < 3
                   for objs in self.plant.values() for name in objs)


def hostile_ids(count: int) -> list[str]:
    """The providers asked first (p1, then p2): a liar there is met by every read."""
    return [f"p{i + 1}" for i in range(count)]


def rng_for(*parts: object) -> random.Random:
    return random.Random("/".join(map(str, parts)))


def object_name(t: Target, kind: str) -> str:
    return {"config": "config", "key": t.key, "index": t.index[-1],
            "snapshot": f"snapshots/{t.sids[-1]}"}[kind]


def share_targets(t: Target, pids: list[str] | None, count: int) -> dict[str, str]:
    """provider -> the share of the biggest pack it holds; by default the providers of data
    shares 0 and 1 (the fast path reads those: the hostile copies are met, not avoided)."""
    rec = max(t.packs, key=lambda r: r.len)
    holders = [s.p if s is not None else "" for s in rec.shares]
    chosen = pids if pids is not None else holders[:count]
    return {pid: f"data/{rec.id.hex()[:2]}/{rec.id.hex()}.{holders.index(pid)}" for pid in chosen}


def share_names_of(t: Target, pid: str) -> list[str]:
    """Every share ``pid`` holds, biggest pack first."""
    recs = sorted(t.packs, key=lambda r: -r.len)
    return [f"data/{r.id.hex()[:2]}/{r.id.hex()}.{i}" for r in recs
            for i, s in enumerate(r.shares) if s is not None and s.p == pid]


REPLACE = ("garbage", "truncated", "empty", "foreign", "withheld")


def replaced(t: Target, kind: str, attack: str, pid: str, name: str) -> bytes | None:
    honest = t.places[pid].read(name)
    if attack == "garbage":
        return rng_for(kind, pid, name).randbytes(len(honest))
    if attack == "truncated":
        return honest[: len(honest) // 2]
    if attack == "empty":
        return b""
    if attack == "foreign":
        return t.foreign[kind][1]
    assert attack == "withheld"
    return None


def replace_kinds(kind: str, attack: str) -> set[str]:
    if kind == "share":
        return {api.MISSING_SHARE} if attack == "withheld" else SHARE_DAMAGED
    if attack == "withheld":
        # a config that is not there is "missing or older than the newest"
        return {api.MISSING_REPLICA, api.STALE_REPLICA} if kind == "config" else {api.MISSING_REPLICA}
    return DAMAGED


def plan_for(t: Target, kind: str, attack: str, count: int, pids: list[str] | None = None) -> Plan:
    """The attack ``attack`` on an object of ``kind`` by ``count`` providers (``pids``: which)."""
    hostile = pids or hostile_ids(count)

    def everywhere(objs: dict[str, bytes | None], kinds: set[str], **kw: Any) -> Plan:
        return Plan({pid: dict(objs) for pid in hostile},
                    {(pid, name): kinds for pid in hostile for name in objs}, **kw)

    if kind == "share":
        if attack == "swapped":   # two of the provider's shares (of two packs) trade places
            plant: dict[str, dict[str, bytes | None]] = {}
            for pid in share_targets(t, pids, count):
                a, b = share_names_of(t, pid)[:2]
                plant[pid] = {a: t.places[pid].read(b), b: t.places[pid].read(a)}
            return Plan(plant, {(pid, n): SHARE_DAMAGED for pid, objs in plant.items() for n in objs})
        targets = share_targets(t, pids, count)
        return Plan({pid: {name: replaced(t, kind, attack, pid, name)} for pid, name in targets.items()},
                    {(pid, name): replace_kinds(kind, attack) for pid, name in targets.items()})

    name = object_name(t, kind)
    if attack in REPLACE:
        warns = attack != "withheld" and not (kind == "key" and attack == "foreign")
        return Plan({pid: {name: replaced(t, kind, attack, pid, name)} for pid in hostile},
                    {(pid, name): replace_kinds(kind, attack) for pid in hostile}, warns=warns)

    honest = t.places["p5"]
    if kind == "config" and attack.startswith("stale-"):
        return stale_config(t, attack, hostile)
    if kind == "key":
        if attack == "foreign-new-name":
            fname, fbytes = t.foreign["key"]
            return everywhere({fname: fbytes}, {api.UNKNOWN_KEY})
        if attack in ("forged", "forged-new-name"):
            forged = keys.wrap(keys.new_master_secret(), ATTACKER_PASS.encode(), t.vault_id, KdfParams.weak(64))
            where = name if attack == "forged" else f"keys/{rng_for(attack).randbytes(16).hex()}"
            return everywhere({where: forged}, DAMAGED if attack == "forged" else {api.UNKNOWN_KEY},
                              refused=(ATTACKER_PASS,))
        if attack in ("stale-passphrase-change", "stale-passphrase-change-and-config"):
            old, old_config = honest.read(t.key), honest.read("config")
            with t.open() as v:
                v.change_passphrase(NEW_PASS, KdfParams.weak(64))
            if attack == "stale-passphrase-change":
                return everywhere({t.key: old}, {api.REVOKED_KEY}, passphrase=NEW_PASS, refused=(PASS,))
            # the old key object with the old config that still listed it
            return Plan({pid: {t.key: old, "config": old_config} for pid in hostile},
                        {**{(pid, t.key): {api.REVOKED_KEY} for pid in hostile},
                         **{(pid, "config"): {api.STALE_REPLICA} for pid in hostile}},
                        passphrase=NEW_PASS, refused=(PASS,))
        if attack == "stale-keys-remove":
            with t.open() as v:
                kid = v.add_key(SECOND_PASS, KdfParams.weak(64)).id
                old = honest.read(f"keys/{kid}")
                v.remove_key(kid)
            return everywhere({f"keys/{kid}": old}, {api.REVOKED_KEY}, refused=(SECOND_PASS,))
    if kind in ("index", "snapshot"):
        prefix = "index/" if kind == "index" else "snapshots/"
        older = t.index[0] if kind == "index" else f"snapshots/{t.sids[0]}"
        if attack == "stale":          # the first backup's object replayed under the second's name
            return everywhere({name: honest.read(older)}, DAMAGED, warns=True)
        if attack == "swapped":        # two index objects trade contents
            a, b = t.index
            return everywhere({a: honest.read(b), b: honest.read(a)}, DAMAGED, warns=True)
        if attack == "snapshot-as-index":
            return everywhere({name: honest.read(f"snapshots/{t.sids[-1]}")}, DAMAGED, warns=True)
        if attack == "index-as-snapshot":
            return everywhere({name: honest.read(t.index[-1])}, DAMAGED, warns=True)
        stray = prefix + rng_for(kind, attack).randbytes(32).hex()
        if attack == "stray-random":
            return everywhere({stray: rng_for(attack).randbytes(500)}, {api.STRAY_OBJECT}, warns=True)
        if attack == "stray-empty":
            return everywhere({stray: b""}, {api.STRAY_OBJECT}, warns=True)
        if attack == "stray-foreign":   # another vault's object under its own name
            fname, fbytes = t.foreign[kind]
            return everywhere({fname: fbytes}, {api.STRAY_OBJECT}, warns=True)
    raise AssertionError(f"no attack {attack!r} on {kind}")


def stale_config(t: Target, attack: str, hostile: list[str]) -> Plan:
    """The config as it was after init, replayed after a config change."""
    old = t.places["p5"].read("config")
    verify: Callable[[Vault], None]
    with t.open() as v:
        if attack == "stale-policy":
            policy = formats.Policy(max_per_operator=5)
            v.set_policy(policy)

            def verify(v: Vault) -> None:
                assert v.info().policy == policy
        elif attack == "stale-keys-add":
            v.add_key(SECOND_PASS, KdfParams.weak(64))

            def verify(v: Vault) -> None:
                t.open(SECOND_PASS).close()   # the added key still opens the vault
        else:
            assert attack == "stale-provider-add" and t.extra_dir is not None
            v.add_provider(ProviderSpec(t.extra_dir.as_uri(), name="p6"))

            def verify(v: Vault) -> None:
                assert [p.id for p in v.info().providers] == ["p1", "p2", "p3", "p4", "p5", "p6"]
        generation = v.info().generation
    assert generation == 2

    def verify_all(v: Vault) -> None:
        assert v.info().generation == generation
        verify(v)

    return Plan({pid: {"config": old} for pid in hostile}, {(pid, "config"): {api.STALE_REPLICA} for pid in hostile},
                warns=True, verify=verify_all)


ATTACKS: dict[str, tuple[str, ...]] = {
    "config": (*REPLACE, "stale-policy", "stale-keys-add", "stale-provider-add"),
    "key": (*REPLACE, "foreign-new-name", "forged", "forged-new-name", "stale-passphrase-change",
            "stale-passphrase-change-and-config", "stale-keys-remove"),
    "index": (*REPLACE, "stale", "swapped", "snapshot-as-index", "stray-random", "stray-empty", "stray-foreign"),
    "snapshot": (*REPLACE, "stale", "index-as-snapshot", "stray-random", "stray-empty", "stray-foreign"),
    "share": (*REPLACE, "swapped"),
}


def matrix(cases: list[tuple[str, str]] | None = None) -> list[Any]:
    out = []
    for kind, attacks in ATTACKS.items():
        for attack in attacks:
            if cases is not None and (kind, attack) not in cases:
                continue
            for count in (1, 2):
                out.append(pytest.param(kind, attack, count, id=f"{kind}-{attack}-{count}of5"))
    return out


# -- running a case ----------------------------------------------------------------------------------

def apply(t: Target, plan: Plan) -> None:
    """Write the hostile objects into the hostile providers' storage."""
    for pid, objs in plan.plant.items():
        for name, data in objs.items():
            t.touched.add(name)
            if data is None:
                t.places[pid].delete(name)
            else:
                t.places[pid].write(name, data)


def named(pid: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(pid)}\b", text) is not None


def findings(report: api.CheckReport) -> list[tuple[str, str, str, bool]]:
    return [(p.kind, p.provider, p.object, p.healed) for p in report.problems]


def assert_names_bad_copies(report: api.CheckReport, plan: Plan) -> None:
    got = findings(report)
    for (pid, obj), kinds in plan.expect.items():
        assert any(p == pid and o == obj and k in kinds for k, p, o, _ in got), \
            f"check does not name {obj} on {pid} as {sorted(kinds)}: {got}"
    blamed = {p for _, p, _, _ in got}
    assert blamed <= plan.hostile, f"check blames honest providers {sorted(blamed - plan.hostile)}: {got}"


@dataclass
class Run:
    """What the owner saw during one case."""

    warnings: list[str] = field(default_factory=list)
    first: api.CheckReport | None = None
    second: api.CheckReport | None = None


def owner_session(t: Target, plan: Plan, out: Path, read_data: bool, *, wrap: Any = None,
                  again: Callable[[], None] | None = None) -> tuple[Run, Vault]:
    """Open, list, restore, check: everything must work, and be right. Returns the open vault."""
    run = Run()
    for wrong in plan.refused:
        with pytest.raises(WrongPassphrase):
            t.open(wrong, wrap=wrap).close()
    v = t.open(plan.passphrase, wrap=wrap)
    try:
        run.warnings += v.last_outcome.warnings
        assert [sid for sid, _ in v.snapshots()] == t.sids
        run.warnings += v.last_outcome.warnings
        v.restore("latest", out)
        run.warnings += v.last_outcome.warnings
        same_tree(t.src, out / t.src.name)
        if plan.meets_fast_path:   # the damaged data shares were read, refused and rebuilt around
            assert v.last_outcome.fallback_reads > 0
        if plan.verify is not None:
            plan.verify(v)
        if plan.warns:
            for pid, obj in plan.expect:
                assert any(named(pid, w) and obj in w for w in run.warnings), \
                    f"no warning names {obj} on {pid}: {run.warnings}"
        if again is not None:
            again()   # the hostile providers keep at it between commands (opening healed the config)
        run.first = v.check(read_data=read_data)
        assert_names_bad_copies(run.first, plan)
    except BaseException:
        v.close()
        raise
    return run, v


def assert_healed(t: Target, plan: Plan, run: Run, read_data: bool, vault: Vault | None = None) -> None:
    """The first check healed every metadata replica it named; what is not healed stays named.
    The later run is a new process (a fresh open), or another call on ``vault``."""
    assert run.first is not None
    first = findings(run.first)
    for kind, pid, obj, healed in first:
        assert healed == (kind in HEALED_KINDS), f"{kind} on {pid}: {obj} healed={healed}: {first}"
    lasting = {(k, p, o) for k, p, o, _ in first if k in LASTING_KINDS}
    if lasting:
        assert not run.first.healthy
    with vault or t.open(plan.passphrase) as v:
        run.second = v.check(read_data=read_data)
    second = {(k, p, o) for k, p, o, _ in findings(run.second)}
    assert second == lasting, f"after healing: {sorted(second)}; expected only {sorted(lasting)}"
    assert run.second.healthy == (not lasting)
    for wrong in plan.refused:
        with pytest.raises(WrongPassphrase):
            t.open(wrong).close()


# -- the matrix over local directories ---------------------------------------------------------------

@pytest.mark.parametrize(("kind", "attack", "count"), matrix())
def test_hostile_providers_cost_availability_only(local: Local, tmp_path: Path, kind: str, attack: str,
                                                  count: int) -> None:
    t = local.reset()
    plan = plan_for(t, kind, attack, count)
    assert len(plan.hostile) == count
    apply(t, plan)
    read_data = kind == "share"
    run, v = owner_session(t, plan, tmp_path / "out", read_data, again=lambda: apply(t, plan))
    v.close()
    assert_healed(t, plan, run, read_data)


# -- the same attacks served through the wrap hook, by providers that never stop lying ---------------

HOOKED = [("config", "garbage"), ("config", "stale-policy"), ("key", "garbage"), ("key", "forged"),
          ("index", "garbage"), ("index", "swapped"), ("snapshot", "stale"), ("snapshot", "stray-random"),
          ("share", "garbage"), ("share", "truncated")]


@pytest.mark.parametrize(("kind", "attack", "count"), matrix(HOOKED))
def test_providers_that_keep_lying_through_the_wrap_hook(local: Local, tmp_path: Path, kind: str, attack: str,
                                                         count: int) -> None:
    """Nothing is written to the storage: the wrapper serves the attack on every get(). Healing
    cannot stop such a provider, so every check names it again; the owner is never stopped."""
    t = local.reset()
    plan = plan_for(t, kind, attack, count)
    wrap = liars(plan.plant)
    read_data = kind == "share"
    _, v = owner_session(t, plan, tmp_path / "out", read_data, wrap=wrap)
    with v:
        again = v.check(read_data=read_data)
    assert_names_bad_copies(again, plan)


# -- the next backup heals what was withheld, and deletes revoked keys that came back ---------------

@pytest.mark.parametrize(("kind", "attack", "count"),
                         matrix([("index", "withheld"), ("snapshot", "withheld"), ("key", "stale-keys-remove")]))
def test_next_backup_heals(local: Local, tmp_path: Path, kind: str, attack: str, count: int) -> None:
    t = local.reset()
    plan = plan_for(t, kind, attack, count)
    apply(t, plan)
    with t.open(plan.passphrase) as v:
        v.backup([str(t.src)])
        report = v.check()
    assert findings(report) == []
    for wrong in plan.refused:
        with pytest.raises(WrongPassphrase):
            t.open(wrong).close()


# -- the first check after an attack says so ---------------------------------------------------------

@pytest.mark.parametrize("kind", ["config", "key", "index", "snapshot"])
def test_first_check_after_an_attack_is_not_healthy(local: Local, kind: str) -> None:
    t = local.reset()
    plan = plan_for(t, kind, "garbage", 1)
    with t.open() as v:
        apply(t, plan)
        report = v.check()
    assert_names_bad_copies(report, plan)
    assert not report.healthy, report


@pytest.mark.parametrize("kind", ["config", "key", "index", "snapshot"])
def test_cli_check_exits_1_the_first_time(local: Local, kind: str) -> None:
    t = local.reset()
    plan = plan_for(t, kind, "garbage", 1)
    apply(t, plan)
    proc = local.env.cli("check", check=False)
    assert_clean_stderr(proc.stderr)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)


# -- a forged key object with a forged config of the same vault id ----------------------------------

@pytest.mark.parametrize("count", [1, 2], ids=["1of5", "2of5"])
def test_forged_key_and_config_do_not_take_over_the_vault(local: Local, tmp_path: Path, count: int) -> None:
    """The hostile providers plant a key object wrapping a master of their choosing under the
    attacker's passphrase and a config sealed under that master, claiming this vault's id."""
    from freehold.crypto import VaultKeys
    from freehold.store.configs import seal_config

    t = local.reset()
    master = keys.new_master_secret()
    kid = rng_for("forged-vault").randbytes(16).hex()
    with t.open() as v:
        info = v.info()
    forged = formats.Config(v=1, vault_id=t.vault_id, k=3, n=5, chunker=formats.Chunker(1, 2, 3),
                            pack_size=1 << 20, providers=info.providers, generation=info.generation + 7,
                            change=b"\x01" * 16, keys=[kid])
    plant = {f"keys/{kid}": keys.wrap(master, ATTACKER_PASS.encode(), t.vault_id, KdfParams.weak(64)),
             "config": seal_config(VaultKeys.derive(master), forged)}
    for pid in hostile_ids(count):
        for name, data in plant.items():
            t.places[pid].write(name, data)
    honest = {pid: t.places[pid].read("config") for pid in ("p3", "p4", "p5")}
    attacker_in = True
    try:
        t.open(ATTACKER_PASS).close()
    except WrongPassphrase:
        attacker_in = False
    # whatever the attacker's passphrase did, the honest copies are the owner's, and the owner is not stopped
    assert {pid: t.places[pid].read("config") for pid in honest} == honest
    with t.open() as v:
        assert [sid for sid, _ in v.snapshots()] == t.sids
        v.restore("latest", tmp_path / "out")
    same_tree(t.src, tmp_path / "out" / t.src.name)
    assert not attacker_in


# -- recovery on a fresh machine from replaying providers only --------------------------------------

@pytest.mark.parametrize("count", [1, 2], ids=["1of5", "2of5"])
def test_recover_from_replaying_providers_refuses_the_revoked_passphrase(local: Local, tmp_path: Path,
                                                                        count: int) -> None:
    """After a passphrase change, the hostile providers serve the old config and the old key
    object. Recovering from them alone follows the old config to the honest providers, finds the
    newest config there, and refuses the revoked passphrase; the new one recovers everything."""
    t = local.reset()
    plan = plan_for(t, "key", "stale-passphrase-change-and-config", count)
    apply(t, plan)
    urls = [local.env.providers[int(pid[1:]) - 1].as_uri() for pid in sorted(plan.hostile)]
    with pytest.raises(WrongPassphrase):
        Vault.recover(urls, passphrase=PASS, home=tmp_path / "fresh-old")
    assert not (tmp_path / "fresh-old" / "vault.json").exists()
    with Vault.recover(urls, passphrase=NEW_PASS, home=tmp_path / "fresh") as v:
        assert [p.id for p in v.info().providers] == ["p1", "p2", "p3", "p4", "p5"]
        assert [sid for sid, _ in v.snapshots()] == t.sids
        v.restore("latest", tmp_path / "out")
    same_tree(t.src, tmp_path / "out" / t.src.name)


# -- the command line ---------------------------------------------------------------------------------

def assert_clean_stderr(stderr: str) -> list[str]:
    assert "Traceback" not in stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert all(ln.startswith("warning: ") for ln in lines), stderr
    return lines


@pytest.mark.parametrize(("kind", "attack", "count"), [
    pytest.param("config", "garbage", 1, id="config-garbage-1of5"),
    pytest.param("index", "garbage", 2, id="index-garbage-2of5"),
    pytest.param("snapshot", "stray-random", 1, id="snapshot-stray-random-1of5"),
])
def test_cli_names_the_hostile_provider_in_one_line(local: Local, kind: str, attack: str, count: int) -> None:
    t = local.reset()
    env = local.env
    plan = plan_for(t, kind, attack, count)
    apply(t, plan)
    proc = env.cli("snapshots", check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(sid[:12] in proc.stdout for sid in t.sids) and "2 snapshot(s)" in proc.stdout
    lines = assert_clean_stderr(proc.stderr)
    for pid, obj in plan.expect:
        assert any(named(pid, ln) and obj in ln for ln in lines), (pid, obj, proc.stderr)

    apply(t, plan)
    proc = env.cli("check", check=False)
    lines = assert_clean_stderr(proc.stderr)
    lasting = any(kinds & LASTING_KINDS for kinds in plan.expect.values())
    if lasting:
        assert proc.returncode == 1, proc.stdout
    else:
        assert proc.returncode in (0, 1), proc.stderr
    report = proc.stdout.splitlines()
    for pid, obj in plan.expect:   # named by check's report, or (config: healed when opening) a warning
        assert any(named(pid, ln) and obj in ln for ln in report + lines), (pid, obj, proc.stdout, proc.stderr)

    proc = env.cli("check", check=False)   # the next run: healed, only lasting findings remain
    assert_clean_stderr(proc.stderr)
    assert proc.returncode == (1 if lasting else 0), (proc.stdout, proc.stderr)
    if not lasting:
        assert proc.stderr.strip() == "" and proc.stdout.startswith("OK:"), (proc.stdout, proc.stderr)


# -- a planted config claim -------------------------------------------------------------------------

@pytest.mark.parametrize("count", [1, 2], ids=["1of5", "2of5"])
def test_foreign_config_claim_does_not_block_a_change(local: Local, count: int) -> None:
    """Another vault's config planted as the next generation's claim (configs/<G+1>): not a
    change of this vault, so a config change still goes through, and the vault stays open."""
    t = local.reset()
    for pid in hostile_ids(count):
        t.places[pid].write("configs/000000000002", t.foreign["config"][1])
    policy = formats.Policy(max_per_operator=5)
    with t.open() as v:
        v.set_policy(policy)
        assert v.info().generation >= 2
    with t.open() as v:
        assert v.info().policy == policy
        assert [sid for sid, _ in v.snapshots()] == t.sids


# -- the core over a real S3 server: three buckets (hostile: two of them) and two directories -------

@dataclass
class S3Vault:
    target: Target
    pristine: dict[str, dict[str, bytes]]       # provider -> every object, as the backups left them
    home: Path

    def reset(self) -> Target:
        """Undo the last case: what the attacks touched is put back (or removed), on every provider."""
        t = self.target
        for pid, place in t.places.items():
            want = self.pristine[pid]
            have = set(place.names(""))
            for name in sorted(have - set(want)):
                place.delete(name)
            for name in sorted(t.touched | (set(want) - have)):
                if name in want:
                    place.write(name, want[name])
        t.touched.clear()
        shutil.rmtree(t.home, ignore_errors=True)
        shutil.copytree(self.home, t.home)
        t.clear_cache()
        return t


@pytest.fixture(scope="module")
def s3_vault(tmp_path_factory: pytest.TempPathFactory, seaweed: Any,
             foreign: dict[str, tuple[str, bytes]]) -> Iterator[S3Vault]:
    """One vault over three buckets of the session's SeaweedFS (p1-p3) and two directories
    (p4, p5), reset between cases (a boto3 client costs 0.2 s: one vault for all)."""
    root = tmp_path_factory.mktemp("hostile-s3")
    with pytest.MonkeyPatch.context() as mp:   # the test identity, and nothing of the developer's
        for name in list(os.environ):
            if name.startswith("AWS_"):
                mp.delenv(name)
        mp.setenv("AWS_CONFIG_FILE", str(root / "aws-config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(root / "aws-credentials"))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        for name, value in seaweed.client_env().items():
            mp.setenv(name, value)
        urls = []
        for i in (1, 2, 3):
            seaweed.create_bucket(f"hostile-{i}")
            urls.append(seaweed.url(f"hostile-{i}", root.name, **S3_FAST))
        for i in (4, 5):
            (root / f"disk{i}").mkdir()
            urls.append((root / f"disk{i}").as_uri())
        provs = [open_provider(u) for u in urls]
        places: dict[str, Place] = {f"p{i + 1}": ProviderPlace(p) for i, p in enumerate(provs)}
        home = root / "home"
        src = write_tree(root / "src", seed=4, small=10)
        with Vault.init([ProviderSpec(u) for u in urls], 3, 5, PASS, home=home, kdf=KdfParams.weak(64)) as v:
            target = build(v, home, src, places, foreign)
        pristine = {pid: {name: place.read(name) for name in place.names("")} for pid, place in places.items()}
        shutil.copytree(home, root / "pristine-home")
        try:
            yield S3Vault(target, pristine, root / "pristine-home")
        finally:
            for p in provs:
                p.close()


CORE = [("config", "garbage"), ("index", "garbage"), ("snapshot", "stale"), ("snapshot", "stray-random"),
        ("share", "garbage")]


@needs_weed
@pytest.mark.parametrize(("kind", "attack", "count"), matrix(CORE))
def test_hostile_s3_buckets(s3_vault: S3Vault, tmp_path: Path, kind: str, attack: str, count: int) -> None:
    """The hostile bytes are PUT into the S3 buckets with the provider's own put()."""
    t = s3_vault.reset()
    pids = hostile_ids(count) if kind == "share" else None   # the S3 providers' shares
    plan = plan_for(t, kind, attack, count, pids)
    assert plan.hostile <= {"p1", "p2", "p3"}
    apply(t, plan)
    read_data = kind == "share"
    run, v = owner_session(t, plan, tmp_path / "out", read_data, again=lambda: apply(t, plan))
    assert_healed(t, plan, run, read_data, vault=v)   # the same vault: opening costs six boto3 clients
