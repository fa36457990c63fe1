"""``forget``: remove snapshots by retention rules (restic's, ``retention.apply``) or by id.

Forgetting deletes no data: it writes one deletion record naming the snapshots (design §10a),
on a quorum, and then deletes their objects wherever they are. A provider that missed the
deletion cannot bring them back: every healing command reads the record first. ``prune`` then
reclaims the data no remaining snapshot needs.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from .. import formats, retention
from ..api import ForgetReport
from ..errors import SnapshotNotFound, UsageError
from ..store import Operation


def _when(snap: formats.Snapshot) -> datetime:
    t = datetime.fromisoformat(snap.time)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def forget(op: Operation, rules: retention.KeepRules | None, ids: list[str], *, group_by: str = "host,paths",
           hosts: list[str] | None = None, tags: list[str] | None = None, dry_run: bool = False,
           host: str = "") -> ForgetReport:
    """Snapshots named in ``ids`` (unique prefixes) or, with ``rules``, every snapshot the rules
    do not keep (restricted to ``hosts``/``tags`` when given) are forgotten."""
    snaps = op.snapshots()
    report = ForgetReport(dry_run=dry_run)
    if ids:
        chosen = {}
        for ref in ids:
            matches = [(s, snap) for s, snap in snaps if s.startswith(ref.strip().lower())]
            if not matches:
                raise SnapshotNotFound(f"no snapshot {ref!r} (see 'freehold snapshots')")
            if len(matches) > 1:
                raise SnapshotNotFound(f"snapshot id prefix {ref!r} is ambiguous ({len(matches)} snapshots)")
            chosen[matches[0][0]] = matches[0][1]
        report.removed = sorted(chosen.items(), key=lambda x: x[1].time)
        report.kept = [(s, snap, []) for s, snap in snaps if s not in chosen]
    else:
        if rules is None or rules.empty():
            raise UsageError("no retention rule given (--keep-last, --keep-daily, ..., --keep-within, --keep-tag) "
                             "and no snapshot id: refusing to forget every snapshot")
        pool = [(s, snap) for s, snap in snaps
                if (not hosts or snap.host in hosts) and (not tags or set(tags) <= set(snap.tags))]
        by_id = dict(pool)
        cands = [retention.Candidate(id=s, time=_when(snap), host=snap.host, paths=tuple(snap.paths),
                                     tags=tuple(snap.tags)) for s, snap in pool]
        decisions = retention.apply(cands, rules, group_by)
        report.groups = len(decisions)
        for d in decisions:
            report.kept += [(c.id, by_id[c.id], reasons) for c, reasons in d.keep]
            report.removed += [(c.id, by_id[c.id]) for c in d.remove]
    if report.removed and not dry_run:
        op.replace_index(set(), [], snapshots=[s for s, _ in report.removed], reason="forget",
                         host=host or socket.gethostname())
    return report
