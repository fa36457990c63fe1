"""Typed results of the Vault's operations: what interfaces (CLI, web app, programs) receive."""

from __future__ import annotations

from dataclasses import dataclass, field
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

    @property
    def healthy(self) -> bool:
        """No finding at all: a check that found and healed a bad copy still reports it (a
        provider misbehaved); the next check is healthy if nothing happened since."""
        return not self.problems


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
