"""Passphrase wrapping of the master secret (docs/design.md, "Key objects").

The master secret is 32 random bytes. A passphrase is stretched with Argon2id
into a wrapping key; the master secret is sealed under it. The Argon2 parameters
and salt are stored in the key object, so they can be raised later without
breaking old key objects.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi, lib

from . import formats
from .crypto import KEY_LEN, KIND_KEY, open_sealed, seal
from .errors import IntegrityError, WrongPassphrase


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


def new_master_secret() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def wrap(master: bytes, passphrase: bytes, vault_id: bytes, params: KdfParams, created: str = "") -> bytes:
    salt = secrets.token_bytes(16)
    kek = _stretch(passphrase, salt, params)
    wrapped = seal(kek, KIND_KEY, b"key" + vault_id, master)
    return formats.encode(formats.KeyFile(v=1, kdf="argon2id", t=params.t, m=params.m, p=params.p,
                                          salt=salt, vault_id=vault_id, wrapped=wrapped,
                                          created=created))


def read_keyfile(data: bytes) -> formats.KeyFile:
    kf = formats.decode(data, formats.KeyFile, "key object")
    if kf.v != 1 or kf.kdf != "argon2id":
        raise IntegrityError(f"key object uses unsupported format v{kf.v}/{kf.kdf}")
    # Refuse parameters that would let a hostile provider make us burn unbounded memory or time.
    if not (1 <= kf.t <= 64 and 8 <= kf.m <= 4 * 1024 * 1024 and 1 <= kf.p <= 64 and kf.m >= 8 * kf.p):
        raise IntegrityError("key object has out-of-range Argon2 parameters")
    return kf


def unwrap(kf: formats.KeyFile, passphrase: bytes) -> bytes:
    kek = _stretch(passphrase, kf.salt, KdfParams(kf.t, kf.m, kf.p))
    try:
        master = open_sealed(kek, KIND_KEY, b"key" + kf.vault_id, kf.wrapped, "key object")
    except IntegrityError:
        raise WrongPassphrase("wrong passphrase (it opens none of this vault's keys)") from None
    if len(master) != KEY_LEN:
        raise IntegrityError("key object holds a malformed master secret")
    return master
