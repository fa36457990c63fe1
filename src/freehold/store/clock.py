"""Times as the 1.3 objects hold them (ISO 8601 UTC text), and how old such a time is: one
place for what deletion records, locks, the maintenance record and prune's safety window use."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_stamp(precise: bool = False) -> str:
    """Now as ISO 8601 UTC text, to the second (``precise``: to the microsecond)."""
    return datetime.now(UTC).isoformat(timespec="microseconds" if precise else "seconds")


def age_seconds(stamp: str, now: datetime | None = None) -> float:
    """Seconds from ``stamp`` to ``now`` (default: now); a time without a zone is taken as UTC,
    and an unreadable one is infinitely old."""
    try:
        t = datetime.fromisoformat(stamp)
    except ValueError:
        return float("inf")
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return ((now or datetime.now(UTC)) - t).total_seconds()
