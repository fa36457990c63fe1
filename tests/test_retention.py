"""freehold.retention: restic's ``forget`` policy, rule by rule, and differentially against the real restic.

The differential tests write snapshot files straight into a throwaway restic repository (encrypted as
restic does, with the repository's own master key), so one history costs milliseconds and a
``restic forget --dry-run --json`` call some 30 ms; one test also makes its snapshots with
``restic backup --time`` to show that those behave the same. The installed restic's version decides
which of its behaviours to expect (see ``_compare``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from freehold.errors import UsageError
from freehold.retention import (
    Candidate,
    Decision,
    KeepRules,
    apply,
    format_duration,
    parse_duration,
    parse_group_by,
)

COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
WITHINS = ("within", "within_hourly", "within_daily", "within_weekly", "within_monthly", "within_yearly")


def t(text: str) -> datetime:
    """'2024-01-02 03:04[:05]' in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def snap(id_: str, when: str | datetime, host: str = "h", paths: tuple[str, ...] = ("/d",),
         tags: tuple[str, ...] = ()) -> Candidate:
    return Candidate(id_, t(when) if isinstance(when, str) else when, host, paths, tags)


def kept(decisions: list[Decision]) -> dict[str, list[str]]:
    return {c.id: reasons for d in decisions for c, reasons in d.keep}


def only(decisions: list[Decision]) -> Decision:
    assert len(decisions) == 1
    return decisions[0]


# --- the duration parser -------------------------------------------------------------------

@pytest.mark.parametrize(("text", "parts"), [
    ("30d", (0, 0, 30, 0)), ("1y2m3d4h", (1, 2, 3, 4)), ("2h", (0, 0, 0, 2)), ("1y6m", (1, 6, 0, 0)),
    ("4h1y", (1, 0, 0, 4)),          # any order
    ("1d2d", (0, 0, 2, 0)),          # a repeated unit takes the last value, as restic
    ("  5d\t", (0, 0, 5, 0)),        # surrounding space is trimmed
    ("007m", (0, 7, 0, 0)), ("", (0, 0, 0, 0)), ("0d", (0, 0, 0, 0)),
    ("-0d", (0, 0, 0, 0)),           # restic accepts minus zero
    ("2562047h", (0, 0, 0, 2562047)), ("999999999y", (999999999, 0, 0, 0)),
])
def test_parse_duration(text: str, parts: tuple[int, int, int, int]) -> None:
    assert parse_duration(text) == parts


@pytest.mark.parametrize(("text", "message"), [
    ("d", "expected a number"), ("5", "no unit after the number 5"), ("5x", "unknown unit 'x'"),
    ("1w", "unknown unit 'w'"), ("1D", "unknown unit 'D'"), ("1d 2h", "expected a number"),
    ("1.5d", "unknown unit '.'"), ("+1d", "expected a number"), ("-1d", "negative"),
    ("3d-2h", "negative"), ("\u0663d", "expected a number"),  # an Arabic-Indic digit: restic panics on it
    ("abc", "expected a number"), ("2562048h", "at most 2562047h"), ("1000000000d", "too large"),
])
def test_parse_duration_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="invalid duration") as err:
        parse_duration(text)
    assert message in str(err.value)


def test_format_duration_is_restics_spelling() -> None:
    assert format_duration((1, 0, 3, 0)) == "1y3d"
    assert format_duration(parse_duration("4h1y")) == "1y4h"
    assert format_duration((0, 0, 0, 0)) == ""


# --- the count rules -----------------------------------------------------------------------

def test_keep_last() -> None:
    cands = [snap(str(i), f"2024-01-0{i} 10:00") for i in range(1, 6)]
    assert kept(apply(cands, KeepRules(last=2))) == {"5": ["last snapshot"], "4": ["last snapshot"]}
    assert set(kept(apply(cands, KeepRules(last=10)))) == {"1", "2", "3", "4", "5"}
    d = only(apply(cands, KeepRules(last=2)))
    assert [c.id for c in d.remove] == ["3", "2", "1"]  # newest first


def test_hourly_takes_the_newest_of_each_hour() -> None:
    cands = [snap("a", "2024-01-01 10:05"), snap("b", "2024-01-01 10:55"), snap("c", "2024-01-01 11:10"),
             snap("d", "2024-01-01 13:00"), snap("e", "2024-01-01 09:00")]
    assert set(kept(apply(cands, KeepRules(hourly=3)))) == {"d", "c", "b"}


def test_daily_buckets_by_utc_day() -> None:
    est = timezone(timedelta(hours=-5))
    cands = [snap("late-local", datetime(2024, 1, 1, 23, 30, tzinfo=est)),  # 2 January 04:30 UTC
             snap("utc", "2024-01-02 01:00"), snap("old", "2023-12-30 12:00")]
    assert set(kept(apply(cands, KeepRules(daily=2)))) == {"late-local", "old"}


def test_weekly_uses_iso_weeks_across_new_year() -> None:
    cands = [snap("mon", "2021-01-04 12:00"),   # ISO 2021-W01
             snap("sun", "2021-01-03 12:00"),   # ISO 2020-W53
             snap("thu", "2020-12-31 12:00"),   # ISO 2020-W53 too
             snap("dec", "2020-12-01 12:00")]   # ISO 2020-W49
    assert set(kept(apply(cands, KeepRules(weekly=3)))) == {"mon", "sun", "dec"}


def test_monthly_and_yearly() -> None:
    cands = [snap("a", "2024-03-02"), snap("b", "2024-03-01"), snap("c", "2024-02-29"),
             snap("d", "2023-12-31"), snap("e", "2023-01-01"), snap("f", "2022-06-01"), snap("g", "2022-01-01")]
    assert set(kept(apply(cands, KeepRules(monthly=3), keep_oldest=False))) == {"a", "c", "d"}
    assert set(kept(apply(cands, KeepRules(yearly=2), keep_oldest=False))) == {"a", "d"}
    assert kept(apply(cands, KeepRules(monthly=2, yearly=2), keep_oldest=False)) == {
        "a": ["monthly snapshot", "yearly snapshot"], "c": ["monthly snapshot"], "d": ["yearly snapshot"]}


def test_unlimited_keeps_every_period() -> None:
    cands = [snap(f"{day}-{hour}", f"2024-01-0{day} {hour:02}:00") for day in (1, 2, 3) for hour in (8, 20)]
    assert kept(apply(cands, KeepRules(daily=-1))) == {
        "3-20": ["daily snapshot"], "2-20": ["daily snapshot"], "1-20": ["daily snapshot"],
        "1-8": ["daily snapshot"]}  # the oldest too: an unlimited count never runs out
    assert len(kept(apply(cands, KeepRules(last=-1)))) == 6


def test_oldest_snapshot_kept_while_counts_are_left() -> None:
    """restic 0.16+: a count rule with counts left also keeps the group's oldest snapshot."""
    cands = [snap("a", "2024-01-02 20:00"), snap("b", "2024-01-02 08:00"),
             snap("c", "2024-01-01 20:00"), snap("d", "2024-01-01 08:00")]
    assert kept(apply(cands, KeepRules(daily=5))) == {
        "a": ["daily snapshot"], "c": ["daily snapshot"], "d": ["daily snapshot"]}
    assert set(kept(apply(cands, KeepRules(daily=5), keep_oldest=False))) == {"a", "c"}
    assert set(kept(apply(cands, KeepRules(daily=2)))) == {"a", "c"}  # no count left for it


def test_a_snapshot_counts_towards_every_rule_that_keeps_it() -> None:
    cands = [snap("1", "2024-01-03"), snap("2", "2024-01-02"), snap("3", "2024-01-01")]
    assert kept(apply(cands, KeepRules(last=1, daily=2))) == {
        "1": ["last snapshot", "daily snapshot"], "2": ["daily snapshot"]}


# --- the within rules ----------------------------------------------------------------------

def test_within_counts_from_the_newest_snapshot_not_now() -> None:
    cands = [snap("new", "2001-05-10 12:00"), snap("mid", "2001-05-09 00:00"), snap("old", "2001-05-01 00:00")]
    assert kept(apply(cands, KeepRules(within="2d"))) == {"new": ["within 2d"], "mid": ["within 2d"]}


def test_within_is_strictly_newer() -> None:
    cands = [snap("new", "2024-01-10 12:00:00"), snap("in", "2024-01-09 12:00:01"), snap("edge", "2024-01-09 12:00")]
    assert set(kept(apply(cands, KeepRules(within="1d")))) == {"new", "in"}


def test_within_months_overflow_like_go() -> None:
    """31 March minus one month is "31 February", which Go (and so restic) normalises to 3 March."""
    cands = [snap("new", "2023-03-31 12:00"), snap("in", "2023-03-03 12:00:01"), snap("out", "2023-03-03 12:00"),
             snap("feb", "2023-02-28 12:00")]
    assert set(kept(apply(cands, KeepRules(within="1m")))) == {"new", "in"}
    assert set(kept(apply(cands, KeepRules(within="1m1h")))) == {"new", "in", "out"}


def test_huge_within_keeps_everything() -> None:
    cands = [snap("new", "2024-01-01"), snap("old", "0005-01-01")]
    assert set(kept(apply(cands, KeepRules(within="99999999y")))) == {"new", "old"}
    assert set(kept(apply(cands, KeepRules(within="3000y")))) == {"new", "old"}


def test_future_snapshots_do_not_move_the_window() -> None:
    now = t("2024-06-01 00:00")
    cands = [snap("future", "2030-01-01"), snap("newest", "2024-05-20"), snap("in", "2024-05-19 12:00"),
             snap("out", "2024-05-18")]
    assert set(kept(apply(cands, KeepRules(within="1d"), now=now))) == {"future", "newest", "in"}
    # Only future snapshots: there is no newest past snapshot, so the window is unbounded.
    assert set(kept(apply(cands[:1], KeepRules(within="1d"), now=now))) == {"future"}
    assert set(kept(apply(cands, KeepRules(within="1d"), now=t("2031-01-01")))) == {"future"}


def test_within_is_per_group() -> None:
    cands = [snap("a-new", "2020-01-01", host="a"), snap("a-old", "2010-01-01", host="a"),
             snap("b-new", "2010-06-01", host="b"), snap("b-old", "2010-02-01", host="b")]
    assert set(kept(apply(cands, KeepRules(within="1y")))) == {"a-new", "b-new", "b-old"}


def test_within_periods() -> None:
    cands = [snap("d3", "2024-01-10 20:00"), snap("d3-early", "2024-01-10 08:00"), snap("d2", "2024-01-09 20:00"),
             snap("d1", "2024-01-08 20:00:01"), snap("d0", "2024-01-07 20:00")]
    assert kept(apply(cands, KeepRules(within_daily="2d"))) == {
        "d3": ["daily within 2d"], "d2": ["daily within 2d"], "d1": ["daily within 2d"]}
    assert set(kept(apply(cands, KeepRules(within_hourly="1y")))) == {"d3", "d3-early", "d2", "d1", "d0"}
    assert set(kept(apply(cands, KeepRules(within_weekly="1y")))) == {"d3", "d0"}  # Mon 8th starts a week
    assert kept(apply(cands, KeepRules(within_monthly="1m", within_yearly="1y"))) == {
        "d3": ["monthly within 1m", "yearly within 1y"]}  # no oldest rule for the within periods


# --- tags, reasons, grouping, refusals ------------------------------------------------------

def test_keep_tag() -> None:
    cands = [snap("ab", "2024-01-05", tags=("b", "a")), snap("a", "2024-01-04", tags=("a",)),
             snap("c", "2024-01-03", tags=("c",)), snap("none", "2024-01-02"),
             snap("abc", "2024-01-01", tags=("a", "b", "c"))]
    assert kept(apply(cands, KeepRules(tags=("a,b",)))) == {"ab": ["has tags [a, b]"], "abc": ["has tags [a, b]"]}
    assert set(kept(apply(cands, KeepRules(tags=("a, b", "c"))))) == {"ab", "c", "abc"}  # either list; spaces trimmed
    assert set(kept(apply(cands, KeepRules(tags=("",))))) == {"none"}  # "" matches an untagged snapshot
    # Tag matches have no count and use none: the newest still takes keep-last's one.
    assert kept(apply(cands, KeepRules(tags=("a",), last=1))) == {
        "ab": ["has tags [a]", "last snapshot"], "a": ["has tags [a]"], "abc": ["has tags [a]"]}


def test_reasons_in_restics_order() -> None:
    cands = [snap("x", "2024-01-01", tags=("k",))]
    rules = KeepRules(last=1, hourly=1, daily=1, weekly=1, monthly=1, yearly=1, within="1d", within_hourly="1h",
                      within_daily="1d", within_weekly="1m", within_monthly="1y", within_yearly="2y", tags=("k",))
    assert kept(apply(cands, rules))["x"] == [
        "has tags [k]", "within 1d", "last snapshot", "hourly snapshot", "daily snapshot", "weekly snapshot",
        "monthly snapshot", "yearly snapshot", "hourly within 1h", "daily within 1d", "weekly within 1m",
        "monthly within 1y", "yearly within 2y"]


def test_grouping() -> None:
    cands = [snap("1", "2024-01-04", host="a", paths=("/y", "/x"), tags=("t",)),
             snap("2", "2024-01-03", host="a", paths=("/x", "/y")),
             snap("3", "2024-01-02", host="b", paths=("/x", "/y"), tags=("t",)),
             snap("4", "2024-01-01", host="a", paths=("/x",))]
    rules = KeepRules(last=1)

    def groups(by: str) -> dict[tuple, list[str]]:
        return {d.group: [c.id for c, _ in d.keep] + [c.id for c in d.remove] for d in apply(cands, rules, by)}

    assert groups("host,paths") == {("a", ("/x",), ()): ["4"], ("a", ("/x", "/y"), ()): ["1", "2"],
                                    ("b", ("/x", "/y"), ()): ["3"]}
    assert groups("") == {("", (), ()): ["1", "2", "3", "4"]}
    assert groups("tags") == {("", (), ()): ["2", "4"], ("", (), ("t",)): ["1", "3"]}
    assert groups("hosts,path") == groups("host,paths")  # restic's aliases
    assert list(groups("host")) == [("a", (), ()), ("b", (), ())]  # sorted by key
    assert parse_group_by("host,,tags") == (True, False, True)
    with pytest.raises(UsageError, match="unknown grouping option 'hostname'"):
        apply(cands, rules, "hostname")


def test_equal_times_keep_the_given_order() -> None:
    cands = [snap("first", "2024-01-01"), snap("second", "2024-01-01"), snap("newer", "2024-01-02")]
    d = only(apply(cands, KeepRules(last=2)))
    assert [c.id for c, _ in d.keep] == ["newer", "first"]


def test_no_rule_is_refused() -> None:
    cands = [snap("1", "2024-01-01")]
    for rules in (KeepRules(), KeepRules(within="0d", within_daily="0y0m"), KeepRules(last=0)):
        assert rules.empty()
        with pytest.raises(UsageError, match="no keep rule given"):
            apply(cands, rules)
    assert not KeepRules(tags=("",)).empty()
    assert not KeepRules(within_yearly="1h").empty()
    assert apply([], KeepRules(last=1)) == []


def test_emptying_a_group_is_refused() -> None:
    cands = [snap("1", "2024-01-02", host="a", tags=("keep",)), snap("2", "2024-01-01", host="b")]
    with pytest.raises(UsageError, match=r"refusing to forget every snapshot of the group host b, paths \[/d\]"):
        apply(cands, KeepRules(tags=("keep",)))
    assert set(kept(apply(cands, KeepRules(tags=("keep",)), ""))) == {"1"}


@pytest.mark.parametrize("bad", [{"last": -2}, {"daily": 1.5}, {"weekly": True}, {"within": "5x"},
                                 {"within_monthly": "-1m"}, {"tags": "a,b"}])
def test_bad_rules_are_usage_errors(bad: dict) -> None:
    with pytest.raises(UsageError):
        KeepRules(**bad)


def test_bad_candidates_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="no time zone"):
        Candidate("x", datetime(2024, 1, 1), "h", ("/d",), ())
    with pytest.raises(UsageError, match="no time zone"):
        apply([snap("1", "2024-01-01")], KeepRules(last=1), now=datetime(2024, 1, 1))


# --- the real restic ---------------------------------------------------------------------------

RESTIC = shutil.which("restic") or "/usr/bin/restic"


def _restic_version() -> tuple[int, int, int] | None:
    try:
        out = subprocess.run([RESTIC, "version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return None
    m = re.search(r"restic (\d+)\.(\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


VERSION = _restic_version()
needs_restic = pytest.mark.skipif(VERSION is None, reason="restic is not installed")
# restic 0.14/0.15 read --keep-* -1 as "keep nothing" (fixed in 0.16 by 'unlimited'), so -1 is tried only from 0.16.
UNLIMITED_OK = VERSION is not None and VERSION >= (0, 16, 0)


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    enc = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return enc.update(data) + enc.finalize()


def _mac(keys: tuple[bytes, bytes, bytes], iv: bytes, ciphertext: bytes) -> bytes:
    """restic's Poly1305-AES: r from the MAC key, s = AES_k(iv)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305
    ecb = Cipher(algorithms.AES(keys[1]), modes.ECB()).encryptor()
    return Poly1305.generate_tag(keys[2] + ecb.update(iv) + ecb.finalize(), ciphertext)


def _seal(keys: tuple[bytes, bytes, bytes], plain: bytes) -> bytes:
    iv = os.urandom(16)
    ciphertext = _ctr(keys[0], iv, plain)
    return iv + ciphertext + _mac(keys, iv, ciphertext)


def _open(keys: tuple[bytes, bytes, bytes], blob: bytes) -> bytes:
    iv, ciphertext, tag = blob[:16], blob[16:-16], blob[-16:]
    assert _mac(keys, iv, ciphertext) == tag, "not restic's encryption, or a wrong password"
    return _ctr(keys[0], iv, ciphertext)


def _kdf(password: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    k = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=64, maxmem=2**31 - 1)
    return k[:32], k[32:48], k[48:]


class ResticRepo:
    """A throwaway restic repository whose key file uses cheap scrypt parameters (so each restic call
    takes milliseconds), and which can be filled with snapshot files written directly."""

    PASSWORD = "x"

    def __init__(self, root: Path, template: ResticRepo | None = None) -> None:
        self.root = root
        self.repo = root / "repo"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        self.env.update(TZ="UTC", RESTIC_PASSWORD=self.PASSWORD, RESTIC_REPOSITORY=str(self.repo))
        if template is not None:
            shutil.copytree(template.repo, self.repo)
            self.master = template.master
            return
        self.run("init")
        self.master = self._cheapen_key()

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([RESTIC, "--no-cache", *args], env=self.env, capture_output=True, text=True,
                              timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"restic {' '.join(args)} failed: {proc.stderr}")
        return proc

    def _cheapen_key(self) -> tuple[bytes, bytes, bytes]:
        keys = self.repo / "keys"
        [path] = keys.iterdir()
        key = json.loads(path.read_text())
        user = _kdf(self.PASSWORD.encode(), base64.b64decode(key["salt"]), key["N"], key["r"], key["p"])
        plain = _open(user, base64.b64decode(key["data"]))
        master = json.loads(plain)
        salt = os.urandom(64)
        cheap = _kdf(self.PASSWORD.encode(), salt, 16, 1, 1)
        key.update(N=16, r=1, p=1, salt=base64.b64encode(salt).decode(),
                   data=base64.b64encode(_seal(cheap, plain)).decode())
        raw = json.dumps(key).encode()
        (keys / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
        path.unlink()
        return (base64.b64decode(master["encrypt"]), base64.b64decode(master["mac"]["k"]),
                base64.b64decode(master["mac"]["r"]))

    def load(self, history: list[Candidate]) -> list[Candidate]:
        """Replace the repository's snapshots by ``history``; returns it with restic's snapshot ids."""
        snapshots = self.repo / "snapshots"
        for old in snapshots.iterdir():
            old.unlink()
        out = []
        for c in history:
            doc = {"time": c.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "tree": "ab" * 32,
                   "paths": list(c.paths), "hostname": c.host, "username": "test", "tags": list(c.tags) or None}
            blob = _seal(self.master, json.dumps({k: v for k, v in doc.items() if v is not None}).encode())
            sid = hashlib.sha256(blob).hexdigest()
            (snapshots / sid).write_bytes(blob)
            out.append(replace(c, id=sid))
        return out

    def forget(self, rules: KeepRules, group_by: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["forget", "--dry-run", "--no-lock", "--json", f"--group-by={group_by}", *extra]
        for name in COUNTS:
            if value := getattr(rules, name):
                args.append(f"--keep-{name}={'unlimited' if value == -1 and UNLIMITED_OK else value}")
        for name in WITHINS:
            if text := getattr(rules, name):
                args.append(f"--keep-{name.replace('_', '-')}={text}")
        args += [f"--keep-tag={entry}" for entry in rules.tags]
        return self.run(*args, check=False)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> ResticRepo:
    if VERSION is None:
        pytest.skip("restic is not installed")
    return ResticRepo(tmp_path_factory.mktemp("restic-pristine"))


@pytest.fixture(scope="session")
def restic(pristine: ResticRepo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResticRepo]:
    yield ResticRepo(tmp_path_factory.mktemp("restic-work"), template=pristine)


def _theirs(group: dict) -> tuple[list[tuple[str, list[str]]], list[str]]:
    keep = [s["id"] for s in group["keep"] or []]
    reasons = [r["matches"] for r in group["reasons"] or []]
    assert len(keep) == len(reasons)
    return list(zip(keep, reasons, strict=True)), [s["id"] for s in group["remove"] or []]


def _ours(d: Decision) -> tuple[list[tuple[str, list[str]]], list[str]]:
    return [(c.id, r) for c, r in d.keep], [c.id for c in d.remove]


def _compare(repo: ResticRepo, cands: list[Candidate], rules: KeepRules, group_by: str) -> None:
    """Our decisions equal restic's: the same groups, kept and removed ids in the same order, the same reasons.

    restic before 0.16 does not keep a group's oldest snapshot for counts left (we compare with
    ``keep_oldest=False`` then); before 0.17 it empties a group that a keep-tag rule leaves nothing in,
    where restic 0.17 and we refuse (then each group is compared alone).
    """
    assert VERSION is not None
    keep_oldest = VERSION >= (0, 16, 0)
    proc = repo.forget(rules, group_by)
    try:
        ours: list[Decision] | None = apply(cands, rules, group_by, keep_oldest=keep_oldest)
    except UsageError as e:
        assert "refusing to forget every snapshot of the group" in str(e), e
        ours = None
    if proc.returncode != 0:
        assert ours is None and "refusing to delete last snapshot" in proc.stderr, proc.stderr
        return
    theirs = {(g["host"], tuple(g["paths"] or ()), tuple(g["tags"] or ())): _theirs(g)
              for g in json.loads(proc.stdout or "[]")}
    if ours is not None:
        assert {d.group: _ours(d) for d in ours} == theirs
        return
    by_id = {c.id: c for c in cands}
    emptied = 0
    for keep, remove in theirs.values():
        members = [by_id[i] for i, _ in keep] + [by_id[i] for i in remove]
        try:
            [d] = apply(members, rules, "", keep_oldest=keep_oldest)
        except UsageError:
            assert keep == []
            emptied += 1
            continue
        assert _ours(d) == (keep, remove)
    assert emptied, "we refused, but restic empties no group"


SCALES = (61, 3599, 4 * 3600 + 7, 86400 - 13, 3 * 86400, 9 * 86400, 40 * 86400, 120 * 86400)
STEPS = (1800, 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400)  # a regular schedule puts snapshots right on window edges


@st.composite
def newest_times(draw: st.DrawFn) -> datetime:
    """Any time, or one at a month's end or start (month arithmetic, ISO weeks across a new year)."""
    if draw(st.booleans()):
        return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 22 * 365 * 86400)))
    year, month = draw(st.integers(2000, 2022)), draw(st.integers(1, 12))
    first = datetime(year, month, 1, draw(st.integers(0, 23)), draw(st.sampled_from([0, 0, 30, 59])), tzinfo=UTC)
    return first + timedelta(days=draw(st.sampled_from([-3, -2, -1, 0, 1, 2, 3])))


@st.composite
def histories(draw: st.DrawFn, max_size: int = 25) -> list[Candidate]:
    """1-3 sources (host and paths), each with its own schedule: regular (snapshots right on window
    edges) or irregular gaps of minutes to months, newest often at a month's end or start; optional
    tags; now and then one snapshot from the future. 5..max_size snapshots, all times distinct."""
    sources = draw(st.lists(st.tuples(st.sampled_from(["alpha", "beta"]),
                                      st.sampled_from([("/data",), ("/data",), ("/etc", "/data")])),
                            min_size=1, max_size=3))
    sizes = draw(st.lists(st.integers(2, max_size), min_size=len(sources), max_size=len(sources)))
    assume(sum(sizes) >= 5)
    out = []
    for nr, ((host, paths), size) in enumerate(zip(sources, sizes, strict=True)):
        step = draw(st.sampled_from(STEPS)) if draw(st.booleans()) else None
        scales = draw(st.lists(st.sampled_from(SCALES), min_size=1, max_size=3))
        when = draw(newest_times()) + timedelta(seconds=nr)  # distinct from other sources' times
        for _ in range(size):
            if len(out) == max_size:
                break
            tags = tuple(sorted(draw(st.sets(st.sampled_from(["keep", "daily", "x"]), max_size=2))))
            out.append(Candidate(str(len(out)), when, host, paths, tags))
            when -= timedelta(seconds=step or draw(st.sampled_from(scales)) * draw(st.integers(30, 170)) // 100 + 1)
    assume(len({c.time for c in out}) == len(out))
    if draw(st.integers(0, 9)) == 0:  # a snapshot from the future: it must not anchor the within windows
        out.append(Candidate("future", datetime(2090, 1, 1, tzinfo=UTC), out[0].host, out[0].paths, ()))
    return draw(st.permutations(out))


def durations() -> st.SearchStrategy[str]:
    part = st.tuples(st.sampled_from("ymdh"), st.integers(1, 3) | st.integers(0, 40))
    mixed = st.lists(part, min_size=1, max_size=3).map(lambda ps: "".join(f"{n}{u}" for u, n in ps))
    return st.sampled_from(["1d", "2d", "3h", "1m", "2m", "1y", "1m1d", "0d"]) | mixed


@st.composite
def rule_sets(draw: st.DrawFn) -> KeepRules:
    """One to three rules (so that each one's effect shows), a few times more."""
    names = draw(st.sets(st.sampled_from((*COUNTS, *WITHINS, "tags")), min_size=1, max_size=3)
                 | st.sets(st.sampled_from((*COUNTS, *WITHINS, "tags")), min_size=4, max_size=8))
    counts = [1, 2, 3, 5, 8] + ([-1] if UNLIMITED_OK else [])
    kw: dict = {}
    for name in names:
        if name in COUNTS:
            kw[name] = draw(st.sampled_from(counts))
        elif name in WITHINS:
            kw[name] = draw(durations())
        else:
            kw[name] = tuple(draw(st.lists(st.sampled_from(["keep", "daily,x", "keep, x", "nope"]),
                                           min_size=1, max_size=2)))
    rules = KeepRules(**kw)
    assume(not rules.empty())
    return rules


GROUP_BYS = st.sampled_from(["host,paths", "host,paths", "host", "paths", "", "tags", "host,tags", "host,paths,tags"])


@needs_restic
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), rules=rule_sets(), group_by=GROUP_BYS)
def test_forget_matches_restic(restic: ResticRepo, history: list[Candidate], rules: KeepRules,
                               group_by: str) -> None:
    _compare(restic, restic.load(history), rules, group_by)


@needs_restic
@pytest.mark.deep
@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(max_size=60), rules=rule_sets(), group_by=GROUP_BYS)
def test_forget_matches_restic_deep(restic: ResticRepo, history: list[Candidate], rules: KeepRules,
                                    group_by: str) -> None:
    _compare(restic, restic.load(history), rules, group_by)


EDGES = {  # name: (snapshot times, rules): calendar arithmetic and window edges, checked against restic
    "month-end": (["2023-03-31 12:00", "2023-03-03 12:00:01", "2023-03-03 12:00", "2023-03-02 12:00",
                   "2023-02-28 12:00", "2023-02-27 12:00"], KeepRules(within="1m")),
    "leap-month": (["2024-03-30 06:00", "2024-03-01 06:00:01", "2024-03-01 06:00", "2024-02-29 06:00",
                    "2024-02-28 06:00"], KeepRules(within="1m")),
    "leap-year": (["2024-02-29 00:00", "2023-03-01 00:00:01", "2023-03-01 00:00", "2023-02-28 00:00"],
                  KeepRules(within="1y")),
    "year-month-end": (["2024-03-31 00:00", "2023-03-03 00:00:01", "2023-03-03 00:00", "2023-02-28 00:00"],
                       KeepRules(within="1y1m")),
    "exact-edge": (["2024-01-10 12:00", "2024-01-09 12:00:01", "2024-01-09 12:00", "2024-01-08 12:00"],
                   KeepRules(within="1d", within_hourly="1d12h")),
    "iso-weeks": (["2021-01-04 12:00", "2021-01-03 12:00", "2020-12-31 12:00", "2020-12-28 12:00",
                   "2020-12-27 12:00", "2020-01-01 12:00", "2019-12-30 12:00", "2019-12-29 12:00"],
                  KeepRules(weekly=5, within_weekly="3m")),
    "oldest": (["2024-01-02 20:00", "2024-01-02 08:00", "2024-01-01 20:00", "2024-01-01 08:00"],
               KeepRules(daily=5, within_daily="1d")),
}


@needs_restic
@pytest.mark.parametrize("name", EDGES)
def test_calendar_edges_match_restic(restic: ResticRepo, name: str) -> None:
    times, rules = EDGES[name]
    cands = restic.load([snap(str(i), when) for i, when in enumerate(times)])
    _compare(restic, cands, rules, "host,paths")


@needs_restic
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet="0123456789ymdhwx ", max_size=8))
def test_duration_parser_matches_restic(restic: ResticRepo, text: str) -> None:
    restic.load([snap("1", "2020-01-01")])
    proc = restic.run("forget", "--dry-run", "--no-lock", "--json", f"--keep-within={text}", check=False)
    try:
        d = parse_duration(text)
    except UsageError as e:
        if "at most 2562047h" in str(e):
            # restic computes the hours in Go's int64 nanoseconds, which overflow: the window lands in
            # the future and the snapshot is forgotten (or, from 0.17, the safety check refuses).
            assert proc.returncode != 0 or json.loads(proc.stdout)[0]["keep"] is None
        else:
            assert proc.returncode != 0
        return
    assert proc.returncode == 0 or d == (0, 0, 0, 0), proc.stderr
    if d == (0, 0, 0, 0):  # no rule: restic 0.17 refuses, older ones keep everything and print nothing
        assert "no policy was specified" in proc.stderr if proc.returncode else proc.stdout.strip() == ""
        return
    [group] = json.loads(proc.stdout)
    assert [r["matches"] for r in group["reasons"]] == [[f"within {format_duration(d)}"]]


@needs_restic
def test_snapshots_made_by_restic_backup(pristine: ResticRepo, tmp_path: Path) -> None:
    """Snapshots from real ``restic backup --time`` runs, matched to ours by time and host."""
    repo = ResticRepo(tmp_path, template=pristine)
    data = tmp_path / "data"
    data.mkdir()
    (data / "f").write_text("hello")
    history = [("2023-12-31 23:59:59", "alpha", ("keep",)), ("2024-01-01 00:00:00", "alpha", ()),
               ("2024-01-01 00:30:00", "beta", ()), ("2024-01-01 07:00:00", "alpha", ("x",)),
               ("2024-01-03 10:00:00", "alpha", ()), ("2024-01-03 11:00:00", "beta", ("keep", "x")),
               ("2024-01-09 02:00:00", "alpha", ()), ("2024-02-01 00:00:00", "alpha", ("keep",)),
               ("2024-02-29 23:00:00", "alpha", ()), ("2024-03-01 01:00:00", "beta", ())]
    for when, host, tags in history:
        repo.run("backup", "-q", "--time", when, "--host", host, *[f"--tag={tag}" for tag in tags], str(data))
    listed = json.loads(repo.run("snapshots", "--json").stdout)
    cands = [Candidate(s["id"], datetime.fromisoformat(s["time"]).astimezone(UTC), s["hostname"],
                       tuple(s["paths"]), tuple(s.get("tags") or ())) for s in listed]
    assert sorted((c.time, c.host) for c in cands) == sorted((t(w), h) for w, h, _ in history)
    for rules, group_by in [(KeepRules(daily=2), "host,paths"), (KeepRules(hourly=3, weekly=1), "host"),
                            (KeepRules(last=1, monthly=2, tags=("keep",)), ""),
                            (KeepRules(within="2d", within_daily="1m"), "host,paths"),
                            (KeepRules(tags=("keep,x",)), "tags"), (KeepRules(yearly=5), "host,tags")]:
        _compare(repo, cands, rules, group_by)
