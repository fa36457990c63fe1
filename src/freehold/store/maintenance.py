"""The maintenance record (format 1.3): when ``maintain`` last ran, on which host, and which
read-data subset comes next. One sealed object ``maintenance`` replaced in place on every
provider; readers take the newest valid copy, so a provider replaying an old one can only make
maintenance look overdue (a spurious warning), never hide that it is."""

from __future__ import annotations

from datetime import UTC, datetime

from .. import formats
from ..crypto import KIND_MAINTENANCE, open_sealed, seal
from ..errors import FreeholdError
from .clock import age_seconds
from .replicas import ReplicaSet

MAINTENANCE_NAME = "maintenance"
OVERDUE_DAYS = 7.0


def _open(key: bytes):  # type: ignore[no-untyped-def]
    def verify(env: bytes) -> formats.Maintenance:
        plain = open_sealed(key, KIND_MAINTENANCE, MAINTENANCE_NAME.encode(), env, "maintenance record")
        return formats.decode(plain, formats.Maintenance, "maintenance record")
    return verify


def newest(replicas: ReplicaSet, key: bytes) -> formats.Maintenance | None:
    """The newest valid maintenance record among the providers that answer (a majority, and
    the others within the hedge delay: a stalled provider costs that delay, never a hang);
    None when no provider holds one that verifies."""
    try:
        return replicas.newest(MAINTENANCE_NAME, _open(key), lambda r: r.time)
    except FreeholdError:
        return None


def write(replicas: ReplicaSet, key: bytes, record: formats.Maintenance, quorum: int) -> list[str]:
    env = seal(key, KIND_MAINTENANCE, MAINTENANCE_NAME.encode(), formats.encode(record))
    return replicas.put_all(MAINTENANCE_NAME, env, quorum=quorum)


def overdue(record: formats.Maintenance | None, created: str, now: datetime | None = None) -> str:
    """Why maintenance is overdue ("" when it is not): no run for a week, or twice the interval
    between runs (``period_days / subsets``) if longer; never run, and the vault older than a week."""
    now = now or datetime.now(UTC)

    def age_days(stamp: str) -> float:
        age = age_seconds(stamp, now)
        return 0.0 if age == float("inf") else age / 86400  # unreadable: no warning
    if record is None:
        days = age_days(created) if created else 0.0
        return (f"maintenance has never run on this vault ({days:.0f} days old): run 'freehold maintain' "
                "regularly ('freehold maintain --print-timer' shows a systemd timer and a cron line)"
                ) if days > OVERDUE_DAYS else ""
    days = age_days(record.time)
    limit = max(OVERDUE_DAYS, 2 * record.period_days / max(1, record.subsets))
    if days > limit:
        return (f"maintenance is overdue: last run {days:.0f} days ago on {record.host}, its maintainer; "
                "run 'freehold maintain' there (or 'freehold maintain --take-over' here)")
    return ""
