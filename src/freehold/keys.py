"""Passphrase wrapping of the master secret (docs/design.md, "Key objects").

The master secret is 32 random bytes. A passphrase is stretched with Argon2id
into a wrapping key; the master secret is sealed under it. The Argon2 parameters
and salt are stored in the key object, so they can be raised later without
breaking old key objects.
"""

from __future__ import annotations

import os
import secrets
import unicodedata
from dataclasses import dataclass

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi, lib

from . import formats
from .crypto import KEY_LEN, KIND_KEY, open_sealed, seal
from .errors import IntegrityError, UsageError, WrongPassphrase


@dataclass(frozen=True)
class Limits:
    """The most a key object may make an unlock cost (docs/design.md §13e)."""

    t: int
    m_kib: int
    p: int
    cost: int                     # t * m, KiB passes


# A hostile provider can plant key objects, and each one tried costs its Argon2id parameters in
# time and memory: key objects this machine does not know are held to STRICT (the default is
# t=3, 64 MiB: cost 196,608); the key ids it knows (vault.json) to the wider limits format 1
# documented, so that no key object a user made before stops opening.
STRICT = Limits(t=10, m_kib=1024 * 1024, p=16, cost=4 * 1024 * 1024)
FORMAT_1 = Limits(t=64, m_kib=4 * 1024 * 1024, p=64, cost=64 * 4 * 1024 * 1024)


@dataclass(frozen=True)
class KdfParams:
    t: int = 3
    m: int = 64 * 1024   # KiB
    p: int = 4

    @classmethod
    def weak(cls, memory_kib: int) -> KdfParams:
        """Cheap parameters, for test suites that open hundreds of vaults. Never a default."""
        return cls(t=1, m=max(8, memory_kib), p=1)


def _stretch(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
    """Argon2id (RFC 9106) of the passphrase: ``params.p`` lanes, computed on at most as many
    threads as this machine has cores. The result depends on the lanes only, never on the
    threads (a test checks it against argon2-cffi's ``hash_secret_raw``); ``hash_secret_raw``
    runs one thread per lane, and four threads on two cores took 0.120 s against 0.099 s."""
    out = ffi.new("uint8_t[]", KEY_LEN)
    pwd = ffi.new("uint8_t[]", passphrase)
    salt_buf = ffi.new("uint8_t[]", salt)
    ctx = ffi.new("argon2_context *", {
        "version": ARGON2_VERSION, "out": out, "outlen": KEY_LEN,
        "pwd": pwd, "pwdlen": len(passphrase), "salt": salt_buf, "saltlen": len(salt),
        "secret": ffi.NULL, "secretlen": 0, "ad": ffi.NULL, "adlen": 0,
        "t_cost": params.t, "m_cost": params.m, "lanes": params.p,
        "threads": max(1, min(params.p, os.cpu_count() or 1)),
        "allocate_cbk": ffi.NULL, "free_cbk": ffi.NULL, "flags": lib.ARGON2_DEFAULT_FLAGS,
    })
    rc = core(ctx, Type.ID.value)
    if rc != lib.ARGON2_OK:
        raise HashingError(error_to_str(rc))
    return bytes(ffi.buffer(out, KEY_LEN))


def passphrase_forms(passphrase: str) -> list[bytes]:
    """The bytes to stretch for a passphrase: its NFC form (what new key objects use, so that
    ``café`` typed precomposed or decomposed is one passphrase) and, when that differs, the
    bytes as typed (what key objects written before normalisation used)."""
    if not passphrase:
        raise UsageError("the passphrase is empty")
    nfc = unicodedata.normalize("NFC", passphrase).encode()
    raw = passphrase.encode("utf-8", "surrogateescape")
    return [nfc] if raw == nfc else [nfc, raw]


def cost(kf: formats.KeyFile) -> int:
    return kf.t * kf.m


def new_master_secret() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def wrap(master: bytes, passphrase: bytes, vault_id: bytes, params: KdfParams, created: str = "",
         context: bytes = b"key") -> bytes:
    """A key object (or, ``context`` b"writer", a write-only key file) of ``master``."""
    salt = secrets.token_bytes(16)
    kek = _stretch(passphrase, salt, params)
    wrapped = seal(kek, KIND_KEY, context + vault_id, master)
    return formats.encode(formats.KeyFile(v=1, kdf="argon2id", t=params.t, m=params.m, p=params.p,
                                          salt=salt, vault_id=vault_id, wrapped=wrapped,
                                          created=created))


def read_keyfile(data: bytes, limits: Limits = STRICT) -> formats.KeyFile:
    kf = formats.decode(data, formats.KeyFile, "key object")
    if kf.v != 1 or kf.kdf != "argon2id":
        raise IntegrityError(f"key object uses unsupported format v{kf.v}/{kf.kdf}")
    # Refuse parameters that would let a hostile provider make us burn unbounded memory or time.
    if not (1 <= kf.t <= limits.t and 8 <= kf.m <= limits.m_kib and 1 <= kf.p <= limits.p and kf.m >= 8 * kf.p
            and cost(kf) <= limits.cost):
        raise IntegrityError(f"key object has out-of-range Argon2 parameters (t={kf.t}, m={kf.m} KiB, p={kf.p})")
    if len(kf.salt) != 16 or len(kf.vault_id) != 16:
        raise IntegrityError("key object is malformed (salt or vault id length)")
    return kf


def unwrap(kf: formats.KeyFile, passphrase: bytes, context: bytes = b"key") -> bytes:
    kek = _stretch(passphrase, kf.salt, KdfParams(kf.t, kf.m, kf.p))
    try:
        master = open_sealed(kek, KIND_KEY, context + kf.vault_id, kf.wrapped, "key object")
    except IntegrityError:
        raise WrongPassphrase("wrong passphrase (it opens none of this vault's keys)") from None
    if context != b"key":
        return master
    if len(master) != KEY_LEN:
        raise IntegrityError("key object holds a malformed master secret")
    return master
