"""Which snapshots ``freehold forget`` keeps: restic's ``forget`` policy, as a pure function.

The rules are those of restic 0.16/0.17 (``internal/restic/snapshot_policy.go``, ``ApplyPolicy``;
``cmd/restic/cmd_forget.go``):

* Snapshots are grouped (by host and paths unless told otherwise) and each group is decided alone.
* Within a group, snapshots are taken newest first. ``last``/``hourly``/``daily``/``weekly``/
  ``monthly``/``yearly`` each keep the newest snapshot of every calendar period (hour, day, ISO week,
  month, year) until that rule's count is used up; every rule counts the snapshots it keeps, also
  those another rule keeps too. ``-1`` means unlimited. While a count rule still has counts left, it
  also keeps the group's oldest snapshot (restic 0.16+; 0.18 words that reason "oldest ...").
* ``within`` keeps every snapshot newer than the group's newest snapshot minus the duration (restic
  measures from the newest snapshot that is not in the future, not from now). ``within_hourly`` and
  friends keep the newest snapshot of each period inside such a window, without a count.
* ``tags`` keeps every snapshot that has all the tags of one entry (``"a,b"`` means a and b; ``""``
  matches a snapshot without tags). Tag matches count towards nothing.
* No rule at all is refused (restic: "no policy was specified"), and so is a decision that would
  forget every snapshot of a group (restic 0.17's safety check): both raise :class:`UsageError`.

Calendar periods are taken in UTC (restic uses each snapshot's recorded local time zone). Durations
with more than 2562047 hours are refused: restic computes hours in Go's int64 nanoseconds, which
overflow there and forget everything. Reasons are worded as restic's JSON ``matches``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from freehold.errors import UsageError
from freehold.formats import Retention

UNLIMITED = -1
"""The count meaning "keep every such snapshot" (restic's ``unlimited``)."""

Duration = tuple[int, int, int, int]
"""(years, months, days, hours), as restic's ``--keep-within`` durations."""

GroupKey = tuple[str, tuple[str, ...], tuple[str, ...]]
"""(host, sorted paths, sorted tags); a part not grouped by is empty."""

_COUNTS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_WITHINS = ("within", "within_hourly", "within_daily", "within_weekly", "within_monthly", "within_yearly")
_NUMBER = re.compile(r"(-?)([0-9]*)")
_MAX_HOURS = (2**63 - 1) // 3_600_000_000_000  # Go's time.Duration, in which restic subtracts the hours
_MAX_NUMBER = 10**9


@dataclass(frozen=True)
class KeepRules:
    """The ``--keep-*`` options of ``forget``; zero counts and empty durations are not rules."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: str = ""
    within_hourly: str = ""
    within_daily: str = ""
    within_weekly: str = ""
    within_monthly: str = ""
    within_yearly: str = ""
    tags: tuple[str, ...] = ()
    _durations: dict[str, Duration] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < UNLIMITED:
                raise UsageError(f"keep {name}: expected a count of 0 or more, or -1 for unlimited; got {value!r}")
        durations = {}
        for name in _WITHINS:
            text = getattr(self, name)
            if not isinstance(text, str):
                raise UsageError(f"keep {name}: expected a duration such as '30d' or '1y6m'; got {text!r}")
            durations[name] = parse_duration(text)
        if isinstance(self.tags, str) or not all(isinstance(t, str) for t in self.tags):
            raise UsageError(f"keep tags: expected a sequence of tag lists such as ('a', 'b,c'); got {self.tags!r}")
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "_durations", durations)

    @classmethod
    def of(cls, policy: Retention) -> KeepRules:
        """The rules of a vault's stored retention policy (``Policy.retention``, format 1.3)."""
        return cls(last=policy.last, hourly=policy.hourly, daily=policy.daily, weekly=policy.weekly,
                   monthly=policy.monthly, yearly=policy.yearly, within=policy.within, tags=tuple(policy.tags))

    def empty(self) -> bool:
        """True when no rule is given (restic's empty policy)."""
        return (all(getattr(self, n) == 0 for n in _COUNTS) and not self.tags
                and all(d == (0, 0, 0, 0) for d in self._durations.values()))

    def duration(self, name: str) -> Duration:
        """The parsed duration of the field ``name`` (e.g. ``"within_daily"``)."""
        return self._durations[name]


@dataclass(frozen=True)
class Candidate:
    """One snapshot as the policy sees it; ``time`` must be timezone-aware."""

    id: str
    time: datetime
    host: str
    paths: tuple[str, ...]
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise UsageError(f"snapshot {self.id}: its time {self.time} has no time zone")


@dataclass(frozen=True)
class Decision:
    """The outcome for one group: kept snapshots with their reasons, and removed ones; newest first."""

    group: GroupKey
    keep: list[tuple[Candidate, list[str]]]
    remove: list[Candidate]


def parse_duration(text: str) -> Duration:
    """Parse restic's ``1y2m3d4h`` (any order, any subset; a repeated unit takes the last value)."""
    years = months = days = hours = 0
    rest = text.strip()
    while rest:
        match = _NUMBER.match(rest)
        assert match is not None  # the pattern matches the empty string
        sign, digits = match.groups()
        if not digits:
            raise UsageError(f"invalid duration {text!r}: expected a number at {rest!r}; "
                             "write it like 1y2m3d4h (years, months, days, hours)")
        value = int(digits)
        if sign and value:
            raise UsageError(f"invalid duration {text!r}: negative values are not allowed")
        if value >= _MAX_NUMBER:
            raise UsageError(f"invalid duration {text!r}: the number {value} is too large")
        rest = rest[match.end():]
        if not rest:
            raise UsageError(f"invalid duration {text!r}: no unit after the number {value} (use y, m, d or h)")
        unit, rest = rest[0], rest[1:]
        if unit == "y":
            years = value
        elif unit == "m":
            months = value
        elif unit == "d":
            days = value
        elif unit == "h":
            if value > _MAX_HOURS:
                raise UsageError(f"invalid duration {text!r}: at most {_MAX_HOURS}h (about 292 years; restic's "
                                 "hour arithmetic overflows beyond); write longer spans with y, m or d")
            hours = value
        else:
            raise UsageError(f"invalid duration {text!r}: unknown unit {unit!r} after the number {value} "
                             "(use y for years, m for months, d for days, h for hours)")
    return years, months, days, hours


def format_duration(d: Duration) -> str:
    """restic's spelling of a duration: its non-zero parts, ``1y2m3d4h``."""
    return "".join(f"{v}{u}" for v, u in zip(d, "ymdh", strict=True) if v)


def parse_group_by(group_by: str) -> tuple[bool, bool, bool]:
    """(host, paths, tags) from restic's ``--group-by`` value: comma-separated, ``""`` for no grouping."""
    host = paths = tags = False
    for option in group_by.split(","):
        if option in ("host", "hosts"):
            host = True
        elif option in ("path", "paths"):
            paths = True
        elif option in ("tag", "tags"):
            tags = True
        elif option:
            raise UsageError(f"unknown grouping option {option!r}: group by host, paths and/or tags, "
                             "separated by commas, or give '' for no grouping")
    return host, paths, tags


def group_key(c: Candidate, by: tuple[bool, bool, bool]) -> GroupKey:
    """The key of the group ``c`` falls in under the grouping ``by``."""
    return (c.host if by[0] else "", tuple(sorted(c.paths)) if by[1] else (),
            tuple(sorted(c.tags)) if by[2] else ())


def apply(cands: Iterable[Candidate], rules: KeepRules, group_by: str = "host,paths", *,
          now: datetime | None = None, keep_oldest: bool = True) -> list[Decision]:
    """Decide, group by group (sorted by key), which snapshots the rules keep; equal times keep the given order.

    ``now`` (default: the current time) only tells which snapshots are in the future: those never
    serve as the newest snapshot that ``within`` durations count from. ``keep_oldest=False`` drops
    restic 0.16's rule of also keeping a group's oldest snapshot (restic 0.15 and older behave so).
    """
    by = parse_group_by(group_by)
    if rules.empty():
        raise UsageError("no keep rule given: refusing to forget every snapshot "
                         "(give at least one of keep last/hourly/daily/weekly/monthly/yearly/within/tag)")
    reference = datetime.now(UTC) if now is None else now
    if reference.tzinfo is None or reference.utcoffset() is None:
        raise UsageError(f"now: {reference} has no time zone")
    groups: dict[GroupKey, list[Candidate]] = {}
    for c in cands:
        groups.setdefault(group_key(c, by), []).append(c)
    decisions = []
    for key in sorted(groups):
        decision = _apply_group(key, groups[key], rules, reference, keep_oldest)
        if not decision.keep:
            raise UsageError(f"refusing to forget every snapshot of the group {describe_group(key)}: "
                             "none of them matches a keep rule")
        decisions.append(decision)
    return decisions


def describe_group(key: GroupKey) -> str:
    """A group key for messages: ``host h, paths [/a, /b], tags [t]`` (parts grouped by only)."""
    host, paths, tags = key
    parts = [f"host {host}"] if host else []
    if paths:
        parts.append(f"paths [{', '.join(paths)}]")
    if tags:
        parts.append(f"tags [{', '.join(tags)}]")
    return ", ".join(parts) or "(all snapshots)"


# --- one group -------------------------------------------------------------------------------

def _hour(t: datetime, _nr: int) -> int:
    return ((t.year * 100 + t.month) * 100 + t.day) * 100 + t.hour


def _day(t: datetime, _nr: int) -> int:
    return (t.year * 100 + t.month) * 100 + t.day


def _week(t: datetime, _nr: int) -> int:
    year, week, _ = t.isocalendar()
    return year * 100 + week


def _month(t: datetime, _nr: int) -> int:
    return t.year * 100 + t.month


def _year(t: datetime, _nr: int) -> int:
    return t.year


def _always(_t: datetime, nr: int) -> int:
    return nr


_BUCKETERS: tuple[Callable[[datetime, int], int], ...] = (_always, _hour, _day, _week, _month, _year)


@dataclass
class _Bucket:
    count: int
    bucket_of: Callable[[datetime, int], int]
    reason: str
    last: int | None = None


def _latest(times: list[datetime], now: datetime) -> datetime | None:
    """The newest time that is not in the future (restic's findLatestTimestamp)."""
    past = [t for t in times if t < now]
    return max(past) if past else None


def _cutoff(latest: datetime | None, d: Duration) -> datetime | None:
    """``latest`` minus ``d`` as Go's ``AddDate(-y, -m, -d).Add(-h)``; None when before year 1."""
    if latest is None:
        return None
    years, months, days, hours = d
    total = latest.year * 12 + latest.month - 1 - (years * 12 + months)
    year, month0 = divmod(total, 12)
    if year < 1:
        return None
    try:
        # Go normalises an overflowing day into the next month (31 March minus 1 month is 3 March).
        start = latest.replace(year=year, month=month0 + 1, day=1)
        return start + timedelta(days=latest.day - 1 - days, hours=-hours)
    except (OverflowError, ValueError):
        return None


def _has_tags(have: tuple[str, ...], wanted: list[str]) -> bool:
    """restic's Snapshot.HasTags: all of ``wanted``; an empty tag matches a snapshot without tags."""
    for tag in wanted:
        if tag == "" and not have:
            return True
        if tag not in have:
            return False
    return True


def _apply_group(key: GroupKey, members: list[Candidate], rules: KeepRules, now: datetime,
                 keep_oldest: bool) -> Decision:
    # Newest first; a stable sort keeps the given order among equal times, as restic's sort.Stable.
    ordered = sorted(members, key=lambda c: c.time, reverse=True)
    times = [c.time.astimezone(UTC) for c in ordered]
    latest = _latest(times, now.astimezone(UTC))
    tag_lists = [[t.strip() for t in entry.split(",")] for entry in rules.tags]
    within = rules.duration("within")
    within_cut = _cutoff(latest, within)
    counts = [_Bucket(getattr(rules, n), b, f"{n} snapshot") for n, b in zip(_COUNTS, _BUCKETERS, strict=True)]
    windows = []
    for name, bucket_of in zip(_WITHINS[1:], _BUCKETERS[1:], strict=True):
        d = rules.duration(name)
        if d != (0, 0, 0, 0):
            reason = f"{name.removeprefix('within_')} within {format_duration(d)}"
            windows.append((_Bucket(0, bucket_of, reason), _cutoff(latest, d)))
    keep: list[tuple[Candidate, list[str]]] = []
    remove: list[Candidate] = []
    oldest = len(ordered) - 1
    for nr, (cand, t) in enumerate(zip(ordered, times, strict=True)):
        reasons = [f"has tags [{', '.join(tl)}]" for tl in tag_lists if _has_tags(cand.tags, tl)]
        if within != (0, 0, 0, 0) and (within_cut is None or t > within_cut):
            reasons.append(f"within {format_duration(within)}")
        for b in counts:
            if b.count > 0 or b.count == UNLIMITED:
                value = b.bucket_of(t, nr)
                if value != b.last or (keep_oldest and nr == oldest):
                    b.last = value
                    if b.count > 0:
                        b.count -= 1
                    reasons.append(b.reason)
        for b, cut in windows:
            if cut is None or t > cut:
                value = b.bucket_of(t, nr)
                if value != b.last:
                    b.last = value
                    reasons.append(b.reason)
        if reasons:
            keep.append((cand, reasons))
        else:
            remove.append(cand)
    return Decision(key, keep, remove)


__all__ = ["UNLIMITED", "Candidate", "Decision", "Duration", "GroupKey", "KeepRules", "apply",
           "describe_group", "format_duration", "group_key", "parse_duration", "parse_group_by"]
