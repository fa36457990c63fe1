"""Freehold's one error hierarchy.

Every expected failure is a :class:`FreeholdError` carrying a user message and a
stable exit code; the CLI prints the message on one line and exits with the code.
Storage errors are translated into these at the provider boundary.

    FreeholdError                      exit 1
    ├── UsageError                     exit 2   bad arguments, k/n out of range, missing path
    ├── Incomplete                     exit 3   saved, but some files left out (backup) or not written (restore)
    ├── WrongPassphrase                exit 4
    ├── SnapshotNotFound               exit 5
    ├── IntegrityError                 exit 6   data failed verification and could not be repaired
    ├── NotEnoughShares (Integrity)    exit 6
    ├── GuardianShareError             exit 8   guardian (SLIP-39) shares that cannot recover a key
    ├── PolicyError                    exit 9   a placement policy the providers cannot satisfy
    ├── ConflictError                  exit 10  another machine changed the vault at the same time
    ├── VaultNotFound                  exit 11  no vault configured in FREEHOLD_HOME
    ├── LockedError                    exit 12  another prune, repair or drain is running (or left a lock)
    └── ProviderError                  exit 7   base of the provider errors below
        ├── QuorumError                         too few providers took a write (retryable)
        ├── ObjectNotFound                      (not retryable)
        ├── ProviderUnavailable                 (retryable)
        ├── ProviderPermission                  (not retryable)
        ├── ProviderQuota                       (not retryable)
        └── ProviderCorrupt                     (object present but not what it claims to be)
"""

from __future__ import annotations


class FreeholdError(Exception):
    """Base of every error Freehold raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(FreeholdError):
    exit_code = 2


class Incomplete(FreeholdError):
    """The job finished but left things out: a backup saved without files it could not read,
    a restore that could not write some files. Exit 3, as restic's incomplete snapshot."""
    exit_code = 3


class VaultNotFound(FreeholdError):
    exit_code = 11


class WrongPassphrase(FreeholdError):
    exit_code = 4


class SnapshotNotFound(FreeholdError):
    exit_code = 5


class IntegrityError(FreeholdError):
    exit_code = 6


class NotEnoughShares(IntegrityError):
    pass


class GuardianShareError(FreeholdError):
    exit_code = 8


class PolicyError(FreeholdError):
    exit_code = 9


class ConflictError(FreeholdError):
    exit_code = 10


class ProviderError(FreeholdError):
    exit_code = 7
    retryable = False


class QuorumError(ProviderError):
    retryable = True


class ObjectNotFound(ProviderError):
    pass


class ProviderUnavailable(ProviderError):
    retryable = True


class ProviderPermission(ProviderError):
    pass


class ProviderQuota(ProviderError):
    pass


class ProviderCorrupt(ProviderError):
    pass


class LockedError(FreeholdError):
    """Another command holds a lock that conflicts (exit 12); ``freehold unlock`` removes stale ones."""

    exit_code = 12
