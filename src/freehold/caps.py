"""Capability files (docs/design.md §20): a grant's key and where to read it, age-encrypted to
people's existing public keys.

Recipients are age X25519 recipients (``age1…``) and SSH public keys (``ssh-ed25519 …``,
``ssh-rsa …``); identities are age identity files and unencrypted OpenSSH private keys. All of
it goes through pyrage, bindings to the Rust ``age`` crate: no curve arithmetic is done here.
"""

from __future__ import annotations

from pathlib import Path

import pyrage
from pyrage import ssh, x25519

from . import formats
from .errors import IntegrityError, UsageError

HEADER = "# freehold capability"
Recipient = x25519.Recipient | ssh.Recipient
Identity = x25519.Identity | ssh.Identity


def parse_recipient(text: str) -> Recipient:
    """One public key: ``age1…`` or an SSH public key line (``ssh-ed25519 AAAA… comment``)."""
    text = text.strip()
    try:
        if text.startswith("age1"):
            return x25519.Recipient.from_str(text)
        if text.startswith(("ssh-ed25519 ", "ssh-rsa ")):
            return ssh.Recipient.from_str(" ".join(text.split()[:2]))
    except (pyrage.RecipientError, ValueError) as exc:
        raise UsageError(f"not a valid public key: {_short(text)} ({exc})") from None
    raise UsageError(f"not an age recipient (age1…) or SSH public key (ssh-ed25519 …, ssh-rsa …): {_short(text)}")


def recipients(specs: list[str]) -> tuple[list[Recipient], list[str]]:
    """Recipients from ``--to`` values: each a public key, or a file of them (one a line, ``#``
    comments and blank lines skipped, e.g. an ``authorized_keys`` or age recipients file).
    Returns the recipients and their canonical strings (what the owner's grant record keeps)."""
    out: list[Recipient] = []
    names: list[str] = []
    for spec in specs:
        lines = [spec]
        if not spec.strip().startswith(("age1", "ssh-")):
            path = Path(spec).expanduser()
            try:
                lines = path.read_text().splitlines()
            except OSError as exc:
                raise UsageError(f"--to {spec!r} is neither a public key nor a readable file "
                                 f"({exc.strerror})") from None
            lines = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not lines:
                raise UsageError(f"{spec}: no public keys in it")
        for line in lines:
            out.append(parse_recipient(line))
            names.append(" ".join(line.split()[:2]))
    if not out:
        raise UsageError("give at least one recipient with --to")
    return out, names


def load_identity(path: Path) -> list[Identity]:
    """The private keys in an age identity file or an (unencrypted) OpenSSH private key file."""
    try:
        data = path.expanduser().read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read identity {path}: {exc.strerror}") from None
    if b"OPENSSH PRIVATE KEY" in data or b"RSA PRIVATE KEY" in data:
        try:
            return [ssh.Identity.from_buffer(data)]
        except (pyrage.IdentityError, ValueError) as exc:
            raise UsageError(f"{path}: cannot use this SSH private key ({exc}); passphrase-protected "
                             "keys are not supported: give an unencrypted copy or an age identity") from None
    ids: list[Identity] = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                ids.append(x25519.Identity.from_str(line))
            except (pyrage.IdentityError, ValueError):
                raise UsageError(f"{path}: a malformed age identity line") from None
    if not ids:
        raise UsageError(f"{path} holds no age identity (AGE-SECRET-KEY-…) or OpenSSH private key")
    return ids


def write(cap: formats.Capability, to: list[Recipient]) -> str:
    """The capability file's text: a comment line, then the armored age file."""
    body = pyrage.encrypt(formats.encode(cap), to, armored=True).decode()
    return f"{HEADER}: {cap.path} from vault {cap.vault_id.hex()[:12]}\n{body}"


def read(text: str, identities: list[Identity]) -> formats.Capability:
    """Decrypt and decode a capability file; errors say why without leaking anything."""
    start = text.find("-----BEGIN AGE ENCRYPTED FILE-----")
    if start < 0:
        raise UsageError("this is not a Freehold capability file (no age-encrypted block in it)")
    try:
        plain = pyrage.decrypt(text[start:].encode(), identities)
    except pyrage.DecryptError:
        raise UsageError("this capability is not for this identity (or the file is damaged)") from None
    cap = formats.decode(plain, formats.Capability, "capability")
    if cap.v != 1 or len(cap.key) != 32 or len(cap.name) != 16 or not cap.providers:
        raise IntegrityError("the capability is malformed")
    return cap


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
