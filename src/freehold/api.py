"""Typed results of the Vault's operations: what interfaces (CLI, web app, programs) receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import formats

# Finding kinds of ``check``.
MISSING_SHARE = "missing-share"
DAMAGED_SHARE = "damaged-share"
UNREADABLE_SHARE = "unreadable-share"
UNKNOWN_PROVIDER = "unknown-provider"
UNREACHABLE_PROVIDER = "unreachable-provider"
MISSING_BLOB = "missing-blob"
UNREADABLE_SNAPSHOT = "unreadable-snapshot"
MISSING_REPLICA = "missing-replica"
DAMAGED_REPLICA = "damaged-replica"
STALE_REPLICA = "stale-replica"
STRAY_OBJECT = "stray-object"
REVOKED_KEY = "revoked-key-present"
UNKNOWN_KEY = "unknown-key"
ALIASED_PROVIDER = "aliased-provider"
MISSING_SNAPSHOT = "missing-snapshot"
GONE_OBJECT = "gone-object-back"


@dataclass
class Problem:
    """One finding of ``check``: what, where (provider and object), and whether check healed it."""

    kind: str
    detail: str
    provider: str = ""
    object: str = ""
    healed: bool = False


@dataclass
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    packs: int = 0
    shares: int = 0
    snapshots: int = 0
    replicas: int = 0          # replicated objects surveyed
    healed: int = 0            # replica copies written or revoked keys deleted
    read_packs: int = 0        # packs whose shares were read and hashed (--read-data[-subset])
    pack_health: list[PackHealth] = field(default_factory=list)   # every pack that is not healthy
    orphans: Orphans = field(default_factory=lambda: Orphans())

    @property
    def healthy(self) -> bool:
        """No finding at all: a check that found and healed a bad copy still reports it (a
        provider misbehaved); the next check is healthy if nothing happened since."""
        return not self.problems

    @property
    def lost(self) -> bool:
        """Data is lost: a pack below k good shares, or a blob a snapshot needs in no index
        and no unindexed pack that ``repair`` could index."""
        return any(p.kind == LOST_PACK for p in self.problems) or (
            any(p.kind == MISSING_BLOB for p in self.problems) and not self.orphans.indexable)

    @property
    def exit_code(self) -> int:
        return CHECK_DATA_LOST if self.lost else CHECK_HEALTHY if self.healthy else CHECK_REPAIRABLE


@dataclass(frozen=True)
class VaultInfo:
    vault_id: str
    k: int
    n: int
    providers: list[formats.ProviderEntry]
    policy: formats.Policy
    generation: int


@dataclass(frozen=True)
class KeyInfo:
    id: str
    created: str
    t: int
    m: int
    p: int
    current: bool              # the key that opened this session
    listed: bool               # named by the sealed config (format 1.1) or legacy (any key, 1.0)


@dataclass(frozen=True)
class Outcome:
    """What an operation found about the providers: say it to the user."""

    down: list[str] = field(default_factory=list)          # providers that failed in it
    missed: list[str] = field(default_factory=list)        # providers that missed a write, healed later
    warnings: list[str] = field(default_factory=list)
    fallback_reads: int = 0


@dataclass(frozen=True)
class KeyChange:
    id: str
    outcome: Outcome
    pending: list[str] = field(default_factory=list)       # providers still holding a revoked key object


@dataclass
class ProviderStatus:
    id: str
    url: str
    jurisdiction: str
    operator: str
    healthy: bool
    error: str = ""
    shares: int = 0
    bytes: int = 0


class BackupResult(NamedTuple):
    id: str
    snapshot: formats.Snapshot
    stats: object                 # pipeline.BackupStats (what the providers did: Vault.last_outcome)


OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")


@dataclass(frozen=True)
class BackupOptions:
    """What a backup takes from its paths (restic's selection options, same meanings)."""
    excludes: tuple[str, ...] = ()         # patterns (restic syntax: *, ?, [..], **; '/'-anchored)
    iexcludes: tuple[str, ...] = ()        # the same, case-insensitive
    exclude_files: tuple[str, ...] = ()    # files of patterns, one a line, '#' comments
    iexclude_files: tuple[str, ...] = ()
    exclude_caches: bool = False           # directories holding a valid CACHEDIR.TAG
    exclude_if_present: tuple[str, ...] = ()  # directories holding a file of this name
    exclude_larger_than: int | None = None  # bytes
    one_file_system: bool = False
    files_from: tuple[str, ...] = ()       # files listing paths to back up, one a line
    dry_run: bool = False                  # report what would be stored; write nothing
    stdin: Any = None                      # a binary stream to store as one file ...
    stdin_filename: str = "stdin"          # ... under this name


@dataclass(frozen=True)
class RestoreOptions:
    includes: tuple[str, ...] = ()         # snapshot paths (or patterns) to restore; () = all
    excludes: tuple[str, ...] = ()         # snapshot paths (or patterns) to leave out
    overwrite: str = "always"              # one of OVERWRITE_MODES
    delete: bool = False                   # remove target files the snapshot does not hold
    dry_run: bool = False


# -- check and repair (issue 13, design §15b) ------------------------------------------------------

# A pack's health.
PACK_HEALTHY = "healthy"            # n good shares on providers in the config, none draining, policy met
PACK_AT_RISK = "at-risk"            # k <= good < n, or shares on draining providers, or misplaced
PACK_UNAVAILABLE = "unavailable"    # fewer than k good now, but enough on unreachable providers
PACK_LOST = "lost"                  # fewer than k good shares: its blobs cannot be read

# A share's state in the survey.
SHARE_GOOD = "good"
SHARE_NEVER_WRITTEN = "never-written"   # nil in the index (a degraded backup)
SHARE_MISSING = "missing"
SHARE_WRONG_SIZE = "wrong-size"         # truncated, empty or grown
SHARE_DAMAGED = "damaged"               # read, and its hash differs from the index's
SHARE_UNREADABLE = "unreadable"
SHARE_UNREACHABLE = "unreachable"       # its provider did not answer
SHARE_UNKNOWN_PROVIDER = "unknown-provider"

# Further finding kinds of ``check``.
DRAINING_SHARE = "draining-share"
MISPLACED_PACK = "misplaced-pack"
LOST_PACK = "lost-pack"
UNINDEXED_PACK = "unindexed-pack"

# Exit codes of ``check`` (and ``repair``: packs it could not save).
CHECK_HEALTHY = 0
CHECK_REPAIRABLE = 1
CHECK_DATA_LOST = 13


@dataclass
class ShareHealth:
    index: int
    provider: str                  # "" when the index records no share
    state: str                     # one of SHARE_*
    draining: bool = False         # its provider is being drained


@dataclass
class PackHealth:
    id: str                        # hex pack id
    state: str                     # one of PACK_*
    good: int
    k: int
    n: int
    shares: list[ShareHealth] = field(default_factory=list)
    misplaced: bool = False        # the current policy would not place it on these providers


@dataclass
class Orphans:
    """Share objects under data/ that no live index lists: informational, never a problem."""

    packs: int = 0                 # packs in no index and not retired (crashed backups; repair indexes them)
    shares: int = 0
    bytes: int = 0
    indexable: int = 0             # of ``packs``: with at least k shares, so repair can index them
    retired_packs: int = 0         # retired by a deletion record, awaiting prune
    retired_bytes: int = 0
    stray_shares: int = 0          # copies of a live pack's share where the index does not put it
    unknown: list[str] = field(default_factory=list)   # "provider: name" not named like a share


@dataclass
class RepairReport:
    dry_run: bool = False
    packs: int = 0                 # packs surveyed
    packs_repaired: int = 0
    shares_rebuilt: int = 0        # written where missing or damaged
    shares_moved: int = 0          # written on another provider (draining, removed, misplaced)
    shares_deleted: int = 0        # moved-off and stray copies deleted
    bytes_read: int = 0
    bytes_written: int = 0
    replicas_healed: int = 0
    index_objects_written: int = 0
    packs_indexed: int = 0         # packs in no index rebuilt from their trailers
    lost: list[str] = field(default_factory=list)        # hex ids of packs below k (cannot be repaired)
    unrepaired: list[str] = field(default_factory=list)  # hex ids still not healthy (e.g. a provider down)
    actions: list[str] = field(default_factory=list)     # what was (or, dry run, would be) done
    outcome: Outcome = field(default_factory=Outcome)

    @property
    def exit_code(self) -> int:
        return CHECK_DATA_LOST if self.lost else CHECK_REPAIRABLE if self.unrepaired else CHECK_HEALTHY


@dataclass
class ProviderChange:
    """What ``provider remove`` / ``replace`` did."""

    removed: str = ""
    added: str = ""
    repair: RepairReport | None = None
    outcome: Outcome = field(default_factory=Outcome)


# -- forget and prune (jobs/forget.py, jobs/prune.py) --------------------------------------------

@dataclass
class ForgetReport:
    dry_run: bool = False
    kept: list[tuple[str, formats.Snapshot, list[str]]] = field(default_factory=list)   # id, snapshot, reasons
    removed: list[tuple[str, formats.Snapshot]] = field(default_factory=list)
    groups: int = 0


@dataclass(frozen=True)
class PruneOptions:
    max_unused: float = 0.05          # a pack whose unused part is above this fraction is rewritten
    dry_run: bool = False
    safety_window: float = 3600.0     # seconds; store.deletions.SAFETY_WINDOW
    clock_slack: float = 60.0         # seconds an index object may predate a backup lock and still be its
    host: str = ""


@dataclass
class PruneReport:
    dry_run: bool = False
    snapshots: int = 0
    packs: int = 0                    # live packs before
    kept: int = 0
    repacked: int = 0                 # packs rewritten (their used blobs copied to new packs)
    dropped: int = 0                  # packs no snapshot uses
    new_packs: int = 0
    used_bytes: int = 0               # plaintext bytes the live snapshots need (after dedup)
    unused_bytes: int = 0             # pack bytes nothing needs, before
    deleted_packs: int = 0            # packs whose shares were deleted in this run
    deleted_objects: int = 0
    freed_bytes: int = 0              # share bytes deleted in this run
    deferred_packs: int = 0           # retired packs kept until the safety window has passed
    deferred_bytes: int = 0
    orphans: int = 0                  # packs in no index found (retired now, deleted after the window)
    index_objects: int = 0            # index objects replaced
    written_bytes: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass
class MaintainReport:
    """What one ``maintain`` run did (vault_upkeep.maintain)."""

    host: str = ""
    subset: str = ""                  # the read-data subset read this run, e.g. "4/30"
    check: Any = None                 # CheckReport
    repair: Any = None                # RepairReport, when the check found something to repair
    forget: ForgetReport | None = None
    prune: PruneReport | None = None
    exit_code: int = 0                # 0 healthy, 1 problems remain that repair can fix, 13 data lost


@dataclass(frozen=True)
class ShareResult:
    """What ``share`` made (vault_sharing.share): the capability file's text is for the
    recipients only; the id names the grant in ``shares list`` and ``shares revoke``."""

    id: str
    path: str
    snapshot: str
    capability: str
    blobs: int
    bytes: int
    to: tuple[str, ...]
    live: bool = False
    expires: str = ""


@dataclass(frozen=True)
class GrantInfo:
    """One grant, as ``shares list`` shows it."""

    id: str
    path: str
    snapshot: str
    to: tuple[str, ...]
    created: str
    live: bool = False
    expires: str = ""
    revoked: str = ""
    label: str = ""

    @property
    def state(self) -> str:
        if self.revoked:
            return "revoked"
        if self.expires and self.expires <= datetime.now(UTC).isoformat(timespec="seconds"):
            return "expired"
        return "live" if self.live else "active"


@dataclass(frozen=True)
class NftInfo:
    """``publish --nft``: what the ERC-721 metadata JSON says besides its image (docs/design.md,
    publishing): ``name`` ("" for the published file's or folder's name) and ``description``."""

    name: str = ""
    description: str = ""


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` made (vault_publishing.publish): the record ``id``, the root CID and
    its ``ipfs://`` URI, where the content is in the vault, and for ``--nft`` the metadata's
    CID and JSON text. ``backed_up``: a new snapshot was made of a local path first."""

    id: str
    cid: str
    uri: str
    profile: str
    snapshot: str
    path: str
    kind: str
    size: int
    blocks: int
    backed_up: bool = False
    car: str = ""
    car_bytes: int = 0
    nft_cid: str = ""
    nft_uri: str = ""
    nft_json: str = ""


@dataclass(frozen=True)
class PublishedInfo:
    """One publishing record, as ``published`` lists it."""

    id: str
    time: str
    cid: str
    profile: str
    snapshot: str
    path: str
    kind: str
    size: int
    name: str = ""
    description: str = ""
    nft_cid: str = ""
